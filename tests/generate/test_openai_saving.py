"""How `generate openai` saves the API's images (like their photos, resized, or as answered) and what it uploads,
with the real `openai` client against the loopback Images API server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import ConfigError
from fakescope.generate.openai_images import MAX_UPLOAD_PIXELS, OpenAIImagesConfig, make_client
from fakescope.generate.runner import run_openai


@pytest.fixture
def photos(tmp_path) -> Path:
    """A 4:2:2 JPEG at quality 60, a palette PNG with a transparent entry, an RGBA PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (96, 64), (200, 90, 40)).save(folder / "a.jpg", quality=60, subsampling=1)
    palette = Image.new("P", (40, 36), 1)
    palette.putpalette([0, 0, 0, 250, 10, 10, 10, 250, 10] + [0] * 759)
    palette.paste(0, (0, 0, 10, 10))
    palette.save(folder / "b.png", transparency=0)
    rgba = Image.new("RGBA", (50, 70), (10, 20, 200, 255))
    rgba.paste((10, 20, 200, 0), (0, 0, 25, 70))
    rgba.save(folder / "c.png")
    return folder


def _rows(out: Path) -> dict[str, dict]:
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    return {Path(row["source_uri"]).name: {**row, "params": json.loads(row["params"])} for row in manifest.to_dict("records")}


def test_each_image_is_saved_like_its_photo_by_default(server, photos, tmp_path):
    out = tmp_path / "fakes"
    report = run_openai(str(photos), str(out), OpenAIImagesConfig(size="1024x1024"), client=make_client(max_retries=0))
    assert (report.done, report.failed) == (3, 0)
    rows = _rows(out)
    assert {name: (row["format"], row["width"], row["height"]) for name, row in rows.items()} == {
        "a.jpg": ("JPEG", 1024, 1024), "b.png": ("PNG", 1024, 1024), "c.png": ("PNG", 1024, 1024)}
    assert all(row["params"]["format"] == "source" and not {"resize", "crop"} & set(row["params"]) for row in rows.values())
    with Image.open(photos / "a.jpg") as real, Image.open(rows["a.jpg"]["uri"]) as fake:
        assert rows["a.jpg"]["uri"].endswith(".jpg") and fake.quantization == real.quantization
        assert fake.layer == real.layer  # the same chroma subsampling (4:2:2)
    with Image.open(rows["b.png"]["uri"]) as fake:  # the photo's palette, its transparent entry scaled to the image
        assert fake.mode == "P" and fake.info["transparency"] == 0 and fake.getpixel((0, 0)) == 0
        assert fake.getpixel((1023, 1023)) != 0
    with Image.open(rows["c.png"]["uri"]) as fake:  # the photo's alpha, scaled: its left half transparent
        assert fake.mode == "RGBA" and fake.getpixel((10, 500))[3] == 0 and fake.getpixel((1000, 500))[3] == 255


def test_resize_to_source_gives_each_image_its_photos_size(server, photos, tmp_path):
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(size="1024x1024", resize_to_source=True)
    assert run_openai(str(photos), str(out), config, client=make_client(max_retries=0)).done == 3
    rows = _rows(out)
    assert {name: (row["width"], row["height"]) for name, row in rows.items()} == {
        "a.jpg": (96, 64), "b.png": (40, 36), "c.png": (50, 70)}
    assert all(row["params"]["resize"] == "source" for row in rows.values())
    png = run_openai(str(photos / "a.jpg"), str(tmp_path / "png"), OpenAIImagesConfig(output_format="png",
                     resize_to_source=True), client=make_client(max_retries=0))
    [row] = _rows(tmp_path / "png").values()
    assert png.done == 1 and (row["format"], row["width"], row["height"]) == ("PNG", 96, 64)


def test_png_keeps_the_apis_answer_byte_for_byte_and_generate_mode_only_that(server, photos, tmp_path):
    out = tmp_path / "fakes"
    report = run_openai(str(photos / "a.jpg"), str(out), OpenAIImagesConfig(output_format="png"),
                        client=make_client(max_retries=0))
    [row] = _rows(out).values()
    assert report.done == 1 and (row["format"], row["width"]) == ("PNG", 1024)
    assert "format" not in row["params"]  # as earlier versions recorded it: their job keys still match
    answer = Image.new("RGB", (1024, 1024), (37, 91, 128))  # the server's first answer, as it encodes it
    answer.putpixel((0, 0), (1, 0, 7))
    buffer = io.BytesIO()
    answer.save(buffer, format="PNG")
    assert Path(row["uri"]).read_bytes() == buffer.getvalue()
    assert "output_format" not in server.requests[0]  # always a PNG answer: nothing lossy before the photo's encoding
    with pytest.raises(ConfigError, match="^generate mode has no source image to follow: --format source and "):
        OpenAIImagesConfig(mode="generate", output_format="source")
    with pytest.raises(ConfigError, match="^generate mode has no source image to follow"):
        OpenAIImagesConfig(mode="generate", resize_to_source=True)
    assert OpenAIImagesConfig(mode="generate").save_format == "png"


