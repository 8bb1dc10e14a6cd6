"""The benchmark scripts still run (tiny sizes; the figures themselves are not checked).

Those that only time calls in their own process run here, as `python SCRIPT` runs them, sparing a
Python start and the torch import each; those that start processes, Ray or a server run as scripts."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_server import serving_images

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def run_here(monkeypatch, capsys):
    """`_run` in this process: `script` runs as `__main__` with `args` as its command line (benchmarks/ first on
    sys.path, as for a script); its exit code is 0 or the one it exits with (a `sys.exit` message goes to stderr
    with code 1, as the interpreter does)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / script), *args])
        try:
            runpy.run_path(str(BENCHMARKS / script), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(sys.argv, code, out, err)

    return run


@pytest.mark.slow
def test_detect_throughput_prints_every_runtime_and_grid(run_here):
    pytest.importorskip("onnxruntime")
    done = run_here("detect_throughput.py", "--images", "4", "--batch-size", "4", "--grids", "1", "--no-compile",
                    "--repeats", "2")
    assert done.returncode == 0, done.stderr
    assert "machine: " in done.stdout and "median of 2 timed pass(es) after one untimed" in done.stdout
    assert "decode only:" in done.stdout and done.stdout.count(", range ") == 5
    for label in ("torch fp32, grid 3", "torch bf16, grid 3", "onnx fp32, grid 3", "onnx fp32, grid 1"):
        assert label in done.stdout
    assert done.stdout.count("x decode-only") == 4


def test_decode_agreement_compares_both_decoders(image_factory, tmp_path, run_here):
    for i in range(3):
        image_factory.file(tmp_path / f"{i}.jpg", "JPEG", (150, 130), seed=i)
    done = run_here("decode_agreement.py", "--folder", str(tmp_path), "--device", "cpu", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert "3 scored by both" in done.stdout and "max 0.0000" in done.stdout  # libjpeg-turbo both ways on a CPU


@pytest.mark.slow
def test_train_speed_prints_a_row_per_model(run_here):
    done = run_here("train_speed.py", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--devices", "cpu",
                "--models", "efficientnet_lite0,spectral_lr")
    assert done.returncode == 0, done.stderr
    assert "| efficientnet_lite0 | 112 |" in done.stdout and "| spectral_lr |" in done.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--models", "efficientnet_lite0,nope"), "unknown model(s) nope; known: "),
    (("--steps", "0"), "--steps must be at least 1, got 0"),
    (("--batch-size", "0"), "--batch-size must be at least 1, got 0"),
    (("--warmup", "-1"), "--warmup must be at least 0, got -1"),
])
def test_train_speed_refuses_an_unknown_model_or_no_steps_in_one_line_before_any_model_runs(run_here, args, message):
    done = run_here("train_speed.py", "--devices", "cpu", *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert "efficientnet_lite0 |" not in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: gpu.py would run for real")
def test_gpu_benchmark_says_it_needs_a_gpu(run_here):
    done = run_here("gpu.py", "--compile")
    assert done.returncode != 0 and "needs a CUDA GPU" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the session would run for real")
def test_gpu_session_stops_at_once_without_a_gpu(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "session"), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_session.sh")], capture_output=True, text=True, timeout=120,
                          env=env, cwd=BENCHMARKS.parent)
    assert done.returncode == 1 and "needs a CUDA GPU" in done.stderr
    assert not (tmp_path / "session" / "log.txt").exists()


def test_gpu_session_refuses_a_missing_pretrained_file_before_anything_runs(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "session"), "PRETRAINED": str(tmp_path / "absent.safetensors")}
    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_session.sh")], capture_output=True, text=True, timeout=60,
                          env=env, cwd=BENCHMARKS.parent)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"gpu_session.sh: PRETRAINED={env['PRETRAINED']} is not a file"]
    assert not (tmp_path / "session").exists()


@pytest.mark.parametrize(("missing", "args"), [
    ("onnxruntime", ("detect_throughput.py", "--images", "2")),
    ("onnxruntime", ("same_padding.py", "--rounds", "1")),
    ("onnxruntime", ("cpu_threads.py", "--runtimes", "torch,onnx")),
    ("ray", ("scan_scaling.py", "--runtime", "torch")),
])
def test_a_missing_optional_dependency_is_said_in_one_line_before_any_timing(missing, args, run_here, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: find_spec and import both fail
    done = run_here(*args)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"benchmarks/{args[0]} needs {missing}") and line.endswith(f"pip install {missing}")


