"""The OpenAI backend end to end: the real `openai` client against a loopback Images API server."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import traceback
import warnings
import zlib
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cache import cache_dir
from fakescope.cli import app
from fakescope.errors import ConfigError, StorageError
from fakescope.generate import openai_images, runner
from fakescope.generate.ledger import DONE, Ledger
from fakescope.generate.openai_images import VARIATION_PROMPT, OpenAIImagesConfig, make_client
from fakescope.generate.openai_models import MODELS, check_served, current_models, input_fidelities
from fakescope.generate.runner import LEDGER_NAME, default_ledger_path, run_openai

sys.path.insert(0, str(Path(__file__).parent))
from openai_server import API_KEY, ImagesAPIServer  # noqa: E402


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (size, fmt) in enumerate([((64, 48), "JPEG"), ((40, 40), "PNG"), ((50, 70), "PNG")]):
        Image.new("RGB", size, (i * 60, 30, 200 - i * 50)).save(folder / f"photo{i}.{fmt.lower()}", format=fmt)
    return folder


def _outputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".webp"))


def test_variation_end_to_end_writes_outputs_and_manifest(server, photos, tmp_path):
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256", n=2)
    report = run_openai(str(photos), str(out), config, concurrency=2, client=make_client(max_retries=0))
    assert (report.done, report.failed, report.stopped) == (6, 0, None)
    assert report.spent == pytest.approx(6 * 0.016)
    assert server.billable == 6 and len(_outputs(out)) == 6
    sent = server.requests[0]
    assert sent["model"] == "dall-e-2" and sent["n"] == "1" and sent["image"] == (256, 256)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 6 and set(manifest["label"]) == {"ai"} and set(manifest["model"]) == {"dall-e-2"}
    row = manifest[manifest["source_uri"].str.endswith("photo1.png")].iloc[0]
    assert row["pair_id"] == hashlib.sha256((photos / "photo1.png").read_bytes()).hexdigest()
    assert (row["width"], row["height"], row["format"]) == (256, 256, "PNG")
    assert Path(row["uri"]).is_file() and '"mode": "variation"' in row["params"]
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (again.done, again.skipped, server.billable) == (0, 6, 6)
    assert len(pd.read_csv(out / "manifest.csv")) == 6


def test_non_utf8_names_are_recorded_escaped(server, photos, tmp_path):
    Image.new("RGB", (40, 40), "navy").save(os.fsdecode(bytes(photos / "caf") + b"\xe9.png"))  # Latin-1 name
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256")
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (report.done, report.failed) == (4, 0)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert len(manifest) == 4 and all(Path(uri).is_file() for uri in manifest["uri"])
    assert "caf\\udce9.png" in {Path(source).name for source in manifest["source_uri"]}


def test_a_rerun_without_the_ledger_pays_nothing_for_what_the_output_holds(server, photos, tmp_path):
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256", n=2)
    first = run_openai(str(photos), str(out), config, max_images=4, client=make_client(max_retries=0))
    assert (first.done, server.billable) == (4, 4)
    (out / LEDGER_NAME).unlink()  # as on another machine, for an s3:// or gdrive:// --out
    _outputs(out)[0].unlink()  # listed in the manifest, but gone: made again
    rerun = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (rerun.done, rerun.skipped, rerun.elsewhere, server.billable) == (3, 3, 3, 7)
    assert rerun.spent_before == pytest.approx(3 * 0.016)  # what the output holds was paid for, elsewhere
    (out / LEDGER_NAME).unlink()
    (out / "manifest.csv").unlink()  # killed before it was written: rows are rebuilt from the images
    _outputs(out)[0].write_bytes(b"not an image")  # made again
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (again.done, again.skipped, server.billable) == (1, 5, 8)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert sorted(manifest["uri"]) == [str(p) for p in _outputs(out)] and len(manifest) == 6
    assert set(manifest["source_uri"]) == {str(p) for p in photos.iterdir()}


def test_the_manifest_is_written_while_images_are_made(server, photos, tmp_path):
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256", n=2)
    server.hold_after = 3
    run = threading.Thread(target=run_openai, args=(str(photos), str(out), config),
                           kwargs={"concurrency": 1, "manifest_every": 0.0, "client": make_client(max_retries=0)})
    run.start()
    try:
        deadline = time.monotonic() + 30
        while server.held < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.held == 1 and server.billable == 3  # the 4th request hangs: the run could be killed now
        assert len(pd.read_csv(out / "manifest.csv")) == 3
    finally:
        server.release.set()
        run.join(30)


def test_a_copy_of_a_source_is_paid_once(server, photos, tmp_path):
    (photos / "copy").mkdir()
    (photos / "copy" / "photo1.png").write_bytes((photos / "photo1.png").read_bytes())
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256")
    report = run_openai(str(photos), str(out), config, concurrency=4, client=make_client(max_retries=0))
    assert (report.done, report.failed, server.billable) == (3, 0, 3)
    assert report.spent == pytest.approx(3 * 0.016)
    assert len(pd.read_csv(out / "manifest.csv")) == 3
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (again.done, again.skipped, again.spent_before, server.billable) == (0, 3, pytest.approx(3 * 0.016), 3)


def test_a_check_of_the_settings_paid_for_names_each_source_once(tmp_path, monkeypatch):
    """`check_settings` named every image source twice (its URI as the ledger records it, `path_text`): once itself,
    again in `of_sources`; it now passes the URIs it has. A source paid under other settings is still refused."""
    from fakescope.generate import _settings
    from fakescope.generate.ledger import JobRecord

    sources = [(str(tmp_path / f"{i}.png"), str(i), None) for i in range(5)]
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256")
    other = dataclasses.replace(config, size="512x512")
    paid = JobRecord("k", sources[3][0], "0" * 64, other.mode, other.model, other.params_hash(), 0, DONE, None, 0.02, 1,
                     None, None, params=json.dumps(other.params()))
    named, path_text = [], _settings.path_text
    monkeypatch.setattr(_settings, "path_text", lambda source: named.append(source) or path_text(source))
    _settings.check_settings([], config, sources)
    assert named == [source for source, _, _ in sources]  # each twice before
    with pytest.raises(ConfigError, match=f"paid for {re.escape(sources[3][0])} with --size 512x512; this run has --size "
                                          "256x256"):
        _settings.check_settings([paid], config, sources)


def test_edit_sends_prompt_and_fetches_url_answers(server, photos, tmp_path):
    config = OpenAIImagesConfig(mode="edit", model="dall-e-2", size="512x512", prompt="add a hat", response_format="url")
    report = run_openai(str(photos / "photo0.jpeg"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert report.done == 1 and server.counts[("edits", 200)] == 1
    assert server.requests[0]["prompt"] == "add a hat" and server.requests[0]["response_format"] == "url"
    assert server.requests[0]["mask"] == (512, 512)  # dall-e-2 refuses an edit without transparency (see the server)
    assert Image.open(_outputs(tmp_path / "out")[0]).size == (512, 512)
    assert json.loads(pd.read_csv(tmp_path / "out" / "manifest.csv")["params"][0])["mask"] == "center"


def test_url_answers_fetched_by_concurrent_requests_in_a_fresh_process_are_all_saved(server, photos, tmp_path):
    """The first image fetched from a URL imported httpx in its worker thread while the client in another found it half
    imported: most of the first images, paid for, failed with "partially initialized module 'httpx'"."""
    command = [sys.executable, "-c", "from fakescope.cli import app; app()", "generate", "openai", str(photos), "--out",
               str(tmp_path / "out"), "--model", "dall-e-2", "--size", "256x256", "--response-format", "url", "-j", "3"]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.base_url}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "done 3, " in result.stdout, result.stdout + result.stderr
    assert server.billable == 3 == len(_outputs(tmp_path / "out"))


def test_edit_masks_mark_the_centre_everything_or_a_users_png(tmp_path):
    config = OpenAIImagesConfig(mode="edit", model="dall-e-2", prompt="a hat")
    centre = Image.open(io.BytesIO(config.edit_mask((8, 4))[1]))
    assert [centre.getpixel((x, 1))[3] for x in range(8)] == [255, 255, 0, 0, 0, 0, 255, 255]
    assert [centre.getpixel((3, y))[3] for y in range(4)] == [255, 0, 0, 255]
    full = OpenAIImagesConfig(mode="edit", model="dall-e-2", prompt="a hat", mask="full")
    assert Image.open(io.BytesIO(full.edit_mask((8, 4))[1])).getchannel("A").getextrema() == (0, 0)
    assert OpenAIImagesConfig(mode="edit", model="gpt-image-1", prompt="a hat", mask="full").edit_mask((8, 4)) is None
    painted = Image.new("RGBA", (2, 2), (0, 0, 0, 255))
    painted.putpixel((0, 0), (0, 0, 0, 0))
    painted.save(tmp_path / "mask.png")
    own = OpenAIImagesConfig(mode="edit", model="dall-e-2", prompt="a hat", mask=str(tmp_path / "mask.png"))
    assert Image.open(io.BytesIO(own.edit_mask((4, 4))[1])).getchannel("A").tobytes() == bytes([0, 0, 255, 255] * 2 + [255] * 8)
    assert own.params()["mask"].startswith("png:") and own.params_hash() != config.params_hash() != full.params_hash()
    Image.new("RGB", (2, 2)).save(tmp_path / "opaque.png")
    with pytest.raises(ConfigError, match="opaque.png has no transparent pixel"):
        OpenAIImagesConfig(model="dall-e-2", mode="edit", prompt="a hat", mask=str(tmp_path / "opaque.png"))
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(ConfigError, match="text.png is not a readable image"):
        OpenAIImagesConfig(model="dall-e-2", mode="edit", prompt="a hat", mask=str(tmp_path / "text.png"))
    with pytest.raises(StorageError, match="no such file"):
        OpenAIImagesConfig(model="dall-e-2", mode="edit", prompt="a hat", mask=str(tmp_path / "gone.png"))
    chunks = (b"IHDR" + struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0), b"IDAT" + zlib.compress(bytes(10)), b"IEND")
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(  # declares 900 Mpx: over twice MAX_PIXELS
        struct.pack(">I", len(c) - 4) + c + struct.pack(">I", zlib.crc32(c)) for c in chunks))
    with pytest.raises(ConfigError, match=r"^edit mask \S+huge.png: image too large: 900,000,000 pixels exceeds"):
        OpenAIImagesConfig(model="dall-e-2", mode="edit", prompt="a hat", mask=str(tmp_path / "huge.png"))
    assert "mask" not in OpenAIImagesConfig(model="dall-e-2", mode="variation").params()  # variation ledgers keep their job keys


def test_gpt_image_edit_keeps_aspect_and_sends_quality(server, photos, tmp_path):
    config = OpenAIImagesConfig(mode="edit", model="gpt-image-1", size="1024x1536", quality="low", prompt="snow")
    report = run_openai(str(photos / "photo2.png"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    sent = server.requests[0]
    assert report.done == 1 and sent["image"] == (50, 70) and sent["quality"] == "low"
    assert "response_format" not in sent and report.spent == pytest.approx(0.016)


def test_a_prompt_paid_under_other_settings_is_known_by_its_text_in_any_line_of_any_file(server, tmp_path):
    """The settings check looked at the first prompt only; every prompt is now checked, known by its text (a prompt
    moved to another line or file is the same job), before anything is sent."""
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("a dog on a beach\n")
    two.write_text("a cat on a roof\na dog on a beach\n")
    config = OpenAIImagesConfig(mode="generate", model="dall-e-3", size="1024x1024", quality="standard")
    run_openai(str(one), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    hd = dataclasses.replace(config, quality="hd")
    with pytest.raises(ConfigError, match=rf"paid for {one}#L1 with --quality standard; this run has --quality hd"):
        run_openai(str(two), str(tmp_path / "out"), hd, client=make_client(max_retries=0))
    assert server.billable == 1


def test_generate_reads_prompts_and_posts_json(server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox in snow\n\na lighthouse at dusk\n")
    config = OpenAIImagesConfig(mode="generate", model="dall-e-3", size="1024x1024", quality="hd")
    report = run_openai(str(prompts), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert report.done == 2 and server.counts[("generations", 200)] == 2
    # requests run concurrently, so their order is not fixed
    assert sorted(r["prompt"] for r in server.requests) == ["a lighthouse at dusk", "a red fox in snow"]
    assert all(r["quality"] == "hd" and r["n"] == 1 for r in server.requests)
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert sorted(manifest["source_uri"]) == [f"{prompts}#L1", f"{prompts}#L3"]
    image = tmp_path / "photo.png"  # an image where the prompts belong: one line, nothing sent
    Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(ConfigError, match=r"photo.png: not a prompts file \(UTF-8 text, one prompt per line\): byte 0x89 at 0"):
        run_openai(str(image), str(tmp_path / "out2"), config, client=make_client(max_retries=0))
    assert server.counts[("generations", 200)] == 2
    given = CliRunner().invoke(app, ["generate", "openai", str(prompts), "--out", str(tmp_path / "out3"), "--mode", "generate",
                                     "--prompt", "a cat"])  # was recorded in the manifest's params, never sent
    assert given.exit_code == 2 and given.output == ("error: generate mode takes its prompts from its source, one per line; "
                                                     "prompt (--prompt) is for edit and variation\n")
    assert server.counts[("generations", 200)] == 2 and not (tmp_path / "out3").exists()


def test_a_prompt_over_the_models_limit_is_refused_in_one_line_before_any_request(server, photos, tmp_path):
    """100 KB was taken and failed only at the API, after the upload (the API reference's limits, in characters)."""
    for model, limit in (("dall-e-2", 1_000), ("gpt-image-2.6-flare", 32_000)):
        size = "256x256" if model == "dall-e-2" else "auto"
        OpenAIImagesConfig(mode="edit", model=model, size=size, prompt="é" * limit)  # characters, not bytes
        with pytest.raises(ConfigError, match=rf"^prompt: {limit + 1:,} characters, over {model}'s limit of {limit:,}; "
                                              "shorten it$"):
            OpenAIImagesConfig(mode="edit", model=model, size=size, prompt="x" * (limit + 1))
    OpenAIImagesConfig(mode="edit", model="my-model", prompt="x" * 100_000)  # unknown models are not checked
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox in snow\n\n" + "x" * 4_001 + "\n")
    config = OpenAIImagesConfig(mode="generate", model="dall-e-3", size="1024x1024")
    with pytest.raises(ConfigError, match=r"prompts.txt line 3: 4,001 characters, over dall-e-3's limit of 4,000; shorten "
                                          r"it \(every line is checked before any request\)$"):
        run_openai(str(prompts), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    given = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(tmp_path / "out2"), "--mode", "edit",
                                     "--prompt", "x" * 32_001])
    assert given.exit_code == 2
    assert given.output == "error: prompt: 32,001 characters, over gpt-image-2.6-flare's limit of 32,000; shorten it\n"
    assert server.requests == [] and not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_client_retries_429_and_500_once_each_without_double_billing(server, photos, tmp_path):
    server.faults = [429, 500, 429]
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    report = run_openai(str(photos), str(tmp_path / "out"), config, concurrency=1, client=make_client(max_retries=3))
    assert (report.done, report.failed) == (3, 0)
    assert server.counts[("variations", 429)] == 2 and server.counts[("variations", 500)] == 1
    assert server.billable == 3 and len(server.requests) == 6


