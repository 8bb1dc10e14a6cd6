"""Generation, dataset building and evaluation with S3 on both ends, against the loopback SeaweedFS server."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import StorageError, StorageUnavailableError
from fakescope.generate.lease import LEASE_NAME, Lease
from fakescope.io import storage

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
sys.path.insert(0, str(Path(__file__).parents[1] / "evaluate"))
from evaluate_helpers import write_dataset  # noqa: E402
from lease_race import stops_paying_once_taken_over, two_runs_into_one_output  # noqa: E402
from openai_server import ImagesAPIServer  # noqa: E402


def _png(size: tuple[int, int], seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 30 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def _manifest(uri: str) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(storage.read_bytes(uri)), keep_default_na=False)


def test_openai_generation_from_s3_to_s3_resumes_without_paying_twice(s3_bucket, tmp_path, monkeypatch):
    reals = [f"s3://{s3_bucket}/faces/real/{i:05d}.png" for i in range(3)]
    for i, uri in enumerate(reals):
        storage.write_bytes(uri, _png((64, 64), i))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))  # the default ledger of a remote --out lives there
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = f"s3://{s3_bucket}/faces/fake/dall-e-2"
    args = ["generate", "openai", f"s3://{s3_bucket}/faces/real", "--out", out, "--model", "dall-e-2", "--size", "256x256", "-j", "2"]
    try:
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        assert "done 3," in first.output and server.billable == 3
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0 and "done 0, already done 3" in again.output and server.billable == 3
        slashed = CliRunner().invoke(app, [*args[:4], out + "/", *args[5:]])  # the same folder, the same ledger
        assert slashed.exit_code == 0 and "done 0, already done 3" in slashed.output and server.billable == 3
        monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "elsewhere"))  # another machine: no ledger of its own
        read, read_bytes = [], storage.read_bytes
        monkeypatch.setattr(storage, "read_bytes", lambda uri, **options: read.append(uri) or read_bytes(uri, **options))
        elsewhere = CliRunner().invoke(app, args)
        assert elsewhere.exit_code == 0 and "done 0, already done 3" in elsewhere.output, elsewhere.output
        assert server.billable == 3 and not [uri for uri in read if uri.startswith(out + "/") and uri.endswith(".png")]  # manifest rows
    finally:
        server.stop()
    assert list((tmp_path / "cache" / "ledgers").glob("*.sqlite"))
    manifest = _manifest(f"{out}/manifest.csv")
    assert len(manifest) == 3 and set(manifest["generator"]) == {"dall-e-2"}
    assert sorted(manifest["source_uri"]) == reals
    for uri in manifest["uri"]:
        assert uri.startswith(out + "/") and Image.open(io.BytesIO(storage.read_bytes(uri))).size == (256, 256)


def test_openai_rerun_into_s3_remakes_only_the_outputs_deleted_from_the_bucket(s3_bucket, tmp_path, monkeypatch):
    """A deleted output the ledger records as done was counted as done; the rerun now lists the bucket once (no request
    per image) and pays only for what is missing."""
    import boto3

    server, out, args = _openai_into_s3(s3_bucket, 4, tmp_path, monkeypatch)
    try:
        assert CliRunner().invoke(app, args).exit_code == 0 and server.billable == 4
        gone = sorted(_manifest(f"{out}/manifest.csv")["uri"])[:2]
        for uri in gone:
            boto3.client("s3").delete_object(Bucket=s3_bucket, Key=uri.removeprefix(f"s3://{s3_bucket}/"))
        checked, exists = [], storage.exists
        monkeypatch.setattr(storage, "exists", lambda uri: checked.append(uri) or exists(uri))
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0 and "done 2, already done 2," in again.stdout and server.billable == 6, again.output
        assert again.stderr == (f"warning: 2 image(s) the ledger records as made were not in {out} (deleted, damaged, or "
                                "in another folder): they are made (and paid for) again\n")
        assert sorted(uri for uri in checked if uri.endswith(".png")) == gone  # the two listed missing, none of the others
        assert all(storage.exists(uri) for uri in gone)
        last = CliRunner().invoke(app, args)
        assert last.exit_code == 0 and "done 0, already done 4," in last.stdout and not last.stderr and server.billable == 6
    finally:
        server.stop()


def test_openai_rerun_into_s3_remakes_a_zero_byte_output_with_a_warning(s3_bucket, tmp_path, monkeypatch, caplog):
    """A zero-byte object at a done output's name (an upload of nothing) was taken as made, in the plan and the run, with
    or without the ledger: its size, from the listing of --out (no download), now makes it again, paid, with a warning."""
    from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
    from fakescope.generate.runner import run_openai

    for i in range(3):
        storage.write_bytes(f"s3://{s3_bucket}/real/{i}.png", _png((48, 48), i))
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out, config = f"s3://{s3_bucket}/fake", OpenAIImagesConfig(model="dall-e-2", size="256x256")
    plans = []

    def run(ledger: str) -> object:
        return run_openai(f"s3://{s3_bucket}/real", out, config, ledger=tmp_path / ledger, confirm=lambda *p: plans.append(p),
                          client=make_client(max_retries=0))

    try:
        run("ledger.sqlite")
        empty = min(_manifest(f"{out}/manifest.csv")["uri"])
        for ledger, paid in (("ledger.sqlite", 4), ("elsewhere.sqlite", 5)):  # the ledger's done job; another machine's
            storage.write_bytes(empty, b"")
            read, read_bytes = [], storage.read_bytes
            monkeypatch.setattr(storage, "read_bytes", lambda uri, **options: read.append(uri) or read_bytes(uri, **options))  # noqa: B023 - used and undone within this iteration
            report = run(ledger)
            monkeypatch.setattr(storage, "read_bytes", read_bytes)
            assert plans[-1] == (3, 1, 2) and (report.done, report.skipped, server.billable) == (1, 2, paid)
            assert f"making {empty} again (paid again): the file there is empty" in caplog.text
            assert empty not in read and storage.size(empty) > 0
            caplog.clear()
    finally:
        server.stop()


def test_an_openai_rerun_into_s3_asks_nothing_per_output_the_listing_of_out_gave_its_size(s3_bucket, tmp_path, monkeypatch):
    """A rerun asked each output's size (a HEAD, to remake an empty one) twice, in its plan and in the run: one
    ListObjectsV2 of --out gives them all, so a rerun's requests no longer grow with the images --out holds. Each of its
    two listings of --out was asked whether --out exists first (a HEAD of it and a ListObjectsV2 of one key): no more."""
    from collections import Counter

    server, out, args = _openai_into_s3(s3_bucket, 3, tmp_path, monkeypatch)
    calls = []
    storage.get_storage(out).client.meta.events.register(  # each S3 operation once, its retries not counted
        "before-parameter-build.s3", lambda model, params, **_: calls.append((model.name, params.get("Key"))))
    try:
        assert CliRunner().invoke(app, args).exit_code == 0 and server.billable == 3
        outputs = {uri.removeprefix(f"s3://{s3_bucket}/") for uri in _manifest(f"{out}/manifest.csv")["uri"]}
        for cache, most in (("cache", 12), ("elsewhere", 13)):  # with its ledger; another machine's, without
            monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / cache))
            calls.clear()
            again = CliRunner().invoke(app, args)
            assert again.exit_code == 0 and "done 0, already done 3" in again.output and server.billable == 3
            assert not [call for call in calls if call[1] in outputs], calls  # 6 HEADs before
            assert ("HeadObject", "fake") not in calls, calls  # twice before
            assert Counter(name for name, _ in calls)["ListObjectsV2"] == 4 and len(calls) <= most, calls  # 6, 18, 20, then 14, 16 before
    finally:
        server.stop()


def test_an_openai_run_into_s3_reads_its_manifest_without_asking_first_whether_it_exists(s3_bucket, tmp_path, monkeypatch):
    """Each read of --out's manifest was asked first whether it exists: a HEAD of it (and, where none was there yet, a
    ListObjectsV2 of its name as a folder). It is now read at once, S3's NoSuchKey its absence: the requests on it went
    from 5 to 3 in a first run (2 HEADs and 2 listings, a PUT), 5 to 3 in a rerun, 7 to 4 in one on another machine."""
    server, out, args = _openai_into_s3(s3_bucket, 3, tmp_path, monkeypatch)
    calls = []
    storage.get_storage(out).client.meta.events.register(  # each S3 operation once, its retries not counted
        "before-parameter-build.s3", lambda model, params, **_: calls.append((model.name, params.get("Key"),
                                                                              params.get("Prefix"))))
    manifest = "fake/manifest.csv"
    try:
        for cache, reads in (("cache", 2), ("cache", 2), ("elsewhere", 3)):  # first run; rerun; another machine's
            monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / cache))
            calls.clear()
            done = CliRunner().invoke(app, args)
            assert done.exit_code == 0 and server.billable == 3, done.output
            asked = [name for name, key, prefix in calls if manifest in (key, (prefix or "").rstrip("/"))]
            assert asked == ["GetObject"] * reads + ["PutObject"], calls
    finally:
        server.stop()
    assert len(_manifest(f"{out}/manifest.csv")) == 3


def test_openai_generation_into_s3_killed_mid_way_pays_each_image_once(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))  # the default ledger of a remote --out lives there
    reals = [f"s3://{s3_bucket}/photos/p{i}.png" for i in range(6)]
    for i, uri in enumerate(reals):
        storage.write_bytes(uri, _png((40, 40), i))
    out = f"s3://{s3_bucket}/fakes"
    command = [sys.executable, "-c", "from fakescope.cli import app; app()", "generate", "openai", f"s3://{s3_bucket}/photos",
               "--out", out, "--mode", "variation", "--model", "dall-e-2", "--size", "256x256", "--concurrency", "2", "--max-retries", "0"]
    server = ImagesAPIServer(api_key="sk-s3").start()
    env = {**os.environ, "OPENAI_API_KEY": "sk-s3", "OPENAI_BASE_URL": server.base_url}
    try:
        server.hold_after = 3  # 3 images billed, the next 2 requests held unanswered (never billed)
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server.wait_held(first, billed=3, held=2)
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not storage.exists(f"{out}/manifest.csv")
        server.hold_after = None
        server.release.set()
        env["FAKESCOPE_CACHE"] = str(tmp_path / "elsewhere")  # resumed on another machine: the outputs tell what is done
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.stop()
    assert second.returncode == 0 and "done 3, already done 3" in second.stdout, second.stdout + second.stderr
    assert server.billable == 6 == len(set(server.paid))  # each photo paid for once
    manifest = _manifest(f"{out}/manifest.csv")
    outputs = sorted(storage.list_files(out, suffixes=(".png",)))
    assert sorted(manifest["uri"]) == outputs and len(outputs) == 6 and sorted(manifest["source_uri"]) == reals
    for uri, digest in zip(manifest["uri"], manifest["sha256"]):
        assert hashlib.sha256(storage.read_bytes(uri)).hexdigest() == digest


def test_an_output_outage_records_the_other_requests_in_flight_before_it_stops_the_run(s3_bucket, fault_proxy, tmp_path,
                                                                                        monkeypatch):
    """S3 failing the write of one image stopped the run with the other requests in flight unrecorded: answered and
    billed, they stayed `running` in the ledger, counted as maybe billed until a rerun. The run now waits for them and
    records each, then stops in one line; a rerun writes the spooled image without paying again."""
    from fakescope.generate.ledger import Ledger
    from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
    from fakescope.generate.runner import run_openai

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # read as the client is made: the outage outlasts its attempts at once
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"p{i}.png").write_bytes(_png((40, 40), i))
    out, ledger = f"s3://{s3_bucket}/fakes", tmp_path / "ledger.sqlite"
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256", price_per_image=0.01)
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    server.gather = 3  # all three sent before any is answered: a fast failure cannot stop the run before the third
    server.hold_after, server.answer_held = 1, True  # the first is answered then, the other two once it has failed
    fault_proxy.fail("PUT", 503, "ServiceUnavailable", suffix=".png")  # the first image's write

    def release() -> None:
        deadline = time.monotonic() + 30
        while (server.held < 2 or fault_proxy.injected < 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the outage is back at the run before they are answered
        server.release.set()

    threading.Thread(target=release, daemon=True).start()
    try:
        with pytest.raises(StorageUnavailableError, match=r"^S3 busy: it still answered ServiceUnavailable after retrying "
                                                          rf"while writing {out}/p\d-\S+\.png; try again later$"):
            run_openai(str(photos), out, config, ledger=ledger, concurrency=3, client=make_client(max_retries=0))
        assert server.billable == 3
        with Ledger(ledger) as book:
            records = list(book.jobs())
            assert sorted(record.state for record in records) == ["done", "done", "failed"]
            assert book.spent() == pytest.approx(0.03) and all(record.lost == 0 for record in records)
        server.hold_after, server.gather = None, 0
        again = run_openai(str(photos), out, config, ledger=ledger, client=make_client(max_retries=0))
    finally:
        server.stop()
    assert (again.recovered, again.skipped, again.done, server.billable) == (1, 2, 0, 3)


def test_two_runs_into_one_s3_output_are_kept_apart_by_its_lease(s3_bucket, tmp_path, monkeypatch):
    """Two machines (two ledgers) running into one s3:// --out were not locked against each other: both paid."""
    for i in range(4):
        storage.write_bytes(f"s3://{s3_bucket}/photos/p{i}.png", _png((40, 40), i))
    two_runs_into_one_output(f"s3://{s3_bucket}", tmp_path, monkeypatch)
    assert not storage.exists(f"s3://{s3_bucket}/fakes/{LEASE_NAME}")


