"""`fakescope generate taef2|openai` through Typer's runner, and manifest merging."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, JpegImagePlugin
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.data import read_rows
from fakescope.errors import ConfigError, FakescopeError, StorageError
from fakescope.generate import openai_images
from fakescope.generate.ledger import DONE, Ledger
from fakescope.generate.local import generate_local
from fakescope.generate.manifest import append_manifest
from fakescope.generate.openai_images import VARIATION_PROMPT, quiet_variation_warning
from fakescope.generate.runner import LEDGER_NAME

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import ImagesAPIServer  # noqa: E402


@pytest.fixture
def server(monkeypatch) -> Iterator[ImagesAPIServer]:
    """A loopback Images API server that the environment's key and base URL point the CLI at."""
    server = ImagesAPIServer(api_key="sk-cli").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-cli")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    yield server
    server.stop()


def test_taef2_command_writes_aligned_images_and_resumes(tmp_path, taef2_random_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = [(40, 33), (64, 64), (40, 33)]
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 70, 20, 90)).save(photos / f"img{i}.jpg", quality=90)
    out = tmp_path / "fakes"
    args = ["generate", "taef2", str(photos), "--out", str(out), "--weights", str(taef2_random_weights), "--device", "cpu", "-b", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 images written" in result.output
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 3 and set(manifest["generator"]) == {"taef2"} and set(manifest["label"]) == {"ai"}
    for row in manifest.itertuples():
        assert Image.open(row.uri).size == Image.open(row.source_uri).size == (row.width, row.height)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 images written, 3 already made; manifest" in again.output, again.output
    assert len(pd.read_csv(out / "manifest.csv")) == 3


def test_taef2_saves_a_jpeg_source_s_ai_image_with_its_tables_so_the_format_tells_nothing(tmp_path, taef2_random_weights):
    """The data README's format shortcut: PNG fakes beside JPEG reals are told apart by their compression alone."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 33), "teal").save(photos / "low.jpg", quality=60)  # 4:2:0
    Image.new("RGB", (48, 40), "navy").save(photos / "high.jpg", quality=95, subsampling=0)  # 4:4:4
    Image.new("L", (40, 40), 90).save(photos / "grey.jpg", quality=80)
    Image.new("RGB", (40, 33), "olive").save(photos / "flat.png")
    options = ["--weights", str(taef2_random_weights), "--device", "cpu"]

    def run(out: str, *more: str):
        return CliRunner().invoke(app, ["generate", "taef2", str(photos), "--out", str(tmp_path / out), *options, *more])

    assert run("fakes").exit_code == 0
    rows = read_rows(str(tmp_path / "fakes" / "manifest.csv")).set_index("source_uri")
    for name, fmt in (("low.jpg", "JPEG"), ("high.jpg", "JPEG"), ("grey.jpg", "JPEG"), ("flat.png", "PNG")):
        source, fake = Image.open(photos / name), Image.open(rows.loc[str(photos / name), "uri"])
        assert fake.format == rows.loc[str(photos / name), "format"] == fmt and fake.size == source.size
        if fmt == "JPEG":
            assert fake.quantization[0] == source.quantization[0], name  # the same luma table: the same quality
    assert JpegImagePlugin.get_sampling(Image.open(rows.loc[str(photos / "high.jpg"), "uri"])) == 0
    assert JpegImagePlugin.get_sampling(Image.open(rows.loc[str(photos / "low.jpg"), "uri"])) == 2
    lossless = run("png", "--format", "png")
    assert lossless.exit_code == 0 and "4 images written" in lossless.output, lossless.output
    assert {Image.open(uri).format for uri in read_rows(str(tmp_path / "png" / "manifest.csv"))["uri"]} == {"PNG"}
    bad = run("bad", "--format", "webp")
    assert bad.exit_code == 2 and bad.output.count("\n") == 1 and "'webp' is not one of" in bad.output, bad.output
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="^output format 'jpeg': use source or png$"):
        generate_local(str(photos), str(tmp_path / "bad"), lambda images: images, generator="same", model="same",
                       output_format="jpeg")


def test_a_taef2_run_killed_midway_loses_nothing_and_its_rerun_makes_only_the_rest(tmp_path, taef2_random_weights):
    """SIGKILL (no handler runs, no manifest is written) while the 10th source is read, 8 outputs in: the rerun keeps
    those 8 untouched, lists them, and makes the other two."""
    import time

    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    for i in range(9):
        Image.new("RGB", (40, 33), (i * 25, 20, 90)).save(photos / f"img{i}.jpg", quality=90)
    held = photos / "img9.png"
    os.mkfifo(held)  # reading it waits for a writer: the run is held after its first batch of 8 is written
    args = ["generate", "taef2", str(photos), "--out", str(out), "--weights", str(taef2_random_weights), "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    writer = _fifo_writer(held, proc, deadline=time.monotonic() + 120, poll=0.05)
    proc.kill()
    proc.communicate(timeout=60)
    if writer is not None:
        os.close(writer)
    assert writer is not None and proc.returncode == -signal.SIGKILL
    made = {path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in out.glob("*-taef2.*")}
    assert len(made) == 8 and not (out / "manifest.csv").exists() and not list(out.glob(".*.part"))
    held.unlink()
    Image.new("RGB", (40, 33), "teal").save(held)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "2 images written, 8 already made; manifest" in again.output, again.output
    assert {name: (out / name).stat().st_ino for name in made} == {name: ino for name, (ino, _) in made.items()}
    assert all((out / name).stat().st_mtime_ns == mtime for name, (_, mtime) in made.items())
    rows = read_rows(str(out / "manifest.csv"))
    assert len(rows) == 10 and rows["uri"].is_unique and sorted(Path(s).name for s in rows["source_uri"]) == \
        sorted(path.name for path in photos.iterdir())
    for row in rows.itertuples():  # each row pairs its ai image with the real it was made from
        assert row.pair_id == hashlib.sha256(Path(row.source_uri).read_bytes()).hexdigest()


def test_taef2_remakes_an_output_that_cannot_be_read(tmp_path, taef2_random_weights):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (40, 33), (i * 90, 20, 90)).save(photos / f"img{i}.png")
    args = ["generate", "taef2", str(photos), "--out", str(out), "--weights", str(taef2_random_weights), "--device", "cpu"]
    assert "2 images written" in CliRunner().invoke(app, args).output
    damaged = min(out.glob("*.png"))
    damaged.write_bytes(b"")  # e.g. a disk that filled up, and the run killed before its manifest was written
    (out / "manifest.csv").unlink()  # an output the manifest lists is taken as it is, unread
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "1 images written, 1 already made; manifest" in again.output, again.output
    assert f"remaking {damaged}" in again.output
    row = read_rows(str(out / "manifest.csv")).set_index("uri").loc[str(damaged)]
    assert Image.open(damaged).size == (40, 33) and row["sha256"] == hashlib.sha256(damaged.read_bytes()).hexdigest()


def test_a_rerun_with_other_parameters_remakes_the_outputs_instead_of_relabelling_them(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    Image.new("RGB", (40, 33), (200, 30, 30)).save(photos / "img0.png")

    def darken(factor):
        return lambda images: [Image.eval(image.convert("RGB"), lambda v: int(v * factor)) for image in images]

    for factor, written, before in ((0.5, 1, 0), (0.5, 0, 1), (0.25, 1, 0)):
        count, manifest, _, kept = generate_local(str(photos), str(out), darken(factor), generator="dark", model="darken",
                                                  params={"factor": factor})
        assert (count, kept) == (written, before)
        row = read_rows(manifest).iloc[0]
        assert json.loads(row["params"]) == {"factor": factor}
        assert Image.open(row["uri"]).getpixel((0, 0))[0] == int(200 * factor)


def test_a_generator_returning_too_few_images_is_refused_and_a_fixed_rerun_makes_them_all(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 33), (60 * i, 30, 30)).save(photos / f"img{i}.png")
    with pytest.raises(FakescopeError, match=r"^the generator returned 1 images for 3 sources: it must return one per"):
        generate_local(str(photos), str(out), lambda images: images[:1], generator="same", model="same")
    assert not out.exists() or not list(out.iterdir())  # nothing of the refused batch was saved
    count, manifest, _, _ = generate_local(str(photos), str(out), lambda images: images, generator="same", model="same")
    assert count == 3 and len(read_rows(manifest)) == 3


def test_taef2_into_a_folder_whose_manifest_is_unreadable_stops_at_once_in_one_line(tmp_path, taef2_random_weights):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    out.mkdir()
    Image.new("RGB", (40, 33)).save(photos / "img0.png")
    (out / "manifest.parquet").write_bytes(b"not parquet")
    result = CliRunner().invoke(app, ["generate", "taef2", str(photos), "--out", str(out), "--manifest", "manifest.parquet",
                                      "--weights", str(taef2_random_weights), "--device", "cpu"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output == f"error: {out / 'manifest.parquet'} is not a manifest (.csv or .parquet): it is not a Parquet file\n"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.parquet"]  # nothing made, nothing overwritten


def test_taef2_names_copies_and_non_utf8_names_give_a_valid_manifest(tmp_path, taef2_random_weights):
    photos = tmp_path / "photos"
    for folder in ("a", "b"):
        (photos / folder).mkdir(parents=True)
        Image.new("RGB", (40, 33), "teal").save(photos / folder / "same.png")  # one photo copied into two folders
    Image.new("RGB", (40, 33), "navy").save(os.fsdecode(bytes(photos / "caf") + b"\xe9.png"))  # Latin-1 name
    out = tmp_path / "fakes"
    args = ["generate", "taef2", str(photos), "--out", str(out), "--weights", str(taef2_random_weights), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "2 images written" in result.output, result.output
    rows = read_rows(str(out / "manifest.csv"))
    assert len(rows) == 2 and rows["uri"].is_unique and all(Path(uri).is_file() for uri in rows["uri"])
    assert {Path(source).name for source in rows["source_uri"]} == {"same.png", "caf\\udce9.png"}
    built = CliRunner().invoke(app, ["dataset", "build", str(out / "manifest.csv"), "-o", str(tmp_path / "m.csv")])
    assert built.exit_code == 0, built.output
    assert CliRunner().invoke(app, args).output.startswith("0 images written")


def test_taef2_cuts_a_long_source_name_to_an_output_name_the_file_system_takes(tmp_path, taef2_random_weights):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 33), "teal").save(photos / ("\u00e9" * 120 + ".png"))  # 240 bytes: a legal name
    out = tmp_path / "fakes"
    args = ["generate", "taef2", str(photos), "--out", str(out), "--weights", str(taef2_random_weights), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "1 images written" in result.output, result.output
    (made,) = out.glob("*.png")
    assert len(made.name.encode()) <= 255 and made.name.startswith("\u00e9" * 50) and made.name.endswith("-taef2.png")


def test_taef2_takes_a_glob_and_refuses_sources_that_give_no_image(tmp_path, taef2_random_weights):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.new("RGB", (40, 33), "teal").save(photos / name)
    options = ["--weights", str(taef2_random_weights), "--device", "cpu"]

    def run(src: str, out: str):
        return CliRunner().invoke(app, ["generate", "taef2", src, "--out", str(tmp_path / out), *options])

    result = run(str(photos / "**" / "*.png"), "fakes")
    assert result.exit_code == 0 and "2 images written" in result.output, result.output
    assert sorted(Path(source).name for source in read_rows(str(tmp_path / "fakes" / "manifest.csv"))["source_uri"]) == ["a.png", "c.png"]
    (photos / "broken").mkdir()
    (photos / "broken" / "zero.png").write_bytes(b"")
    unreadable = run(str(photos / "broken"), "none")
    assert unreadable.exit_code == 1 and ("0 images written, 1 unusable source(s) skipped; no manifest: no source could "
                                          "be read") in unreadable.output, unreadable.output
    mixed = run(str(photos), "mixed")  # some sources unreadable: the others are made, the exit status says so
    assert mixed.exit_code == 1 and "3 images written, 1 unusable source(s) skipped; manifest" in mixed.output, mixed.output
    (tmp_path / "only" / "fakes").mkdir(parents=True)
    Image.new("RGB", (40, 33)).save(tmp_path / "only" / "fakes" / "old.png")  # an earlier run's output
    for src, out, message in [(photos / "*.gif", "none", "no images in"),
                              (photos / "missing.png", "none", f"error: {photos / 'missing.png'}: no such file\n"),
                              (tmp_path / "only", "only/fakes", "outside its output folder")]:
        refused = run(str(src), out)
        assert refused.exit_code == 2 and refused.output.startswith("error: ") and message in refused.output, refused.output


def test_taef2_manifest_from_relative_paths_resolves_from_its_own_folder(tmp_path, taef2_random_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("photos").mkdir()
    Image.new("RGB", (40, 33), "teal").save("photos/a.jpg")
    args = ["generate", "taef2", "photos", "--out", "fakes", "--weights", str(taef2_random_weights), "--device", "cpu"]
    assert CliRunner().invoke(app, args).exit_code == 0
    rows = read_rows("fakes/manifest.csv")
    assert len(rows) == 1 and Path(rows["uri"][0]).is_file() and Path(rows["source_uri"][0]).is_file()


def test_taef2_takes_a_glob_of_manifests_as_scan_does(tmp_path, taef2_random_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ex").mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (40, 33), "teal").save(f"ex/{name}.png")
    Path("ex/2.csv").write_text("uri,label,split\nc.png,real,train\nb.png,ai,train\n")
    Path("ex/1.csv").write_text("uri,label,split\na.png,real,train\n")
    args = ["generate", "taef2", "ex/*.csv", "--weights", str(taef2_random_weights), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", "fakes"])
    assert result.exit_code == 0 and "2 images written" in result.output, result.output
    assert [Path(s).name for s in read_rows("fakes/manifest.csv")["source_uri"]] == ["a.png", "c.png"]  # name order
    none = CliRunner().invoke(app, ["generate", "taef2", "ex/*.parquet", "--out", "none", "--weights", str(taef2_random_weights)])
    assert none.exit_code == 2 and none.output.startswith("error: no manifest matches ") and none.output.endswith("ex/*.parquet\n")


def test_taef2_command_reports_missing_weights_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["generate", "taef2", str(tmp_path), "--out", str(tmp_path / "o"), "--weights", str(tmp_path / "none")])
    assert result.exit_code == 2 and result.output.startswith("error: taef2 weights file not found")


@pytest.mark.parametrize(("signame", "status"), [("SIGINT", 130), ("SIGTERM", 143)])  # Ctrl-C; a scheduler's stop
def test_openai_stopped_before_any_request_exits_as_the_rule_says(tmp_path, signame, status):
    """A SIGTERM outside the request loop (here: while the prompts are read) exited 130, as Ctrl-C does; both printed
    nothing, and now say that nothing was sent."""
    import time

    prompts = tmp_path / "prompts.txt"
    os.mkfifo(prompts)  # reading it waits for its writer: the command is held before any request
    proc = subprocess.Popen([sys.executable, "-m", "fakescope", "generate", "openai", str(prompts), "--mode", "generate",
                             "--model", "dall-e-3", "--out", str(tmp_path / "out")],
                            env={**os.environ, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job ignores it
    deadline = time.monotonic() + 60
    writer = _fifo_writer(prompts, proc, deadline=deadline, poll=0.1)
    # A signal caught between the command's open() and its read() of the FIFO would only be acted on once read()
    # returned, which it never does here (CPython runs handlers between bytecodes): wait until read() sleeps.
    while proc.poll() is None and "pipe_read" not in Path(f"/proc/{proc.pid}/wchan").read_text() \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if writer is not None:
            os.close(writer)
    assert proc.returncode == status, stderr
    assert (stdout, stderr) == ("", "stopped before sending any request: nothing was made or paid for\n")
    assert not (tmp_path / "out").exists()


def test_openai_help_names_the_request_cap_the_code_has():
    from fakescope.cli.generate import UNCAPPED_REQUESTS

    shown = " ".join(CliRunner().invoke(app, ["generate", "openai", "-h"], env={"COLUMNS": "400"}).stdout.split())
    assert f"names); more than {UNCAPPED_REQUESTS} need --max-images, a spend budget" in shown  # the docstring's number


def test_generate_n_and_seed_beyond_their_limits_are_refused_as_parsed_in_one_line(tmp_path, server):
    """`generate openai --n` and `generate diffusers --seed` had no maximum: --n 1000000000 planned until killed (the
    plan counts each source's images); a seed of 2**64 failed (torch's generator overflows) only once the pipeline was
    loaded, and -1 was taken as 2**64-1. Both are now refused as parsed, in the CLI's words, the seed's range that of
    the other --seed options; nothing is read, loaded or sent."""
    from fakescope.cli._options import MAX_SEED
    from fakescope.cli.generate import MAX_N

    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    source, out = str(tmp_path / "a.png"), str(tmp_path / "out")
    cases = [(["openai", source, "--out", out, "--max-images", "1", "--n", str(n)], "--n", n, f"1<=x<={MAX_N}",
              "openai") for n in (MAX_N + 1, 1_000_000_000, 0)]
    cases += [(["diffusers", source, "--out", out, "--pipeline", str(tmp_path / "sd"), "--seed", str(seed)], "--seed", seed,
               f"0<=x<={MAX_SEED}", "diffusers") for seed in (MAX_SEED + 1, 2**64, -1)]
    for args, option, value, limits, verb in cases:
        refused = CliRunner().invoke(app, ["generate", *args], prog_name="fakescope")
        assert (refused.exit_code, refused.stdout) == (2, ""), refused.output
        assert refused.stderr == (f"error: Invalid value for '{option}': {value} is not in the range {limits}. "
                                  f"See 'fakescope generate {verb} -h'.\n")
    assert MAX_N == 10 and not os.path.exists(out) and server.billable == 0
    made = CliRunner().invoke(app, ["generate", "openai", source, "--out", out, "--n", str(MAX_N), "--max-images", "1",
                                    "--max-retries", "0"])
    assert made.exit_code == 0 and "x --n 10: up to 10 request(s), --max-images 1" in made.output, made.output


def test_openai_without_a_key_says_how_to_give_one_and_makes_nothing(tmp_path, image_factory, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env above it
    image_factory.file(tmp_path / "a.png", "PNG", seed=1)
    result = CliRunner().invoke(app, ["generate", "openai", "a.png", "-o", "fakes", "--max-images", "1"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()] and "export it, or put OPENAI_API_KEY=" in result.stderr
    assert not (tmp_path / "fakes").exists()


def test_openai_without_a_key_names_a_wrong_source_first(tmp_path, monkeypatch):
    """The missing key was said first: a user set it, then learned the source was wrong."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env above it
    result = CliRunner().invoke(app, ["generate", "openai", "typo", "-o", "fakes", "--max-images", "1"])
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {tmp_path / 'typo'}: no such folder\n")
    assert not (tmp_path / "fakes").exists()


def test_openai_command_runs_and_rejects_bad_options(tmp_path, server):
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["generate", "openai", str(tmp_path / "a.png"), "--out", str(out), "--model", "dall-e-2", "--size", "256x256", "--n", "2"]
    handler = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, [*args, "--max-spend", "0.02"])
    assert result.exit_code == 0, result.output
    assert "done 1," in result.output and "stopped: budget" in result.output and server.billable == 1
    assert ", tokens not reported, " in result.output and "tokens 0" not in result.output  # dall-e reports no usage
    assert signal.getsignal(signal.SIGTERM) is handler  # SIGTERM stops like Ctrl-C only while the command runs
    bad = CliRunner().invoke(app, [*args, "--mode", "variation", "--model", "dall-e-3"])
    assert bad.exit_code == 2 and "does not support variation" in bad.output
    fidelity = CliRunner().invoke(app, [*args, "--input-fidelity", "high"])  # dall-e-2's variations take none
    assert fidelity.exit_code == 2 and fidelity.stderr.startswith("error: input_fidelity is for edits by GPT image models")
    assert server.billable == 1


