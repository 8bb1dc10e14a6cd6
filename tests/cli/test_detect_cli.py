"""`fakescope detect`: output formats, exit codes, inputs, options, and the installed command."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.cli.detect import CSV_FIELDS

RECORD_FIELDS = {"path", "score", "label", "threshold", "model", "evidence", "width", "height", "format"}


@pytest.fixture(scope="module")
def images(image_factory, tmp_path_factory) -> Path:
    """A folder: a.png, b.jpg, nested/c.webp (all fine)."""
    folder = tmp_path_factory.mktemp("cli-images")
    image_factory.file(folder / "a.png", "PNG", (96, 80), seed=1)
    image_factory.file(folder / "b.jpg", "JPEG", (150, 130), seed=2)
    image_factory.file(folder / "nested" / "c.webp", "WEBP", (70, 70), seed=3)
    return folder


def _detect(model_dir: Path, *args: str, stdin: str | bytes | None = None):
    result = CliRunner().invoke(app, ["detect", "--model", str(model_dir), "--no-provenance", *args], input=stdin)
    assert "Traceback" not in result.output
    return result


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_jsonl_has_every_field_for_every_image(tiny_model_dir, images):
    result = _detect(tiny_model_dir, "--format", "jsonl", str(images))
    assert result.exit_code == 0, result.stderr
    records = _records(result.stdout)
    assert [Path(r["path"]).relative_to(images).as_posix() for r in records] == ["a.png", "b.jpg", "nested/c.webp"]
    for record, (w, h, fmt) in zip(records, [(96, 80, "PNG"), (150, 130, "JPEG"), (70, 70, "WEBP")]):
        assert RECORD_FIELDS <= set(record) and "error" not in record
        assert (record["width"], record["height"], record["format"], record["model"]) == (w, h, fmt, "test-tiny")
        assert 0 < record["score"] < 1 and record["label"] in {"ai", "real", "uncertain"}
        assert record["threshold"] == 0.5
        assert [e["kind"] for e in record["evidence"]] == ["pixel"]
        assert set(record["evidence"][0]) >= {"kind", "score", "detail"}
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_csv_has_a_header_and_one_row_per_image(tiny_model_dir, images):
    result = _detect(tiny_model_dir, "-f", "csv", str(images / "a.png"), str(images / "b.jpg"))
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert result.stdout.splitlines()[0] == ",".join(CSV_FIELDS)
    assert [r["path"] for r in rows] == [str(images / "a.png"), str(images / "b.jpg")]
    assert rows[1]["width"] == "150" and rows[1]["format"] == "JPEG" and rows[1]["error"] == ""
    assert rows[0]["evidence"].startswith("pixel 0.") and 0 < float(rows[0]["score"]) < 1
    assert rows[0]["reason"].startswith("pixel model 0.")  # why, as in JSONL and scan results


def test_table_is_the_default(tiny_model_dir, images, monkeypatch):
    monkeypatch.chdir(images)  # a short name: the table shortens a long path (a worker's tmp path under xdist)
    result = _detect(tiny_model_dir, "a.png")
    assert result.exit_code == 0
    for text in ("verdict", "P(ai)", "a.png", "pixel"):
        assert text in result.stdout


@pytest.mark.parametrize(("terminal", "columns", "width"), [("1", "80", 80), ("0", "80", 100)])
def test_the_table_fits_a_terminal_and_is_100_wide_in_a_file(tiny_model_dir, images, monkeypatch, terminal, columns, width):
    """It was at least 100 wide on a terminal too: on an 80-column one every line wrapped into the next."""
    monkeypatch.chdir(images)
    monkeypatch.setenv("TTY_COMPATIBLE", terminal)  # rich's switch: as a terminal or not, whatever stdout is
    monkeypatch.setenv("COLUMNS", columns)
    result = _detect(tiny_model_dir, "a.png", "b.jpg")
    assert result.exit_code == 0, result.output
    lines = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout).splitlines()
    assert "verdict" in lines[1] and max(map(len, lines)) == width


def test_corrupt_file_among_good_ones_gives_exit_1_and_an_error_record(tiny_model_dir, images, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    result = _detect(tiny_model_dir, "-f", "jsonl", str(folder))
    assert result.exit_code == 1
    records = {Path(r["path"]).name: r for r in _records(result.stdout)}
    assert set(records) == {"a.png", "b.jpg", "broken.jpg", "empty.png", "c.webp"}
    assert "corrupt or unsupported JPEG" in records["broken.jpg"]["error"]
    assert records["empty.png"]["error"] == "empty file"
    assert records["broken.jpg"]["score"] is None and records["broken.jpg"]["label"] is None
    for name in ("a.png", "b.jpg", "c.webp"):
        assert "error" not in records[name] and 0 < records[name]["score"] < 1


def test_odd_files_are_scored_or_refused_in_one_line_and_an_animation_says_which_frame(tiny_model_dir, image_factory,
                                                                                       tmp_path):
    from PIL import Image

    folder = tmp_path / "odd"
    still = image_factory.file(folder / "still.gif", "GIF", (96, 80), seed=1)
    frames = [Image.open(still).convert("RGB"), Image.new("RGB", (96, 80), (0, 0, 255))]
    for fmt in ("gif", "webp"):
        frames[0].save(folder / f"anim.{fmt}", save_all=True, append_images=frames[1:], duration=100)
    frames[0].convert("CMYK").save(folder / "cmyk.jpg")
    Image.new("RGB", (4000, 40)).save(folder / "strip.png")
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")  # 400 Mpx declared in a 50 kB file
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    (folder / "text.jpg").write_text("not an image\n")
    (folder / "zero.jpg").write_bytes(b"")
    result = _detect(tiny_model_dir, "-f", "jsonl", str(folder))
    assert result.exit_code == 1
    records = {Path(r["path"]).name: r for r in _records(result.stdout)}
    assert {name: r.get("error") for name, r in records.items() if r.get("error")} == {
        "bomb.png": "image too large: 20000x20000 (400,000,000 pixels) exceeds 200,000,000 pixels",
        "dot.png": "image too small: 1x1 (minimum side 32 px)",
        "text.jpg": "not an image (unrecognised file signature)",
        "zero.jpg": "empty file",
    }
    details = {name: r["evidence"][0]["detail"] for name, r in records.items() if "error" not in r}
    assert set(details) == {"anim.gif", "anim.webp", "cmyk.jpg", "still.gif", "strip.png"}
    assert all(0 < records[name]["score"] < 1 for name in details)
    for name in ("anim.gif", "anim.webp"):
        assert details[name].endswith("tile(s) of the first of 2 frames"), details[name]
    assert not any("frame" in details[name] for name in ("still.gif", "cmyk.jpg", "strip.png"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_in_a_folder_is_an_error_record_not_a_hang(tiny_model_dir, images, tmp_path):
    folder = tmp_path / "with-fifo"
    shutil.copytree(images, folder)
    os.mkfifo(folder / "pipe.png")
    result = _detect(tiny_model_dir, "-f", "jsonl", str(folder))
    records = {Path(r["path"]).name: r for r in _records(result.stdout)}
    assert result.exit_code == 1 and records["pipe.png"]["error"] == "not a regular file (a pipe, socket or device)"
    assert all(0 < records[name]["score"] < 1 for name in ("a.png", "b.jpg", "c.webp"))


def test_errors_show_in_the_table_too(tiny_model_dir, images, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    result = _detect(tiny_model_dir, str(images / "a.png"), str(tmp_path / "notes.txt"))
    assert result.exit_code == 1
    assert "error" in result.stdout and "not an image" in result.stdout
    assert "2 images: " in result.stdout and "1 failed" in result.stdout  # the table's caption counts verdicts


def test_an_error_record_does_not_repeat_its_path(tiny_model_dir, images, tmp_path):
    missing = str(tmp_path / "missing.jpg")
    records = _records(_detect(tiny_model_dir, "-f", "jsonl", missing).stdout)
    assert [(r["path"], r["error"]) for r in records] == [(missing, "no such file")]
    rows = list(csv.DictReader(io.StringIO(_detect(tiny_model_dir, "-f", "csv", missing).stdout)))
    assert [(r["path"], r["error"]) for r in rows] == [(missing, "no such file")]
    table = _detect(tiny_model_dir, missing)
    assert table.exit_code == 1 and "no such file" in table.stdout and "missing.jpg:" not in table.stdout


def test_table_shows_names_with_brackets_as_they_are(tiny_model_dir, image_factory, tmp_path, monkeypatch):
    image_factory.file(tmp_path / "[" / "b].png", "PNG", seed=1)  # the path [/b].png reads as a closing markup tag
    image_factory.file(tmp_path / "[red]x.png", "PNG", seed=2)
    monkeypatch.chdir(tmp_path)
    result = _detect(tiny_model_dir, ".")
    assert result.exit_code == 0, result.output
    assert "[red]x.png" in result.stdout and "[/b].png" in result.stdout


@pytest.mark.parametrize("output", ["table", "csv", "jsonl"])
def test_a_file_name_that_is_not_utf8_is_printed_escaped(tiny_model_dir, image_factory, tmp_path, monkeypatch, output):
    image_factory.file(tmp_path / "a.png", "PNG", seed=1)
    os.rename(tmp_path / "a.png", os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"))
    monkeypatch.chdir(tmp_path)
    result = _detect(tiny_model_dir, "-f", output, ".")
    assert result.exit_code == 0, result.output
    assert "caf\\udce9.png" in result.stdout  # an escape, in JSON too


@pytest.mark.parametrize(("args", "message"), [
    (["{empty}"], "error: no input images found: a folder, prefix or quoted glob gives only files ending .jpg, "),
    (["{empty}/*.png"], "error: no input images found"),
    (["--model", "{missing}/model", "{image}"], "error: model path not found"),
    (["--model", "no-such-model", "{image}"], "error: unknown model 'no-such-model'"),
    (["--model", "{model}", "--device", "tpu-please", "{image}"], "error: invalid device"),
])
def test_usage_errors_exit_2_with_one_line(tiny_model_dir, images, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "image": images / "a.png",
             "model": tiny_model_dir}
    result = CliRunner().invoke(app, ["detect", *(a.format(**paths) for a in args)])
    assert result.exit_code == 2
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: no image matches ")]
    assert len(errors) == 1 and errors[0].startswith(message)  # one error line, after the glob's warning if any


@pytest.mark.parametrize("args", [["--bogus"], ["--format", "xml"], ["--threshold", "1.5"], ["--batch-size", "0"], []])
def test_bad_options_exit_2_without_traceback(images, args):
    result = CliRunner().invoke(app, ["detect", *args, str(images / "a.png")] if args else ["detect"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output and result.stdout == ""


def test_dash_reads_paths_from_stdin(tiny_model_dir, images):
    stdin = f"{images / 'b.jpg'}\n{images / 'nested' / 'c.webp'}\n"
    result = _detect(tiny_model_dir, "-f", "jsonl", "-", stdin=stdin)
    assert result.exit_code == 0
    assert [Path(r["path"]).name for r in _records(result.stdout)] == ["b.jpg", "c.webp"]


def test_a_folder_on_stdin_is_listed_as_an_argument_is(tiny_model_dir, images):
    piped = _detect(tiny_model_dir, "-f", "jsonl", "-", stdin=f"{images}\n")
    assert piped.exit_code == 0, piped.output
    assert piped.stdout == _detect(tiny_model_dir, "-f", "jsonl", str(images)).stdout


def test_a_path_on_stdin_that_is_not_utf8_is_that_file(tiny_model_dir, image_factory, tmp_path):
    name = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")  # as `find` prints it
    image_factory.file(Path(os.fsdecode(name)), "PNG", seed=1)
    result = _detect(tiny_model_dir, "-f", "jsonl", "-", stdin=name + b"\n")  # stdin decodes strictly, as under en_US.UTF-8
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in _records(result.stdout)] == [os.fsdecode(name)]


def test_threshold_option_sets_the_threshold_and_the_labels(tiny_model_dir, images):
    low = _records(_detect(tiny_model_dir, "-f", "jsonl", "--threshold", "0.05", str(images)).stdout)
    high = _records(_detect(tiny_model_dir, "-f", "jsonl", "--threshold", "0.95", str(images)).stdout)
    assert {r["threshold"] for r in low} == {0.05} and {r["label"] for r in low} == {"ai"}
    assert {r["threshold"] for r in high} == {0.95} and {r["label"] for r in high} == {"real"}
    assert [r["score"] for r in low] == [r["score"] for r in high]


def test_a_pixel_only_real_says_so_in_every_format_and_a_declared_ai_does_not(tiny_model_dir, image_factory, tmp_path):
    from PIL import PngImagePlugin

    from fakescope.forensics.fusion import PIXEL_ONLY

    plain = image_factory.file(tmp_path / "plain.png", seed=4)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a")
    declared = image_factory.file(tmp_path / "declared.png", seed=4, pnginfo=info)
    args = ["detect", "--model", str(tiny_model_dir), "--threshold", "0.99", str(plain), str(declared)]
    runs = {f: CliRunner().invoke(app, [*args, "-f", f]) for f in ("jsonl", "csv", "table")}
    assert all(r.exit_code == 0 for r in runs.values())
    records = _records(runs["jsonl"].stdout)
    assert [(r["label"], r["decided_by"], r["caveat"]) for r in records] == [("real", "pixel", PIXEL_ONLY),
                                                                             ("ai", "metadata", None)]
    rows = list(csv.DictReader(io.StringIO(runs["csv"].stdout)))
    assert [r["caveat"] for r in rows] == [PIXEL_ONLY, ""]
    table = runs["table"].stdout
    verdicts = [line.split("│")[2].strip() for line in table.splitlines() if line.count("│") > 2]
    assert [v for v in verdicts if v] == ["real*", "ai"]  # the plain image's verdict is marked, the caveat said once
    assert " ".join(table.split()).count(f"* {PIXEL_ONLY}") == 1


def test_batch_size_workers_and_processes_do_not_change_records(tiny_model_dir, images):
    a = _records(_detect(tiny_model_dir, "-f", "jsonl", "-b", "1", "-j", "0", str(images)).stdout)
    b = _records(_detect(tiny_model_dir, "-f", "jsonl", "--batch-size", "64", "--workers", "3", str(images)).stdout)
    c = _records(_detect(tiny_model_dir, "-f", "jsonl", "--workers", "2", "--processes", str(images)).stdout)
    assert [r["path"] for r in a] == [r["path"] for r in b] == [r["path"] for r in c]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-5)
    assert [r["score"] for r in c] == pytest.approx([r["score"] for r in b], abs=1e-5)


def test_grid_and_threads_options(tiny_model_dir, images):
    fast = _records(_detect(tiny_model_dir, "-f", "jsonl", "--grid", "1", "--threads", "1", str(images / "b.jpg")).stdout)
    default = _records(_detect(tiny_model_dir, "-f", "jsonl", str(images / "b.jpg")).stdout)
    assert "over 1 tile(s)" in fast[0]["evidence"][0]["detail"]
    assert "over 4 tile(s)" in default[0]["evidence"][0]["detail"]  # the tiny model's 2x2 grid
    assert _detect(tiny_model_dir, "--grid", "0", str(images)).exit_code == 2
    huge = _detect(tiny_model_dir, "--grid", "10000", str(images))
    assert (huge.exit_code, huge.stderr) == (2, "error: Invalid value for '--grid': 10000 is not in the range 1<=x<=32. "
                                                "See 'fakescope detect -h'.\n")  # refused as parsed, help's range


def test_precision_and_compile_options(tiny_model_dir, images):
    fp32 = _records(_detect(tiny_model_dir, "-f", "jsonl", str(images)).stdout)
    bf16 = _records(_detect(tiny_model_dir, "-f", "jsonl", "--precision", "bf16", str(images)).stdout)
    assert [r["score"] for r in bf16] == pytest.approx([r["score"] for r in fp32], abs=0.03)
    result = _detect(tiny_model_dir, "--runtime", "onnx", "--compile", str(images))
    assert result.exit_code == 2 and result.stderr.startswith("error: precision bf16 and compile run on the torch runtime")
    assert _detect(tiny_model_dir, "--precision", "fp16", str(images)).exit_code == 2


def test_provenance_is_on_by_default(tiny_model_dir, images):
    result = CliRunner().invoke(app, ["detect", "--model", str(tiny_model_dir), "-f", "jsonl", str(images / "a.png")])
    assert result.exit_code == 0
    kinds = [e["kind"] for e in _records(result.stdout)[0]["evidence"]]
    assert kinds[0] == "pixel" and "c2pa" in kinds


def test_installed_command_reports_a_corrupt_file_without_traceback(tiny_model_dir, images, tmp_path):
    script = Path(sys.executable).with_name("fakescope")
    if not script.exists():
        pytest.skip("the fakescope console script is not installed in this environment")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(script), "detect", "--model", str(tiny_model_dir), "--no-provenance", "--device", "cpu", "-f", "jsonl",
         str(images / "a.png"), str(broken)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    records = _records(proc.stdout)
    assert [Path(r["path"]).name for r in records] == ["a.png", "broken.png"]
    assert "error" not in records[0] and "corrupt or unsupported PNG" in records[1]["error"]


def test_python_m_fakescope_is_the_command(tiny_model_dir, images):
    """What `torchrun -m fakescope train ...` runs."""
    proc = subprocess.run([sys.executable, "-m", "fakescope", "detect", "--model", str(tiny_model_dir), "--no-provenance",
                           "--device", "cpu", "-f", "jsonl", str(images / "a.png")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["path"] == str(images / "a.png")


def test_a_glob_that_matches_nothing_is_a_warning_and_the_rest_is_scored(tiny_model_dir, images, tmp_path):
    for _ in range(2):  # the warning handler is installed once, however many commands run in one process
        result = _detect(tiny_model_dir, "-f", "jsonl", str(images / "a.png"), str(tmp_path / "typo*.jpg"))
        assert result.exit_code == 0 and len(_records(result.stdout)) == 1
        assert result.stderr == f"warning: no image matches {tmp_path / 'typo*.jpg'}\n"


def test_empty_stdin_says_so_before_the_usage_error(tiny_model_dir):
    result = _detect(tiny_model_dir, "-", stdin="")
    assert result.exit_code == 2 and result.stdout == ""
    warning, error = result.stderr.splitlines()
    assert warning == "warning: stdin (-) gave no names: pipe in one file, folder, URI or URL per line"
    assert error.startswith("error: no input images found")


def test_an_image_piped_to_dash_is_one_line_and_exit_2(tiny_model_dir, images):
    """Its bytes were taken for names: a flood of glob warnings, then a traceback (embedded null byte)."""
    result = _detect(tiny_model_dir, "-", stdin=(images / "b.jpg").read_bytes())
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.startswith("error: stdin (-) holds ") and result.stderr.count("\n") == 1


def test_a_glob_over_a_folder_with_other_files_scores_only_its_images(tiny_model_dir, images, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((images / "a.png").read_bytes())
    (folder / "labels.csv").write_text("path,label\na.png,real\n")
    result = _detect(tiny_model_dir, "-f", "jsonl", str(folder / "*"))
    assert result.exit_code == 0 and [r["path"] for r in _records(result.stdout)] == [str(folder / "a.png")]


@pytest.mark.parametrize(("output", "signum", "status"), [("csv", "SIGTERM", 143), ("jsonl", "SIGINT", 130)])
def test_a_stop_mid_batch_keeps_every_record_printed_whole_and_says_so(tiny_model_dir, images, output, signum, status):
    """Paths piped one at a time: two are scored while the command waits for a third, then the signal comes."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "fakescope", "detect", "--model", str(tiny_model_dir), "--no-provenance", "--device", "cpu",
         "-b", "1", "-j", "0", "-f", output, "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job's Ctrl-C is ignored
    lines = []
    try:
        proc.stdin.write(f"{images / 'a.png'}\n{images / 'b.jpg'}\n".encode())
        proc.stdin.flush()
        deadline = time.monotonic() + 120
        while len(lines) < 2 + (output == "csv") and time.monotonic() < deadline:  # each record arrives as it is scored
            lines.append(proc.stdout.readline().decode())
        proc.send_signal(getattr(signal, signum))
        rest, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, stderr
    assert stderr.decode() == "interrupted: 2 images printed; the rest were not scored\n"
    assert rest == b""
    text = "".join(lines)
    rows = list(csv.DictReader(io.StringIO(text))) if output == "csv" else _records(text)
    assert [Path(r["path"]).name for r in rows] == ["a.png", "b.jpg"] and all(float(r["score"]) >= 0 for r in rows)