def test_an_account_out_of_quota_stops_the_run_instead_of_trying_every_source(server, photos, tmp_path):
    server.faults = ["quota"] * 10
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    with pytest.raises(ConfigError, match=r"^the OpenAI account cannot pay for more images \(insufficient_quota\): You exceeded"):
        run_openai(str(photos), str(tmp_path / "out"), config, concurrency=1, client=make_client(max_retries=0))
    assert len(server.requests) == 1 and server.billable == 0


def test_exhausted_retries_mark_the_job_failed_and_rerun_finishes_it(server, photos, tmp_path):
    server.faults = [500]
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    first = run_openai(str(photos / "photo0.jpeg"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (first.done, first.failed, server.billable) == (0, 1, 0)
    second = run_openai(str(photos / "photo0.jpeg"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (second.done, server.billable) == (1, 1)


def test_budget_stops_by_images_and_by_spend(server, photos, tmp_path):
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2)
    by_images = run_openai(str(photos), str(tmp_path / "a"), config, max_images=2, concurrency=4,
                           client=make_client(max_retries=0))
    assert (by_images.done, by_images.stopped, server.billable) == (2, "budget", 2)
    by_spend = run_openai(str(photos), str(tmp_path / "b"), config, max_spend=0.05, concurrency=4,
                          client=make_client(max_retries=0))
    assert (by_spend.done, by_spend.stopped) == (3, "budget") and by_spend.spent <= 0.05
    assert server.billable == 5
    with pytest.raises(ConfigError, match="price"):
        run_openai(str(photos), str(tmp_path / "c"), OpenAIImagesConfig(mode="generate", model="new-model"),
                   max_spend=1.0, client=make_client())


def test_images_billed_but_lost_count_against_the_budgets(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2, response_format="url")  # 6 jobs, 0.016 each
    server.faults = ["gone", "unreadable", "gone", "gone"]  # billed 200s whose image cannot be had
    first = run_openai(str(photos), str(out), config, max_spend=0.05, concurrency=1, client=make_client(max_retries=0))
    assert (first.done, first.failed, first.stopped, server.billable) == (0, 3, "budget", 3)
    assert first.spent == pytest.approx(0.048)
    again = run_openai(str(photos), str(out), config, max_total_spend=0.08, concurrency=1, client=make_client(max_retries=0))
    assert again.spent_before == pytest.approx(0.048) and again.spent == pytest.approx(0.032)
    assert (again.done, again.failed, again.stopped, server.billable) == (1, 1, "budget", 5)
    with Ledger(out / LEDGER_NAME) as ledger:
        assert ledger.spent() == pytest.approx(0.08)
        assert "its URL could not be fetched: HTTP Error 404" in next(ledger.jobs("failed")).error


def test_a_200_whose_answer_cannot_be_read_is_recorded_as_billed_with_its_error(server, photos, tmp_path):
    """A 200 whose JSON or base64 the client could not decode failed as unpaid, though the API billed it."""
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # 3 jobs, 0.016 each
    server.faults = ["broken", "badbase64"]
    first = run_openai(str(photos), str(out), config, concurrency=1, client=make_client(max_retries=0))
    assert (first.done, first.failed, server.billable) == (1, 2, 3) and first.spent == pytest.approx(0.048)
    with Ledger(out / LEDGER_NAME) as ledger:
        errors = sorted(record.error for record in ledger.jobs("failed"))
        assert all(record.cost == pytest.approx(0.016) for record in ledger.jobs("failed"))
    assert all(error.startswith("LostImageError: the API answered 200 (billed) but its answer could not be read: ")
               for error in errors), errors
    assert "JSONDecodeError" in errors[1] and "Invalid base64-encoded string" in errors[0]
    again = run_openai(str(photos), str(out), config, max_total_spend=0.07, concurrency=1, client=make_client(max_retries=0))
    assert (again.done, again.stopped, server.billable) == (1, "budget", 4) and again.spent_before == pytest.approx(0.048)


def test_images_billed_but_not_written_count_against_the_budgets_once(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # 3 jobs, 0.016 each
    tail = f"-dall-e-2-variation-{config.params_hash()[:6]}-0"
    blocked = [out / f"{p.stem}-{hashlib.sha256(p.read_bytes()).hexdigest()[:8]}{tail}.{'jpg' if p.suffix == '.jpeg' else 'png'}"
               for p in sorted(photos.iterdir())]  # each saved like its photo
    for folder in blocked:
        folder.mkdir(parents=True)  # the outputs cannot be written: e.g. a bucket refusing writes
    first = run_openai(str(photos), str(out), config, max_spend=0.04, concurrency=1, client=make_client(max_retries=0))
    assert (first.done, first.failed, first.stopped, server.billable) == (0, 2, "budget", 2)
    assert first.spent == pytest.approx(0.032)
    for folder in blocked:
        folder.rmdir()
    again = run_openai(str(photos), str(out), config, max_total_spend=0.048, concurrency=1, client=make_client(max_retries=0))
    assert (again.recovered, again.done, again.stopped, server.billable) == (2, 1, None, 3)
    assert (again.spent_before, again.spent) == (pytest.approx(0.032), pytest.approx(0.016))
    with Ledger(out / LEDGER_NAME) as ledger:
        assert ledger.spent() == pytest.approx(0.048)


def test_an_image_url_that_is_not_http_is_never_opened(server, photos, tmp_path):
    """A compromised or mistyped OPENAI_BASE_URL must not make fakescope copy the machine's own files."""
    private = tmp_path / "private.png"
    private.write_bytes((photos / "photo2.png").read_bytes())
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", response_format="url")
    server.faults = [f"url={private.as_uri()}"]
    report = run_openai(str(photos / "photo1.png"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, report.failed) == (0, 1)
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:
        assert "only http:// and https:// URLs can be fetched, not file: ones" in next(ledger.jobs("failed")).error


def _lost_url_error(server, photos, tmp_path, url: str):
    """(report, the failed job's error) of a run whose one billed answer is `url`, which cannot be fetched."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", response_format="url")
    server.faults = [f"url={url}"]
    report = run_openai(str(photos / "photo1.png"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, report.failed, server.billable) == (0, 1, 1)
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:
        return report, next(ledger.jobs("failed")).error


def test_an_image_url_that_fails_is_named_without_its_signature(server, photos, tmp_path, caplog):
    """A signed URL's query string (its signature) went into the ledger's error and the warning once the URL was named."""
    url = f"{server.base_url.removesuffix('/v1')}/files/gone.png"
    _report, error = _lost_url_error(server, photos, tmp_path, f"{url}?X-Amz-Signature=0123456789abcdef&X-Amz-Expires=300#part")
    assert error == f"LostImageError: the API made the image but its URL could not be fetched: HTTP Error 404: Not Found ({url})"
    assert f"({url})" in caplog.text and "Signature" not in caplog.text + error


def test_an_image_url_dripped_past_its_time_limit_is_a_lost_image_at_the_limit(server, photos, tmp_path, monkeypatch):
    """Each read waited up to the time left when the request was sent, so an image server dripping its headers a byte
    within that held the fetch (its thread, the run) as long as they lasted, past the 120 s. Now the limit (1 s here)
    is one deadline for the whole fetch."""
    monkeypatch.setattr(openai_images, "IMAGE_URL_TIMEOUT_S", 1)
    server.files["drip.png"] = (photos / "photo1.png").read_bytes()
    url = f"{server.base_url.removesuffix('/v1')}/files/drip.png"
    start = time.monotonic()
    _, error = _lost_url_error(server, photos, tmp_path, url)
    assert error == ("LostImageError: the API made the image but its URL could not be fetched: the file at that URL "
                     f"took over 1 s to download ({url})")
    assert time.monotonic() - start < 8  # the headers alone take 20 s to drip


def test_http_client_logs_name_urls_without_their_signature_or_the_key(server, photos, tmp_path, caplog):
    """httpx logs every request's URL, a signed URL's query included, at INFO (httpx2 does for the OpenAI client): an
    application that turned INFO on logged the signature. fakescope's clients' loggers now leave it out."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "green").save(buffer, format="PNG")
    server.files["signed.png"] = buffer.getvalue()
    url = f"{server.base_url.removesuffix('/v1')}/files/signed.png"
    server.faults = [f"url={url}?X-Amz-Signature=0123456789abcdef&X-Amz-Credential=AKIDEXAMPLE"]
    caplog.set_level(logging.DEBUG)
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", response_format="url")
    report = run_openai(str(photos / "photo1.png"), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, server.billable) == (1, 1)
    fetched = [r.getMessage() for r in caplog.records if r.name == "httpx" and "signed.png" in r.getMessage()]
    assert fetched == [f'HTTP Request: GET {url} "HTTP/1.1 200 OK"']
    assert any(r.name == "httpx2" and f"POST {server.base_url}/images/variations " in r.getMessage() for r in caplog.records)
    assert "Signature" not in caplog.text and "AKIDEXAMPLE" not in caplog.text and API_KEY not in caplog.text


@pytest.mark.parametrize(("path", "shown", "why"), [
    (":99999/files/a.png", ":99999/files/a.png", "Port out of range 0-65535"),
    ("/files/a\x00.png", "/files/a%00.png", "Invalid non-printable ASCII character"),
])
def test_a_malformed_image_url_is_a_billed_lost_image(server, photos, tmp_path, path, shown, why):
    """It raised a ValueError or httpx.InvalidURL, not a FetchError, so the billed image was left out of the spend."""
    host = "http://127.0.0.1" if path.startswith(":") else server.base_url.removesuffix("/v1")
    url = host + shown
    report, error = _lost_url_error(server, photos, tmp_path, f"{host}{path}?sig=0123456789abcdef")
    assert report.spent == pytest.approx(0.016)
    assert error.startswith(f"LostImageError: the API made the image but its URL could not be fetched: not a valid URL ({why}")
    assert error.endswith(f"({url})") and "sig=" not in error


def test_an_image_url_that_fails_is_named_without_its_user_info(server, photos, tmp_path, caplog):
    """The URL a lost image's error names kept its user info, so a password in it reached the ledger and the warning."""
    host = server.base_url.removesuffix("/v1").removeprefix("http://")
    signed = f"http://reader:hunter2-password@{host}/files/gone.png?sig=0123456789abcdef"
    _, error = _lost_url_error(server, photos, tmp_path, signed)
    assert error.endswith(f"HTTP Error 404: Not Found (http://{host}/files/gone.png)")
    assert "hunter2" not in caplog.text + error and "sig=" not in caplog.text + error


def test_a_source_with_a_long_name_gets_an_output_name_the_file_system_takes(server, photos, tmp_path):
    """240 bytes is a legal file name; with the suffix fakescope adds it was not (255), after the image was paid."""
    source = tmp_path / "long" / ("\u00e9" * 120 + ".png")
    source.parent.mkdir()
    source.write_bytes((photos / "photo1.png").read_bytes())
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    report = run_openai(str(source.parent), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, report.failed, server.billable) == (1, 0, 1)
    (output,) = _outputs(tmp_path / "out")
    assert 250 < len(output.name.encode()) <= 255 and output.name.startswith("\u00e9" * 50)


def test_crash_after_response_is_finished_from_spool_without_a_request(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", output_format="png")  # spooled as saved
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:
        record = next(ledger.jobs(DONE))
        data = Path(record.output).read_bytes()
        ledger.mark_running(record.key)
        ledger.write_spool(record.key, data)
    Path(record.output).unlink()
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (report.recovered, report.skipped, report.done, server.billable) == (1, 2, 0, 3)
    assert Path(record.output).read_bytes() == data


def test_a_paid_image_whose_output_could_not_be_written_is_finished_without_paying_again(server, photos, tmp_path):
    source, out = photos / "photo1.png", tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    blocked = out / f"photo1-{digest[:8]}-dall-e-2-variation-{config.params_hash()[:6]}-0.png"
    blocked.mkdir(parents=True)  # e.g. a full disk or a bucket refusing writes
    first = run_openai(str(source), str(out), config, client=make_client(max_retries=0))
    assert (first.done, first.failed, server.billable) == (0, 1, 1)
    blocked.rmdir()
    again = run_openai(str(source), str(out), config, client=make_client(max_retries=0))
    assert (again.recovered, again.done, again.failed, server.billable) == (1, 0, 0, 1)
    assert Image.open(blocked).size == (256, 256) and len(pd.read_csv(out / "manifest.csv")) == 1
    server.faults = ["unreadable"]  # an answer that is no image is not kept: the re-run asks again
    broken = run_openai(str(photos / "photo0.jpeg"), str(out), config, client=make_client(max_retries=0))
    assert (broken.failed, server.billable) == (1, 2)
    with Ledger(out / LEDGER_NAME) as ledger:
        assert "unreadable image" in next(ledger.jobs("failed")).error and not any(ledger.spool_dir.iterdir())
    fixed = run_openai(str(photos / "photo0.jpeg"), str(out), config, client=make_client(max_retries=0))
    assert (fixed.done, fixed.recovered, server.billable) == (1, 0, 3)


def test_a_done_output_deleted_since_is_made_again_and_only_it_is_paid(server, photos, tmp_path, caplog):
    """The ledger's `done` was trusted unchecked: an output deleted from the folder counted as done, never made again."""
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    deleted = _outputs(out)[0]
    deleted.unlink()
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (report.missing, report.done, report.skipped, server.billable) == (1, 1, 2, 4)
    assert report.spent == pytest.approx(0.016) and report.spent_before == pytest.approx(0.048)  # it was paid twice
    assert (f"1 image(s) the ledger records as made were not in {out} (deleted, damaged, or in another folder): they are "
            "made (and paid for) again") in caplog.text
    assert deleted.is_file() and all(Path(uri).is_file() for uri in pd.read_csv(out / "manifest.csv")["uri"])
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (again.missing, again.done, again.skipped, server.billable) == (0, 0, 3, 4)


def test_an_out_moved_with_its_ledger_and_manifest_resumes_unpaid_its_rows_moved_with_it(server, photos, tmp_path, caplog):
    """A moved --out: the ledger's outputs were gone from where it recorded them, so the run warned they were made and
    paid for again (none was), and the manifest kept each image's old row beside its new one, naming a missing file."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    run_openai(str(photos), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    moved = (tmp_path / "out").rename(tmp_path / "moved")
    report = run_openai(str(photos), str(moved), config, client=make_client(max_retries=0))
    assert (report.missing, report.done, report.skipped, report.spent, server.billable) == (0, 0, 3, 0, 3)
    assert "no longer in" not in caplog.text
    manifest = pd.read_csv(moved / "manifest.csv")
    assert sorted(manifest["uri"]) == [str(p) for p in _outputs(moved)]
    assert set(manifest["source_uri"]) == {str(p) for p in photos.iterdir()}


def test_a_ledger_copied_into_an_empty_out_makes_its_images_there_again_counted_and_warned(server, photos, tmp_path, caplog):
    """A ledger copied without its images took them as done at their old paths, and the new manifest named that folder."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # 3 jobs, 0.016 each
    first = tmp_path / "first"
    run_openai(str(photos), str(first), config, client=make_client(max_retries=0))
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(first / LEDGER_NAME, out / LEDGER_NAME)
    plans = []
    report = run_openai(str(photos), str(out), config, max_total_spend=0.08, client=make_client(max_retries=0),
                        confirm=lambda *plan: plans.append(plan))
    assert plans == [(3, 3, 0)] and (report.done, report.skipped, report.stopped, server.billable) == (2, 0, "budget", 5)
    assert report.spent_before == pytest.approx(0.048) and report.spent == pytest.approx(0.032)
    assert (f"the ledger records 3 image(s) of this run's sources with these options as made in another folder (as "
            f"{first}{os.sep}" in caplog.text and f"not in {out}: this run makes them again, paid again" in caplog.text)
    assert sorted(pd.read_csv(out / "manifest.csv")["uri"]) == [str(p) for p in _outputs(out)] and len(_outputs(out)) == 2
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (again.done, again.skipped, server.billable) == (1, 2, 6) and len(_outputs(out)) == 3
    assert sorted(pd.read_csv(out / "manifest.csv")["uri"]) == [str(p) for p in _outputs(out)]
    assert len(pd.read_csv(first / "manifest.csv")) == 3 and len(_outputs(first)) == 3  # the first folder untouched


def test_a_ledger_copied_into_an_empty_out_warns_of_this_runs_sources_only(server, photos, tmp_path, caplog):
    """The warning counted every image the ledger made elsewhere, not only those of the sources this run makes again."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    first = tmp_path / "first"
    run_openai(str(photos), str(first), config, client=make_client(max_retries=0))
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(first / LEDGER_NAME, out / LEDGER_NAME)
    photo = str(photos / "photo1.png")
    report = run_openai(photo, str(out), config, client=make_client(max_retries=0), confirm=lambda *plan: None)
    assert (report.done, server.billable) == (1, 4)
    assert "the ledger records 1 image(s) of this run's sources with these options as made in another folder" in caplog.text
    assert f"(as {first}{os.sep}photo1-" in caplog.text


def test_a_done_image_cut_short_or_empty_in_out_is_made_again_and_paid_with_a_warning(server, photos, tmp_path, caplog):
    """A half-copied (truncated) or empty image in --out counted as done, with or without the ledger; the plan printed
    before the run counted it as made too, so it understated the requests the budgets then counted."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # a JPEG photo's saved as a JPEG
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    jpeg, png, empty = sorted(_outputs(out), key=lambda p: p.suffix)
    for path in (jpeg, png):
        path.write_bytes(path.read_bytes()[:-20])
    empty.write_bytes(b"")
    plans = []
    report = run_openai(str(photos), str(out), config, max_total_spend=0.096, client=make_client(max_retries=0),
                        confirm=lambda *plan: plans.append(plan))
    assert plans == [(3, 3, 0)]  # (sources, requests, made)
    assert (report.missing, report.done, report.skipped, server.billable) == (3, 3, 0, 6)
    assert report.spent == pytest.approx(0.048) and report.spent_before == pytest.approx(0.048)
    assert f"making {jpeg} again (paid again): the file there is cut short" in caplog.text
    assert f"making {empty} again (paid again): the file there is empty" in caplog.text
    assert all(Image.open(path).load() is not None for path in (jpeg, png, empty))
    (out / LEDGER_NAME).unlink()  # a rerun elsewhere: the manifest's row was taken unread
    png.write_bytes(png.read_bytes()[:100])
    again = run_openai(str(photos), str(out), config, client=make_client(max_retries=0),
                       confirm=lambda *plan: plans.append(plan))
    assert plans[1] == (3, 1, 2)
    assert (again.done, again.skipped, server.billable) == (1, 2, 7) and Image.open(png).load() is not None


def test_a_rerun_reads_each_local_outputs_ends_once_for_its_plan_and_run(server, photos, tmp_path, caplog):
    """Each output was opened twice to be checked for damage (`damage`: its first and last bytes), for the plan and
    again in the run: the run takes the plan's findings, a damaged one's too (made again, warned of once)."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    outputs = _outputs(out)
    outputs[0].write_bytes(outputs[0].read_bytes()[:-20])  # cut short
    opened: list[str] = []
    sys.addaudithook(lambda event, args: event == "open" and str(args[0]) in map(str, outputs)
                     and opened.append(str(args[0])))  # every open, not just the check's; hooks stay: this one filters
    plans = []
    for ledger in (True, False):  # a done job's output (`Made.holds`), and one found by its name (`Made.row`)
        if not ledger:
            (out / LEDGER_NAME).unlink()
        opened.clear()
        report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0),
                            confirm=lambda *plan: plans.append(plan))
        again = [str(outputs[0])] if ledger else []  # the damaged one is read again by the run: its copy may have ended
        assert sorted(opened) == sorted([str(p) for p in outputs] + again)  # each twice before
        assert (report.done, report.skipped) == ((1, 2) if ledger else (0, 3))
    assert plans == [(3, 1, 2), (3, 0, 3)] and server.billable == 4
    assert caplog.text.count(f"making {outputs[0]} again (paid again): the file there is cut short") == 1


def test_an_output_still_being_copied_when_the_plan_looked_is_not_paid_again_once_whole(server, photos, tmp_path):
    """The run took the plan's finding for a local output half-copied when the plan read it (another process writing
    it, as `cp` writes in place): made again, paid again, though the copy ended before the run reached it."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    copied = _outputs(out)[0]
    whole = copied.read_bytes()
    copied.write_bytes(whole[: len(whole) // 2])  # the copy, halfway
    plans = []

    def plan_then_copy_ends(*plan):
        plans.append(plan)
        copied.write_bytes(whole)

    for ledger in (True, False):  # a done job's output (`Made.holds`), and one found by its name (`Made.row`)
        if not ledger:
            (out / LEDGER_NAME).unlink()
            copied.write_bytes(whole[: len(whole) // 2])
        report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0), confirm=plan_then_copy_ends)
        assert (report.done, report.skipped, report.missing) == (0, 3, 0)
    assert plans == [(3, 1, 2)] * 2 and server.billable == 3 and copied.read_bytes() == whole


def test_an_answer_parked_before_a_kill_is_no_request_in_the_plan_and_is_written_unpaid(server, photos, tmp_path):
    """A run killed after an answer was parked (spooled) but before its output was renamed into place leaves a
    temporary file, not the output: the plan counted that image as a request to pay, though the run writes it from the
    spool for free (and asked for --yes past 20 such)."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:  # the kill's state: sent, answered and parked, the rename not done
        record = next(job for job in ledger.jobs() if job.output.endswith(".png"))  # the API's PNG, saved as it came
        data = Path(record.output).read_bytes()
        ledger.mark_running(record.key, 0.016)
        ledger.write_spool(record.key, data)
    Path(record.output).unlink()
    (out / ".tmpk1ll3d.part").write_bytes(data[:100])  # the temporary file the rename never replaced
    plans = []
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0),
                        confirm=lambda *plan: plans.append(plan))
    assert plans == [(3, 0, 2)] and (report.recovered, report.done, report.skipped, server.billable) == (1, 0, 2, 3)
    assert Path(record.output).read_bytes() == data
    with Ledger(out / LEDGER_NAME) as ledger:
        assert ledger.get(record.key).state == DONE and not any(ledger.spool_dir.iterdir())


def _park_before_a_kill(out: Path) -> tuple:
    """Leave `out`'s ledger as a run killed after an answer was parked but before its output was renamed into place."""
    with Ledger(out / LEDGER_NAME) as ledger:
        record = next(job for job in ledger.jobs() if job.output.endswith(".png"))  # the API's PNG, saved as it came
        data = Path(record.output).read_bytes()
        ledger.mark_running(record.key, 0.016)
        ledger.write_spool(record.key, data)
        spool = ledger.spool_path(record.key)
    Path(record.output).unlink()
    return record, data, spool


@pytest.mark.parametrize("parked", [b"", b"<html>Bad gateway</html>", "cut short"])
def test_a_parked_answer_that_cannot_be_written_from_is_a_request_in_the_plan(server, photos, tmp_path, parked):
    """The plan took any spool file as an answer the run writes unpaid; the run drops one that is no image (an older
    version parked answers before decoding them; a disk that filled) and pays for the job again: the plan said 0."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    _record, data, spool = _park_before_a_kill(out)
    spool.write_bytes(data[: len(data) // 2] if parked == "cut short" else parked)
    plans = []
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0),
                        confirm=lambda *plan: plans.append(plan))
    assert plans == [(3, 1, 2)] and (report.recovered, report.done, server.billable) == (0, 1, 4)


def test_a_parked_answer_of_a_replaced_photo_is_a_request_in_the_plan(server, photos, tmp_path):
    """A photo replaced by another of its name since its answer was parked: the run's job for it has another key (the
    new photo's sha256), so the parked answer is not written and the job is paid; the plan counted it as unpaid."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    record, _, _ = _park_before_a_kill(out)
    Image.new("RGB", (33, 44), "olive").save(record.source)  # another photo under the parked one's name
    plans = []
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0),
                        confirm=lambda *plan: plans.append(plan))
    assert plans == [(3, 1, 2)] and (report.recovered, report.done, server.billable) == (0, 1, 4)


def test_a_run_removes_the_temporary_files_a_killed_write_left_in_its_out_once_they_are_stale(server, photos, tmp_path):
    """A run killed while writing an output leaves its hidden temporary file in --out (the rename never came): every
    kill left up to --concurrency images' bytes there for good. A run holding --out's ledger removes those over
    `STALE_PART_S` old (a live writer's is younger); a newer one, and another program's file, are kept."""
    from fakescope.io._local import LocalStorage

    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    out = tmp_path / "out"
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    left, writers = [], []  # the writers held open: one closed or collected removes its file
    for name in ("old", "new"):  # the writer's own temporary files, as a kill leaves them (never closed nor renamed)
        writers.append(LocalStorage().open_write(str(out / f"{name}.png")))
        writers[-1].__enter__().write(b"\x89PNG half")
        left += [path for path in out.iterdir() if path.name.endswith(".part") and path not in left]
    other = out / ".notes.part"
    other.write_bytes(b"someone else's")
    stale = time.time() - runner.STALE_PART_S - 60
    for path in (left[0], other):
        os.utime(path, (stale, stale))
    report = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert report.skipped == 3 and server.billable == 3
    assert [path.exists() for path in (*left, other)] == [False, True, True]
    for writing in writers:  # the kill's writers end: the one whose file was removed finds it gone
        with contextlib.suppress(FileNotFoundError):
            writing.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)


def test_in_flight_crash_is_skipped_at_most_once_or_resent_at_least_once(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:
        record = next(ledger.jobs(DONE))
        ledger.mark_running(record.key)
    Path(record.output).unlink()  # the request was in flight: nothing was written
    once = run_openai(str(photos), str(out), config, retry_interrupted=False, client=make_client(max_retries=0))
    assert (once.unresolved, once.done, server.billable) == (1, 0, 3)
    least = run_openai(str(photos), str(out), config, client=make_client(max_retries=0))
    assert (least.unresolved, least.done, server.billable) == (0, 1, 4)


def test_a_request_in_flight_at_a_crash_whose_image_another_ledger_made_still_counts_as_maybe_billed(server, photos, tmp_path):
    out, photo = tmp_path / "out", str(photos / "photo1.png")
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # 0.016 per image
    run_openai(photo, str(out), config, ledger=tmp_path / "a.sqlite", client=make_client(max_retries=0))
    with Ledger(tmp_path / "a.sqlite") as made, Ledger(tmp_path / "b.sqlite") as crashed:  # b's request: sent, no answer
        record = next(made.jobs())
        crashed.add(record.key, record.source, record.source_sha256, record.mode, record.model, record.params_hash, 0)
        crashed.mark_running(record.key, 0.016)
    again = run_openai(photo, str(out), config, ledger=tmp_path / "b.sqlite", client=make_client(max_retries=0))
    assert (again.skipped, again.done, again.maybe_before, server.billable) == (1, 0, pytest.approx(0.016), 1)
    with Ledger(tmp_path / "b.sqlite") as ledger:  # done from out, counted once: as the attempt that may have paid it
        assert [(r.state, r.cost, r.lost) for r in ledger.jobs()] == [(DONE, 0.0, pytest.approx(0.016))]
        assert ledger.spent() == pytest.approx(0.016)  # was 0 once done: the lost attempt dropped out of the spend


def test_a_refusal_records_the_other_requests_in_flight_before_it_stops_the_run(server, photos, tmp_path):
    """A 403 stopped the run with the other requests in flight unrecorded: answered and billed, they stayed `running` in
    the ledger, counted as maybe billed until a rerun settled them. The run now waits for them and records each."""
    server.faults = [(403, "Project does not have access to model gpt-image-2.6-flare")]
    server.gather = 3  # all three sent before any is answered: a fast refusal cannot stop the run before the third
    server.hold_after, server.answer_held = 0, True  # the other requests are answered (billed) after the refusal

    def release() -> None:
        deadline = time.monotonic() + 30
        while (server.held < 2 or server.counts[("edits", 403)] < 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the refusal is back at the client before they are answered
        server.release.set()

    threading.Thread(target=release, daemon=True).start()
    out = tmp_path / "out"
    config = OpenAIImagesConfig(price_per_image=0.01)
    with pytest.raises(ConfigError, match=r"^the Images API refused the request \(403\): Project does not have access"):
        run_openai(str(photos), str(out), config, concurrency=3, client=make_client(max_retries=0))
    assert server.billable == 2
    with Ledger(out / ".fakescope-ledger.sqlite") as ledger:
        records = list(ledger.jobs())
        assert sorted(record.state for record in records) == ["done", "done", "failed"]
        assert ledger.spent() == pytest.approx(0.02) and all(record.lost == 0 for record in records)
    assert len(pd.read_csv(out / "manifest.csv")) == 2 and len(_outputs(out)) == 2


def test_a_refusal_ends_the_clients_wait_to_retry_another_request_instead_of_sending_it_after_the_stop(
        server, photos, tmp_path):
    """A refusal stops the run, but another request waiting in the client to be sent again (a 429's Retry-After) held
    the stop for that wait and was then sent, after the run had stopped paying."""
    server.faults = ["retry-after=60", (403, "Project does not have access to model dall-e-2")]  # in the order they come
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"refused the request \(403\)"):
        run_openai(str(photos), str(tmp_path / "out"), config, concurrency=2, client=make_client(max_retries=1))
    assert time.monotonic() - started < 30 and len(server.requests) == 2 and server.billable == 0
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:
        waited = [record for record in ledger.jobs() if record.error and record.error.startswith("Unsent")]
    assert [(record.state, record.cost, record.lost) for record in waited] == [("failed", 0, 0)]


def test_refused_key_stops_the_run_without_echoing_it(server, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123")
    with pytest.raises(ConfigError) as caught:
        run_openai(str(photos), str(tmp_path / "out"), OpenAIImagesConfig(model="dall-e-2", size="256x256"), client=make_client(max_retries=0))
    assert "refused" in str(caught.value) and "sk-wrong" not in str(caught.value)
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        make_client()


def test_secrets_in_the_api_s_error_text_show_in_no_log_ledger_or_error_line(server, photos, tmp_path, monkeypatch, caplog):
    """An error answer echoing the request's key (a proxy, a self-hosted server) or another secret went as it came into
    the warning, the ledger (which the web app shows as a job's error) and a refusal's one line."""
    caplog.set_level(logging.DEBUG)  # openai, httpx and fakescope debug logs included
    aws = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws)
    out = tmp_path / "out"
    server.faults = [(500, "upstream refused Authorization: {authorization}"), (400, f"bad signature for {aws}")]
    result = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--model", "dall-e-2",
                                      "--size", "256x256", "--max-retries", "0", "--yes"])
    assert result.exit_code == 1 and server.billable == 1, result.output
    with Ledger(out / LEDGER_NAME) as ledger:
        errors = sorted(record.error for record in ledger.jobs("failed"))
    assert errors == ["BadRequestError: Error code: 400 - bad signature for ***",
                      "InternalServerError: Error code: 500 - upstream refused Authorization: Bearer ***"]
    server.faults = [(403, "the key {authorization} may not use this model")]
    with pytest.raises(ConfigError, match=r"\(403\): the key Bearer \*\*\* may not use this model; check that the key's organization and project may use "
                       r"dall-e-2 \(verification, model access\)$") as refused:
        run_openai(str(photos), str(out), OpenAIImagesConfig(model="dall-e-2", size="256x256"), client=make_client(max_retries=0))
    for text in (result.output, caplog.text, "".join(traceback.format_exception(refused.value))):
        assert API_KEY not in text and aws not in text


def test_a_key_pasted_with_its_newline_still_works(server, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", f" {API_KEY}\r\n")  # was a bare "Connection error." on every request
    report = run_openai(str(photos / "photo0.jpeg"), str(tmp_path / "out"), OpenAIImagesConfig(model="dall-e-2", size="256x256"),
                        client=make_client(max_retries=0))
    assert (report.done, server.billable) == (1, 1)


def _generation_held_after_three(server: ImagesAPIServer, tmp_path: Path):
    """A `generate openai` process over 6 photos, 2 at a time, with 3 images billed and 2 requests held.

    Returns (command, env, out folder, the running process); its stdout is a text pipe.
    """
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.new("RGB", (40, 40), (i * 40, 10, 10)).save(photos / f"p{i}.png")
    out = tmp_path / "out"
    command = [
        sys.executable, "-c", "from fakescope.cli import app; app()", "generate", "openai", str(photos),
        "--out", str(out), "--mode", "variation", "--model", "dall-e-2", "--size", "256x256", "--concurrency", "2", "--max-retries", "0",
    ]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.base_url}
    server.hold_after = 3
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server.wait_held(first, billed=3, held=2)
    return command, env, out, first


def test_kill_and_resume_never_pays_twice(server, tmp_path):
    command, env, out, first = _generation_held_after_three(server, tmp_path)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "manifest.csv").exists()
    server.hold_after = None
    server.release.set()
    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already done 3" in second.stdout and "done 3," in second.stdout
    outputs = _outputs(out)
    assert server.billable == 6 == len(outputs) == len({hashlib.sha256(p.read_bytes()).digest() for p in outputs})
    assert len(set(server.paid)) == 6  # each photo paid for once
    assert len(server.requests) == 8  # the 3 answered before the kill never asked again; the 2 dropped unanswered were
    manifest = pd.read_csv(out / "manifest.csv")
    assert len(manifest) == 6 and all(Path(uri).is_file() for uri in manifest["uri"])
    with Ledger(out / LEDGER_NAME) as ledger:  # billed as the server counts; the 2 killed in flight may have been
        records = list(ledger.jobs())
        assert sum(r.cost for r in records) == pytest.approx(server.billable * 0.016) and ledger.spent() == pytest.approx(8 * 0.016)
    assert sorted((r.attempts, r.lost) for r in records) == [(1, 0.0)] * 4 + [(2, pytest.approx(0.016))] * 2
    assert "(all runs $0.128: $0.096 billed, $0.032 may have been (answers lost))" in second.stdout, second.stdout


def test_a_second_run_into_the_same_output_is_refused_while_the_first_runs(server, tmp_path):
    command, env, out, first = _generation_held_after_three(server, tmp_path)
    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 2 and "error: another run is using the job ledger" in second.stderr, second.stderr
    assert (server.billable, len(server.requests)) == (3, 5)  # nothing sent for the jobs the first run holds
    first.send_signal(signal.SIGKILL)
    first.wait()
    server.hold_after = None
    server.release.set()
    third = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert third.returncode == 0 and "already done 3" in third.stdout, third.stdout + third.stderr  # a kill lets go
    assert server.billable == 6 == len(_outputs(out))


def test_sigterm_finishes_requests_in_flight_and_resume_never_pays_twice(server, tmp_path):
    server.answer_held = True
    command, env, out, first = _generation_held_after_three(server, tmp_path)
    first.send_signal(signal.SIGTERM)
    said = "warning: interrupted: sending no more requests; waiting for the 2 in flight (billed once answered) to be saved\n"
    watchdog = threading.Timer(60, server.release.set)  # a child that never says it would wait for the held requests
    watchdog.start()
    before = []
    for line in first.stdout:  # until its handler has run (a fixed wait was lost to a loaded machine)
        if line == said:
            break
        before.append(line)
    watchdog.cancel()
    server.release.set()  # the two requests in flight are answered and billed after the signal
    output = "".join(before) + first.communicate(timeout=60)[0]
    assert line == said and first.returncode == 143, output  # 128 + SIGTERM
    assert "done 5," in output and "stopped: interrupted" in output, output
    assert len(pd.read_csv(out / "manifest.csv")) == 5
    server.hold_after = None
    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0 and "already done 5" in second.stdout and "done 1," in second.stdout, second.stdout
    assert server.billable == 6 == len(_outputs(out))


@pytest.mark.parametrize("retries", [4, 0], ids=["client-retry-wait", "run-pause"])
def test_ctrl_c_while_waiting_out_a_rate_limit_stops_at_once_unpaid_and_a_rerun_pays_once(server, photos, tmp_path, retries):
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from fakescope.cli import app; app()", "generate", "openai", str(photos / "photo1.png"),
               "--out", str(out), "--model", "dall-e-2", "--size", "256x256", "--max-retries", str(retries)]
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": server.base_url}
    server.faults = ["retry-after=60"] * 5  # the client waits 60 s before each retry (4), or the run pauses 60 s (0)
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while server.counts[("variations", 429)] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into its wait
    first.send_signal(signal.SIGINT)
    started = time.monotonic()
    output = first.communicate(timeout=30)[0]
    assert first.returncode == 130 and time.monotonic() - started < 10, output  # the client's wait was 4 x 60 s
    assert "stopped: interrupted" in output and len(server.requests) == 1, output  # nothing sent after Ctrl-C
    with Ledger(out / LEDGER_NAME) as ledger:
        [job] = ledger.jobs()
    assert (job.state, job.cost, job.lost) == ("failed", 0, 0)  # answered 429: not maybe billed, sent again by a rerun
    server.faults = []
    second = run_openai(str(photos / "photo1.png"), str(out), OpenAIImagesConfig(model="dall-e-2", size="256x256"),
                        client=make_client(max_retries=0), retry_interrupted=False)
    assert (second.done, server.billable, len(_outputs(out))) == (1, 1, 1)


def test_manifest_source_generates_from_its_real_rows_only_and_by_split(server, photos, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "real").mkdir()
    for name in ("photo0.jpeg", "photo1.png", "photo2.png"):
        (data / "real" / name).write_bytes((photos / name).read_bytes())
    Image.new("RGB", (30, 30), "white").save(data / "fake.png")
    pd.DataFrame({
        "uri": ["real/photo0.jpeg", "real/photo1.png", "fake.png", "real/photo2.png"],
        "label": ["real", "0", "fake", "real"],
        "split": ["train", "train", "train", "test"],
    }).to_csv(data / "faces.csv", index=False)
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    train = run_openai(str(data / "faces.csv"), str(out), config, split="train", client=make_client(max_retries=0))
    assert (train.done, server.billable) == (2, 2)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert sorted(manifest["source_uri"]) == [str(data / "real" / "photo0.jpeg"), str(data / "real" / "photo1.png")]
    assert all(row.pair_id == hashlib.sha256(Path(row.source_uri).read_bytes()).hexdigest() for row in manifest.itertuples())
    every = run_openai(str(data / "faces.csv"), str(out), config, client=make_client(max_retries=0))
    assert (every.done, every.skipped, server.billable) == (1, 2, 3)  # the fake row is never sent
    assert len(pd.read_csv(out / "manifest.csv")) == 3
    with pytest.raises(ConfigError, match="no real images in split 'val'"):
        run_openai(str(data / "faces.csv"), str(out), config, split="val", client=make_client(max_retries=0))
    with pytest.raises(ConfigError, match="dataset manifest"):
        run_openai(str(photos), str(out), config, split="train", client=make_client(max_retries=0))
    assert server.billable == 3


def test_max_total_spend_counts_the_ledger_of_earlier_runs(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2)  # 0.016 per image, 6 jobs
    first = run_openai(str(photos), str(out), config, max_total_spend=0.04, client=make_client(max_retries=0))
    assert (first.done, first.spent_before, first.stopped, server.billable) == (2, 0.0, "budget", 2)
    again = run_openai(str(photos), str(out), config, max_total_spend=0.04, client=make_client(max_retries=0))
    assert (again.done, again.skipped, again.stopped, server.billable) == (0, 2, "budget", 2)
    assert again.spent_before == pytest.approx(0.032)
    raised = run_openai(str(photos), str(out), config, max_total_spend=0.08, client=make_client(max_retries=0))
    assert (raised.done, raised.stopped, server.billable) == (3, "budget", 5)
    assert raised.spent_before + raised.spent == pytest.approx(0.08)
    per_run = run_openai(str(photos), str(out), config, max_spend=0.04, client=make_client(max_retries=0))
    assert (per_run.done, per_run.stopped, server.billable) == (1, None, 6)  # --max-spend ignores earlier runs
    with Ledger(out / LEDGER_NAME) as ledger:
        assert ledger.spent() == pytest.approx(6 * 0.016)


def test_max_total_spend_counts_what_the_output_holds_from_another_machines_ledger(server, photos, tmp_path):
    """A fresh ledger (another machine, a wiped cache) counted --max-total-spend from 0 though --out held paid images;
    then only those of its own model and parameters, though the budget is of all runs into --out: every image --out
    holds that this ledger did not pay for now counts, at this run's price."""
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", n=2)  # 0.016 per image, 6 jobs
    run_openai(str(photos), str(out), config, max_images=4, ledger=tmp_path / "a.sqlite", client=make_client(max_retries=0))
    other = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="512x512")  # other parameters: counted too
    run_openai(str(photos / "photo0.jpeg"), str(out), other, ledger=tmp_path / "a.sqlite", client=make_client(max_retries=0),
               new_settings=True)
    assert server.billable == 5
    here = tmp_path / "b.sqlite"
    first = run_openai(str(photos), str(out), config, max_total_spend=0.096, ledger=here, client=make_client(max_retries=0))
    assert (first.elsewhere, first.skipped, first.done, first.stopped, server.billable) == (5, 4, 1, "budget", 6)
    assert first.spent_before + first.spent == pytest.approx(0.096)
    again = run_openai(str(photos), str(out), config, max_total_spend=0.096, ledger=here, client=make_client(max_retries=0))
    assert (again.elsewhere, again.done, again.stopped, server.billable) == (1, 0, "budget", 6)  # the rest in its ledger
    assert again.spent_before == pytest.approx(0.096)
    with Ledger(here) as ledger:
        assert ledger.spent() == pytest.approx(0.08)