def test_a_renewal_that_fails_in_an_unforeseen_way_stops_the_paying_at_once(s3_bucket, monkeypatch):
    """The renewal thread caught storage errors only: any other exception ended it silently, the run paid on
    unleased, and once the lease lapsed another run took it over and both paid."""
    out = f"s3://{s3_bucket}/fakes"
    lease = Lease(out, seconds=0.4)
    lease.acquire()

    def broken(*args, **kwargs):
        raise KeyError("etag")

    monkeypatch.setattr(lease.store, "put_if_match", broken)
    deadline = time.monotonic() + 10
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(StorageError, match=f"^the lease on {out}/{LEASE_NAME} could not be renewed: KeyError: 'etag'$"):
        lease.check()
    monkeypatch.undo()
    lease.release()


@pytest.mark.parametrize("hook", ["fakescope.generate.ledger.Ledger.jobs", "fakescope.generate._loop.ThreadPoolExecutor"])
def test_a_ctrl_c_once_the_lease_is_taken_lets_go_of_it_and_of_the_ledger(s3_bucket, tmp_path, monkeypatch, hook):
    """A KeyboardInterrupt after the lease and the ledger were taken but before the request loop kept both: the lease
    renewed until the process ended, the ledger claimed."""
    from fakescope.generate.ledger import Ledger
    from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
    from fakescope.generate.runner import run_openai

    for i in range(2):
        storage.write_bytes(f"s3://{s3_bucket}/photos/p{i}.png", _png((40, 40), i))
    src, out, ledger = f"s3://{s3_bucket}/photos", f"s3://{s3_bucket}/fakes", tmp_path / "ledger.sqlite"
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256")
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)

    def interrupt(*args, **kwargs):
        assert storage.exists(f"{out}/{LEASE_NAME}")  # the lease is held here
        raise KeyboardInterrupt

    try:
        with monkeypatch.context() as patch:
            patch.setattr(hook, interrupt)  # where a Ctrl-C could land, raised from the real call
            with pytest.raises(KeyboardInterrupt):
                run_openai(src, out, config, ledger=ledger, client=make_client(max_retries=0))
        assert not storage.exists(f"{out}/{LEASE_NAME}")
        Ledger(ledger, claim=True).close()  # not claimed any more
        report = run_openai(src, out, config, ledger=ledger, client=make_client(max_retries=0))
    finally:
        server.stop()
    assert (report.done, server.billable) == (2, 2)