def test_openai_command_exits_1_when_some_jobs_failed_and_0_once_a_rerun_makes_them(tmp_path, server):
    """`generate openai` exited 0 with `failed 1` in its summary; a failed job now gives exit 1, as in detect."""
    for name, colour in (("a.png", "red"), ("b.png", "blue")):
        Image.new("RGB", (48, 48), colour).save(tmp_path / name)
    args = ["generate", "openai", str(tmp_path), "--out", str(tmp_path / "out"), "--max-retries", "0"]
    server.faults = ["unreadable"]  # a billed answer that is no image: that job fails, the other is made
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1 and "done 1, " in failed.output and "failed 1," in failed.output, failed.output
    again = CliRunner().invoke(app, args)  # the failed job is asked again
    assert again.exit_code == 0 and "done 1, already done 1, " in again.output and "failed 0," in again.output, again.output
    done = CliRunner().invoke(app, args)  # nothing left to make: no tokens used, rather than "tokens not reported"
    assert done.exit_code == 0 and "done 0, already done 2, " in done.output and ", tokens 0;" in done.output, done.output


def test_a_rerun_missing_an_option_is_refused_naming_it_and_pays_nothing(tmp_path, server):
    """A rerun of a --prompt run without --prompt had new job keys (other parameters), so it paid for every image again;
    it is refused in one line naming what differs, the same options resume it, --new-settings makes a second set."""
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["generate", "openai", str(tmp_path / "a.png"), "--out", str(out), "--n", "2", "--max-retries", "0"]
    first = CliRunner().invoke(app, [*args, "--prompt", "a snowy day", "--size", "1536x1024"])
    assert first.exit_code == 0 and "done 2," in first.output and server.billable == 2, first.output
    bare = CliRunner().invoke(app, args)
    assert bare.exit_code == 2 and server.billable == 2, bare.output
    assert bare.stderr == (f"error: the ledger of this --out paid for {tmp_path / 'a.png'} with --size 1536x1024, --prompt "
                           "'a snowy day'; this run has --size 1024x1024, no --prompt: pass the same options to resume that "
                           "run, --new-settings to pay for a second set beside it, or use another --out\n")
    again = CliRunner().invoke(app, [*args, "--prompt", "a snowy day", "--size", "1536x1024"])
    assert again.exit_code == 0 and "done 0, already done 2," in again.output and server.billable == 2, again.output
    second = CliRunner().invoke(app, [*args, "--new-settings"])
    assert second.exit_code == 0 and "done 2, already done 0," in second.output and server.billable == 4, second.output
    assert CliRunner().invoke(app, args).exit_code == 0 and server.billable == 4  # either set now resumes