def test_a_rerun_into_an_out_made_as_png_is_refused_without_the_same_format(server, photos, tmp_path):
    out = tmp_path / "fakes"
    first = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--format", "png"])
    assert first.exit_code == 0, first.output
    rerun = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out)])
    assert rerun.exit_code == 2 and server.billable == 3
    assert rerun.output.startswith(f"error: the ledger of this --out paid for {photos / 'a.jpg'} (and 2 more source(s)) "
                                   "with --format png; this run has --format source: pass the same options")
    resized = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--format", "png",
                                       "--resize-to-source"])
    assert resized.exit_code == 2 and "with no --resize-to-source; this run has --resize-to-source:" in resized.output
    again = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--format", "png"])
    assert again.exit_code == 0 and "already done 3" in again.output and server.billable == 3
    (out / ".fakescope-ledger.sqlite").unlink()  # as on another machine, where the manifest tells
    told = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out)])
    assert told.exit_code == 2 and told.stderr.startswith("error: this --out's images were made with --format png; ")
    (out / "manifest.csv").unlink()  # and without its manifest: known by the images' names
    elsewhere = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out)])
    assert elsewhere.exit_code == 2 and server.billable == 3
    assert elsewhere.output == ("error: this --out's images were made with --format png; this run has --format source: "
                                "pass the same options to resume that run, --new-settings to pay for a second set beside "
                                "it, or use another --out\n")
    beside = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), "--new-settings"])
    assert beside.exit_code == 0 and server.billable == 6 and len(list(out.glob("a-*.jpg"))) == 1


def test_a_photo_over_the_upload_limit_is_sent_downscaled_and_its_row_says_so(server, tmp_path):
    photo = tmp_path / "big.jpg"
    Image.new("RGB", (4200, 4000), "olive").save(photo, quality=50)  # 16.8 megapixels
    out = tmp_path / "fakes"
    report = run_openai(str(photo), str(out), OpenAIImagesConfig(resize_to_source=True), client=make_client(max_retries=0))
    sent = server.requests[0]["image"]
    assert report.done == 1 and sent[0] * sent[1] <= MAX_UPLOAD_PIXELS and abs(sent[0] / sent[1] - 1.05) < 0.01
    [row] = _rows(out).values()
    assert row["params"]["upload"] == f"{sent[0]}x{sent[1]}" and (row["width"], row["height"]) == (4200, 4000)
    Image.new("RGB", (2000, 1500), "olive").save(photo, quality=50)
    whole = run_openai(str(photo), str(tmp_path / "again"), OpenAIImagesConfig(), client=make_client(max_retries=0))
    assert whole.done == 1 and server.requests[1]["image"] == (2000, 1500)
    assert "upload" not in next(iter(_rows(tmp_path / "again").values()))["params"]


def test_a_run_of_new_photos_into_an_out_recorded_with_other_settings_is_refused(server, photos, tmp_path):
    """A rerun that changed --format was refused only for photos done before: new photos ran, so PNG and JPEG fakes
    shared one --out by batch. Any run whose settings are none recorded for --out is now refused, whatever its photos:
    by the ledger, and without it (another machine) by the manifest; the same options resume, --new-settings adds a
    second set."""
    out = tmp_path / "fakes"
    base = ["generate", "openai", "--out", str(out), "--max-retries", "0"]
    first = CliRunner().invoke(app, [*base[:2], str(photos / "a.jpg"), *base[2:], "--format", "png"])
    assert first.exit_code == 0 and server.billable == 1, first.output
    other = CliRunner().invoke(app, [*base[:2], str(photos / "b.png"), *base[2:]])  # a new photo, default --format
    assert other.exit_code == 2 and server.billable == 1 and other.stdout == "", other.output
    assert other.stderr == ("error: this --out's images were made with --format png; this run has --format source: pass "
                            "the same options to resume that run, --new-settings to pay for a second set beside it, or "
                            "use another --out\n")
    same = CliRunner().invoke(app, [*base[:2], str(photos / "b.png"), *base[2:], "--format", "png"])
    assert same.exit_code == 0 and "done 1," in same.output and server.billable == 2, same.output
    (out / ".fakescope-ledger.sqlite").unlink()  # as on another machine: the manifest records the settings
    bigger = CliRunner().invoke(app, [*base[:2], str(photos / "c.png"), *base[2:], "--format", "png", "--size",
                                      "1536x1024"])
    assert bigger.exit_code == 2 and server.billable == 2
    assert bigger.stderr.startswith("error: this --out's images were made with --size 1024x1024; this run has --size "
                                    "1536x1024: pass the same options")
    beside = CliRunner().invoke(app, [*base[:2], str(photos / "c.png"), *base[2:], "--format", "png", "--size",
                                      "1536x1024", "--new-settings"])
    assert beside.exit_code == 0 and server.billable == 3, beside.output
    assert {row["format"] for row in _rows(out).values()} == {"PNG"} and len(_rows(out)) == 3