def test_max_total_spend_counts_images_a_ledger_recorded_at_no_cost_at_this_runs_price(server, photos, tmp_path):
    """A run without a budget at a price fakescope lacks (GPT image models), like an older version's, records its images
    at 0, and a later --max-total-spend counted them as free: they now count at the later run's price."""
    out = tmp_path / "out"
    free = run_openai(str(photos / "photo0.jpeg"), str(out), OpenAIImagesConfig(n=2), client=make_client(max_retries=0))
    assert (free.done, free.spent, server.billable) == (2, 0.0, 2)
    priced = OpenAIImagesConfig(n=2, price_per_image=0.05)  # the same model and parameters: the same jobs
    budget = run_openai(str(photos), str(out), priced, max_total_spend=0.2, client=make_client(max_retries=0))
    assert (budget.unpriced, budget.skipped, budget.done, budget.stopped, server.billable) == (2, 2, 2, "budget", 4)
    assert (budget.spent_before, budget.spent) == (pytest.approx(0.1), pytest.approx(0.1))
    again = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--n", "2",
                                     "--price-per-image", "0.05", "--max-total-spend", "0.2"])
    assert again.exit_code == 0, again.output
    assert "done 0, already done 4" in again.output and "stopped: budget" in again.output and server.billable == 4
    assert "(all runs $0.200, 2 image(s) recorded without a price included, $0.000 left of --max-total-spend)" in again.output