def test_a_rerun_is_refused_for_any_source_paid_under_other_settings_before_its_plan(tmp_path, server):
    """The settings check looked only at the first source, so a folder whose first photo was paid under this run's
    options paid again for the others made under other ones; and a refused rerun printed its plan line first. Every
    source is now checked, before the plan is printed."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("a.png", "red"), ("b.png", "blue"), ("c.png", "green")):
        Image.new("RGB", (48, 48), colour).save(photos / name)
    args = ["--out", str(tmp_path / "out"), "--max-retries", "0"]
    assert CliRunner().invoke(app, ["generate", "openai", str(photos / "a.png"), *args]).exit_code == 0
    for name in ("b.png", "c.png"):
        made = CliRunner().invoke(app, ["generate", "openai", str(photos / name), *args, "--size", "1536x1024",
                                        "--new-settings"])
        assert made.exit_code == 0, made.output
    assert server.billable == 3
    refused = CliRunner().invoke(app, ["generate", "openai", str(photos), *args])
    assert refused.exit_code == 2 and server.billable == 3 and refused.stdout == "", refused.output
    assert refused.stderr == (f"error: the ledger of this --out paid for {photos / 'b.png'} (and 1 more source(s)) with "
                              "--size 1536x1024; this run has --size 1024x1024: pass the same options to resume that "
                              "run, --new-settings to pay for a second set beside it, or use another --out\n")
    second = CliRunner().invoke(app, ["generate", "openai", str(photos), *args, "--new-settings"])
    assert second.exit_code == 0 and "done 2, already done 1," in second.output and server.billable == 5, second.output


def test_openai_at_most_once_exits_1_naming_the_jobs_it_left_unresolved(tmp_path, server):
    """`--at-most-once` skipped the requests a crash left in flight and still exited 0, saying only `unresolved 1`."""
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    out = tmp_path / "out"
    args = ["generate", "openai", str(tmp_path / "a.png"), "--out", str(out), "--max-retries", "0"]
    assert CliRunner().invoke(app, args).exit_code == 0
    with Ledger(out / LEDGER_NAME) as ledger:  # as a crash leaves it: the request sent, nothing answered or written
        record = next(ledger.jobs(DONE))
        ledger.mark_running(record.key)
    Path(record.output).unlink()
    once = CliRunner().invoke(app, [*args, "--at-most-once"])
    assert once.exit_code == 1 and "unresolved 1," in once.stdout and server.billable == 1, once.output
    assert once.stderr.strip() == ("warning: 1 job(s) left unresolved: their requests were sent but no answer was had (a "
                                   "crash, or an answer that timed out or broke off), so whether they were billed is "
                                   "unknown; a rerun resends them, unless --at-most-once")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "done 1," in again.stdout and not again.stderr and server.billable == 2, again.output


def test_dall_e_2_variations_from_worker_threads_print_no_deprecation_warning(tmp_path, server):
    """The client's DeprecationWarning for create_variation reached stderr wherever warnings are shown (-W default, pytest)."""
    for i in range(4):
        Image.new("RGB", (40, 40), (i * 60, 10, 10)).save(tmp_path / f"p{i}.png")
    command = [sys.executable, "-W", "default", "-m", "fakescope", "generate", "openai", str(tmp_path), "--out", str(tmp_path / "out"),
               "--model", "dall-e-2", "--size", "256x256", "--concurrency", "2", "--max-retries", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0 and "done 4," in result.stdout and server.billable == 4, result.stdout + result.stderr
    assert "DeprecationWarning" not in result.stderr, result.stderr
    with warnings.catch_warnings(record=True) as caught:  # the filter is that one warning only
        warnings.simplefilter("always")
        quiet_variation_warning()
        for message, module in (("deprecated", openai_images.__name__), ("deprecated", "elsewhere"), ("other", openai_images.__name__)):
            warnings.warn_explicit(message, DeprecationWarning, "x.py", 1, module=module)
    assert [(str(w.message), w.filename) for w in caught] == [("deprecated", "x.py"), ("other", "x.py")]


def test_openai_command_defaults_make_gpt_image_variations_and_print_tokens(tmp_path, server):
    Image.new("RGB", (48, 64), "red").save(tmp_path / "a.png")
    args = ["generate", "openai", str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "done 1," in result.output and "estimated spend unknown (no price for this model" in result.output
    tokens = len(VARIATION_PROMPT.split()) + 323 + 1048  # prompt, input image, output, as the loopback server counts
    assert f"tokens {tokens}" in result.output
    sent = server.requests[0]
    assert (sent["endpoint"], sent["model"], sent["size"], sent["image"]) == ("edits", "gpt-image-2.6-flare", "1024x1024", (48, 64))
    row = read_rows(str(tmp_path / "out" / "manifest.csv")).iloc[0]
    assert row["model"] == "gpt-image-2.6-flare" and json.loads(row["params"])["usage"]["total_tokens"] == tokens
    budget = CliRunner().invoke(app, [*args, "--n", "2", "--max-spend", "1"])
    assert budget.exit_code == 2 and budget.output.startswith("error: no price known for gpt-image-2.6-flare"), budget.output
    assert "--price-per-image" in budget.output and server.billable == 1
    priced = CliRunner().invoke(app, [*args, "--n", "2", "--max-spend", "1", "--price-per-image", "0.04"])
    assert priced.exit_code == 0 and "done 1, already done 1" in priced.output and "estimated spend $0.040" in priced.output
    bad = CliRunner().invoke(app, [*args, "--model", "gpt-image-2", "--size", "1000x1000"])
    assert bad.exit_code == 2 and "size 1000x1000 is not one gpt-image-2 makes" in bad.output and server.billable == 2


@pytest.mark.parametrize(("name", "content", "mode", "message"), [
    ("missing.png", None, "variation", "missing.png: no such file"),
    ("photo.png", b"\x89PNG\r\n\x1a\n", "generate", "photo.png: not a prompts file"),
    ("blank.txt", b"\n  \n", "generate", "blank.txt: no prompt in it"),
    ("empty", "folder", "variation", "no images in "),
])
def test_openai_bad_input_is_refused_before_anything_is_made_under_out(tmp_path, server, name, content, mode, message):
    """A missing or wrong SRC left --out holding an empty ledger; nothing is made there now."""
    src = tmp_path / name
    if content == "folder":
        src.mkdir()
    elif content is not None:
        src.write_bytes(content)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "openai", str(src), "--out", str(out), "--mode", mode])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and message in result.stderr, result.output
    assert result.stdout == "" and not out.exists() and server.billable == 0