def test_ctrl_c_still_prints_the_table_of_what_was_scored(tiny_model_dir, images, monkeypatch):
    def typed_then_ctrl_c():  # a terminal's Ctrl-C interrupts the read of the next line
        yield from (f"{images / 'a.png'}\n", f"{images / 'b.jpg'}\n")
        raise KeyboardInterrupt

    monkeypatch.setattr("fakescope.io.inputs._stdin_lines", typed_then_ctrl_c)
    monkeypatch.setenv("COLUMNS", "200")
    result = _detect(tiny_model_dir, "-b", "1", "-j", "0", "-")
    assert result.exit_code == 130
    assert "a.png" in result.stdout and "b.jpg" in result.stdout
    assert "2 images: " in result.stdout and "(interrupted: the rest were not scored)" in result.stdout
    assert result.stderr == "interrupted: 2 images printed; the rest were not scored\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full (a write to it fails: disk full)")
@pytest.mark.parametrize("output", ["jsonl", "csv", "table"])
def test_results_that_cannot_be_written_are_one_line_not_a_traceback(tiny_model_dir, images, output):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "fakescope", "detect", "--model", str(tiny_model_dir), "--no-provenance",
                               "--device", "cpu", "-f", output, str(images)],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert (proc.returncode, proc.stderr) == (2, "error: cannot write the results: No space left on device\n")