def test_images_made_at_an_explicit_price_of_zero_count_as_free_not_unpriced(server, photos, tmp_path):
    """--price-per-image 0 (a self-hosted server) recorded cost 0 without a price, so a later --max-total-spend counted
    those images as unpriced, at its own price; an older ledger's (no price column) still are."""
    out = tmp_path / "out"
    free = run_openai(str(photos / "photo0.jpeg"), str(out), OpenAIImagesConfig(n=2, price_per_image=0),
                      client=make_client(max_retries=0))
    assert (free.done, free.spent, server.billable) == (2, 0.0, 2)
    priced = OpenAIImagesConfig(n=2, price_per_image=0.05)
    budget = run_openai(str(photos), str(out), priced, max_total_spend=0.2, client=make_client(max_retries=0))
    assert (budget.unpriced, budget.spent_before, budget.skipped, budget.done, budget.stopped) == (0, 0.0, 2, 4, None)
    assert server.billable == 6
    with Ledger(out / LEDGER_NAME) as ledger:
        assert sorted(record.price for record in ledger.jobs(DONE)) == [0.0, 0.0, 0.05, 0.05, 0.05, 0.05]
    with sqlite3.connect(out / LEDGER_NAME) as db:  # as an older version left it: no price column
        db.execute("ALTER TABLE jobs DROP COLUMN price")
    older = run_openai(str(photos), str(out), priced, max_total_spend=0.3, client=make_client(max_retries=0))
    assert (older.unpriced, older.skipped, older.done, older.spent_before) == (2, 6, 0, pytest.approx(0.3))