@pytest.mark.parametrize("command", ["openai", "taef2"])
@pytest.mark.parametrize("name", ["m.txt", "../manifest.csv", "sub/manifest.csv"])
def test_a_manifest_name_that_is_no_csv_or_parquet_file_in_out_is_refused_before_anything(tmp_path, server, command, name,
                                                                                           taef2_random_weights):
    """--manifest m.txt wrote a CSV that no manifest reader takes, and ../manifest.csv one outside --out."""
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    out = tmp_path / "out"
    options = (["--model", "dall-e-2", "--size", "256x256", "--yes"] if command == "openai"
               else ["--weights", str(taef2_random_weights), "--device", "cpu"])
    result = CliRunner().invoke(app, ["generate", command, str(tmp_path / "a.png"), "--out", str(out), "--manifest", name,
                                      *options])
    assert result.exit_code == 2 and result.output == (f"error: manifest name {name!r}: expected a file name in the output "
                                                        "folder ending .csv or .parquet, as manifest.csv\n"), result.output
    assert not out.exists() and server.billable == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("ledger", ["folder", "not-a-ledger.sqlite"])
def test_a_ledger_that_cannot_be_opened_is_one_line_and_leaves_no_spool_folder(tmp_path, server, ledger):
    """A --ledger that was a folder or no SQLite file failed in one line but left `<ledger>.spool/` beside it."""
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    (tmp_path / "folder").mkdir()
    (tmp_path / "not-a-ledger.sqlite").write_bytes(b"not a database " * 100)
    result = CliRunner().invoke(app, ["generate", "openai", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                                      "--model", "dall-e-2", "--size", "256x256", "--ledger", str(tmp_path / ledger)])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: cannot open job ledger {tmp_path / ledger}: ")
    assert result.stderr.count("\n") == 1 and server.billable == 0
    assert not (tmp_path / f"{ledger}.spool").exists()