@pytest.mark.parametrize(("args", "message"), [
    (("detect_throughput.py", "--size", "512"), "argument --size: '512' is not WIDTHxHEIGHT, e.g. 512x384"),
    (("gpu.py", "--size", "0x384"), "argument --size: '0x384': width and height must be positive"),
    (("detect_throughput.py", "--grids", "one"), "argument --grids: 'one' is not comma-separated whole numbers, e.g. 1,2"),
    (("cpu_threads.py", "--threads", "0,2"), "argument --threads: '0,2': every value must be at least 1"),
    (("cpu_threads.py", "--runtimes", "torch,tvm"), "--runtimes: tvm is not torch or onnx"),
    (("detect_throughput.py", "--repeats", "0"), "--repeats must be at least 1"),
    (("detect_throughput.py", "--int8"), "run `fakescope export --onnx FILE --int8 --calibration DATA` (a manifest or an "
                                         "image folder) first"),
    (("gpu.py", "--repeats", "0"), "--repeats must be at least 1"),
    (("gpu.py", "--freeze"), "--freeze needs --compile"),
    (("serve_load.py", "--duration", "300"), "--duration 300: give more than 0 and at most 120 seconds"),
    (("serve_load.py", "--clients", "0", "4"), "--clients and --size must be at least 1"),
    (("detect_throughput.py", "--images", "0"), "--images must be at least 1"),
    (("cpu_threads.py", "--image", "absent.jpg"), "argument --image: 'absent.jpg': no such file"),
    (("cli_latency.py", "--image", "absent.jpg"), "argument --image: 'absent.jpg': no such file"),
    (("cli_latency.py", "--src", "absent"), "argument --src: 'absent' holds no fakescope/__init__.py"),
    (("cli_latency.py", "--repeats", "0"), "--repeats must be at least 1"),
    (("cell_centre.py", "--photos", ".", "--count", "1"), "--count must be at least 2 (a spread needs two), got 1"),
])
def test_a_bad_option_is_refused_in_one_usage_line(args, message, run_here):
    done = run_here(*args)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(message)


@pytest.mark.parametrize(("args", "empty"), [
    (("cell_centre.py", "--photos"), "0 file(s) in it, at least 2 needed"),
    (("detect_throughput.py", "--folder"), "no images in it"),
    (("decode_agreement.py", "--device", "cpu", "--folder"), "no images in it"),
])
def test_a_missing_or_empty_folder_is_said_in_one_usage_line(args, empty, tmp_path, run_here):
    absent = run_here(*args, "../shared/data/absent")
    assert absent.returncode == 2 and absent.stdout == "" and "Traceback" not in absent.stderr
    assert absent.stderr.splitlines()[-1].endswith(
        "'../shared/data/absent': no such folder (../shared/data, the project's data, is not here: give a folder of images)")
    done = run_here(*args, str(tmp_path))
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(f"{tmp_path}: {empty}")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_load_says_in_one_line_why_a_url_cannot_be_load_tested(run_here):
    for url, message in (("http://example.com", "refusing to load-test 'example.com': only loopback addresses are allowed"),
                         (f"http://127.0.0.1:{_closed_port()}", "Connection refused")):
        done = run_here("serve_load.py", "--url", url, "--duration", "1")
        assert done.returncode == 1 and done.stdout == "" and done.stderr.splitlines() == [done.stderr.strip()]
        assert done.stderr.strip().endswith(message) and "Traceback" not in done.stderr
    with serving_images(b"", big=0) as origin:  # a real server that takes no POST: 501
        done = run_here("serve_load.py", "--url", origin, "--duration", "1")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [f"the warm-up request to {origin}/v1/detect failed: Server error '501 Unsupported method "
                                        f"('POST')' for url '{origin}/v1/detect'"]


def test_decode_agreement_says_a_missing_manifest_in_one_line(tmp_path, run_here):
    done = run_here("decode_agreement.py", "--manifest", str(tmp_path / "manifest.csv"), "--device", "cpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith("manifest.csv: no such file (recipes/default/prepare.py writes data/default/manifest.csv)")


def test_host_overhead_times_the_host_work_of_device_decoding(run_here):
    done = run_here("host_overhead.py", "--images", "12", "--batch-size", "36", "--repeats", "1", "--provenance")
    assert done.returncode == 0, done.stderr
    assert "provenance on" in done.stdout and "us of host time an image" in done.stdout
    assert done.stdout.startswith("machine: ") and "torch threads" not in done.stdout and " thread(s), device cpu" in done.stdout


def test_same_padding_times_both_paddings_on_both_runtimes(run_here):
    pytest.importorskip("onnxruntime")
    done = run_here("same_padding.py", "--rounds", "1", "--tiles", "2", "--threads", "1")
    assert done.returncode == 0, done.stderr
    for label in ("onnx, Pad then Conv", "onnx, auto_pad Conv", "torch, F.pad then conv", "torch, padding in conv"):
        assert label in done.stdout
    assert done.stdout.count("x faster") == 2


def test_profile_detect_prints_operator_tables(run_here):
    done = run_here("profile_detect.py", "--images", "6", "--batch-size", "18", "--workers", "1", "--rows", "5")
    assert done.returncode == 0, done.stderr
    assert "images/s under the profiler" in done.stdout and "Self CPU" in done.stdout


@pytest.mark.slow
def test_serve_load_prints_a_row_per_client_count():
    pytest.importorskip("uvicorn")
    done = _run("serve_load.py", "--clients", "1", "2", "--duration", "1", "--size", "64")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[-2:]]
    assert [row[0] for row in rows] == ["1", "2"] and all(int(row[1]) > 0 and row[6] == "0" for row in rows)