def test_an_older_ledger_opened_by_two_processes_at_once_gets_its_new_column_once(tmp_path):
    """Each opener read the columns, then added the missing one: the second failed, 'duplicate column name: price'.
    A writer holds the ledger while both open it, so both have looked before either may add it."""
    import threading
    import time

    path = tmp_path / "ledger.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:  # as an older version left it: no price or lost column
        db.execute("ALTER TABLE jobs DROP COLUMN price")
        db.execute("ALTER TABLE jobs DROP COLUMN lost")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    errors: list[str] = []

    def open_it() -> None:
        try:
            Ledger(path).close()
        except StorageError as exc:
            errors.append(str(exc))

    openers = [threading.Thread(target=open_it) for _ in range(2)]
    for opener in openers:
        opener.start()
    time.sleep(1)  # both wait on the writer's lock
    holder.execute("ROLLBACK")
    holder.close()
    for opener in openers:
        opener.join(60)
    assert errors == []
    with sqlite3.connect(path) as db:
        assert [c[1] for c in db.execute("PRAGMA table_info(jobs)")][-4:] == ["usage", "params", "price", "lost"]


def test_an_older_ledger_without_lost_opens_with_its_rows_and_counts_a_request_it_left_in_flight(tmp_path):
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add("k", "a.png", "ab", "variation", "dall-e-2", "0f", 0)
        ledger.mark_running("k", 0.02)
    with sqlite3.connect(path) as db:  # as the previous version left it: no lost column
        db.execute("ALTER TABLE jobs DROP COLUMN lost")
    with Ledger(path) as ledger:
        (record,) = ledger.jobs()
        assert (record.state, record.attempts, record.price, record.lost, ledger.spent()) == ("running", 1, 0.02, 0.0, 0.02)
        ledger.mark_running("k", 0.03)  # resent: the lost attempt counts at its price, the new one at its own
        assert (ledger.get("k").lost, ledger.spent()) == (0.02, pytest.approx(0.05))


