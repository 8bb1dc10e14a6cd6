"""The Ray Data engine on a local two-actor Ray writes the same rows as the local engine."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pytest

pytest.importorskip("ray")

from fakescope.errors import ConfigError, StorageError
from fakescope.scale.ray_scan import LOOPBACK_ENV, _for_actors, ray_scan
from fakescope.scale.records import SCHEMA, part_files, read_results, write_part
from fakescope.scale.scan import ScanSummary, scan, scan_sources


@pytest.mark.slow
def test_ray_scan_equals_local_scan_and_resumes(image_folder, tmp_path, detector, local_ray):
    latin1 = os.fsdecode(os.path.join(os.fsencode(image_folder), b"caf\xe9.png"))  # stored as "caf\\udce9.png"
    os.rename(image_folder / "img0.png", latin1)
    sources = list(scan_sources([str(image_folder)]))
    assert latin1 in sources[:6]  # done in the first run, so the second must skip it
    alone = scan(sources, tmp_path / "local", detector)
    summary = ray_scan(sources[:6], tmp_path / "ray", actors=2, batch_size=4, object_store_memory=200 * 2**20,
                       device="cpu", workers=2, provenance=False)
    assert (summary.scanned, summary.failed) == (6, 1)
    parts = sorted(p.name for p in (tmp_path / "ray").iterdir())
    assert parts and all(re.fullmatch(r"part-t\d{20}-[0-9a-f]{6}-\d{5}\.parquet", p) for p in parts)  # whole, no temporaries
    (tmp_path / "ray" / f"_{parts[0]}.tmp").write_bytes((tmp_path / "ray" / parts[0]).read_bytes()[:-100])  # a crash mid-write
    rest = ray_scan(sources, tmp_path / "ray", actors=2, batch_size=4, object_store_memory=200 * 2**20,
                    device="cpu", workers=2, provenance=False)
    assert (rest.scanned, rest.skipped) == (2, 6)
    assert (summary.scanned + rest.scanned, summary.failed + rest.failed) == (alone.scanned, alone.failed) == (8, 1)
    assert not list((tmp_path / "ray").glob("_*"))  # the rerun deleted the half-written temporary
    local, distributed = (read_results(tmp_path / name).sort_values("path").reset_index(drop=True) for name in ("local", "ray"))
    assert list(distributed.columns) == list(local.columns)
    # scores are stored rounded to 6 decimals, and the two engines batch images differently, so float
    # rounding inside the network can move the last stored digit
    pd.testing.assert_frame_equal(distributed.drop(columns="evidence"), local.drop(columns="evidence"), rtol=0, atol=2e-6)
    for ours, theirs in zip(distributed["evidence"], local["evidence"]):  # 6-decimal scores may differ in the last digit
        ours, theirs = json.loads(ours), json.loads(theirs)
        assert [(e["kind"], e["detail"]) for e in ours] == [(e["kind"], e["detail"]) for e in theirs]
        assert all(abs(a["score"] - b["score"]) <= 2e-6 for a, b in zip(ours, theirs))


@pytest.mark.slow
def test_ray_scan_records_and_counts_transient_fetch_errors_as_local_does(tiny_model_dir, image_factory, tmp_path,
                                                                         monkeypatch, no_local_ray):
    """Ray's rows carry the same error_kind as the local engine's, its summary the same count to retry, and a rerun
    retries those rows alone. A Ray of its own: its actors must inherit the trusted origin of the loopback server."""
    from image_server import serving_images

    from fakescope.detector import Detector
    from fakescope.io.fetch import TRUSTED_ENV

    settings = {"name_or_path": str(tiny_model_dir), "device": "cpu", "provenance": False, "runtime": "torch"}
    with serving_images(image_factory.bytes("PNG", (96, 80), 1), big=16) as origin:
        monkeypatch.setenv(TRUSTED_ENV, origin)
        urls = [f"{origin}/busy.png", f"{origin}/missing.png", f"{origin}/a.png"]
        alone = scan([*urls, f"{origin}/flaky.png?n=local"], tmp_path / "local", Detector.load(**settings))
        summary = ray_scan([*urls, f"{origin}/flaky.png?n=ray"], tmp_path / "ray", actors=1, batch_size=4,
                           object_store_memory=200 * 2**20, **settings)
        assert summary == alone == ScanSummary(scanned=4, failed=3, skipped=0, transient=2)
        local, distributed = (read_results(tmp_path / name).query("~path.str.contains('flaky')")  # its query differs
                              .sort_values("path", ignore_index=True) for name in ("local", "ray"))
        pd.testing.assert_frame_equal(distributed, local)
        assert local["error_kind"].fillna("scored").tolist() == ["scored", "transient", "permanent"]
        rerun = scan([*urls, f"{origin}/flaky.png?n=ray"], tmp_path / "ray", Detector.load(**settings))
    assert rerun == ScanSummary(scanned=2, failed=1, skipped=2, transient=1)  # busy fails again, flaky answers
    assert read_results(tmp_path / "ray")["error_kind"].fillna("scored").value_counts().to_dict() == \
        {"scored": 2, "transient": 1, "permanent": 1}


def test_a_folder_scored_with_other_settings_is_refused_before_ray_starts(image_folder, tmp_path, detector):
    from fakescope.models.bundle import BUNDLED_DIR, DEFAULT_MODEL

    sources = list(scan_sources([str(image_folder)]))
    scan(sources, tmp_path / "out", detector)  # the local engine: torch, grid 3, no provenance, fp32
    shutil.copytree(BUNDLED_DIR / DEFAULT_MODEL, tmp_path / "renamed", ignore=shutil.ignore_patterns("MODEL_CARD.md"))
    config = json.loads((tmp_path / "renamed" / "config.json").read_text())
    (tmp_path / "renamed" / "config.json").write_text(json.dumps({**config, "name": "renamed"}))
    same = dict(address="127.0.0.1:1", device="cpu", provenance=False)  # no Ray answers there: refused before it
    refusals = [
        (dict(name_or_path=str(tmp_path / "renamed")), "--model fakescope-default, not --model renamed"),
        (dict(threshold=0.9), f"--threshold {detector.threshold:g}, not --threshold 0.9"),
        (dict(grid=2, precision="bf16"), "--grid 3 --precision fp32, not --grid 2 --precision bf16"),
        (dict(provenance=True, runtime="onnx"), "--no-provenance, not --provenance"),  # the runtime is no scoring setting
    ]
    for settings, differing in refusals:
        with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path / 'out'))} was scored with {differing}: a rerun "):
            ray_scan(sources, tmp_path / "out", **{**same, **settings})
    assert ray_scan(sources, tmp_path / "out", **same, actors=1, batch_size=3, workers=1) == ScanSummary(0, 0, 8)


@pytest.mark.slow
def test_another_address_than_the_ray_this_process_joined_is_refused(tmp_path, local_ray, detector):
    """ray_scan joined the Ray already running in the process whatever --address named."""
    _host, port = local_ray.rsplit(":", 1)
    with pytest.raises(ConfigError, match=f"^this process has already joined the Ray cluster at {re.escape(local_ray)}, "
                                          f"not 127.0.0.1:1: call ray.shutdown"):
        ray_scan([str(tmp_path / "missing.jpg")], tmp_path / "out", address="127.0.0.1:1", device="cpu")
    summary = ray_scan([str(tmp_path / "missing.jpg")], tmp_path / "out", address=f"localhost:{port}", actors=1,
                       device="cpu", provenance=False)
    assert (summary.scanned, summary.failed) == (1, 1)  # the same cluster, named by another host name
    assert scan([str(tmp_path / "missing.jpg")], tmp_path / "out", detector).skipped == 1  # same settings, other engine


def test_a_part_the_folder_refuses_is_one_line_naming_it_and_no_temporary(tmp_path, detector):
    from fakescope.scale.records import detections_to_table, write_part

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StorageError, match=f"^cannot write results to {re.escape(str(tmp_path / 'file'))}: Not a directory$"):
        write_part(detections_to_table(detector.predict([str(tmp_path / "a.jpg")])), tmp_path / "file" / "part-x.parquet")


@pytest.mark.slow
def test_a_write_task_that_fails_is_one_line_and_the_folder_resumes(image_folder, full_folder, detector, local_ray):
    folder, reason, free = full_folder
    code = ("import sys\nfrom fakescope.cli import main\n"
            f"sys.argv = ['fakescope', 'scan', {str(image_folder)!r}, '--out', {str(folder)!r}, '--engine', 'ray', "
            "'--actors', '1', '--no-provenance', '--device', 'cpu']\nmain()\n")
    done = _fresh_python(code, timeout=240, RAY_ADDRESS=local_ray)  # joins the shared Ray: its start is tested below
    assert done.returncode == 2, done.stderr[-2000:]
    assert _without_core_worker_lines(done.stderr) == [f"error: cannot write results to {folder}: {reason}"]
    assert not list(folder.glob("*part*"))
    free()
    assert scan(scan_sources([str(image_folder)]), folder, detector).scanned == 8  # either engine goes on from here


def _without_core_worker_lines(stderr: str) -> list[str]:
    """stderr's lines less the one that Ray 2.60's C++ core worker prints for every Ray Data actor (its constructor
    arguments sit in the object store: ray-project/ray#53727), which only RAY_BACKEND_LOG_LEVEL would quiet."""
    return [line for line in stderr.splitlines() if "core_worker.cc" not in line]


def _fresh_python(code: str, timeout: float, **env_vars: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter (ray reads its settings at import) without the loopback variables.

    One that only fails to reach a cluster takes 7 s on an idle 2-core machine (importing ray and torch): `timeout`
    leaves room for a loaded one."""
    env = {k: v for k, v in os.environ.items() if k not in LOOPBACK_ENV and k != "RAY_ADDRESS"} | env_vars
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _fresh_scans(scans: list[tuple[list[str], dict[str, str]]], timeout: float) -> subprocess.CompletedProcess:
    """`fakescope scan ARGS` for each (ARGS, variables set first) in turn, in one `_fresh_python`: each run costs
    no new interpreter (importing ray and torch). Its stdout holds each run's exit status, a line each."""
    code = ("import os, sys\nfrom fakescope.cli import main\n"
            f"for args, env in {scans!r}:\n"
            "    os.environ.update(env)\n"
            "    sys.argv = ['fakescope', 'scan', *args]\n"
            "    try:\n        main()\n    except SystemExit as exc:\n        print(exc.code)\n"
            "    else:\n        print(0)\n")
    return _fresh_python(code, timeout)


@pytest.mark.slow
def test_ray_scan_writes_the_caveat_as_local_does_and_resumes_a_folder_begun_without_it(caveat_images, tiny_model_dir,
                                                                                      tmp_path, local_ray, older_schema):
    import pyarrow.parquet as pq

    from fakescope.detector import Detector

    settings = {"name_or_path": str(tiny_model_dir), "device": "cpu", "threshold": 0.99}
    scan(caveat_images, tmp_path / "local", Detector.load(**settings))
    ray_scan(caveat_images, tmp_path / "ray", actors=1, batch_size=4, object_store_memory=200 * 2**20, **settings)
    local, distributed = (read_results(tmp_path / name).sort_values("path", ignore_index=True) for name in ("local", "ray"))
    assert list(distributed.columns) == SCHEMA.names and local["caveat"].notna().sum() == 1
    pd.testing.assert_frame_equal(distributed, local)
    older = tmp_path / "older"  # the plain image's row as a version before the column wrote it
    older.mkdir()
    write_part(pq.read_table(part_files(tmp_path / "local")[0]).drop_columns(["caveat", "error_kind"]).slice(0, 1),
               older / "part-old.parquet")
    summary = ray_scan(caveat_images, older, actors=1, batch_size=4, object_store_memory=200 * 2**20, **settings)
    assert (summary.scanned, summary.skipped) == (1, 1)
    assert all(pq.read_schema(p).names == older_schema.names for p in part_files(older))
    assert list(pd.read_parquet(older).columns) == older_schema.names and len(read_results(older)) == 2


@pytest.mark.slow
def test_a_relative_model_path_reaches_actors_working_in_another_folder(image_folder, tmp_path, local_ray, monkeypatch):
    from fakescope.models.bundle import BUNDLED_DIR, DEFAULT_MODEL

    shutil.copytree(BUNDLED_DIR / DEFAULT_MODEL, tmp_path / "models" / "mine")
    images = [str(image_folder / f"img{i}.jpg") for i in (1, 3)]
    monkeypatch.chdir(tmp_path / "models")  # the shared Ray's workers work in a folder of their own, where 'mine' is not
    assert ray_scan(images, tmp_path / "out", actors=1, name_or_path="mine", device="cpu", workers=1,
                    provenance=False) == ScanSummary(scanned=2, failed=0, skipped=0)


def test_bundled_names_and_hub_references_reach_actors_as_given(tmp_path, monkeypatch):
    from fakescope.models.bundle import BUNDLED_DIR, DEFAULT_MODEL

    bundled = str(BUNDLED_DIR / DEFAULT_MODEL)
    for name, location in ((None, bundled), (DEFAULT_MODEL, bundled), ("hf://owner/model@v1", "/hub-cache/snapshot")):
        assert _for_actors(name, location) == name  # each node resolves it: its own package, its own hub cache
    monkeypatch.chdir(tmp_path)
    assert _for_actors("./models/../mine", "models/../mine") == str(tmp_path / "mine")


@pytest.mark.slow
@pytest.mark.parametrize("ray_first", [False, True], ids=["fakescope-first", "ray-imported-first"])
def test_a_local_ray_listens_on_loopback_only(ray_first):
    """Ray reads its loopback switch when first imported: a program that imported it before fakescope set the switch
    had its 'loopback' Ray listen on the machine's interface address."""
    code = ("import ray\n" if ray_first else "") + (
            "from fakescope.scale.ray_scan import _connect\n"
            "assert _connect(None, 1, 100 * 2**20)\n"
            "import ray\n"
            "print(ray._private.worker._global_node.node_ip_address)\n"
            "ray.shutdown()\n"
            "assert _connect('local', 1, 100 * 2**20)\n"  # Ray's name for a new local instance: the same one
            "print(ray._private.worker._global_node.node_ip_address)\n"
            "ray.shutdown()\n")
    done = _fresh_python(code, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["127.0.0.1"] * 2  # not the machine's interface address


def test_an_unreachable_cluster_named_by_address_or_by_ray_address_is_one_line_not_a_long_retry(image_folder, tmp_path):
    with contextlib.ExitStack() as stack:  # bound, not listening: connections are refused, and no one else takes the ports
        ports = [stack.enter_context(socket.socket()) for _ in range(3)]
        for sock in ports:
            sock.bind(("127.0.0.1", 0))
        addresses = [f"{scheme}127.0.0.1:{sock.getsockname()[1]}" for scheme, sock in zip(("", "ray://", ""), ports)]
        out = [str(image_folder), "--out", str(tmp_path / "out"), "--engine", "ray"]
        done = _fresh_scans([([*out, "--address", addresses[0]], {}), ([*out, "--address", addresses[1]], {}),
                             (out, {"RAY_ADDRESS": addresses[2]})], timeout=240)
    assert done.stdout.split() == ["2"] * 3  # the last: not Ray's traceback about num_cpus when joining a cluster
    assert done.stderr == "".join(f"error: cannot reach the Ray cluster at {address}: Connection refused\n"
                                  for address in addresses)


@pytest.mark.slow
@pytest.mark.timeout(300)  # Ray Data would wait for the GPUs forever
def test_more_gpus_than_the_local_ray_has_is_one_line_not_a_wait_forever(image_folder, tmp_path, no_local_ray):
    import torch

    per_actor = torch.cuda.device_count() + 1  # more than this machine has, even for one actor
    with pytest.raises(ConfigError, match=f"^2 actors x {per_actor} GPUs need {2 * per_actor} GPUs and the local Ray has"):
        ray_scan(scan_sources([str(image_folder)]), tmp_path / "out", actors=2, gpus_per_actor=per_actor,
                 object_store_memory=100 * 2**20, device="cpu", provenance=False)


@pytest.mark.parametrize("address", ["10.0.0.1", "ray://10.0.0.1", "127.0.0.1:http"])
def test_an_address_without_a_port_is_one_line(tmp_path, address, no_local_ray):  # a joined Ray: the address is compared to it
    with pytest.raises(ConfigError, match=f"^{re.escape(address)} is not a Ray cluster address: give host:port, "):
        ray_scan([str(tmp_path / "a.jpg")], tmp_path / "out", address=address, device="cpu")


def test_address_auto_without_a_running_cluster_is_one_line(image_folder, tmp_path, no_local_ray):
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray cluster runs on this machine, so 'auto' finds it")
    scan = [str(image_folder), "--out", str(tmp_path / "out"), "--engine", "ray", "--address", "auto"]
    none, recorded = tmp_path / "none", tmp_path / "recorded"  # where `ray start` records its cluster: nothing, one gone
    (recorded / "ray").mkdir(parents=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{sock.getsockname()[1]}"
        (recorded / "ray" / "ray_current_cluster").write_text(gone)
        done = _fresh_scans([(scan, {"RAY_TMPDIR": str(none)}), (scan, {"RAY_TMPDIR": str(recorded)})], timeout=240)
    assert done.stdout.split() == ["2", "2"]
    assert done.stderr == ("error: no running Ray cluster found for address 'auto': start one with 'ray start --head', "
                           "or drop --address (and RAY_ADDRESS) to have the scan start a local Ray\n"
                           f"error: cannot reach the Ray cluster at auto ({gone}): Connection refused\n")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_an_actors_error_is_one_line_and_ray_speaks_only_when_asked(image_folder, tmp_path, verbose):
    argv = ["fakescope", "scan", str(image_folder), "--out", str(tmp_path / "out"), "--engine", "ray", "--actors", "1",
            "--device", "nope", *["--verbose"] * verbose]  # the driver does not load a Detector: each actor fails to
    code = f"import sys\nfrom fakescope.cli import main\nsys.argv = {argv!r}\nmain()\n"
    done = _fresh_python(code, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _without_core_worker_lines(done.stderr)
    assert lines[-1].startswith("error: invalid device 'nope': ")
    if verbose:  # Ray's own lines, with the actor's traceback
        assert "Started a local Ray instance" in done.stderr and "fakescope.errors.ConfigError: invalid device" in done.stderr
    else:
        assert len(lines) == 1


def test_an_error_raised_in_a_ray_task_is_recognised_by_its_type():
    from ray.exceptions import RayTaskError

    from fakescope.errors import FakescopeError
    from fakescope.scale.ray_scan import task_error

    ray_note = "Failed to apply UDF transform after 1/1 attempts (total backoff 0.0s)."  # what Ray Data appends
    raised = RayTaskError("Write", "traceback", StorageError(f"cannot write results to /r: No space left on device\n{ray_note}"))
    try:
        try:
            raise raised.as_instanceof_cause()  # as ray.get raises it
        except RayTaskError as exc:
            raise RuntimeError("Ray Data's own wrapping") from exc
    except RuntimeError as exc:
        error = task_error(exc)
    assert isinstance(error, StorageError) and str(error) == "cannot write results to /r: No space left on device"
    assert task_error(RayTaskError("Write", "traceback", ValueError("fakescope.errors.StorageError: a bug"))) is None
    assert task_error(FakescopeError("not from Ray")) is None


@pytest.mark.parametrize("scored_before", [
    pytest.param(False, marks=pytest.mark.slow, id="scored-now"), pytest.param(True, id="skipped-as-done")])
def test_a_ray_rerun_that_lists_an_unlisted_folder_drops_its_row(image_factory, tmp_path, detector, scored_before, request):
    """The folder's error row (an earlier run could not list b), written as that run wrote it: the Ray engine's rerun,
    which lists b now, drops it, whether it scores b's image (actors) or skips it as done (no Ray started)."""
    from fakescope.scale.records import run_id

    a = str(image_factory.file(tmp_path / "photos" / "a" / "1.png", seed=1))
    b2 = str(image_factory.file(tmp_path / "photos" / "b" / "2.png", seed=2))
    out = tmp_path / "out"
    if scored_before:
        scan([a, b2], out, detector)
    out.mkdir(exist_ok=True)
    error = {"path": str(tmp_path / "photos" / "b"), "error": "cannot list this folder (Permission denied): its images "
             "are left out", "error_kind": "permanent"}
    write_part(pa.Table.from_pylist([error], schema=SCHEMA), out / f"part-{run_id(out)}-00000.parquet")
    assert str(tmp_path / "photos" / "b") in read_results(out)["path"].tolist()
    if not scored_before:
        request.getfixturevalue("local_ray")
    summary = ray_scan(scan_sources(str(tmp_path / "photos")), out, actors=1, batch_size=4,
                       object_store_memory=200 * 2**20, device="cpu", workers=1, provenance=False)
    assert (summary.scanned, summary.skipped) == ((0, 2) if scored_before else (2, 0))
    assert sorted(read_results(out)["path"]) == sorted(pd.read_parquet(out)["path"]) == [a, b2]