def test_an_out_that_is_a_file_says_so_in_one_line(tmp_path, server):
    """--out naming an existing file said "no such folder"."""
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    (tmp_path / "out.txt").write_text("notes")
    result = CliRunner().invoke(app, ["generate", "openai", str(tmp_path / "a.png"), "--out", str(tmp_path / "out.txt"),
                                      "--model", "dall-e-2", "--size", "256x256", "--yes"])
    assert (result.exit_code, result.stderr) == (2, f"error: {tmp_path / 'out.txt'}: a file, not a folder\n")
    assert server.billable == 0 and (tmp_path / "out.txt").read_text() == "notes"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open files through /proc/self/fd (Linux)")
def test_a_file_that_is_no_ledger_is_not_left_open(tmp_path):
    """Its SQLite connection stayed open for as long as the error lived (its traceback holds the ledger)."""
    path = tmp_path / "not-a-ledger.sqlite"
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(StorageError, match="^cannot open job ledger .*: file is not a database$") as refused:
        Ledger(path)
    held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd") if os.path.islink(f"/proc/self/fd/{fd}")]
    assert refused.value and str(path) not in held


def test_openai_refuses_many_unlimited_requests_in_every_mode_and_prints_the_plan(tmp_path, server):
    """README.md taken as a prompts file sent 223 prompts unasked; over 20 requests now need a limit or --yes."""
    prompts, photos, out = tmp_path / "prompts.txt", tmp_path / "photos", tmp_path / "out"
    prompts.write_text("".join(f"a photo of a face, number {i}\n" for i in range(21)))
    photos.mkdir()
    for i in range(11):
        Image.new("RGB", (40, 40), (i * 20, 10, 10)).save(photos / f"p{i}.png")
    generate = ["generate", "openai", str(prompts), "--out", str(out), "--mode", "generate"]
    refused = {
        "generate": CliRunner().invoke(app, generate),
        "variation": CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--n", "2"]),
        "edit": CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--n", "2",
                                         "--mode", "edit", "--prompt", "a hat"]),
    }
    assert refused["generate"].stderr == ("error: 21 prompt(s) x --n 1: up to 21 request(s), more than 20 without a "
                                          "limit: pass --max-images N, a budget (--max-spend, --max-total-spend) or --yes\n")
    for mode in ("variation", "edit"):  # a folder of images: the same rule
        assert refused[mode].stderr.startswith("error: 11 image(s) x --n 2: up to 22 request(s), more than 20 "), mode
    assert {(r.exit_code, r.stdout) for r in refused.values()} == {(2, "")}
    assert server.billable == 0 and not out.exists()
    capped = CliRunner().invoke(app, [*generate, "--max-images", "3"])
    assert capped.exit_code == 0 and capped.stdout.startswith(
        "21 prompt(s) x --n 1: up to 21 request(s), --max-images 3 (jobs done before are skipped, unpaid)\n"), capped.output
    assert "done 3," in capped.stdout and server.billable == 3
    rest = CliRunner().invoke(app, [*generate, "--max-images", "16"])
    assert rest.exit_code == 0 and rest.stdout.startswith(
        "21 prompt(s) x --n 1, 3 made before: up to 18 request(s), --max-images 16 "), rest.output
    assert "done 16, already done 3," in rest.stdout and server.billable == 19
    last = CliRunner().invoke(app, generate)  # 2 left: under the cap, no limit needed
    assert last.exit_code == 0 and last.stdout.startswith("21 prompt(s) x --n 1, 19 made before: up to 2 request(s)")
    assert "done 2, already done 19," in last.stdout and server.billable == 21, last.output
    finished = CliRunner().invoke(app, generate)  # a finished run's rerun pays for nothing: nothing to confirm
    assert finished.exit_code == 0 and "done 0, already done 21," in finished.stdout and server.billable == 21
    budget = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(tmp_path / "dalle"), "--n", "2",
                                      "--model", "dall-e-2", "--size", "256x256", "--max-spend", "0.04"])
    assert budget.exit_code == 0 and "stopped: budget" in budget.stdout and server.billable == 23, budget.output
    assert budget.stdout.startswith("11 image(s) x --n 2: up to 22 request(s) (~$0.35 at $0.016 per image) "), budget.output
    variation = ["generate", "openai", str(photos), "--out", str(tmp_path / "var"), "--n", "2"]
    assert CliRunner().invoke(app, [*variation, "--yes"]).exit_code == 0 and server.billable == 45
    again = CliRunner().invoke(app, variation)  # images too: known done by their names, not asked again
    assert again.exit_code == 0 and again.stdout.startswith("11 image(s) x --n 2, 22 made before: up to 0 request(s)")
    assert "done 0, already done 22," in again.stdout and server.billable == 45, again.output
    for i in range(11):  # each photo replaced by another of its name: the plan takes them for made, the cap holds
        Image.new("RGB", (40, 40), (i * 20, 200, 10)).save(photos / f"p{i}.png")
    replaced = CliRunner().invoke(app, variation)
    assert replaced.exit_code == 0 and "done 20, already done 0," in replaced.stdout, replaced.output
    assert "stopped: budget" in replaced.stdout and server.billable == 65
    prompts.write_text("".join(f"a photo of a dog, number {i}\n" for i in range(21)))  # prompts are known by hash too
    assert CliRunner().invoke(app, generate).stderr.startswith("error: 21 prompt(s) x --n 1: up to 21 request(s), ")