def test_a_ledger_records_its_format_and_one_of_a_newer_format_is_refused_in_one_line(tmp_path, server, photos):
    """A newer fakescope's ledger (a column of money an older reader leaves out of spend) would be misread; one made before
    the format (user_version 0) opens with its rows and is marked format 1."""
    from fakescope import __version__
    from fakescope.generate.ledger import LEDGER_FORMAT

    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        ledger.add("k", "a.png", "ab", "variation", "dall-e-2", "0f", 0)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (LEDGER_FORMAT,) == (1,)
        db.execute("PRAGMA user_version = 0")  # as versions before the format left it
    with Ledger(path) as ledger:
        assert [record.key for record in ledger.jobs()] == ["k"]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        db.execute("PRAGMA user_version = 2")
    message = (f"cannot open job ledger {path}: written by a newer fakescope (ledger format 2; fakescope {__version__} "
               "reads 1): upgrade fakescope")
    with pytest.raises(StorageError) as refused:
        Ledger(path)
    assert str(refused.value) == message
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--model", "dall-e-2",
                                      "--size", "256x256", "--ledger", str(path), "--yes"])
    assert (result.exit_code, result.stderr, server.billable) == (2, f"error: {message}\n", 0)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,) and db.execute("SELECT key FROM jobs").fetchall() == [("k",)]


def test_a_run_reads_its_ledger_once_before_the_first_job(server, photos, tmp_path, monkeypatch):
    """The loop's start read the whole ledger three times: the jobs it paid for, those done at no cost, their sum. (The
    settings check before the plan reads it once too, before the ledger is claimed, keeping the paid jobs.)"""
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")  # 0.016 per image
    run_openai(str(photos / "photo0.jpeg"), str(out), config, client=make_client(max_retries=0))
    statements, connect = [], sqlite3.connect

    def traced(*args, **kwargs):
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    report = run_openai(str(photos), str(out), config, max_total_spend=1.0, client=make_client(max_retries=0))
    assert (report.skipped, report.done, report.spent_before, server.billable) == (1, 2, pytest.approx(0.016), 3)
    start = statements[:next(i for i, sql in enumerate(statements) if sql.startswith(("INSERT", "UPDATE")))]
    assert len([sql for sql in start if "FROM jobs" in sql and "WHERE" not in sql]) == 2  # the settings check's, the loop's


def test_a_remote_output_has_one_ledger_with_or_without_a_trailing_slash(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path))
    assert default_ledger_path("s3://b/fakes/") == default_ledger_path("s3://b/fakes")
    legacy = tmp_path / "ledgers" / f"{hashlib.sha256(b's3://b/old/').hexdigest()[:16]}.sqlite"
    Ledger(legacy).close()  # made by a version that hashed the URI as typed: still the one used for it
    assert default_ledger_path("s3://b/old/") == default_ledger_path("s3://b/old") == legacy


def test_one_pattern_reads_output_names_of_this_config_or_of_any():
    from fakescope.generate._plan import Job, any_output, output_names, output_uri

    config = OpenAIImagesConfig(mode="variation", model="dall-e-2", size="256x256")
    other = OpenAIImagesConfig(mode="variation", model="gpt-image-1", size="1024x1024")
    job = Job("k", "cat-0123abcd.png", "89abcdef" + "0" * 56, "cat-0123abcd", 1, b"")
    name = output_uri(job, "out", config, "webp").rsplit("/", 1)[-1]
    mine = output_names(config).search(name)
    assert (mine[1], mine[2], int(mine[6])) == ("cat-0123abcd", "89abcdef", 1)  # a stem with a hex part of its own
    assert any_output(name) == ("89abcdef", "dall-e-2", "variation", config.params_hash()[:6], 1)
    theirs = output_uri(job, "out", other, "png").rsplit("/", 1)[-1]
    assert output_names(config).search(theirs) is None and any_output(theirs)[1] == "gpt-image-1"
    assert any_output("cat.png") is None


def test_sizes_the_api_cannot_make_are_refused_before_any_work():
    for size in ("big", "100000x100000", "0x512", "1024x1024x3"):  # dall-e-2 uploads are resized to it: 30 GB for one
        with pytest.raises(ConfigError, match=r"^size: expected WIDTHxHEIGHT with sides of 1 to 4096 pixels"):
            OpenAIImagesConfig(size=size, price_per_image=0.01)
    assert OpenAIImagesConfig(model="gpt-image-1", mode="generate", size="auto").size == "auto"


def test_images_per_source_outside_1_to_10_are_refused_before_any_work():
    for n in (0, 11, 10**9, True, 2.0):  # 10**9 planned a billion jobs and never finished
        with pytest.raises(ConfigError, match=rf"^n must be a whole number from 1 to 10 \(images per source\), got {n!r}$"):
            OpenAIImagesConfig(n=n, price_per_image=0.01)
    assert OpenAIImagesConfig(n=10, price_per_image=0.01).n == 10