def test_an_s3_lease_is_taken_over_once_it_was_not_renewed_and_its_loss_stops_the_holder(s3_bucket):
    out = f"s3://{s3_bucket}/fakes"
    storage.write_bytes(f"{out}/{LEASE_NAME}", json.dumps({"host": "elsewhere", "pid": 1}).encode())  # a dead machine's
    with pytest.raises(StorageError, match=rf"^another run \(host elsewhere, process 1\) is writing into {out} "):
        Lease(out).acquire()  # renewed moments ago (by 120 s: a loaded machine's seconds would not free it)
    time.sleep(2.5)
    lease = Lease(out, seconds=2)
    lease.acquire()  # not renewed for 2 s, by the server's clock: taken over
    storage.write_bytes(lease.uri, b"{}")  # as a run that took it over while this one could not renew it
    stops_paying_once_taken_over(lease, out)
    lease.release()
    assert storage.read_bytes(lease.uri) == b"{}"  # the other run's, left alone


def test_openai_generation_stops_paying_when_s3_is_unreachable_and_a_rerun_pays_nothing_twice(s3_bucket, s3_env, tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))  # the default ledger of a remote --out lives there
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        (photos / f"p{i}.png").write_bytes(_png((40, 40), i))
    out = f"s3://{s3_bucket}/fakes"
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    args = ["generate", "openai", str(photos), "--out", out, "--model", "dall-e-2", "--size", "256x256", "-j", "1", "--max-retries", "0"]
    try:
        with socket.socket() as dead:  # bound, not listening: connections are refused
            dead.bind(("127.0.0.1", 0))
            monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{dead.getsockname()[1]}")
            down = CliRunner().invoke(app, args)
        billed_while_down = server.billable
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)
        up = CliRunner().invoke(app, args)
    finally:
        server.stop()
    assert down.exit_code == 2 and down.stderr.startswith("error: S3 unreachable: no answer from the endpoint 127."), down.output
    assert down.stderr.endswith(f" while listing {out}; check AWS_ENDPOINT_URL_S3 and the network\n")  # the plan's listing
    assert down.stderr.count("\n") == 1
    assert billed_while_down == 0  # the run stopped at its look at what --out holds, before paying
    assert up.exit_code == 0, up.output
    assert server.billable == 4 == len(set(server.paid))
    assert sorted(_manifest(f"{out}/manifest.csv")["source_uri"]) == [str(p) for p in sorted(photos.iterdir())]


