"""S3 backend against a real S3-compatible server on loopback (SeaweedFS, or moto as a fallback)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest

from fakescope.errors import ImageLoadError, NoSuchFileError, NoSuchFolderError, StorageError, StorageUnavailableError
from fakescope.io import _s3, storage
from fakescope.io._s3 import S3Storage, make_client
from fakescope.io.image import read_source


def test_an_object_that_is_no_image_is_refused_after_its_first_bytes(s3_bucket, image_factory):
    """An object was read whole before its signature was checked: a huge non-image named `.jpg` filled memory."""
    big, photo = f"s3://{s3_bucket}/big.jpg", f"s3://{s3_bucket}/photo.jpg"
    storage.write_bytes(big, b"\0" * (32 * 2**20))
    storage.write_bytes(photo, jpeg := image_factory.bytes("JPEG", (640, 480)))
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match=r"^not an image \(unrecognised file signature\)$"):
            read_source(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20  # its first bytes, not its 32 MiB
    assert read_source(photo) == jpeg  # an image is read whole
    assert storage.read_bytes(big) == b"\0" * (32 * 2**20)  # a read without a check is unchanged


def test_upload_then_download_round_trip(s3_bucket):
    uri = f"s3://{s3_bucket}/images/real/0001.png"
    payload = bytes(range(256)) * 40
    storage.write_bytes(uri, payload)
    assert storage.read_bytes(uri) == payload
    assert storage.exists(uri)
    assert storage.exists(f"s3://{s3_bucket}/images")
    assert not storage.exists(f"s3://{s3_bucket}/images/real/0002.png")


def test_remove_deletes_an_object_and_a_missing_one_is_no_error(s3_bucket):
    uri = f"s3://{s3_bucket}/images/a.png"
    storage.write_bytes(uri, b"a")
    storage.remove(uri)
    storage.remove(uri)
    assert not storage.exists(uri) and not storage.exists(f"s3://{s3_bucket}/images")


def test_conditional_writes_and_deletes_refuse_a_failed_precondition_with_none_or_false(s3_bucket):
    backend, uri = S3Storage(), f"s3://{s3_bucket}/lock.json"
    first = backend.put_if_absent(uri, b"one")
    assert first and backend.put_if_absent(uri, b"two") is None and backend.read_bytes(uri) == b"one"
    head = backend.head(uri)
    assert head.etag == first and abs((head.server_now - head.modified).total_seconds()) < 60
    second = backend.put_if_match(uri, b"two", first)
    assert second and second != first and backend.put_if_match(uri, b"three", first) is None
    assert backend.delete_if_match(uri, first) is False and backend.read_bytes(uri) == b"two"
    assert backend.delete_if_match(uri, second) is True and not backend.exists(uri)
    with pytest.raises(StorageError, match="no such file"):
        backend.head(uri)


def test_listing_pages_through_every_key_sorted(s3_bucket):
    client = boto3.client("s3")
    keys = [f"set/{i:03d}.jpg" for i in range(23)] + ["set/notes.txt", "set/sub/deep.JPG", "other/x.jpg"]
    for key in keys:
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x" * len(key))
    backend = S3Storage(page_size=5)
    listed = list(backend.list_files(f"s3://{s3_bucket}/set", suffixes=(".jpg",)))
    assert listed == [f"s3://{s3_bucket}/set/{i:03d}.jpg" for i in range(23)] + [f"s3://{s3_bucket}/set/sub/deep.JPG"]
    flat = list(backend.list_files(f"s3://{s3_bucket}/set/", recursive=False))
    assert len(flat) == 24 and f"s3://{s3_bucket}/set/sub/deep.JPG" not in flat
    sized = list(backend.list_sizes(f"s3://{s3_bucket}/set/", recursive=False))  # each object's Size, from its page
    assert sized == [(uri, len(uri.removeprefix(f"s3://{s3_bucket}/"))) for uri in flat]
    everything = list(storage.list_files(f"s3://{s3_bucket}"))
    assert len(everything) == len(keys)


def test_image_listing_leaves_out_hidden_keys(s3_bucket):
    from fakescope.io.inputs import iter_sources

    client = boto3.client("s3")
    for key in ("mac/a.jpg", "mac/._a.jpg", "mac/__MACOSX/._a.jpg", "mac/.thumbnails/a.jpg", "mac/sub/b.png"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    assert list(iter_sources([f"s3://{s3_bucket}/mac/"])) == [f"s3://{s3_bucket}/mac/a.jpg", f"s3://{s3_bucket}/mac/sub/b.png"]


def test_missing_bucket_is_one_clear_error(s3_env):
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("s3://no-such-bucket-here/a.png")
    host = os.environ["AWS_ENDPOINT_URL_S3"].split("://")[1]  # the loopback server's host:port, as the message names it
    assert str(caught.value) == (f"s3 bucket 'no-such-bucket-here' does not exist on the endpoint {host} "
                                 "(AWS_ENDPOINT_URL_S3); check the bucket name in the URI, or the endpoint")
    with pytest.raises(NoSuchFolderError, match="does not exist"):  # listed: a missing folder, told apart
        list(storage.list_files("s3://no-such-bucket-here/prefix"))
    with pytest.raises(StorageError, match="does not exist") as caught:
        storage.write_bytes("s3://no-such-bucket-here/a.png", b"x")
    assert not isinstance(caught.value, NoSuchFolderError)
    assert not storage.exists("s3://no-such-bucket-here/a.png")


def test_missing_key_is_reported_as_missing_file(s3_bucket):
    with pytest.raises(NoSuchFileError, match=f"^s3://{s3_bucket}/absent.png: no such file$"):  # told apart: none there
        storage.read_bytes(f"s3://{s3_bucket}/absent.png")


def test_wrong_credentials_are_refused_without_leaking_them(s3_server, s3_bucket):
    if not s3_server.enforces_auth:
        pytest.skip("the fallback moto server does not enforce credentials")
    secret = "definitely-wrong-secret-value"
    backend = S3Storage(make_client(aws_access_key_id="fakescopetestkey", aws_secret_access_key=secret))
    with pytest.raises(StorageUnavailableError) as caught:  # every file would be refused: a scan stops, no error rows
        backend.read_bytes(f"s3://{s3_bucket}/a.png")
    assert str(caught.value) == (f"S3 refused the AWS credentials (SignatureDoesNotMatch) while reading s3://{s3_bucket}/a.png; "
                                 "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                                 "(a session token may have expired)")
    assert secret not in str(caught.value) and "fakescopetestkey" not in str(caught.value)
    unknown = S3Storage(make_client(aws_access_key_id="nobody", aws_secret_access_key=secret))
    with pytest.raises(StorageUnavailableError, match=r"^S3 refused the AWS credentials \(\w+\) while writing "):
        unknown.write_bytes(f"s3://{s3_bucket}/a.png", b"x")


def test_client_is_reused_for_the_same_settings(s3_env):
    assert storage.get_storage("s3://a/b") is storage.get_storage("s3://c/d")
    assert storage.is_remote("s3://a/b") and not storage.is_remote("/tmp/a")


def test_a_changed_secret_key_alone_gets_a_fresh_client_and_the_cache_keeps_no_secret(s3_bucket, monkeypatch):
    uri, secret = f"s3://{s3_bucket}/a.png", os.environ["AWS_SECRET_ACCESS_KEY"]
    storage.write_bytes(uri, b"x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")  # the same key id, another secret
    assert secret not in storage.s3_settings() and "not-the-secret" not in storage.s3_settings()
    with pytest.raises(StorageUnavailableError, match=r"^S3 refused the AWS credentials \(\w+\) while reading "):
        storage.read_bytes(uri)  # signed with the new secret, not by the client built with the old one
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert storage.read_bytes(uri) == b"x"


FORKING_PARENT = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
from fakescope.io import storage

def client_and_bytes(uri):
    return id(storage.get_storage(uri).client), storage.read_bytes(uri)

uris = sys.argv[1:]
assert len(list(storage.list_files(uris[0].rsplit("/", 1)[0]))) == len(uris)  # the parent's connection stays pooled
parent = id(storage.get_storage(uris[0]).client)
with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("fork")) as pool:
    results = list(pool.map(client_and_bytes, uris, timeout=120))
assert all(client != parent for client, _ in results), "a child used the parent's client"
assert [data for _, data in results] == [str(i).encode() * 1000 for i in range(len(uris))], "reads were swapped"
"""