def test_dall_e_2s_image_is_resized_to_the_square_it_was_made_from_and_its_row_records_the_box(server, photos, tmp_path):
    """dall-e-2 is sent the photo's centred square, and --resize-to-source stretched its square image to the photo's
    aspect, aligned with nothing in it. It is now resized to that square's size, and each row records the box."""
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256", resize_to_source=True)
    assert run_openai(str(photos), str(out), config, client=make_client(max_retries=0)).done == 3
    assert [request["image"] for request in server.requests] == [(256, 256)] * 3
    rows = _rows(out)
    assert {name: (row["width"], row["height"], row["params"]["crop"]) for name, row in rows.items()} == {
        "a.jpg": (64, 64, [16, 0, 80, 64]), "b.png": (36, 36, [2, 0, 38, 36]), "c.png": (50, 50, [0, 10, 50, 60])}
    kept = run_openai(str(photos / "a.jpg"), str(tmp_path / "kept"), OpenAIImagesConfig(model="dall-e-2", size="256x256"),
                      client=make_client(max_retries=0))
    [row] = _rows(tmp_path / "kept").values()
    assert kept.done == 1 and (row["width"], row["height"], row["params"]["crop"]) == (256, 256, [16, 0, 80, 64])


def test_a_rerun_over_dall_e_2_images_an_earlier_version_stretched_is_refused_with_or_without_the_manifest(
        server, photos, tmp_path):
    """Versions before the crop stretched dall-e-2's square image to its photo's aspect under the same name: a rerun
    took them as made and made the rest square beside them, one set of two geometries."""
    out = tmp_path / "fakes"
    config = OpenAIImagesConfig(model="dall-e-2", size="256x256", resize_to_source=True)
    assert run_openai(str(photos), str(out), config, client=make_client(max_retries=0)).done == 3
    [made] = out.glob("a-*.jpg")
    Image.open(made).resize((96, 64)).save(made, quality=60)  # as an earlier version saved it: the photo's size
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    manifest.loc[manifest["uri"] == str(made), ["width", "height"]] = (96, 64)
    manifest.to_csv(out / "manifest.csv", index=False)
    for path in [*out.glob("b-*"), *out.glob("c-*")]:
        path.unlink()  # the rest to be made by the rerun
    said = (f"{out} holds 1 image(s) of these options stretched to their photo's aspect by a version before dall-e-2's "
            f"were resized to the square they were made from (as {made.name}): delete them to have them made again, "
            "paid again, or use another --out")
    for removed in (None, out / ".fakescope-ledger.sqlite", out / "manifest.csv"):  # known by the manifest, else the image
        if removed:
            removed.unlink()
        with pytest.raises(ConfigError) as refused:
            run_openai(str(photos), str(out), config, client=make_client(max_retries=0), new_settings=True)
        assert str(refused.value) == said and server.billable == 3
    made.unlink()
    assert run_openai(str(photos), str(out), config, client=make_client(max_retries=0)).done == 3
    assert {Image.open(path).size for path in out.glob("*-0.*")} == {(64, 64), (36, 36), (50, 50)}


def test_images_copied_without_their_ledger_or_manifest_refuse_other_settings_by_their_names(server, photos, tmp_path):
    """JPEG and WebP images (saved like their photos) copied into an --out without the ledger or the manifest: a run
    with other options made a second set beside them; only earlier versions' PNGs were checked."""
    made, out = tmp_path / "made", tmp_path / "fakes"
    assert run_openai(str(photos), str(made), OpenAIImagesConfig(), client=make_client(max_retries=0)).done == 3
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    for image in made.glob("*-0.*"):
        (out / image.name).write_bytes(image.read_bytes())
    assert {path.suffix for path in out.glob("*-0.*")} == {".jpg", ".png"}
    for options, said in ((["--format", "png"], "--format source; this run has --format png"),
                          (["--size", "1536x1024"], "other parameters (hash "),  # known by the hash only
                          (["--model", "gpt-image-2"], "--model gpt-image-2.6-flare; this run has --model gpt-image-2")):
        refused = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out), *options])
        assert refused.exit_code == 2 and server.billable == 3, refused.output
        assert refused.output.startswith(f"error: this --out's images were made with {said}")
        assert refused.output.endswith(": pass the same options to resume that run, --new-settings to pay for a second "
                                       "set beside it, or use another --out\n")
    resumed = CliRunner().invoke(app, ["generate", "openai", str(photos), "--out", str(out)])
    assert resumed.exit_code == 0 and "already done 3" in resumed.output and server.billable == 3, resumed.output
    assert (out / "notes.txt").read_text() == "a user's file" and len(_rows(out)) == 3