def test_taef2_reconstructions_from_s3_to_s3_then_a_manifest_built_over_s3(s3_bucket, tmp_path, taef2_random_weights,
                                                                             monkeypatch):
    root = f"s3://{s3_bucket}/set"
    sizes = [(48, 40), (64, 64), (40, 40)]
    for i, size in enumerate(sizes[:2]):
        storage.write_bytes(f"{root}/real/{i:05d}.png", _png(size, i))
    args = ["generate", "taef2", f"{root}/real", "--out", f"{root}/fake/taef2", "--weights", str(taef2_random_weights),
            "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 images written" in result.output
    storage.write_bytes(f"{root}/real/00002.png", _png(sizes[2], 2))
    read, read_bytes = [], storage.read_bytes
    monkeypatch.setattr(storage, "read_bytes", lambda uri, **options: read.append(uri) or read_bytes(uri, **options))
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0 and "1 images written" in resumed.output, resumed.output
    assert not [uri for uri in read if uri.startswith(f"{root}/fake/") and uri.endswith(".png")]  # rows from the manifest
    fakes = _manifest(f"{root}/fake/taef2/manifest.csv")
    assert len(fakes) == 3
    for row in fakes.itertuples():
        fake = Image.open(io.BytesIO(storage.read_bytes(row.uri)))
        real = Image.open(io.BytesIO(storage.read_bytes(row.source_uri)))
        assert fake.size == real.size == (row.width, row.height)

    built = tmp_path / "manifest.csv"
    result = CliRunner().invoke(app, ["dataset", "build", root, "--out", str(built)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(built, keep_default_na=False)
    assert sorted(frame["label"]) == ["ai"] * 3 + ["real"] * 3
    assert set(frame.loc[frame["label"] == "ai", "generator"]) == {"taef2"}
    assert all(uri.startswith(root + "/") for uri in frame["uri"])
    assert frame.groupby("pair_id").size().tolist() == [2, 2, 2]  # each reconstruction is paired with its photo


def test_training_rows_of_a_manifest_in_s3_resolve_against_its_prefix(s3_bucket):
    from fakescope.data import read_rows

    storage.write_bytes(f"s3://{s3_bucket}/set/manifest.csv", b"uri,label,split\nreal/a.png,real,train\nfake/b.png,ai,test\n")
    rows = read_rows(f"s3://{s3_bucket}/set/manifest.csv")
    assert rows["uri"].tolist() == [f"s3://{s3_bucket}/set/real/a.png", f"s3://{s3_bucket}/set/fake/b.png"]


def test_a_manifest_exported_as_a_tar_and_an_npy_pack_into_s3(s3_bucket, tmp_path):
    import tarfile

    import numpy as np

    for i in range(4):
        (tmp_path / "set" / ("real" if i % 2 else "fake")).mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / ("real" if i % 2 else "fake") / f"{i}.png").write_bytes(_png((40, 36), i))
    built = CliRunner().invoke(app, ["dataset", "build", str(tmp_path / "set"), "-o", str(tmp_path / "m.parquet")])
    assert built.exit_code == 0, built.output
    for name, layout in (("set.tar", "tar"), ("set.npy", "npy")):
        done = CliRunner().invoke(app, ["dataset", "export", str(tmp_path / "m.parquet"), f"s3://{s3_bucket}/{name}",
                                        "--layout", layout, "--size", "32"])
        assert done.exit_code == 0 and "4 images exported" in done.output, done.output
    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(f"s3://{s3_bucket}/set.tar"))) as tar:
        assert len(tar.getnames()) == 6 and "manifest.parquet" in tar.getnames()
    assert np.load(io.BytesIO(storage.read_bytes(f"s3://{s3_bucket}/set.npy"))).shape == (4, 32, 32, 3)