def test_manifest_merge_replaces_rows_by_uri_in_csv_and_parquet(tmp_path):
    for name in ("m.csv", "m.parquet"):
        uri = str(tmp_path / name)
        row = {"uri": "a.png", "label": "ai", "width": 1, "height": 1, "params": "{}"}
        assert append_manifest(uri, [row, {**row, "uri": "b.png"}]) == 2
        assert append_manifest(uri, [{**row, "width": 9}, {**row, "uri": "c.png"}]) == 3
        frame = pd.read_parquet(uri) if name.endswith("parquet") else pd.read_csv(uri)
        assert sorted(frame["uri"]) == ["a.png", "b.png", "c.png"]
        assert int(frame.set_index("uri").loc["a.png", "width"]) == 9


def test_appending_to_a_manifest_that_named_the_real_in_source_moves_it_to_source_uri(tmp_path):
    uri = str(tmp_path / "m.csv")
    pd.DataFrame({"uri": ["a.png"], "label": ["ai"], "source": ["/faces/real/r.png"], "model": ["m"]}).to_csv(uri, index=False)
    append_manifest(uri, [{"uri": "b.png", "label": "ai", "source": "", "source_uri": "/faces/real/s.png"}])
    frame = pd.read_csv(uri, keep_default_na=False)
    assert frame["source"].tolist() == ["", ""] and frame["source_uri"].tolist() == ["/faces/real/r.png", "/faces/real/s.png"]