def test_the_ledger_of_a_remote_output_lives_in_the_cache_folder_the_onnx_exports_use(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "fs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_ledger_path("s3://b/fakes").parent == tmp_path / "fs" / "ledgers" == cache_dir("ledgers")
    monkeypatch.delenv("FAKESCOPE_CACHE")
    assert default_ledger_path("s3://b/fakes").parent == tmp_path / "xdg" / "fakescope" / "ledgers"
    assert cache_dir("onnx") == tmp_path / "xdg" / "fakescope" / "onnx"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_ledger_path("s3://b/fakes").parent == tmp_path / "home" / ".cache" / "fakescope" / "ledgers"
    assert default_ledger_path(str(tmp_path / "out")) == tmp_path / "out" / LEDGER_NAME  # a local --out keeps its own


def test_default_variation_is_a_whole_image_edit_by_a_gpt_model_with_its_token_usage_recorded(server, photos, tmp_path):
    out = tmp_path / "out"
    report = run_openai(str(photos), str(out), OpenAIImagesConfig(), client=make_client(max_retries=0))
    assert (report.done, report.failed, server.counts[("edits", 200)], server.counts[("variations", 200)]) == (3, 0, 3, 0)
    sent = server.requests[0]
    assert (sent["model"], sent["size"], sent["prompt"]) == ("gpt-image-2.6-flare", "1024x1024", VARIATION_PROMPT)
    assert "mask" not in sent and "response_format" not in sent  # the whole image may change; GPT models answer base64
    rows = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    params = [json.loads(p) for p in rows["params"]]
    assert all(p["mode"] == "variation" and p["via"] == "edit" and p["prompt"] == VARIATION_PROMPT for p in params)
    usages = [p["usage"] for p in params]
    assert all(u["output_tokens"] == 1048 and u["input_tokens_details"]["image_tokens"] == 323 for u in usages)
    assert report.tokens == sum(u["total_tokens"] for u in usages) > 0 and report.spent == 0.0
    with Ledger(out / LEDGER_NAME) as ledger:
        assert sorted(json.loads(job.usage)["total_tokens"] for job in ledger.jobs(DONE)) == sorted(u["total_tokens"] for u in usages)
    own = OpenAIImagesConfig(prompt="another face, same studio light", quality="low")
    again = run_openai(str(photos / "photo1.png"), str(out), own, client=make_client(max_retries=0), new_settings=True)
    assert again.done == 1 and server.requests[-1]["prompt"] == "another face, same studio light"
    assert server.requests[-1]["quality"] == "low" and own.params_hash() != OpenAIImagesConfig().params_hash()


@pytest.mark.parametrize(("sent_at", "counted"), [(0.05, 0.05), (None, 0.2)])  # None: an older version's ledger
def test_an_image_a_crashed_run_paid_for_counts_at_the_price_it_was_sent_at(server, photos, tmp_path, sent_at, counted):
    """A rerun that wrote a crashed run's spooled image counted it, in the budgets and the ledger, at its own
    --price-per-image; it counts at the price the request was sent at (recorded as it went), this run's only where the
    ledger has none."""
    out, photo = tmp_path / "out", str(photos / "photo1.png")
    server.faults = [500]  # a request that fails unbilled still records the price it was sent at
    failed = run_openai(photo, str(out), OpenAIImagesConfig(price_per_image=0.05), client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:
        assert failed.failed == 1 and [(r.cost, r.price) for r in ledger.jobs()] == [(0.0, 0.05)]
    run_openai(photo, str(out), OpenAIImagesConfig(price_per_image=0.05), client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:
        record = next(ledger.jobs(DONE))
        ledger.write_spool(record.key, Path(record.output).read_bytes())
    Path(record.output).unlink()
    with sqlite3.connect(out / LEDGER_NAME) as db:  # as a crash after the answer leaves it: sent, spooled, not done
        db.execute("UPDATE jobs SET state = 'running', cost = 0, output = NULL, row = NULL, price = ?", (sent_at,))
    again = run_openai(photo, str(out), OpenAIImagesConfig(price_per_image=0.2), max_total_spend=1.0,
                       client=make_client(max_retries=0))
    assert (again.recovered, again.done, again.spent, server.billable) == (1, 0, 0.0, 1)
    assert again.spent_before == pytest.approx(counted)
    with Ledger(out / LEDGER_NAME) as ledger:
        assert [(r.state, r.cost, r.price) for r in ledger.jobs()] == [(DONE, pytest.approx(counted), counted)]


def test_usage_survives_a_crash_after_the_answer(server, photos, tmp_path):
    out = tmp_path / "out"
    config = OpenAIImagesConfig(model="gpt-image-2")
    run_openai(str(photos / "photo1.png"), str(out), config, client=make_client(max_retries=0))
    with Ledger(out / LEDGER_NAME) as ledger:
        record = next(ledger.jobs(DONE))
        ledger.mark_running(record.key)
        ledger.write_spool(record.key, Path(record.output).read_bytes())
    recovered = run_openai(str(photos / "photo1.png"), str(out), config, client=make_client(max_retries=0))
    assert (recovered.recovered, server.billable) == (1, 1)
    assert recovered.tokens == json.loads(record.usage)["total_tokens"] > 0
    assert json.loads(pd.read_csv(out / "manifest.csv")["params"][0])["usage"] == json.loads(record.usage)


def test_a_retired_model_is_refused_on_api_openai_com_before_any_upload(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env with a base URL
    for model, message in [("dall-e-2", "dall-e-2 was shut down on api.openai.com on 2026-05-12; use gpt-image-2.6-flare"),
                           ("gpt-image-1", "gpt-image-1 was shut down on api.openai.com on 2026-10-23; use gpt-image-2.5-")]:
        with pytest.raises(ConfigError, match=f"^{message}.*OPENAI_BASE_URL"):
            run_openai(str(photos), str(tmp_path / "out"), OpenAIImagesConfig(model=model, mode="edit", prompt="x"),
                       client=make_client(max_retries=0))
    assert not (tmp_path / "out").exists()  # no ledger either
    soon = MODELS["gpt-image-1.5"]
    assert not soon.retired(datetime.date(2026, 11, 30)) and soon.retired(datetime.date(2026, 12, 1))
    assert soon.replacement == "gpt-image-2.6-sunburst or gpt-image-2.6-flare"


@pytest.mark.parametrize("model", ["gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest"])
def test_a_model_retiring_on_2026_12_01_is_warned_of_before_and_refused_from_that_day(model, caplog):
    api, other = "https://api.openai.com/v1", "http://127.0.0.1:9/v1"
    check_served(model, api, today=datetime.date(2026, 11, 30))
    assert [r.getMessage() for r in caplog.records] == [
        f"{model} will be shut down on api.openai.com on 2026-12-01; use gpt-image-2.6-sunburst or gpt-image-2.6-flare"]
    assert model in current_models("edit", today=datetime.date(2026, 11, 30))
    caplog.clear()
    with pytest.raises(ConfigError) as refused:
        check_served(model, api, today=datetime.date(2026, 12, 1))
    assert str(refused.value) == (f"{model} was shut down on api.openai.com on 2026-12-01; use gpt-image-2.6-sunburst or "
                                  "gpt-image-2.6-flare; set OPENAI_BASE_URL to use a server that still serves it")
    assert model not in current_models("edit", today=datetime.date(2026, 12, 1))
    check_served(model, other, today=datetime.date(2026, 12, 1))  # another server may still serve it: no refusal, no warning
    assert not caplog.records


def test_a_model_the_server_no_longer_serves_is_one_line_naming_its_retirement(server, photos, tmp_path):
    server.retired = {"dall-e-2"}
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256")
    with pytest.raises(ConfigError, match=r"^the Images API refused the request \(404\): The model `dall-e-2` does not exist"
                                          r".*\(dall-e-2 was shut down on api.openai.com on 2026-05-12; use gpt-image-2.6-flare\)$"):
        run_openai(str(photos), str(tmp_path / "out"), config, concurrency=1, client=make_client(max_retries=0))
    assert server.billable == 0 and server.counts[("variations", 404)] == 1


def test_sizes_qualities_and_response_format_are_checked_per_model_family():
    for size in ("1536x864", "3840x2160", "864x2592", "auto", "1024x1536"):
        assert OpenAIImagesConfig(model="gpt-image-2", size=size).size == size
    assert OpenAIImagesConfig(model="gpt-image-2.5-flare", size="2048x1152", quality="max").quality == "max"
    refusals = [
        (dict(model="gpt-image-2", size="1000x1000"), "size 1000x1000 is not one gpt-image-2 makes: use 1024x1024, "
         "1536x1024, 1024x1536, auto, or WIDTHxHEIGHT with both sides divisible by 16, aspect between 1:3 and 3:1"),
        (dict(model="gpt-image-2", size="3072x768"), "size 3072x768 is not one gpt-image-2 makes"),  # 4:1
        (dict(model="gpt-image-2", size="4096x2304"), "size 4096x2304 is not one gpt-image-2 makes"),  # over 3840x2160
        (dict(size="1536x864"), "size 1536x864 is not one gpt-image-2.6-flare makes: use 1024x1024, 1536x1024, 1024x1536, auto$"),
        (dict(size="256x256"), "size 256x256 is not one gpt-image-2.6-flare makes"),
        (dict(model="dall-e-2", size="1536x1024"), "size 1536x1024 is not one dall-e-2 makes: use 256x256, 512x512, 1024x1024$"),
        (dict(quality="max"), "quality max is not one gpt-image-2.6-flare takes: use low, medium, high, auto$"),
        (dict(quality="hd"), "quality hd is not one gpt-image-2.6-flare takes"),
        (dict(response_format="url"), "response_format url is for dall-e models; gpt-image-2.6-flare always answers base64$"),
        (dict(model="dall-e-3"), "dall-e-3 does not support variation; use gpt-image-2.6-flare or another GPT image model$"),
    ]
    for options, message in refusals:
        with pytest.raises(ConfigError, match=f"^{message}"):
            OpenAIImagesConfig(**options)
    assert OpenAIImagesConfig(model="my-own-model", size="640x480", quality="ultra").size == "640x480"  # unknown: not checked
    old_record = {"mode": "edit", "model": "gpt-image-1", "prompt": "a hat", "response_format": "b64_json"}  # a job.json
    assert OpenAIImagesConfig(**old_record).response_format == "b64_json"  # still loads; nothing is sent for it


def test_input_fidelity_is_checked_per_model_sent_with_edits_and_recorded(server, photos, tmp_path):
    """gpt-image edits' input_fidelity (high/low) could not be asked for."""
    refusals = [
        (dict(model="gpt-image-2", input_fidelity="high"), "input_fidelity high is not one gpt-image-2 takes: it takes none, leave it out"),
        (dict(model="gpt-image-1-mini", input_fidelity="high"), "input_fidelity high is not one gpt-image-1-mini takes: use low"),
        (dict(input_fidelity="medium"), "input_fidelity must be high or low"),
        (dict(mode="generate", input_fidelity="low"),
         "input_fidelity is for edits by GPT image models; gpt-image-2.6-flare generate sends none"),
        (dict(model="dall-e-2", size="256x256", input_fidelity="low"),
         "input_fidelity is for edits by GPT image models; dall-e-2 variation sends none"),
    ]
    for options, message in refusals:
        with pytest.raises(ConfigError, match=f"^{message}$"):
            OpenAIImagesConfig(**options)
    assert OpenAIImagesConfig(model="my-own-model", input_fidelity="high").input_fidelity == "high"  # unknown: not checked
    edit = OpenAIImagesConfig(mode="edit", model="gpt-image-1.5", prompt="snow", input_fidelity="high")
    assert "input_fidelity" not in dataclasses.replace(edit, input_fidelity=None).params()  # earlier runs keep their job keys
    out = tmp_path / "out"
    for config in (edit, OpenAIImagesConfig(model="gpt-image-1-mini", input_fidelity="low")):  # an edit, a variation
        report = run_openai(str(photos / "photo1.png"), str(out), config, client=make_client(max_retries=0), new_settings=True)
        assert (report.done, report.failed) == (1, 0)
    assert [(sent["endpoint"], sent["input_fidelity"]) for sent in server.requests] == [("edits", "high"), ("edits", "low")]
    params = [json.loads(text) for text in pd.read_csv(out / "manifest.csv")["params"]]
    assert sorted(param["input_fidelity"] for param in params) == ["high", "low"]


def test_the_input_fidelities_offered_are_those_each_model_takes():
    """The web app offers these: both where the API reference is silent, none for gpt-image-2 and dall-e."""
    offered = {model: input_fidelities(model) for model in ("gpt-image-1.5", "gpt-image-1-mini", "gpt-image-2",
                                                             "gpt-image-2.6-flare", "dall-e-2")}
    assert offered == {"gpt-image-1.5": ("high", "low"), "gpt-image-1-mini": ("low",), "gpt-image-2": (),
                       "gpt-image-2.6-flare": ("high", "low"), "dall-e-2": ()}


def test_a_budget_on_a_model_without_a_price_names_the_model_and_the_option(server, photos, tmp_path):
    with pytest.raises(ConfigError, match=r"^no price known for gpt-image-2.6-flare at size 1024x1024, quality auto "
                                          r"\(it is billed by tokens\); .*--price-per-image"):
        run_openai(str(photos), str(tmp_path / "out"), OpenAIImagesConfig(), max_spend=1.0, client=make_client(max_retries=0))
    priced = OpenAIImagesConfig(price_per_image=0.05)
    report = run_openai(str(photos), str(tmp_path / "out"), priced, max_spend=0.1, client=make_client(max_retries=0))
    assert (report.done, report.stopped, report.spent, server.billable) == (2, "budget", pytest.approx(0.1), 2)


def test_the_loopback_server_refuses_what_the_api_refuses_for_gpt_image_models(server, photos):
    import openai

    client = make_client(max_retries=0)
    upload = ("a.png", (photos / "photo1.png").read_bytes(), "image/png")
    with pytest.raises(openai.BadRequestError, match="Value must be 'dall-e-2'"), pytest.warns(DeprecationWarning):
        client.images.create_variation(image=upload, model="gpt-image-2")
    with pytest.raises(openai.BadRequestError, match="Unknown parameter: 'response_format'"):
        client.images.generate(prompt="a fox", model="gpt-image-2", response_format="b64_json")
    with pytest.raises(openai.BadRequestError, match="Invalid value: 'high'. input_fidelity is not supported with gpt-image-2"):
        client.images.edit(image=upload, prompt="snow", model="gpt-image-2", input_fidelity="high")
    with pytest.raises(openai.BadRequestError, match="Unknown parameter: 'input_fidelity'"):
        client.images.generate(prompt="a fox", model="gpt-image-1.5", extra_body={"input_fidelity": "high"})
    answer = client.images.generate(prompt="a fox", model="gpt-image-2", size="1024x1024")
    assert answer.data[0].b64_json and answer.usage.total_tokens == 2 + 1048


@pytest.mark.parametrize("fault", ["slow", "cut", "held"])
def test_an_answer_that_times_out_or_breaks_off_is_not_resent_and_a_rerun_follows_at_most_once(server, photos, tmp_path, fault):
    """The client resent a request whose answer timed out (before its headers or halfway) or whose connection broke
    after the headers: the API had made and billed the first image, so each such job was paid twice while the ledger
    counted it once."""
    if fault == "held":  # no byte of the answer within the timeout; answered (billed) later
        server.hold_after, server.answer_held = 0, True
    else:
        server.faults, server.slow_seconds = [fault], 2.0
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    photo, out = str(photos / "photo0.jpeg"), str(tmp_path / "out")
    first = run_openai(photo, out, config, client=make_client(max_retries=3, timeout=0.5))
    server.hold_after = None
    server.release.set()
    deadline = time.monotonic() + 10
    while server.billable < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (first.done, first.failed, first.unresolved, first.spent, first.maybe) == (0, 0, 1, 0.016, 0.016)
    assert (server.billable, len(server.requests)) == (1, 1)  # billed once, never resent
    once = run_openai(photo, out, config, retry_interrupted=False, client=make_client(max_retries=0))
    assert (once.unresolved, once.done, len(server.requests)) == (1, 0, 1)
    assert once.spent_before == once.maybe_before == pytest.approx(0.016)
    capped = run_openai(photo, out, config, max_total_spend=0.016, client=make_client(max_retries=0))
    assert (capped.stopped, capped.done, len(server.requests)) == ("budget", 0, 1)  # the lost answer counts
    again = run_openai(photo, out, config, client=make_client(max_retries=0))
    assert (again.unresolved, again.done, server.billable) == (0, 1, 2)
    assert (again.spent_before, again.maybe_before, again.spent) == (pytest.approx(0.016),) * 3
    with Ledger(out + "/" + LEDGER_NAME) as ledger:  # the ledger counts both attempts, as the server billed them
        (record,) = ledger.jobs()
        assert (record.attempts, record.cost, record.lost) == (2, pytest.approx(0.016), pytest.approx(0.016))
        assert ledger.spent() == pytest.approx(server.billable * 0.016)


def test_retry_after_is_honoured_up_to_two_minutes_and_a_longer_one_pauses_the_run_or_stops_it_unpaid(
        server, photos, tmp_path, caplog):
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    server.faults = ["retry-after=1"]
    started = time.monotonic()
    waited = run_openai(str(photos / "photo0.jpeg"), str(tmp_path / "a"), config, client=make_client(max_retries=1))
    assert (waited.done, server.billable) == (1, 1) and time.monotonic() - started >= 1.0
    server.faults = ["retry-after=1"]  # the client's retries spent: the run pauses, then sends that job again
    started = time.monotonic()
    paused = run_openai(str(photos), str(tmp_path / "b"), config, concurrency=2, client=make_client(max_retries=0))
    assert (paused.done, paused.failed, paused.stopped, server.billable) == (3, 0, None, 4)
    assert time.monotonic() - started >= 1.0 and "waiting 1 s, rate limited (429, Retry-After); 2 job(s) wait" in caplog.text
    server.faults = ["retry-after=3600"]  # past the client's 120 s and the run's --max-wait: it stops at once
    stopped = run_openai(str(photos), str(tmp_path / "c"), config, concurrency=1, client=make_client(max_retries=4))
    assert (stopped.done, stopped.failed, stopped.spent, server.billable) == (0, 0, 0, 4)
    assert re.fullmatch(r"rate limited: the API asks to wait 3600 s, past --max-wait 900 s \(waited 0 s\); rerun the "
                        r"same command after \d{4}-\d\d-\d\d \d\d:\d\d \S+ to resume", stopped.stopped)
    with Ledger(tmp_path / "c" / LEDGER_NAME) as ledger:
        [failed] = ledger.jobs("failed")
    assert failed.cost == 0 and failed.error == "RateLimitError: Retry-After 3600 s (unpaid)"
    resumed = run_openai(str(photos), str(tmp_path / "c"), config, concurrency=1, client=make_client(max_retries=4),
                         retry_interrupted=False)  # it was never made: sent again even at most once
    assert (resumed.done, resumed.unresolved, server.billable) == (3, 0, 7)
    server.faults = ["retry-after=1", "retry-after=1"]  # the pauses add up: 2 s is past max_wait
    capped = run_openai(str(photos), str(tmp_path / "d"), config, concurrency=1, client=make_client(max_retries=0),
                        max_wait=1.5)
    assert capped.done == 0 and capped.stopped.startswith("rate limited: the API asks to wait 1 s, past --max-wait 2 s "
                                                          "(waited 1 s)")


def test_a_retry_after_of_nan_inf_a_millisecond_or_1e20_s_neither_loops_nor_crashes(server, photos, tmp_path):
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256")
    photo, client = str(photos / "photo0.jpeg"), make_client(max_retries=0)
    for value in ("nan", "inf"):  # no wait it can keep: the job fails, unpaid, as a 429 without Retry-After
        server.faults, sent = [f"retry-after={value}"] * 5, len(server.requests)
        failed = run_openai(photo, str(tmp_path / value), config, client=client, max_wait=1.5)
        assert (failed.failed, failed.done, len(server.requests) - sent) == (1, 0, 1)  # nan: sent again at once, 6 times
    server.faults = ["retry-after=0.001"] * 5  # was resent at once, each time, with max_wait never reached
    tiny = run_openai(photo, str(tmp_path / "tiny"), config, client=client, max_wait=1.5)
    assert tiny.stopped.startswith("rate limited: the API asks to wait 1 s, past --max-wait 2 s (waited 1 s)")
    server.faults = ["retry-after=1e20"]  # was an OverflowError traceback
    huge = run_openai(photo, str(tmp_path / "huge"), config, client=client)
    assert huge.stopped.startswith("rate limited: the API asks to wait 31536000 s, past --max-wait 900 s")
    assert server.billable == 0


def test_a_run_stopped_by_a_rate_limit_says_when_to_rerun_and_exits_1(server, photos, tmp_path):
    server.faults = ["retry-after=7200"]
    result = CliRunner().invoke(app, ["generate", "openai", str(photos / "photo1.png"), "--out", str(tmp_path / "out"),
                                      "--model", "dall-e-2", "--size", "256x256", "--max-wait", "60"])
    assert result.exit_code == 1 and server.billable == 0
    assert re.search(r", stopped: rate limited: the API asks to wait 7200 s, past --max-wait 60 s \(waited 0 s\); rerun "
                     r"the same command after .+ to resume\n$", result.output)


def test_a_content_policy_refusal_fails_its_image_in_one_line_unpaid_and_the_run_goes_on(server, photos, tmp_path):
    server.faults = [(400, "Your request was rejected by the safety system.", "moderation_blocked")]
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--model", "dall-e-2",
                                      "--size", "256x256", "--concurrency", "1", "--yes"])
    assert result.exit_code == 1 and "done 2, already done 0, recovered 0, failed 1," in result.output, result.output
    assert "estimated spend $0.032" in result.output and server.billable == 2
    assert [line for line in result.output.splitlines() if "failed:" in line] == [
        "warning: job photo0 failed: Error code: 400 - Your request was rejected by the safety system."]
    with Ledger(out / LEDGER_NAME) as ledger:
        [failed] = ledger.jobs("failed")
        assert failed.cost == 0 and ledger.spent() == pytest.approx(0.032)
    rerun = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--model", "dall-e-2",
                                     "--size", "256x256", "--yes"])
    assert rerun.exit_code == 0 and "done 1, already done 2," in rerun.output and server.billable == 3, rerun.output