@pytest.mark.slow
def test_evaluate_explain_writes_its_figures_into_an_s3_out(s3_bucket, tmp_path, monkeypatch):
    write_dataset(tmp_path / "set", per_class=4)
    monkeypatch.chdir(tmp_path)
    out = f"s3://{s3_bucket}/eval"
    result = CliRunner().invoke(app, ["evaluate", "fakescope-default", str(tmp_path / "set" / "manifest.csv"), "--out", out,
                                      "--split", "all", "--no-robustness", "--bootstrap", "0", "--no-provenance",
                                      "--explain", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    figures = list(storage.list_files(f"{out}/figures", suffixes=(".png",)))
    assert any("/figures/umap_label.png" in uri for uri in figures) and any("/figures/heatmaps/" in uri for uri in figures)
    assert "UMAP" in storage.read_bytes(f"{out}/report.html").decode()
    assert not (tmp_path / "s3:").exists()  # not a local folder named after the URI


@pytest.mark.slow  # embed's UMAP compiles with numba on its first fit
def test_explain_and_embed_read_and_write_s3(s3_bucket, tiny_model_dir):
    """A prefix with a corrupt image is explained into S3 (the bad one named, the rest written); a manifest of S3 uris
    with one corrupt and one missing image is embedded into S3, both named and kept in embeddings.parquet."""
    base = f"s3://{s3_bucket}/set"
    rows = []
    for i in range(6):
        label = "ai" if i % 2 else "real"
        uri = f"{base}/{label}/{i}.png"
        storage.write_bytes(uri, _png((70, 66), i))
        rows.append({"uri": uri, "label": label, "source": "x", "generator": "g" if i % 2 else "", "pair_id": "",
                     "split": "test", "width": 70, "height": 66, "format": "PNG", "sha256": "", "gender": "mf"[i > 2]})
    storage.write_bytes(f"{base}/real/bad.png", b"junk")
    explained = CliRunner().invoke(app, ["explain", f"{base}/", "--model", str(tiny_model_dir), "--out",
                                         f"s3://{s3_bucket}/out", "--method", "tiles", "--method", "cam"])
    assert explained.exit_code == 1
    assert explained.stderr == f"error: {base}/real/bad.png: not an image (unrecognised file signature)\n"
    written = sorted(storage.list_files(f"s3://{s3_bucket}/out", suffixes=(".png",)))
    lines = [line.split("\t") for line in explained.stdout.splitlines()]  # each input, then its files
    assert written == sorted(path for line in lines for path in line[1:]) and len(written) == 12
    assert [line[0] for line in lines] == [f"{base}/ai/{i}.png" for i in (1, 3, 5)] + [f"{base}/real/{i}.png" for i in (0, 2, 4)]
    rows += [{**rows[0], "uri": f"{base}/real/bad.png"}, {**rows[0], "uri": f"{base}/real/missing.png"}]
    storage.write_bytes(f"{base}/manifest.csv", pd.DataFrame(rows).to_csv(index=False).encode())
    out = f"s3://{s3_bucket}/embedding"
    embedded = CliRunner().invoke(app, ["embed", f"{base}/manifest.csv", "--model", str(tiny_model_dir), "--out", out,
                                        "--color-by", "gender"])
    assert embedded.exit_code == 1, embedded.output  # written, but two images were left out
    assert embedded.stdout.startswith("embedded 6 image(s), 2 left out;")
    assert embedded.stderr.count("\n") == 2 and f"note: {base}/real/missing.png: no such file" in embedded.stderr
    table = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{out}/embeddings.parquet")))
    assert len(table) == 8 and table["umap_x"].notna().sum() == 6
    assert {u.rsplit("/", 1)[1] for u in storage.list_files(out)} == {
        "embeddings.parquet", "clusters.csv", "umap_label.png", "umap_gender.png", "umap_mosaic.png"}


def _openai_into_s3(bucket: str, photos: int, tmp_path, monkeypatch) -> tuple[ImagesAPIServer, str, list[str]]:
    """`photos` PNGs under `s3://bucket/real`, a started loopback Images API server, and the `generate openai` args that
    make their variations into `s3://bucket/fake` (returned as the out)."""
    for i in range(photos):
        storage.write_bytes(f"s3://{bucket}/real/{i}.png", _png((48, 48), i))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    server = ImagesAPIServer(api_key="sk-s3").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-s3")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = f"s3://{bucket}/fake"
    return server, out, ["generate", "openai", f"s3://{bucket}/real", "--out", out, "--model", "dall-e-2", "--size",
                         "256x256", "-j", "2"]