@pytest.mark.slow
def test_scan_scaling_compares_one_and_two_actors():
    pytest.importorskip("ray")
    done = _run("scan_scaling.py", "--images", "4", "--size", "128x96", "--runtime", "torch")
    assert done.returncode == 0, done.stderr
    assert "1 actor(s):" in done.stdout and "2 actor(s):" in done.stdout and "2 actors / 1 actor:" in done.stdout


@pytest.mark.slow
def test_scan_resume_times_listing_resume_and_read_back():
    done = _run("scan_resume.py", "--inputs", "300", "--pending", "4", "--images", "2", "--fresh", "50",
                "--folder-files", "120", "--rows-per-part", "100")
    assert done.returncode == 0, done.stderr
    assert "scanned 4, skipped 296" in done.stdout and "scanned 50, skipped 0" in done.stdout
    assert done.stdout.count("(300 distinct paths)") == 2
    assert "results: 4 parts" in done.stdout and "0 journals left" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the benchmark would run for real")
@pytest.mark.parametrize("args", [
    ("decode_agreement.py", "--folder", "."),  # --device cuda is its default
    ("detect_throughput.py", "--device", "cuda", "--images", "2"),
    ("profile_detect.py", "--device", "cuda", "--images", "2"),
    ("train_speed.py", "--devices", "cuda"),
])
def test_cuda_runs_say_at_once_that_there_is_no_gpu(args, run_here):
    done = run_here(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith(("needs a CUDA GPU and none is visible", "add cpu to --devices"))


def test_cpu_threads_prints_a_row_per_runtime_thread_count_and_batch(tmp_path, image_factory):
    image = image_factory.file(tmp_path / "a.jpg", "JPEG", (150, 130), seed=0)
    done = _run("cpu_threads.py", "--image", str(image), "--threads", "1", "--runtimes", "torch", "--batch", "2", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "| torch | 1 thread(s) | 1 image |" in done.stdout and "| torch | 1 thread(s) | 2 images |" in done.stdout


def test_dataset_scale_times_every_stage_and_finds_no_leak():
    done = _run("dataset_scale.py", "--images", "60", "--distinct", "6", "--rows", "900", "--train-rows", "60",
                "--audit-per-class", "10", "--workers", "1")
    assert done.returncode == 0, done.stderr
    for stage in ("dataset build, 60 images", "dataset audit", "split of the tree, 60 images", "--max-distance 4", "--max-distance -1", "balance by", "train 1 epoch"):
        assert stage in done.stdout
    assert "leaks: none; pair_ids in more than one split: 0" in done.stdout and done.stdout.count("peak RSS") == 7


@pytest.mark.slow
def test_cli_latency_prints_every_step():
    done = _run("cli_latency.py", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    for step in ("| import fakescope |", "| import fakescope.forensics |", "| fakescope --help |", "| fakescope models info |",
                 "| fakescope detect IMAGE |", "| Detector.load(), runtime torch", "| warm predict, runtime auto",
                 "| fakescope detect IMAGE, first call |"):
        assert step in done.stdout


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("[!_]*.py")))
def test_every_option_says_what_it_does(script, run_here, monkeypatch):
    """serve_load's --max-batch, --max-wait-ms and --token and cpu_threads' --image and --runtimes had no help."""
    import argparse

    parsers = []

    def record(parser, *args, **kwargs):
        parsers.append(parser)
        raise SystemExit(0)  # the command line is not run

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", record)
    assert run_here(script).returncode == 0 and len(parsers) == 1
    assert [a.option_strings for a in parsers[0]._actions if not a.help] == []


def test_results_read_times_read_results_and_the_superseded_rows(run_here):
    done = run_here("results_read.py", "--rows", "3000", "--rows-per-part", "1000", "--folders", "4", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    assert "3,000 image rows, 3 of them errors, 4 folder rows: 3,006 rows read back" in done.stdout  # the folders kept
    assert "read_results " in done.stdout and "_superseded " in done.stdout