@pytest.mark.parametrize(("fault", "fix"), [
    ((400, "Billing hard limit has been reached", "billing_hard_limit_reached"), "add credit or raise the account's usage limit"),
    ((403, "Your organization must be verified to use the model", "organization_not_verified"),
     "check that the key's organization and project may use dall-e-2"),
])
def test_an_account_or_project_refusal_stops_the_run_at_once_in_one_line_naming_the_fix(server, photos, tmp_path, fault, fix):
    server.faults = [fault] * 3
    result = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(tmp_path / "out"), "--model", "dall-e-2",
                                      "--size", "256x256", "--concurrency", "1", "--yes"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and fix in errors[0] and fault[1] in errors[0], result.output
    assert len(server.requests) == 1 and server.billable == 0
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:  # refused, unbilled: not left in flight as maybe billed
        assert [r.state for r in ledger.jobs() if r.attempts] == ["failed"] and ledger.spent() == 0


def test_a_refused_key_is_one_line_saying_how_to_set_one(server, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-secret-123")
    result = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(tmp_path / "out"), "--model", "dall-e-2",
                                      "--size", "256x256", "--yes"])
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1] == (
        "error: the Images API refused the request (401): the API key was refused; set a valid OPENAI_API_KEY "
        "(environment or .env)"), result.output
    assert "sk-wrong" not in result.output and server.billable == 0


def test_the_loopback_server_refuses_sizes_qualities_n_and_masks_the_api_refuses(server, photos):
    import openai

    client = make_client(max_retries=0)
    wide = ("a.png", (photos / "photo0.jpeg").read_bytes(), "image/jpeg")  # 64x48
    square = ("b.png", (photos / "photo1.png").read_bytes(), "image/png")  # 40x40
    refused = {
        "Supported values are: '256x256'": lambda: client.images.generate(prompt="a fox", model="dall-e-2", size="1536x1024"),
        "Invalid value: '2048x1152'": lambda: client.images.generate(prompt="a fox", model="gpt-image-2.6-flare",
                                                                     size="2048x1152"),
        "Invalid value: 'hd'": lambda: client.images.generate(prompt="a fox", model="gpt-image-2", quality="hd"),
        "Invalid value for 'n': 2": lambda: client.images.generate(prompt="a fox", model="dall-e-3", n=2),
        "image must be square": lambda: client.images.create_variation(image=wide, model="dall-e-2", size="256x256"),
        "image and mask must have the same dimensions": lambda: client.images.edit(
            image=wide, mask=square, prompt="snow", model="gpt-image-2"),
    }
    for message, request in refused.items():
        with pytest.raises(openai.BadRequestError, match=message), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # create_variation's
            request()
    assert client.images.generate(prompt="a fox", model="gpt-image-2", size="2048x1152").data[0].b64_json
    assert client.images.generate(prompt="a fox", model="gpt-image-2.5-flare", quality="max").data[0].b64_json


def test_what_fakescope_sends_for_each_known_model_and_mode_the_loopback_server_takes(server, photos):
    from fakescope.generate.openai_images import request_image

    client, photo = make_client(max_retries=0), (photos / "photo0.jpeg").read_bytes()
    for model, info in MODELS.items():
        for mode in info.modes:
            prompt = "snow" if mode == "edit" else None
            config = OpenAIImagesConfig(model=model, mode=mode, size=info.sizes[0], quality=info.qualities[-1], prompt=prompt)
            data, usage = request_image(client, config, source=None if mode == "generate" else photo,
                                        prompt="a fox" if mode == "generate" else None)
            assert Image.open(io.BytesIO(data)).size == (int(info.sizes[0].split("x")[0]),) * 2, (model, mode)
            assert (usage is None) == config.legacy, (model, mode)
    sent = {(request["model"], request["endpoint"]) for request in server.requests}
    assert ("dall-e-2", "variations") in sent and ("gpt-image-2", "edits") in sent and ("dall-e-3", "generations") in sent
    assert not any(request["model"] != "dall-e-2" and request["endpoint"] == "variations" for request in server.requests)
    assert all(("response_format" in request) == request["model"].startswith("dall-e") for request in server.requests)


def test_a_parameter_every_request_sends_refused_stops_the_run_at_once_naming_the_option(server, tmp_path):
    """A size the server does not take failed every source's job one request at a time, however many there were."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\na cat\na dog\n")
    config = OpenAIImagesConfig(model="gpt-image-9", mode="generate", size="640x480")  # unknown to fakescope: not checked
    with pytest.raises(ConfigError, match=r"^the Images API refused size for gpt-image-9 \(400\): Invalid value: '640x480'\. "
                                          r"Supported values are: .*; every request sends it alike: change it \(--size\)$"):
        run_openai(str(prompts), str(tmp_path / "out"), config, concurrency=1, client=make_client(max_retries=0))
    assert server.counts[("generations", 400)] == 1 and server.billable == 0


def test_retry_after_is_read_in_milliseconds_seconds_or_as_an_http_date():
    """The pause a 429 asks for, read as the openai client reads it (without its private parser)."""
    import email.utils

    import httpx2

    from fakescope.generate._loop import retry_after

    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert retry_after(httpx2.Headers({"retry-after-ms": "2500", "retry-after": "9"})) == 2.5
    assert retry_after(httpx2.Headers({"retry-after": "150"})) == 150
    assert 55 < retry_after(httpx2.Headers({"retry-after": in_a_minute})) <= 60
    assert retry_after(httpx2.Headers({"retry-after": "soon"})) is None and retry_after(httpx2.Headers()) is None
