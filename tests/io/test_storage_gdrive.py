"""gdrive:// backend against a real HTTP server on loopback speaking the Drive v3 subset it uses."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import googleapiclient.http
import pytest
from drive_server import DOC_MIME, DRIVE_READONLY_TOKEN, DRIVE_REFRESH_TOKEN, DRIVE_TOKEN, FOLDER_MIME, write_token_file
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import (
    ImageLoadError,
    NoSuchFileError,
    NoSuchFolderError,
    StorageBusyError,
    StorageError,
    StorageUnavailableError,
)
from fakescope.generate.lease import LEASE_NAME
from fakescope.io import _gdrive, storage
from fakescope.io._gdrive import DriveStorage
from fakescope.scale.records import read_results


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((72, 64), 40 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_small_upload_is_multipart_and_round_trips(drive_env):
    uri = f"gdrive://{drive_env.root_id}/faces/real/0001.png"
    payload = b"\x89PNG\r\n\x1a\n" + os.urandom(300) + b"\r\n"
    storage.write_bytes(uri, payload)
    assert storage.read_bytes(uri) == payload
    assert drive_env.calls["multipart"] == 1 and drive_env.calls["create"] == 2  # two folders made
    assert storage.exists(uri) and storage.exists(f"gdrive://{drive_env.root_id}/faces")
    assert not storage.exists(f"gdrive://{drive_env.root_id}/faces/real/0002.png")


def test_size_is_asked_without_a_download(drive_env):
    """`storage.size` (a resumed generation's check for an empty output) reads the size Drive records, not the file."""
    uri = f"gdrive://{drive_env.root_id}/fakes/a.png"
    storage.write_bytes(uri, b"x" * 300)
    storage.write_bytes(f"gdrive://{drive_env.root_id}/fakes/empty.png", b"")
    assert (storage.size(uri), storage.size(f"gdrive://{drive_env.root_id}/fakes/empty.png")) == (300, 0)
    assert drive_env.calls["downloaded_bytes"] == 0
    with pytest.raises(StorageError, match="no such file"):
        storage.size(f"gdrive://{drive_env.root_id}/fakes/b.png")
    listed = drive_env.calls["list"]
    sized = dict(storage.list_sizes(f"gdrive://{drive_env.root_id}/fakes"))  # a rerun's listing of --out: sizes in it
    assert sized == {uri: 300, f"gdrive://{drive_env.root_id}/fakes/empty.png": 0}
    assert drive_env.calls["list"] - listed == 2 and drive_env.calls["downloaded_bytes"] == 0  # the folder, its page


def test_large_upload_is_resumable_in_chunks_and_overwrites(drive_env):
    backend = DriveStorage(resumable_threshold=256 * 1024)
    uri = f"gdrive://{drive_env.root_id}/big.bin"
    payload = os.urandom(600_000)
    backend.write_bytes(uri, payload)
    assert drive_env.calls["resumable_start"] == 1 and drive_env.calls["resumable_chunk"] == 3
    assert backend.read_bytes(uri) == payload
    backend.write_bytes(uri, b"smaller")
    assert backend.read_bytes(uri) == b"smaller"
    assert list(backend.list_files(f"gdrive://{drive_env.root_id}")) == [uri]


def test_listing_pages_recurses_and_filters(drive_env):
    root = drive_env.root_id
    for i in reversed(range(9)):
        drive_env.add(f"{i}.jpg", root, b"x")
    drive_env.add("readme.txt", root, b"x")
    sub = drive_env.add("sub", root)
    drive_env.add("deep.PNG", sub, b"x")
    backend = DriveStorage(page_size=4)
    listed = list(backend.list_files(f"gdrive://{root}/", suffixes=(".jpg", ".png")))
    assert sorted(listed[:9]) == [f"gdrive://{root}/{i}.jpg" for i in range(9)]
    assert listed[9:] == [f"gdrive://{root}/sub/deep.PNG"]
    assert drive_env.calls["list"] >= 3 + 1
    flat = list(backend.list_files(f"gdrive://{root}", recursive=False))
    assert len(flat) == 10 and f"gdrive://{root}/sub/deep.PNG" not in flat


def test_missing_file_and_folder_are_clear_errors(drive_env):
    with pytest.raises(NoSuchFileError, match="^gdrive://root-folder/nope.png: no such file$"):  # told apart: none there
        storage.read_bytes(f"gdrive://{drive_env.root_id}/nope.png")
    for missing in ("nope", "nope/deeper"):  # told apart from a listing's other failures
        with pytest.raises(NoSuchFolderError, match=f"^gdrive://root-folder/{missing}: no such folder$"):
            storage.list_files(f"gdrive://{drive_env.root_id}/{missing}")
    drive_env.add("a.png", drive_env.root_id, b"x")
    with pytest.raises(StorageError, match="^gdrive://root-folder/a.png: a file, not a folder$") as caught:
        storage.list_files(f"gdrive://{drive_env.root_id}/a.png")
    assert not isinstance(caught.value, NoSuchFolderError)  # nor "no such folder", as it was
    with pytest.raises(NoSuchFileError, match="^gdrive://unknown-folder-id/x.png: no such file$"):
        storage.read_bytes("gdrive://unknown-folder-id/x.png")


def test_write_without_permission_is_access_denied(drive_env, monkeypatch, tmp_path):
    drive_env.add("seen.png", drive_env.root_id, b"ok")
    token_file = write_token_file(tmp_path / "readonly.json", DRIVE_READONLY_TOKEN)
    monkeypatch.setenv("FAKESCOPE_GDRIVE_TOKEN", str(token_file))
    assert storage.read_bytes(f"gdrive://{drive_env.root_id}/seen.png") == b"ok"
    with pytest.raises(StorageError) as caught:
        storage.write_bytes(f"gdrive://{drive_env.root_id}/new.png", b"x")
    uri = f"gdrive://{drive_env.root_id}/new.png"
    assert (caught.value.reason, caught.value.source) == (
        f"access denied to write (check the Google credentials: {token_file} (named by FAKESCOPE_GDRIVE_TOKEN))", uri)
    assert str(caught.value) == f"{uri}: {caught.value.reason}" and DRIVE_READONLY_TOKEN not in str(caught.value)


def test_a_drive_error_on_one_file_names_its_uri_once_as_the_source(drive_env):
    drive_env.add("a.png", drive_env.root_id, b"aaa")
    uri = f"gdrive://{drive_env.root_id}/a.png"
    drive_env.fail("download", 400, "badRequest")
    with pytest.raises(StorageError) as caught:
        storage.read_bytes(uri)
    assert (caught.value.reason, caught.value.source) == ("cannot read: Drive returned HTTP 400", uri)
    assert str(caught.value) == f"{uri}: cannot read: Drive returned HTTP 400"


def test_a_file_deleted_between_its_lookup_and_its_download_is_no_file(drive_env):
    """Drive's 404 for the download of a file its path was just resolved to (deleted meanwhile) was a plain StorageError:
    now a `NoSuchFileError`, so a manifest read at once (`manifest_rows`) takes it for none yet, as one never there."""
    from fakescope.generate.manifest import manifest_rows

    uri = f"gdrive://{drive_env.root_id}/out/manifest.csv"
    storage.write_bytes(uri, b"uri,label\na.png,ai\n")
    assert list(manifest_rows(uri)) == ["a.png"]
    drive_env.fail("download", 404, "notFound")
    with pytest.raises(NoSuchFileError, match=f"^{uri}: no such file or folder$"):
        storage.read_bytes(uri)
    drive_env.fail("download", 404, "notFound")
    assert manifest_rows(uri) == {} and manifest_rows(f"gdrive://{drive_env.root_id}/none/manifest.csv") == {}


def test_missing_credentials_name_the_variables(monkeypatch, tmp_path):
    from google.auth.compute_engine import _metadata

    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud application-default file
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # never probe a metadata server
    with pytest.raises(StorageError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        DriveStorage().read_bytes("gdrive://folder/x.png")


@pytest.mark.parametrize("error", [socket.EAI_NONAME, socket.EAI_AGAIN])
def test_a_server_name_that_does_not_resolve_fails_at_once_a_resolver_hiccup_is_retried(drive_env, monkeypatch, error):
    resolve, asked = socket.getaddrinfo, []

    def no_such_host(host, *args, **kwargs):  # answered here, not by the machine's DNS (slow or absent offline)
        if host == "drive.invalid":
            asked.append(host)
            raise socket.gaierror(error, "no such name" if error == socket.EAI_NONAME else "try again")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    monkeypatch.setenv("FAKESCOPE_GDRIVE_ENDPOINT", "http://drive.invalid")
    unresolved = (r"^Google Drive unreachable: its server name does not resolve while reading gdrive://f/x.png; "
                  r"check FAKESCOPE_GDRIVE_ENDPOINT and the network$")
    with pytest.raises(StorageUnavailableError, match=unresolved):
        storage.read_bytes("gdrive://f/x.png")
    assert len(asked) == (1 if error == socket.EAI_NONAME else 2 + _gdrive.RETRIES)  # no request, or the client's retries


def test_a_large_non_image_named_jpg_costs_one_chunk_an_image_is_read_whole(drive_env):
    """A Drive file was downloaded whole before its signature was checked: a 1 GB non-image named `.jpg` cost 1 GB.
    Reads go in ranged chunks, and the check runs on the first: a wrong signature stops the download there."""
    from fakescope.io.image import check_signature

    backend, chunk = DriveStorage(download_chunk=256 * 1024), 256 * 1024
    drive_env.add("huge.jpg", drive_env.root_id, b"not an image at all" + bytes(10 * chunk))
    drive_env.add("big.png", drive_env.root_id, big := _png(1) + os.urandom(3 * chunk))  # in 4 chunks
    drive_env.add("empty.jpg", drive_env.root_id, b"")
    with pytest.raises(ImageLoadError, match=r"^not an image \(unrecognised file signature\)$"):
        backend.read_bytes(f"gdrive://{drive_env.root_id}/huge.jpg", check=check_signature)
    assert (drive_env.calls["download"], drive_env.calls["downloaded_bytes"]) == (1, chunk)
    assert backend.read_bytes(f"gdrive://{drive_env.root_id}/big.png", check=check_signature) == big
    assert (drive_env.calls["download"], drive_env.calls["downloaded_bytes"]) == (5, chunk + len(big))
    assert backend.read_bytes(f"gdrive://{drive_env.root_id}/empty.jpg", check=check_signature) == b""  # Drive's 416


def test_reads_from_many_threads_each_get_their_own_file(drive_env):
    """Decoding workers and generate's requests share one backend; one httplib2 connection cannot be shared."""
    payloads = {f"gdrive://{drive_env.root_id}/{i}.png": os.urandom(100_000 + i) for i in range(24)}
    for uri, data in payloads.items():
        drive_env.add(uri.rsplit("/", 1)[1], drive_env.root_id, data)
    backend = DriveStorage()
    with ThreadPoolExecutor(8) as pool:
        read = list(pool.map(backend.read_bytes, list(payloads) * 2))
    assert read == list(payloads.values()) * 2


def test_rate_limits_and_server_errors_are_retried(drive_env, caplog):
    drive_env.add("a.png", drive_env.root_id, b"aaa")
    for status, reason in ((429, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (503, "backendError")):
        drive_env.fail("list", status, reason)
    drive_env.fail("download", 403, "rateLimitExceeded", times=2)
    assert list(storage.list_files(f"gdrive://{drive_env.root_id}")) == [f"gdrive://{drive_env.root_id}/a.png"]
    assert storage.read_bytes(f"gdrive://{drive_env.root_id}/a.png") == b"aaa"
    drive_env.fail("upload", 500, "backendError")
    storage.write_bytes(f"gdrive://{drive_env.root_id}/b.png", b"bbb")
    backend = DriveStorage(resumable_threshold=256 * 1024)
    payload = os.urandom(600_000)
    drive_env.calls.clear()
    drive_env.fail("upload", 503, "backendError", times=2)  # the session's start, then its first chunk
    backend.write_bytes(f"gdrive://{drive_env.root_id}/big.bin", payload)
    assert backend.read_bytes(f"gdrive://{drive_env.root_id}/big.bin") == payload
    assert drive_env.calls["resumable_start"] == 1  # the chunk was sent again within the session
    names = sorted(f["name"] for f in drive_env.files.values())
    assert names == ["a.png", "b.png", "big.bin", "root"]
    assert f"before retry 1 of {_gdrive.RETRIES} for request: GET" in caplog.text  # the client logs each retry


def test_an_upload_whose_connection_drops_goes_on_in_its_session(drive_env, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="fakescope.io._gdrive")
    monkeypatch.setattr(googleapiclient.http, "DEFAULT_HTTP_TIMEOUT_SEC", 2)  # httplib2 resends the spent chunk: a timeout
    backend = DriveStorage(resumable_threshold=256 * 1024)
    payload = os.urandom(600_000)
    drive_env.fail("chunk", 0, "drop", times=3)
    backend.write_bytes(f"gdrive://{drive_env.root_id}/big.bin", payload)
    assert backend.read_bytes(f"gdrive://{drive_env.root_id}/big.bin") == payload
    assert drive_env.calls["resumable_start"] == 1
    assert "Google Drive dropped an upload (TimeoutError); retry 1 of 5" in caplog.text


def test_a_rate_limit_that_outlasts_the_retries_is_an_outage_not_a_denial(drive_env):
    drive_env.add("a.png", drive_env.root_id, b"aaa")
    drive_env.fail("download", 403, "userRateLimitExceeded", times=_gdrive.RETRIES + 1)
    with pytest.raises(StorageUnavailableError) as caught:
        storage.read_bytes(f"gdrive://{drive_env.root_id}/a.png")
    assert str(caught.value) == (
        f"Google Drive busy: it still answered HTTP 403 (userRateLimitExceeded) after {_gdrive.RETRIES} retries "
        f"while reading gdrive://{drive_env.root_id}/a.png; try again later"
    )
    assert drive_env.calls["download"] == _gdrive.RETRIES + 1


def test_a_read_timing_out_past_the_retries_is_busy_and_a_connection_that_never_opens_is_unreachable(drive_env, monkeypatch):
    """A Drive read that timed out after the client's retries stopped a scan as "unreachable", while S3's read timeout is
    transient: now it is `StorageBusyError` too (a transient row). A connection that does not even open stays an outage."""
    monkeypatch.setattr(googleapiclient.http, "DEFAULT_HTTP_TIMEOUT_SEC", 0.2)  # for the clients built from here
    uri = f"gdrive://{drive_env.root_id}/a.png"
    drive_env.add("a.png", drive_env.root_id, b"aaa")
    drive_env.fail("download", 0, "stall", times=_gdrive.RETRIES + 1)
    with pytest.raises(StorageBusyError) as caught:
        DriveStorage().read_bytes(uri)
    assert str(caught.value) == (f"Google Drive did not answer in time after {_gdrive.RETRIES} retries while reading {uri}; "
                                 "try again later")
    assert drive_env.calls["download"] == _gdrive.RETRIES + 1
    with socket.socket() as full:  # a server whose queue of connections is full: a new one never opens
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        with socket.create_connection(full.getsockname()):
            monkeypatch.setenv("FAKESCOPE_GDRIVE_ENDPOINT", f"http://127.0.0.1:{full.getsockname()[1]}")
            with pytest.raises(StorageUnavailableError) as caught:
                DriveStorage().read_bytes(uri)
    assert not isinstance(caught.value, StorageBusyError)
    assert str(caught.value) == (f"Google Drive unreachable (TimeoutError) while reading {uri}; "
                                 "check FAKESCOPE_GDRIVE_ENDPOINT and the network")


def test_drive_credentials_reach_no_error_text(drive_env, caplog):
    """A busy answer's reason went into the error as Drive (or a proxy before it) wrote it, so one echoing the request's
    access token (in no environment variable: read from the token file) showed it."""
    caplog.set_level(logging.DEBUG)
    drive_env.add("a.png", drive_env.root_id, b"aaa")
    drive_env.fail("download", 503, f"proxy refused Authorization: Bearer {DRIVE_TOKEN}", times=_gdrive.RETRIES + 1)
    with pytest.raises(StorageUnavailableError) as caught:
        storage.read_bytes(f"gdrive://{drive_env.root_id}/a.png")
    assert str(caught.value).startswith("Google Drive busy: it still answered HTTP 503 (busy) after ")
    for secret in (DRIVE_TOKEN, os.environ["FAKESCOPE_GDRIVE_TOKEN"]):
        assert secret not in str(caught.value) + caplog.text


def test_a_scan_rides_out_rate_limits_and_records_one_that_outlasts_them_as_transient(drive_env, tiny_model_dir, tmp_path):
    """A rate limit outlasting the retries stopped the whole scan as an outage: now that file is a transient row (the
    others are scored) and a rerun reads it again."""
    for i in range(4):
        drive_env.add(f"{i}.png", drive_env.root_id, _png(i))
    args = ["scan", f"gdrive://{drive_env.root_id}", "--out", str(tmp_path / "res"), "--model", str(tiny_model_dir),
            "--device", "cpu", "--no-provenance", "--runtime", "torch", "--workers", "1"]
    drive_env.fail("download", 503, "backendError", times=2)
    drive_env.fail("download", 429, "rateLimitExceeded", times=_gdrive.RETRIES + 1)
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert first.stdout.startswith("scanned 4  failed 1 (1 to retry: rerun the scan)  skipped (done before) 0 ")
    rows = read_results(tmp_path / "res").set_index("path")
    assert rows.loc[f"gdrive://{drive_env.root_id}/0.png", ["error", "error_kind"]].tolist() == [
        f"Google Drive busy: it still answered HTTP 429 (rateLimitExceeded) after {_gdrive.RETRIES} retries while reading "
        f"gdrive://{drive_env.root_id}/0.png; try again later", "transient"]
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.stdout.startswith("scanned 1  failed 0  skipped (done before) 3 "), again.output
    assert read_results(tmp_path / "res")["error"].isna().all()


def test_trashed_files_are_neither_listed_read_nor_overwritten(drive_env):
    root = drive_env.root_id
    drive_env.add("kept.png", root, b"kept")
    drive_env.add("gone.png", root, b"old", trashed=True)
    bin_folder = drive_env.add("binned", root, trashed=True)
    drive_env.add("inside.png", bin_folder, b"x")
    assert list(storage.list_files(f"gdrive://{root}")) == [f"gdrive://{root}/kept.png"]
    with pytest.raises(StorageError, match="no such file"):
        storage.read_bytes(f"gdrive://{root}/gone.png")
    storage.write_bytes(f"gdrive://{root}/gone.png", b"new")
    assert storage.read_bytes(f"gdrive://{root}/gone.png") == b"new"
    assert sorted(drive_env.contents[i] for i, f in drive_env.files.items() if f["name"] == "gone.png") == [b"new", b"old"]


def test_names_with_quotes_and_backslashes_round_trip(drive_env):
    uri = f"gdrive://{drive_env.root_id}/O'Brien's \"set\"/it's a \\ test.png"
    storage.write_bytes(uri, b"quoted")
    assert storage.read_bytes(uri) == b"quoted" and storage.exists(uri)
    assert list(storage.list_files(f"gdrive://{drive_env.root_id}")) == [uri]
    storage.write_bytes(uri, b"again")
    assert len(drive_env.files) == 3  # root, the folder and the file: overwritten, not duplicated


def test_a_folder_of_2500_files_is_listed_whole_in_pages_of_1000(drive_env):
    for i in range(2500):
        drive_env.add(f"{i:04d}.jpg", drive_env.root_id, b"")
    listed = list(storage.list_files(f"gdrive://{drive_env.root_id}", suffixes=(".jpg",)))
    assert sorted(listed) == [f"gdrive://{drive_env.root_id}/{i:04d}.jpg" for i in range(2500)]
    assert drive_env.calls["list"] == 3


def test_an_unknown_folder_id_is_a_missing_file_not_an_error_for_exists(drive_env):
    assert not storage.exists("gdrive://unknown-folder-id/x.png")
    with pytest.raises(StorageError, match="^gdrive://unknown-folder-id: no such file or folder$"):
        list(storage.list_files("gdrive://unknown-folder-id"))


def test_shortcuts_are_followed_and_google_docs_are_not_listed(drive_env):
    root = drive_env.root_id
    photo = drive_env.add("photo.png", root, b"PNG")
    linked = drive_env.add("linked", root)
    drive_env.add("via-shortcut.png", linked, target=photo)
    drive_env.add("loop", linked, target=root)  # a shortcut to an ancestor: walked once
    drive_env.add("notes.png", linked, mime=DOC_MIME)
    listed = list(storage.list_files(f"gdrive://{root}", suffixes=(".png",)))
    assert listed == [f"gdrive://{root}/photo.png", f"gdrive://{root}/linked/via-shortcut.png"]
    assert storage.read_bytes(f"gdrive://{root}/linked/via-shortcut.png") == b"PNG"
    assert storage.read_bytes(f"gdrive://{root}/linked/loop/photo.png") == b"PNG"
    shortcut = f"gdrive://{root}/linked/via-shortcut.png"  # Drive gives no target's size in a page: asked in a batch
    assert list(storage.list_sizes(f"gdrive://{root}/linked", recursive=False)) == [(shortcut, 3)]
    with pytest.raises(StorageError, match=r"^gdrive://root-folder/linked/notes.png: a Google Docs Editors file"):
        storage.read_bytes(f"gdrive://{root}/linked/notes.png")


def test_a_shortcut_s_size_existence_and_bytes_are_its_target_s_and_one_to_nothing_names_no_file(drive_env):
    """A shortcut's size was None (unknown: an empty target passed for a whole file) and one whose target was deleted
    or trashed existed, though reading it failed; writing onto one to nothing failed (Drive's 404 for its target)."""
    root = drive_env.root_id
    photo, empty = drive_env.add("photo.png", root, b"P" * 300), drive_env.add("empty.png", root, b"")
    gone, trashed = drive_env.add("gone.png", root, b"x"), drive_env.add("trashed.png", root, b"x")
    links = drive_env.add("links", root)
    for name, target in (("photo", photo), ("empty", empty), ("gone", gone), ("trashed", trashed)):
        drive_env.add(f"to-{name}.png", links, target=target)
    with drive_env._lock:
        del drive_env.files[gone], drive_env.contents[gone]
        drive_env.files[trashed]["trashed"] = True
    uri = f"gdrive://{root}/links/to-%s.png"
    assert dict(storage.list_sizes(f"gdrive://{root}/links")) == {uri % "empty": 0, uri % "gone": None,
                                                                   uri % "photo": 300, uri % "trashed": None}
    assert (storage.size(uri % "photo"), storage.size(uri % "empty")) == (300, 0)
    assert storage.exists(uri % "photo") and storage.read_bytes(uri % "photo") == b"P" * 300
    for name in ("gone", "trashed"):
        assert not storage.exists(uri % name)
        for ask in (storage.size, storage.read_bytes):
            with pytest.raises(NoSuchFileError, match=rf"^{re.escape(uri % name)}: no such file \(a shortcut whose "
                                                      r"target was deleted or trashed\)$"):
                ask(uri % name)
    storage.write_bytes(uri % "gone", b"new")  # the file takes the shortcut's place
    assert storage.read_bytes(uri % "gone") == b"new" and storage.size(uri % "gone") == 3
    assert [f["name"] for f in drive_env.files.values() if f["parents"] == [links]].count("to-gone.png") == 1


def test_a_listing_s_shortcut_sizes_cost_one_batch_per_hundred_targets_not_a_request_each(drive_env):
    """A shortcut's size (its target's) was asked for one shortcut at a time, a look-up of its name and a files.get
    each, so generate's plan over a --out of 10,000 shortcuts sent 20,000 requests: a listing now asks for them in
    Drive's batches, each target once (many shortcuts may share one), 100 a batch; a plain file list asks for none."""
    root = drive_env.root_id
    targets = [drive_env.add(f"t{i}.png", root, b"T" * i) for i in range(150)]
    folder = drive_env.add("links", root)
    for i in range(300):
        drive_env.add(f"to-{i:03}.png", folder, target=targets[i % 150])
    drive_env.calls.clear()
    listed = dict(storage.list_sizes(f"gdrive://{root}/links"))
    assert listed == {f"gdrive://{root}/links/to-{i:03}.png": i % 150 for i in range(300)}
    assert (drive_env.calls["batch"], drive_env.calls["get"]) == (2, 0)
    drive_env.calls.clear()
    assert len(list(storage.list_files(f"gdrive://{root}/links"))) == 300 and drive_env.calls["batch"] == 0
    drive_env.fail("batch", 503, "backendError")  # a batch refused: its sizes unknown, for `size` to ask, not a failure
    listed = dict(storage.list_sizes(f"gdrive://{root}/links"))
    assert sum(size is None for size in listed.values()) == 200 and storage.size(f"gdrive://{root}/links/to-000.png") == 0


def test_writes_from_many_threads_into_a_new_folder_make_it_once(drive_env):
    """generate -j N writes its first N images at once; Drive would take twin folders of one name."""
    uris = [f"gdrive://{drive_env.root_id}/fakes/run1/{i}.png" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(storage.write_bytes, uris, [b"x"] * len(uris)))
    folders = sorted(f["name"] for f in drive_env.files.values() if f["mimeType"] == FOLDER_MIME)
    assert folders == ["fakes", "root", "run1"]
    assert sorted(storage.list_files(f"gdrive://{drive_env.root_id}")) == sorted(uris)


def test_names_holding_a_slash_are_listed_as_uris_that_read_back(drive_env):
    root = drive_env.root_id
    drive_env.add("2024/05 holiday.png", root, b"dated")
    drive_env.add("c.png", drive_env.add("a/b", root), b"nested")
    listed = list(storage.list_files(f"gdrive://{root}"))
    assert listed == [f"gdrive://{root}/2024%2F05 holiday.png", f"gdrive://{root}/a%2Fb/c.png"]
    assert [storage.read_bytes(uri) for uri in listed] == [b"dated", b"nested"]
    storage.write_bytes(f"gdrive://{root}/x%2Fy.png", b"new")
    assert any(f["name"] == "x/y.png" for f in drive_env.files.values())


def test_twins_of_one_name_are_listed_once_as_the_oldest_which_reads_and_writes_use(drive_env, caplog):
    root = drive_env.root_id
    drive_env.add("dup.png", root, b"oldest")
    drive_env.add("dup.png", root, b"newer")
    twins = [drive_env.add("run", root) for _ in range(2)]
    drive_env.add("a.png", twins[0], b"a")
    drive_env.add("b.png", twins[1], b"b")  # no path reaches it
    assert list(storage.list_files(f"gdrive://{root}")) == [f"gdrive://{root}/dup.png", f"gdrive://{root}/run/a.png"]
    assert storage.read_bytes(f"gdrive://{root}/dup.png") == b"oldest"
    assert f"gdrive://{root}/dup.png: Drive holds another item of this name there; only the oldest is used" in caplog.text
    assert f"gdrive://{root}/run:" in caplog.text


def test_google_application_credentials_may_name_an_authorized_user_file(drive_env, monkeypatch, tmp_path):
    """The file `gcloud auth application-default login` writes, which Google's libraries take there."""
    drive_env.add("a.png", drive_env.root_id, b"ok")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", os.environ.pop("FAKESCOPE_GDRIVE_TOKEN"))
    assert storage.read_bytes(f"gdrive://{drive_env.root_id}/a.png") == b"ok"


@pytest.mark.parametrize("variable", ["GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN"])
def test_a_broken_credentials_file_is_named_never_quoted(drive_env, monkeypatch, tmp_path, caplog, variable):
    secret = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----\\n"
    broken = tmp_path / "key.json"
    broken.write_text('{"type": "service_account", "private_key": "' + secret + '", "client_email": "x@y", ')
    monkeypatch.delenv("FAKESCOPE_GDRIVE_TOKEN")
    monkeypatch.setenv(variable, str(broken))
    result = CliRunner().invoke(app, ["detect", f"gdrive://{drive_env.root_id}/a.png", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot use {broken} (named by {variable}) as Google Drive credentials: ")
    assert result.stderr.count("\n") == 1 and "MIIEvQIBADAN" not in result.output + caplog.text
    monkeypatch.setenv(variable, str(tmp_path / "absent.json"))
    with pytest.raises(StorageUnavailableError, match=rf"^cannot use {variable} as Google Drive credentials: it names no file$"):
        DriveStorage().read_bytes(f"gdrive://{drive_env.root_id}/a.png")


@pytest.mark.parametrize("variable", ["GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN"])
def test_credentials_pasted_into_the_variable_are_never_echoed(drive_env, monkeypatch, caplog, variable):
    """CI secrets often put the key itself, not a path, in GOOGLE_APPLICATION_CREDENTIALS."""
    pasted = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n"}'
    monkeypatch.delenv("FAKESCOPE_GDRIVE_TOKEN")
    monkeypatch.setenv(variable, pasted)
    result = CliRunner().invoke(app, ["detect", f"gdrive://{drive_env.root_id}/a.png", "--device", "cpu"])
    assert result.exit_code == 2
    assert result.stderr == f"error: cannot use {variable} as Google Drive credentials: it names no file\n"
    assert "MIIEvQIBADAN" not in result.output + caplog.text


def _live_folders(drive, name: str) -> list[str]:
    return [f["id"] for f in drive.files.values() if f["name"] == name and f["mimeType"] == FOLDER_MIME]


def test_folder_ids_are_looked_up_once_per_storage_object(drive_env):
    """Every path was walked from the root, one files.list per folder: 5 writes, 5 reads and an exists() below
    set/a/b took 44 look-ups. The folder ids are now remembered: the first path walks, every other takes one."""
    backend = DriveStorage()
    uris = [f"gdrive://{drive_env.root_id}/set/a/b/{i}.png" for i in range(5)]
    for uri in uris:
        backend.write_bytes(uri, uri.encode())
    assert [backend.read_bytes(uri) for uri in uris] == [uri.encode() for uri in uris]
    assert backend.exists(uris[0])
    # 3 folders made, each listed once more (a twin made elsewhere at that moment?)
    assert drive_env.calls["list"] == 4 + 3 + 4 + 5 + 1 and drive_env.calls["create"] == 3


def test_a_remembered_folder_deleted_meanwhile_is_walked_again(drive_env):
    backend = DriveStorage()
    root = f"gdrive://{drive_env.root_id}/set/a"
    backend.write_bytes(f"{root}/x.png", b"x")
    drive_env.files.pop(_live_folders(drive_env, "a")[0])  # deleted by someone else: its id now answers 404
    with pytest.raises(StorageError, match=f"^{root}/x.png: no such file$"):
        backend.read_bytes(f"{root}/x.png")
    assert backend.twins(f"{root}/lease") == [] and not backend.exists(root)
    backend.write_bytes(f"{root}/y.png", b"y")  # into a new folder a, not the deleted one
    again = _live_folders(drive_env, "a")
    assert len(again) == 1 and backend.read_bytes(f"{root}/y.png") == b"y"
    drive_env.files.pop(again[0])
    twin_id, _ = backend.create_twin(f"{root}/lease", b"{}")  # Drive refuses a create into the deleted folder
    assert drive_env.files[twin_id]["parents"] == _live_folders(drive_env, "a")
    assert [t["id"] for t in backend.twins(f"{root}/lease")] == [twin_id]


def test_a_remembered_folder_trashed_meanwhile_is_looked_up_again_once_its_id_is_old(drive_env):
    """Drive still answers for a trashed folder's id, so only the id's age can tell: writes went on into the trash."""
    backend = DriveStorage()
    root = f"gdrive://{drive_env.root_id}/set/a"
    backend.write_bytes(f"{root}/x.png", b"x")
    (trashed,) = _live_folders(drive_env, "a")
    drive_env.files[trashed]["trashed"] = True
    backend.write_bytes(f"{root}/y.png", b"y")  # within folder_ttl_s: into the remembered folder, as Drive allows
    backend.folder_ttl_s = 0
    backend.write_bytes(f"{root}/z.png", b"z")  # an old id: walked again, into a new folder a
    (live,) = [i for i in _live_folders(drive_env, "a") if i != trashed]
    assert [f["name"] for f in drive_env.files.values() if f["parents"] == [live]] == ["z.png"]


def test_a_folder_made_elsewhere_after_a_miss_is_found(drive_env):
    """Only folders found or made are remembered: a path found missing is looked up again next time."""
    backend = DriveStorage()
    uri = f"gdrive://{drive_env.root_id}/later/new/f.png"
    assert not backend.exists(uri)
    later = drive_env.add("later", drive_env.root_id)
    assert not backend.exists(uri)
    drive_env.add("f.png", drive_env.add("new", later), b"f")
    assert backend.exists(uri) and backend.read_bytes(uri) == b"f"
    backend.write_bytes(uri, b"g")
    assert backend.read_bytes(uri) == b"g" and len(_live_folders(drive_env, "new")) == 1


def test_twins_made_in_one_millisecond_are_listed_in_one_order_for_every_run(drive_env):
    """Drive orders by createdTime only, so two lease files made in one millisecond could be listed oldest-first in
    different orders to two runs, and each take the lease for its own; ties are now broken by id."""
    backend = DriveStorage()
    uri = f"gdrive://{drive_env.root_id}/out/lease"
    first, _ = backend.create_twin(uri, b"a")
    second, _ = backend.create_twin(uri, b"b")
    with drive_env._lock:  # made in one millisecond, the later one listed first
        drive_env.files[second]["createdTime"] = drive_env.files[first]["createdTime"]
        drive_env.files = {second: drive_env.files.pop(second), **drive_env.files}
    assert [t["id"] for t in backend.twins(uri)] == sorted([first, second])


def test_every_listing_of_one_name_is_read_to_its_last_page(drive_env):
    """A name's twins were listed from one page (of 100; of 10 for a path's look-up) whose nextPageToken was not even
    asked for: a name with more twins, or a Drive answering short pages, hid the rest (an older lease file among
    them). Here Drive answers pages of 2: every twin is listed, and a path reads the oldest wherever it is listed."""
    backend = DriveStorage()
    uri = f"gdrive://{drive_env.root_id}/out/lease"
    made = [backend.create_twin(uri, str(i).encode())[0] for i in range(5)]
    drive_env.page_cap = 2
    assert [t["id"] for t in backend.twins(uri)] == made
    lowest = min(made)
    with drive_env._lock:  # all made in one millisecond, the lowest id (the oldest by every run's order) listed last
        for file_id in made:
            drive_env.files[file_id]["createdTime"] = drive_env.files[made[0]]["createdTime"]
        drive_env.files[lowest] = drive_env.files.pop(lowest)
    drive_env.calls.clear()
    assert backend.read_bytes(uri) == str(made.index(lowest)).encode()
    assert drive_env.calls["list"] == 3  # the folder's id remembered: one listing of the name, in 3 pages


@pytest.mark.parametrize("page_size", [1000, 1])
def test_two_machines_making_one_new_folder_at_the_same_moment_meet_in_the_oldest(drive_env, page_size):
    """Two runs (two storage objects: no shared lock) each found `out` missing and made one, as Drive allows: the
    second's lease file then sat in a folder of its own and was later "gone". The younger, empty, is now deleted and
    both write into the oldest, also where the folders of that name are listed one a page."""
    backends = [DriveStorage(page_size=page_size), DriveStorage(page_size=page_size)]
    both_missed = threading.Barrier(2)
    for backend in backends:
        find = backend._find_child

        def find_then_meet(parent, name, cached=False, find=find):  # both look before either makes it
            found = find(parent, name, cached)
            if name == "out" and found is None and not both_missed.broken:
                both_missed.wait(60)  # bounds a failure: the other's listing takes milliseconds
            return found

        backend._find_child = find_then_meet
    uri = f"gdrive://{drive_env.root_id}/out/{LEASE_NAME}"
    with ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda b: b.create_twin(uri, b"{}")[0], backends))
    assert drive_env.calls["create"] == 2  # both folders were made
    (out,) = _live_folders(drive_env, "out")
    assert all(drive_env.files[i]["parents"] == [out] for i in made)
    assert [sorted(t["id"] for t in b.twins(uri)) for b in backends] == [sorted(made)] * 2  # each run sees the other


def test_remove_deletes_the_file_a_path_names_and_refuses_a_folder(drive_env):
    uri = f"gdrive://{drive_env.root_id}/set/a.png"
    storage.write_bytes(uri, b"a")
    storage.remove(uri)
    storage.remove(uri)  # gone already: no error
    assert not storage.exists(uri) and not storage.exists(f"gdrive://{drive_env.root_id}/set")
    with pytest.raises(StorageError, match="a folder, not a file"):
        storage.remove(f"gdrive://{drive_env.root_id}/set")


def _expired_token_file(path: Path, refresh_token: str) -> Path:
    """An authorized-user file whose access token expired (google-auth renews it at its own endpoint, whatever the file
    says: the test points that at the loopback server)."""
    path.write_text(json.dumps({
        "type": "authorized_user", "token": "expired-access-token", "refresh_token": refresh_token,
        "client_id": "test-client", "client_secret": "test-secret", "expiry": "2000-01-01T00:00:00Z",
    }))
    return path


def test_an_expired_token_is_renewed_and_a_revoked_one_is_one_line_naming_its_file(drive_env, monkeypatch, tmp_path, caplog):
    import google.oauth2.credentials

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", f"{drive_env.url}/token")
    drive_env.add("a.png", drive_env.root_id, b"ok")
    uri = f"gdrive://{drive_env.root_id}/a.png"
    renewable = _expired_token_file(tmp_path / "renew.json", DRIVE_REFRESH_TOKEN)
    monkeypatch.setenv("FAKESCOPE_GDRIVE_TOKEN", str(renewable))
    assert DriveStorage().read_bytes(uri) == b"ok" and drive_env.calls["refresh"] == 1
    revoked = _expired_token_file(tmp_path / "revoked.json", "revoked-refresh-token")
    monkeypatch.setenv("FAKESCOPE_GDRIVE_TOKEN", str(revoked))
    result = CliRunner().invoke(app, ["detect", uri, "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr == (
        f"error: Google refused to renew the token of {revoked} (named by FAKESCOPE_GDRIVE_TOKEN) (invalid_grant) while "
        f"listing gdrive://{drive_env.root_id}/a.png: it is expired or revoked; make a new one\n"), result.output
    assert drive_env.calls["refresh"] > 1  # google-auth asked the token endpoint, which refused
    for secret in ("revoked-refresh-token", "expired-access-token", DRIVE_TOKEN, "test-secret"):
        assert secret not in result.output + caplog.text


def test_an_access_token_drive_refuses_stops_the_run_in_one_line_naming_its_file(drive_env, monkeypatch, tmp_path, caplog):
    """Drive's 401 makes google-auth renew the token: refused, that was each file's own error (a scan went on, every file
    failing alike, naming no credentials); now the run stops in one line naming the file."""
    import google.oauth2.credentials

    monkeypatch.setattr(google.oauth2.credentials, "_GOOGLE_OAUTH2_TOKEN_ENDPOINT", f"{drive_env.url}/token")
    drive_env.add("a.png", drive_env.root_id, b"ok")
    drive_env.add("b.png", drive_env.root_id, b"ok")
    wrong = write_token_file(tmp_path / "wrong.json", "not-the-token")
    monkeypatch.setenv("FAKESCOPE_GDRIVE_TOKEN", str(wrong))
    result = CliRunner().invoke(app, ["detect", f"gdrive://{drive_env.root_id}", "--device", "cpu"])
    assert result.exit_code == 2 and result.stderr.startswith(
        f"error: Google refused to renew the token of {wrong} (named by FAKESCOPE_GDRIVE_TOKEN) (invalid_grant) while "), \
        result.output
    assert result.stderr.count("\n") == 1 and "not-the-token" not in result.output + caplog.text