def test_decode_device_without_cuda_says_once_that_the_host_decodes(tiny_model_dir, images):
    """On a CPU, `--decode device` decoded on the host without a word."""
    result = _detect(tiny_model_dir, "--device", "cpu", "--decode", "device", "-f", "jsonl", str(images))
    assert result.exit_code == 0 and len(_records(result.stdout)) == 3
    assert result.stderr == ("warning: decode device: nvJPEG needs a CUDA device and inference runs on cpu, so JPEGs are "
                             "decoded on the host\n")
    assert _detect(tiny_model_dir, "--device", "cpu", "-f", "jsonl", str(images)).stderr == ""


def test_the_table_shows_a_conflicts_reason_not_the_pixel_record(capsys):
    from fakescope.cli.detect import _print_table
    from fakescope.forensics.fusion import CONFLICT, CONTRADICTED

    pixel = {"kind": "pixel", "score": 0.2, "detail": "pixel model 0.200", "decisive": False}
    reason = f"{CONTRADICTED}; watermark: SDXL mark; against c2pa: captured by a camera"
    _print_table([{"path": "x.png", "label": "uncertain", "score": 0.5, "decided_by": CONFLICT, "reason": reason,
                   "caveat": None, "evidence": [pixel]}])
    shown = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "watermark: SDXL mark" in shown and "against c2pa" in shown and "pixel model 0.200" not in shown