def test_a_forked_process_does_not_share_the_parents_connections(s3_bucket):
    """`detect --processes` forks after listing: children on the parent's pooled socket swapped or hung reads.

    The forking parent is a fresh interpreter, as `fakescope detect` is: forking this test process, with
    threads other tests left behind, could copy a held lock into the children and hang them.
    """
    uris = [f"s3://{s3_bucket}/many/{i:02d}.bin" for i in range(24)]
    for i, uri in enumerate(uris):
        storage.write_bytes(uri, str(i).encode() * 1000)
    run = subprocess.run([sys.executable, "-c", FORKING_PARENT, *uris], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr


def test_throttling_is_retried_and_an_outlasting_one_stops_as_unavailable(s3_bucket, fault_proxy, monkeypatch):
    uri = f"s3://{s3_bucket}/busy/a.png"
    storage.write_bytes(uri, b"payload")
    fault_proxy.fail("GET", 503, "SlowDown", times=3)  # botocore's own default (3 attempts) gives up here
    assert storage.read_bytes(uri) == b"payload"
    assert fault_proxy.injected == 3
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # the user's retry setting is honoured
    fault_proxy.fail("GET", 500, "InternalError", times=5)
    with pytest.raises(StorageUnavailableError) as caught:
        S3Storage().read_bytes(uri)
    assert str(caught.value) == f"S3 busy: it still answered InternalError after retrying while reading {uri}; try again later"
    assert fault_proxy.injected == 3 + 2


def test_a_refused_object_names_its_uri_once_as_the_source(s3_bucket, fault_proxy):
    uri = f"s3://{s3_bucket}/private/a.png"
    storage.write_bytes(uri, b"payload")
    for status, code, reason in ((403, "AccessDenied", "access denied to read (check the AWS credentials)"),
                                 (400, "InvalidObjectState", "cannot read: S3 error InvalidObjectState")):
        fault_proxy.fail("GET", status, code)
        with pytest.raises(StorageError) as caught:  # this file's error, not an outage: a scan records it and goes on
            S3Storage().read_bytes(uri)
        assert not isinstance(caught.value, StorageUnavailableError)
        assert (caught.value.reason, caught.value.source, str(caught.value)) == (reason, uri, f"{uri}: {reason}")


def test_a_connection_broken_mid_object_is_fetched_again_then_stops_as_unavailable(s3_bucket, fault_proxy):
    uri = f"s3://{s3_bucket}/drop/a.png"
    storage.write_bytes(uri, b"0123456789" * 100)
    fault_proxy.fail("GET", 0, "", times=1)  # headers and half the body, then the connection closes
    assert storage.read_bytes(uri) == b"0123456789" * 100
    fault_proxy.fail("GET", 0, "", times=10)
    broke = rf"^the connection to S3 broke \(\w+\) while reading {uri}; check the network and try again$"
    with pytest.raises(StorageUnavailableError, match=broke):
        storage.read_bytes(uri)


def test_a_large_write_is_uploaded_in_parts(s3_bucket, monkeypatch):
    """One PUT takes at most 5 GiB: a big export goes up as a multipart upload (its ETag counts the parts)."""
    monkeypatch.setattr(_s3, "MULTIPART_BYTES", 5 * 2**20, raising=False)  # S3's smallest part, instead of building a 64 MiB object
    uri = f"s3://{s3_bucket}/big/export.tar"
    data = bytes(range(256)) * (11 * 2**20 // 256)
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri) == data
    assert boto3.client("s3").head_object(Bucket=s3_bucket, Key="big/export.tar")["ETag"].strip('"').endswith("-3")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        storage.write_bytes("s3://no-such-bucket-here/big.tar", data)


def test_many_decoding_threads_keep_their_connections(s3_bucket, caplog):
    """`--workers 20`: botocore's pool of 10 dropped the other connections (a new TLS handshake per read on AWS)."""
    uris = [f"s3://{s3_bucket}/pool/{i:02d}.bin" for i in range(20)]
    for uri in uris:
        storage.write_bytes(uri, b"x" * 1000)
    client, together = storage.get_storage(uris[0]).client, threading.Barrier(len(uris))

    def read(uri: str) -> bytes:
        body = client.get_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3])["Body"]  # holds its connection
        together.wait(timeout=60)
        return body.read()  # then all go back to the pool at once

    with caplog.at_level(logging.WARNING, logger="urllib3"), ThreadPoolExecutor(len(uris)) as pool:
        assert list(pool.map(read, uris)) == [b"x" * 1000] * len(uris)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_an_unusable_aws_setup_stops_as_unavailable_naming_what_is_wrong(s3_bucket, monkeypatch):
    """A misnamed profile or a missing secret is no file's fault: not an error row for every file of a scan."""
    uri = f"s3://{s3_bucket}/setup/a.png"
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    profile = r"^unusable AWS credentials for S3 while reading s3://.*: The config profile \(no-such-profile\) could not"
    with pytest.raises(StorageUnavailableError, match=profile):
        storage.read_bytes(uri)
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageUnavailableError, match="missing: AWS_SECRET_ACCESS_KEY$") as caught:
        S3Storage().read_bytes(uri)
    assert "fakescopetestkey" not in str(caught.value)


def test_an_endpoint_without_a_scheme_is_one_line_naming_its_variable(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint.removeprefix("http://"))
    with pytest.raises(StorageUnavailableError, match="^the S3 endpoint in AWS_ENDPOINT_URL_S3 must be a URL such as http://"):
        S3Storage().read_bytes("s3://bucket/a.png")