def test_generate_from_a_built_and_split_manifest_with_a_total_budget(tmp_path, server, monkeypatch, taef2_random_weights):
    monkeypatch.chdir(tmp_path)
    for folder in ("faces/real", "faces/fake/old"):
        Path(folder).mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (40, 40), (i * 60, 20, 90)).save(f"faces/real/{i:05d}.png")
    Image.new("RGB", (40, 40), "white").save("faces/fake/old/x.png")
    assert CliRunner().invoke(app, ["dataset", "build", "faces", "-o", "faces.parquet", "--no-csv"]).exit_code == 0
    assert read_rows("faces.parquet")["label"].tolist().count("real") == 4
    args = ["generate", "openai", "faces.parquet", "--out", "fakes", "--model", "dall-e-2", "--size", "256x256", "--max-total-spend", "0.05"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "done 3," in first.output and "(all runs $0.048, $0.002 left of --max-total-spend)" in first.output
    again = CliRunner().invoke(app, args)
    assert "done 0, already done 3" in again.output and "stopped: budget" in again.output and server.billable == 3
    rows, reals = read_rows("fakes/manifest.csv"), read_rows("faces.parquet").query("label == 'real'")
    assert all(Path(source).parent.name == "real" for source in rows["source_uri"])
    assert set(rows["pair_id"]) <= set(reals["pair_id"])  # the fakes join their faces' rows by pair_id
    split = ["dataset", "split", "faces.parquet", "--ratios", "train=0.5,test=0.5", "--max-distance", "-1"]
    assert CliRunner().invoke(app, split).exit_code == 0
    reals = read_rows("faces.parquet").query("label == 'real'")  # now split
    tests = sorted(reals.loc[reals["split"] == "test", "uri"])
    local = CliRunner().invoke(app, ["generate", "taef2", "faces.parquet", "--out", "recon", "--split", "test",
                                     "--weights", str(taef2_random_weights), "--device", "cpu"])
    assert local.exit_code == 0 and f"{len(tests)} images written" in local.output, local.output
    assert 0 < len(tests) < 4 and sorted(read_rows("recon/manifest.csv")["source_uri"]) == tests
    missing = CliRunner().invoke(app, [*args, "--split", "val"])
    assert missing.exit_code == 2 and "no real images in split 'val'" in missing.output


def _fifo_writer(fifo: Path, proc: subprocess.Popen, *, deadline: float, poll: float) -> int | None:
    """A write end of `fifo` once `proc` has opened it to read (ENXIO until then); None if `proc` ended or the
    `time.monotonic()` `deadline` passed first."""
    import errno
    import time

    writer = None
    while writer is None and proc.poll() is None and time.monotonic() < deadline:
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            assert exc.errno == errno.ENXIO
            time.sleep(poll)
    return writer


def test_an_answer_slower_than_timeout_is_left_unresolved_not_paid_twice(tmp_path, server):
    Image.new("RGB", (48, 48), "red").save(tmp_path / "a.png")
    server.faults, server.slow_seconds = ["slow"], 3.0
    args = ["generate", "openai", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--model", "dall-e-2",
            "--size", "256x256", "--timeout", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "done 0, already done 0, recovered 0, failed 0, unresolved 1," in result.stdout, result.output
    assert "warning: job a: the answer stopped halfway for longer than the timeout; the API may have billed it" in result.stderr
    assert result.stderr.rstrip().endswith("a rerun resends them, unless --at-most-once") and len(server.requests) == 1
    assert "estimated spend $0.016, of which $0.016 may have been billed (all runs $0.016: $0.000 billed, $0.016 may " \
           "have been (answers lost))" in result.stdout
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "done 1," in again.stdout and server.billable == 2, again.output
    assert "estimated spend $0.016 (all runs $0.032: $0.016 billed, $0.016 may have been (answers lost))" in again.stdout


def test_a_model_outside_the_table_sends_any_prompt_and_each_refused_one_is_one_line(tmp_path, server):
    """A model fakescope does not know has no prompt limit checked before the run: the server's refusal of a prompt
    fails that prompt's job in one line (the others are made), and one of an edit's --prompt stops the run at once."""
    server.max_prompt = 100
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a cat\n{'x' * 150}\na dog\n")
    args = ["generate", "openai", str(prompts), "--out", str(tmp_path / "out"), "--mode", "generate",
            "--model", "acme-image-1", "--max-retries", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "done 2, " in result.stdout and "failed 1," in result.stdout, result.output
    assert result.stderr == ("warning: job prompt2 failed: the Images API refused this prompt (400): Invalid 'prompt': "
                             "string too long. Expected a string with maximum length 100, but got a string with length "
                             "150 instead.\n")
    assert server.billable == 2
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (i * 60, 10, 10)).save(photos / f"p{i}.png")
    edit = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(tmp_path / "edits"), "--mode", "edit",
                                    "--prompt", "y" * 150, "--model", "acme-image-1", "-j", "1", "--max-retries", "0"])
    assert edit.exit_code == 2 and edit.stderr.startswith(
        "error: the Images API refused prompt for acme-image-1 (400): Invalid 'prompt': string too long."), edit.output
    assert edit.stderr.endswith("every request sends it alike: change it (--prompt)\n") and edit.stderr.count("\n") == 1
    assert server.counts[("edits", 400)] == 1 and server.billable == 2
