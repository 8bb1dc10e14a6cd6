"""`fakescope detect s3://bucket/prefix` against the loopback SeaweedFS server."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from s3_fault_proxy import S3FaultProxy
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.detector import Detector
from fakescope.errors import FakescopeError, StorageUnavailableError
from fakescope.io import _s3, storage
from fakescope.scale.records import read_results


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((96, 80), 40 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


@contextlib.contextmanager
def _refusing_endpoint() -> Iterator[str]:
    """A loopback URL whose port is held bound but not listening: connections are refused, and no one else takes it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_detect_lists_a_prefix_scores_each_object_and_reports_a_corrupt_one(s3_bucket, tiny_model_dir):
    for name in ("a.png", "sub/b.png"):
        storage.write_bytes(f"s3://{s3_bucket}/scan/{name}", _png(len(name)))
    storage.write_bytes(f"s3://{s3_bucket}/scan/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    storage.write_bytes(f"s3://{s3_bucket}/scan/notes.txt", b"not an image")
    result = CliRunner().invoke(app, ["detect", f"s3://{s3_bucket}/scan", "--model", str(tiny_model_dir),
                                      "--format", "jsonl", "--device", "cpu", "--no-provenance"])
    records = {r["path"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert result.exit_code == 1  # one input failed, the others were scored
    assert set(records) == {f"s3://{s3_bucket}/scan/{n}" for n in ("a.png", "broken.jpg", "sub/b.png")}
    assert records[f"s3://{s3_bucket}/scan/a.png"]["label"] in ("ai", "real", "uncertain")
    assert records[f"s3://{s3_bucket}/scan/sub/b.png"]["width"] == 96
    assert "error" in records[f"s3://{s3_bucket}/scan/broken.jpg"]


def test_detect_one_object_by_its_uri(s3_bucket, tiny_model_dir):
    uri = f"s3://{s3_bucket}/one/photo.png"
    storage.write_bytes(uri, _png(3))
    result = CliRunner().invoke(app, ["detect", uri, "--model", str(tiny_model_dir), "--format", "jsonl", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == uri


def _unreachable(endpoint: str, uri: str) -> str:
    host = endpoint.removeprefix("http://")
    return f"S3 unreachable: no answer from the endpoint {host} while reading {uri}; check AWS_ENDPOINT_URL_S3 and the network"


def test_scan_stops_when_the_endpoint_is_unreachable_and_a_rerun_scores_every_image(s3_bucket, s3_env, tiny_model_dir,
                                                                                     tmp_path, monkeypatch):
    """An outage is not the files' fault: no error rows that a rerun would skip as done."""
    uris = [f"s3://{s3_bucket}/photos/{i}.png" for i in range(3)]
    for i, uri in enumerate(uris):
        storage.write_bytes(uri, _png(i))
    manifest = tmp_path / "manifest.csv"  # a manifest's uris are read, not checked first
    manifest.write_text("uri\n" + "\n".join(uris) + "\n")
    args = ["scan", str(manifest), "--out", str(tmp_path / "res"), "--model", str(tiny_model_dir), "--device", "cpu",
            "--no-provenance", "--runtime", "torch"]
    with _refusing_endpoint() as dead:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
        down = CliRunner().invoke(app, args)
    assert down.exit_code == 2, down.output
    assert down.stderr == f"error: {_unreachable(dead, uris[0])}\n"
    assert read_results(tmp_path / "res").empty
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_env.endpoint)
    up = CliRunner().invoke(app, args)
    assert up.exit_code == 0, up.output
    assert "scanned 3  failed 0  skipped (done before) 0" in up.stdout


@pytest.mark.parametrize(("status", "code", "message"), [
    (503, "SlowDown", "S3 busy: it still answered SlowDown after retrying while reading {uri}; try again later"),
    (0, "drop", "the connection to S3 broke (ResponseStreamingError) while reading {uri}; check the network and try again"),
], ids=["throttled", "dropped"])
def test_a_scan_records_an_object_read_that_may_pass_as_transient_and_a_rerun_retries_it(
        s3_bucket, fault_proxy, tiny_model_dir, tmp_path, monkeypatch, status, code, message):
    """Throttling or a dropped connection outlasting the retries stopped the scan as an outage of the whole store (or,
    recorded, would have been done for good): now that object is a transient row and the others are scored."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # read as the client is made
    uris = [f"s3://{s3_bucket}/photos/{i}.png" for i in range(3)]
    for i, uri in enumerate(uris):
        storage.write_bytes(uri, _png(i))
    manifest = tmp_path / "manifest.csv"  # no listing: each GET reads an object, one at a time
    manifest.write_text("uri\n" + "\n".join(uris) + "\n")
    fault_proxy.fail("GET", status, code, times=2 if status else _s3.BODY_ATTEMPTS)  # every attempt at the first object
    args = ["scan", str(manifest), "--out", str(tmp_path / "res"), "--model", str(tiny_model_dir),
            "--device", "cpu", "--no-provenance", "--runtime", "torch", "--workers", "1"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert first.stdout.startswith("scanned 3  failed 1 (1 to retry: rerun the scan)  skipped (done before) 0 ")
    rows = read_results(tmp_path / "res").set_index("path")
    assert rows.loc[uris[0], ["error", "error_kind"]].tolist() == [message.format(uri=uris[0]), "transient"]
    assert rows.loc[uris[1:], "error"].isna().all()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and again.stdout.startswith("scanned 1  failed 0  skipped (done before) 2 "), again.output
    assert read_results(tmp_path / "res")["error"].isna().all()


def _busy_from(fault_proxy: S3FaultProxy, uris: list[str], first: int, every: int = 1) -> None:
    """Answer SlowDown to the one read attempt (AWS_MAX_ATTEMPTS=1) of every `every`-th object from `first` on."""
    for uri in uris[first::every]:
        fault_proxy.fail("GET", 503, "SlowDown", suffix=uri.removeprefix("s3:/").split("/", 1)[1])


def _scan_args(manifest, out, model) -> list[str]:
    return ["scan", str(manifest), "--out", str(out), "--model", str(model), "--device", "cpu", "--no-provenance",
            "--runtime", "torch", "--workers", "1", "--batch-size", "4"]


def _objects(bucket: str, tmp_path, count: int) -> tuple[list[str], object]:
    uris = [f"s3://{bucket}/photos/{i}.png" for i in range(count)]
    for i, uri in enumerate(uris):
        storage.write_bytes(uri, _png(i % 5))
    manifest = tmp_path / "manifest.csv"  # no listing: each GET reads an object
    manifest.write_text("uri\n" + "\n".join(uris) + "\n")
    return uris, manifest


def test_a_scan_stops_as_an_outage_once_reads_keep_failing_busy_and_a_rerun_resumes(
        s3_bucket, fault_proxy, tiny_model_dir, tmp_path, monkeypatch):
    """A store throttling every read made a transient row of each file, each after its retries, through the whole list:
    now 4 busy reads in a row per decoding worker stop the scan in one line; the rows written before stay."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    uris, manifest = _objects(s3_bucket, tmp_path, 40)
    _busy_from(fault_proxy, uris, 6)  # 6 read, then the store throttles every read
    args = _scan_args(manifest, tmp_path / "res", tiny_model_dir)
    down = CliRunner().invoke(app, args)
    assert down.exit_code == 2, down.output
    busy = f"S3 busy: it still answered SlowDown after retrying while reading {uris[9]}; try again later"
    assert down.stderr == f"error: {busy} (4 reads in a row failed so; a scan rerun resumes)\n"
    assert fault_proxy.injected <= 4 + 4  # the 4 in a row and the few read ahead of them, not the 34 that fail
    rows = read_results(tmp_path / "res")  # the batches finished before the stop: the first at least
    assert 4 <= len(rows) <= 9 and rows["path"].tolist() == uris[:len(rows)] and rows["score"].notna().sum() <= 6
    fault_proxy.clear()
    up = CliRunner().invoke(app, args)
    done = rows["score"].notna().sum()
    assert up.exit_code == 0, up.output
    assert up.stdout.startswith(f"scanned {40 - done}  failed 0  skipped (done before) {done} "), up.output
    assert read_results(tmp_path / "res")["error"].isna().all()


def test_busy_reads_with_reads_between_stay_transient_rows_and_detect_stops_on_a_run_of_them(
        s3_bucket, fault_proxy, tiny_model_dir, tmp_path, monkeypatch):
    """More busy reads than the limit, but never 4 in a row: each is one transient row and the scan goes on; `detect`
    over a store that throttles every read stops in the same one line, keeping the records it printed."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    uris, manifest = _objects(s3_bucket, tmp_path, 12)
    _busy_from(fault_proxy, uris, 0, every=2)
    scanned = CliRunner().invoke(app, _scan_args(manifest, tmp_path / "res", tiny_model_dir))
    assert scanned.exit_code == 1, scanned.output
    assert scanned.stdout.startswith("scanned 12  failed 6 (6 to retry: rerun the scan)  skipped (done before) 0 ")
    rows = read_results(tmp_path / "res").set_index("path")
    assert rows["error_kind"].fillna("scored").tolist() == ["transient", "scored"] * 6
    _busy_from(fault_proxy, uris, 1)
    detected = CliRunner().invoke(app, ["detect", "-", "--model", str(tiny_model_dir), "--device", "cpu",
                                        "--no-provenance", "--format", "jsonl", "--workers", "1", "--batch-size", "1"],
                                  input="\n".join(uris) + "\n")
    assert detected.exit_code == 2, detected.output
    busy = f"S3 busy: it still answered SlowDown after retrying while reading {uris[4]}; try again later"
    assert detected.stderr == f"error: {busy} (4 reads in a row failed so; a scan rerun resumes)\n"
    records = [json.loads(line) for line in detected.stdout.splitlines()]
    assert [r["path"] for r in records] == uris[:4] and "error" not in records[0] and "error" in records[3]


def test_a_detector_shared_by_threads_counts_busy_reads_in_a_row_per_thread(s3_bucket, fault_proxy, tiny_model_dir,
                                                                            tmp_path, monkeypatch):
    """One count for the whole `Detector` let 3 busy reads in one thread's `predict` make another thread's first one
    stop its `predict` as an outage. Each thread counts its own, across its calls (a Ray actor's batches)."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    uris, _ = _objects(s3_bucket, tmp_path, 5)
    _busy_from(fault_proxy, uris, 0)  # every read busy
    detector = Detector.load(tiny_model_dir, device="cpu", runtime="torch", provenance=False)  # workers 0: 4 in a row
    with ThreadPoolExecutor(1) as one, ThreadPoolExecutor(1) as other:  # one thread each
        first = one.submit(detector.predict, uris[:3]).result()
        second = other.submit(detector.predict, uris[3]).result()
        busy = f"S3 busy: it still answered SlowDown after retrying while reading {uris[4]}; try again later"
        with pytest.raises(StorageUnavailableError, match=rf"^{re.escape(busy)} \(4 reads in a row failed so; "):
            one.submit(detector.predict, uris[4]).result()  # the 4th in a row of this thread's calls
    assert [d.transient for d in first] == [True] * 3 and second.transient


def test_scan_of_a_prefix_and_of_a_manifest_in_the_bucket_resume_one_another(s3_bucket, tiny_model_dir, tmp_path):
    for name in ("a.png", "sub/b.png", "c.png"):
        storage.write_bytes(f"s3://{s3_bucket}/photos/{name}", _png(len(name)))
    storage.write_bytes(f"s3://{s3_bucket}/photos/broken.jpg", b"\xff\xd8\xff\xe0 truncated")
    storage.write_bytes(f"s3://{s3_bucket}/photos/m.csv", b"uri\na.png\nsub/b.png\ngone.png\n")  # relative to its prefix
    args = ["--out", str(tmp_path / "res"), "--model", str(tiny_model_dir), "--device", "cpu", "--no-provenance"]
    runs = [CliRunner().invoke(app, ["scan", source, *args])
            for source in (f"s3://{s3_bucket}/photos/m.csv", f"s3://{s3_bucket}/photos/", f"s3://{s3_bucket}/photos")]
    assert [r.exit_code for r in runs] == [1, 1, 0], runs[-1].output  # bad objects are rows, not a stopped scan
    assert [r.stdout.split("  -> ")[0] for r in runs] == ["scanned 3  failed 1  skipped (done before) 0",
                                                          "scanned 2  failed 1  skipped (done before) 2",
                                                          "scanned 0  failed 0  skipped (done before) 4"]
    rows = read_results(tmp_path / "res").set_index("path")
    names = ("a.png", "broken.jpg", "c.png", "gone.png", "sub/b.png")
    assert sorted(rows.index) == [f"s3://{s3_bucket}/photos/{n}" for n in names]
    assert rows["error"].notna().tolist() == [n in ("broken.jpg", "gone.png") for n in rows.index.str.split("/photos/").str[1]]


@pytest.mark.slow
def test_ray_scan_stops_in_one_line_when_the_endpoint_is_unreachable(s3_bucket, tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from fakescope.scale.ray_scan import ray_scan

    uri = f"s3://{s3_bucket}/photos/0.png"
    storage.write_bytes(uri, _png(0))
    with _refusing_endpoint() as dead, pytest.raises(FakescopeError) as caught:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)  # the actors inherit it
        monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)  # the product's attempts: the outage outlasts them
        ray_scan([uri], tmp_path / "res", actors=1, object_store_memory=100 * 2**20, name_or_path=str(tiny_model_dir),
                 device="cpu", provenance=False)
    assert str(caught.value) == _unreachable(dead, uri)
    assert read_results(tmp_path / "res").empty


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_scan_stops_once_an_actors_reads_keep_failing_busy_across_its_batches(
        s3_bucket, fault_proxy, tiny_model_dir, tmp_path, monkeypatch):
    """An actor's `Detector` counts busy reads in a row across its batches (batches of 2 here, the limit 4): the scan
    stops in the same one line as the local engine's, without reading the whole list, and a rerun scores the rest."""
    pytest.importorskip("ray")
    from fakescope.scale.ray_scan import ray_scan

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the local Ray started below, and so its actors, inherit it
    uris, manifest = _objects(s3_bucket, tmp_path, 12)
    _busy_from(fault_proxy, uris, 2)  # 2 read, then the store throttles every read
    with pytest.raises(StorageUnavailableError) as caught:
        ray_scan(uris, tmp_path / "res", actors=1, batch_size=2, object_store_memory=100 * 2**20,
                 name_or_path=str(tiny_model_dir), device="cpu", runtime="torch", provenance=False, workers=1)
    # Ray hands the actor its batches in no fixed order: the 4th busy read in a row is one of the busy objects' (under
    # load, batch (6, 7) came before (4, 5) once), so the line may name any of them
    busy = re.fullmatch(r"S3 busy: it still answered SlowDown after retrying while reading (\S+); try again later "
                        r"\(4 reads in a row failed so; a scan rerun resumes\)", str(caught.value))
    assert busy and busy[1] in uris[2:], str(caught.value)
    assert fault_proxy.injected < 10  # stopped, not a transient row for each of the 10 busy objects
    fault_proxy.clear()
    rerun = CliRunner().invoke(app, _scan_args(manifest, tmp_path / "res", tiny_model_dir))  # either engine resumes
    assert rerun.exit_code == 0, rerun.output
    rows = read_results(tmp_path / "res")
    assert sorted(rows["path"]) == sorted(uris) and rows["error"].isna().all()


@pytest.mark.parametrize("output", ["jsonl", "table"])
def test_detect_stops_in_one_line_when_the_endpoint_is_unreachable(s3_bucket, tiny_model_dir, image_factory, tmp_path,
                                                                    monkeypatch, output):
    local = tmp_path / "a.png"
    image_factory.file(local, "PNG", seed=1)
    uri = f"s3://{s3_bucket}/photos/0.png"  # on stdin: read, not checked first
    with _refusing_endpoint() as dead:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
        result = CliRunner().invoke(app, ["detect", str(local), "-", "--model", str(tiny_model_dir), "--device", "cpu",
                                          "--no-provenance", "--format", output, "--batch-size", "1"], input=uri + "\n")
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {_unreachable(dead, uri)}\n"  # not a traceback
    if output == "jsonl":  # what was scored before is kept
        assert json.loads(result.stdout)["path"] == str(local)
    else:
        assert "1 image: " in result.stdout  # the table of what was scored, with its count


def test_detect_a_prefix_named_like_an_image_lists_it(s3_bucket, tiny_model_dir):
    """`s3://b/shots.png` holding `shots.png/1.png` is a folder, as a local folder `shots.png/` is walked."""
    inner = f"s3://{s3_bucket}/shots.png/1.png"
    storage.write_bytes(inner, _png(1))
    storage.write_bytes(f"s3://{s3_bucket}/shots.png-old/2.png", _png(2))  # a sibling sharing the name: not listed
    result = CliRunner().invoke(app, ["detect", f"s3://{s3_bucket}/shots.png", "--model", str(tiny_model_dir),
                                      "--format", "jsonl", "--device", "cpu", "--no-provenance"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [inner]


def test_detect_a_missing_object_reports_it_as_a_missing_local_file_is(s3_bucket, tiny_model_dir):
    missing = f"s3://{s3_bucket}/nowhere/missing.jpg"
    result = CliRunner().invoke(app, ["detect", missing, "--model", str(tiny_model_dir), "--format", "jsonl",
                                      "--device", "cpu", "--no-provenance"])
    assert result.exit_code == 1, result.output
    record = json.loads(result.stdout)
    assert record["path"] == missing and record["error"] == "no such file"


@pytest.mark.parametrize("output", ["csv", "jsonl", "table"])
def test_detect_refused_credentials_print_nothing_on_stdout_only_the_error(s3_server, s3_bucket, tiny_model_dir,
                                                                         monkeypatch, output):
    """`detect -f csv` printed its header before the credentials error: stdout held a CSV of no rows."""
    if not s3_server.enforces_auth:
        pytest.skip("the fallback moto server does not enforce credentials")
    uri = f"s3://{s3_bucket}/photos/0.png"  # on stdin: read, not checked first
    storage.write_bytes(uri, _png(0))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    result = CliRunner().invoke(app, ["detect", "-", "--model", str(tiny_model_dir), "--device", "cpu",
                                      "--no-provenance", "--format", output], input=uri + "\n")
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.output
