"""`fakescope explain` and `fakescope embed` through Typer's runner, and one real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from explain_helpers import planted_image
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.explain.report import overlay_name


def written(stdout: str) -> list[str]:
    """The PNGs a run printed: each line is an input, then the files written for it, tab-separated."""
    return [path for line in stdout.splitlines() for path in line.split("\t")[1:]]


def unhashed(path: str) -> str:
    """An overlay's file name without the hash of its image's path: `x-1a2b3c4d_tiles.png` as `x_tiles.png`."""
    return re.sub(r"-[0-9a-f]{8}(_[a-z]+\.png)$", r"\1", os.path.basename(path))


@pytest.fixture
def images(tmp_path):
    paths = []
    for seed in (5000, 5001):
        path = tmp_path / "in" / f"img{seed}.png"
        path.parent.mkdir(exist_ok=True)
        planted_image(seed, 128)[0].save(path)
        paths.append(str(path))
    return paths


def test_explain_writes_an_overlay_per_image_and_method(model_dir, images, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", *images, "--model", model_dir, "--out", str(out),
                                      "--method", "tiles", "--method", "gradcam++"])
    assert result.exit_code == 0, result.output
    files = written(result.stdout)
    assert sorted(unhashed(p) for p in files) == [
        "img5000_gradcampp.png", "img5000_tiles.png", "img5001_gradcampp.png", "img5001_tiles.png"]
    assert all(Image.open(p).format == "PNG" for p in files)


def test_each_input_is_printed_with_its_files_so_two_of_one_name_are_told_apart(model_dir, images, tmp_path):
    """`a/x.png` and `b/x.png` wrote `x_tiles.png` and `x-2_tiles.png`, but only those two names were printed."""
    inputs = []
    for folder, image in zip("ab", images, strict=True):
        (tmp_path / folder).mkdir()
        inputs.append(str(tmp_path / folder / "x.png"))
        os.rename(image, inputs[-1])
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["explain", *inputs, "--model", model_dir, "--out", str(out),
                                      "--method", "tiles", "--method", "cam"])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == inputs and len({*lines[0][1:], *lines[1][1:]}) == 4
    assert [[unhashed(p) for p in line[1:]] for line in lines] == [["x_tiles.png", "x_cam.png"]] * 2


def test_two_runs_into_one_out_never_replace_each_others_overlays(model_dir, images, tmp_path, monkeypatch):
    """A second run wrote `x_tiles.png` again, silently replacing the first run's overlay of another `x.png`."""
    inputs = []
    for folder, image in zip("ab", images, strict=True):
        (tmp_path / folder).mkdir()
        inputs.append(str(tmp_path / folder / "x.png"))
        os.rename(image, inputs[-1])
    out, base = tmp_path / "out", ["--model", model_dir, "--out", str(tmp_path / "out"), "--method", "tiles"]
    first = CliRunner().invoke(app, ["explain", inputs[0], *base])
    kept = (out / os.path.basename(written(first.stdout)[0])).read_bytes()
    second = CliRunner().invoke(app, ["explain", inputs[1], *base])
    assert (first.exit_code, second.exit_code) == (0, 0), second.output
    assert len(os.listdir(out)) == 2 and (out / os.path.basename(written(first.stdout)[0])).read_bytes() == kept
    monkeypatch.chdir(tmp_path)  # the same image, named another way, keeps its name: that overlay is refused, not replaced
    again = CliRunner().invoke(app, ["explain", "a/x.png", "b", *base])
    assert (again.exit_code, again.stdout) == (2, "")
    assert again.stderr == (f"error: {out} already holds 2 overlay(s) of these images from an earlier run (first: "
                            f"{written(first.stdout)[0]}); replace them with --overwrite, or choose another --out\n")
    replaced = CliRunner().invoke(app, ["explain", "a/x.png", "--overwrite", *base])
    assert replaced.exit_code == 0 and written(replaced.stdout) == written(first.stdout)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in written(first.stdout) + written(second.stdout))


def test_explain_reports_unreadable_images_and_goes_on(model_dir, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["explain", str(broken), images[0], "--model", model_dir,
                                      "--out", str(tmp_path / "out"), "--method", "cam"])
    assert result.exit_code == 1
    assert result.stderr == f"error: {broken}: not an image (unrecognised file signature)\n"  # names the image
    assert "Traceback" not in result.output
    assert [unhashed(p) for p in written(result.stdout)] == ["img5000_cam.png"]
    missing = CliRunner().invoke(app, ["explain", str(tmp_path / "absent.png"), "--model", model_dir, "--out", str(tmp_path)])
    assert missing.stderr == f"error: {tmp_path / 'absent.png'}: no such file\n"  # named once


def test_explain_glob_takes_only_images_as_a_folder_does(model_dir, images, tmp_path):
    (tmp_path / "in" / "labels.csv").write_text("path,label\n")
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "in" / "*"), "--model", model_dir,
                                      "--out", str(tmp_path / "out"), "--method", "cam"])
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert sorted(unhashed(p) for p in written(result.stdout)) == ["img5000_cam.png", "img5001_cam.png"]


def test_explain_takes_odd_images_and_names_the_one_it_cannot(model_dir, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    folder = tmp_path / "odd"
    folder.mkdir()
    shapes = {"grey": (90, 70), "alpha": (64, 80, 4), "tiny32": (32, 32, 3), "wide": (40, 700, 3), "tiny8": (8, 8, 3)}
    odd = {name: rng.integers(0, 256, shape, dtype=np.uint8) for name, shape in shapes.items()}
    odd["deep16"] = rng.integers(0, 65536, (70, 90), dtype=np.uint16)
    for name, pixels in odd.items():
        Image.fromarray(pixels).save(folder / f"{name}.png")
    colour = Image.fromarray(odd["alpha"][..., :3])
    colour.convert("P").save(folder / "palette.png", transparency=0)  # a palette with a transparent index
    colour.convert("CMYK").save(folder / "cmyk.jpg")
    odd |= {"palette": None, "cmyk": None}
    result = CliRunner().invoke(app, ["explain", str(folder), "--model", model_dir, "--out", str(tmp_path / "out"),
                                      "--method", "tiles", "--method", "cam"])
    assert result.exit_code == 1
    assert result.stderr == f"error: {folder / 'tiny8.png'}: image too small: 8x8 (minimum side 32 px)\n"
    assert sorted(unhashed(p) for p in written(result.stdout)) == sorted(
        f"{name}_{method}.png" for name in odd if name != "tiny8" for method in ("cam", "tiles"))
    assert all(Image.open(p).size[0] >= 400 and Image.open(p).size[1] >= 300 for p in written(result.stdout))


def test_explain_takes_a_file_name_that_is_not_utf8(model_dir, images, tmp_path):
    latin1 = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png"))
    os.rename(images[0], latin1)
    result = CliRunner().invoke(app, ["explain", latin1, "--model", model_dir, "--out", str(tmp_path / "out"), "--method", "tiles"])
    assert result.exit_code == 0, result.output
    hashed = overlay_name(latin1).removeprefix("caf\udce9")
    escaped = str(tmp_path / "caf\\udce9.png"), str(tmp_path / "out" / f"caf\\udce9{hashed}_tiles.png")
    assert result.stdout == "\t".join(escaped) + "\n"  # printed escaped
    assert os.listdir(os.fsencode(tmp_path / "out")) == [f"caf\xe9{hashed}_tiles.png".encode("latin-1")]  # its own name


def test_no_input_images_is_said_before_the_model_loads(tmp_path):
    """An empty folder was named only after the model loaded: with no model at the path, it is still what is said."""
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["explain", str(tmp_path / "empty"), "--model", str(tmp_path / "no-model"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr.startswith("error: no input images found: a folder, prefix or quoted glob")
    assert result.stderr.count("\n") == 1


def test_an_out_that_is_a_file_is_refused_before_any_work(model_dir, images, planted_manifest, tmp_path):
    """Both failed only when writing: explain once per image, embed after embedding the whole manifest."""
    from fakescope.data import write_manifest

    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    explained = CliRunner().invoke(app, ["explain", *images, "--model", model_dir, "--out", str(taken)])
    assert (explained.exit_code, explained.stdout) == (2, "")
    assert explained.stderr == f"error: {taken} is a file, not a folder to write into\n"
    rows = planted_manifest[planted_manifest["split"] == "val"].assign(pair_id="", width=64, height=64, format="PNG", sha256="")
    write_manifest(rows, str(tmp_path / "manifest.parquet"))
    embedded = CliRunner().invoke(app, ["embed", str(tmp_path / "manifest.parquet"), "--model", model_dir, "--out", str(taken)])
    assert embedded.exit_code == 2 and embedded.stderr == explained.stderr
    assert taken.read_text() == "keep me"


def test_methods_the_architecture_cannot_draw_are_named_once_before_any_work(images, tmp_path):
    from fakescope.models import ModelConfig, create_model, save_model

    save_model(create_model("spectral_lr").eval(), ModelConfig("spectral", "spectral_lr"), tmp_path / "spectral")
    why = "SpectralLR: no module produces the forward_features output to explain (per-tile heatmaps, --method tiles, " \
          "work for every model)"
    base = ["explain", *images, "--model", str(tmp_path / "spectral"), "--device", "cpu"]
    result = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output  # was a note per image and method
    assert result.stderr == f"note: gradcam skipped: {why}\nnote: gradcam++ skipped: {why}\n"
    assert sorted(map(unhashed, os.listdir(tmp_path / "default"))) == ["img5000_cam.png", "img5000_tiles.png", "img5001_cam.png",
                                                        "img5001_tiles.png"]
    asked = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "asked"), "--method", "tiles", "--method", "gradcam"])
    assert asked.exit_code == 2  # was exit 0 with only the tiles, and a note per image
    assert asked.stderr == f"error: --method gradcam: {why}\n" and not (tmp_path / "asked").exists()


def test_explain_rejects_an_unknown_method(model_dir, images, tmp_path):
    result = CliRunner().invoke(app, ["explain", images[0], "--model", model_dir, "--method", "saliency"])
    assert result.exit_code == 2 and "saliency" in result.output


@pytest.mark.slow  # UMAP's first fit compiles with numba
def test_embed_writes_features_and_plots(model_dir, planted_manifest, tmp_path):
    from fakescope.data import write_manifest

    rows = planted_manifest[planted_manifest["split"] == "val"].assign(
        pair_id="", width=64, height=64, format="PNG", sha256="", glasses=["1", "No face detected", ""] * 8)
    write_manifest(rows, str(tmp_path / "manifest.parquet"))
    out = tmp_path / "embedding"
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "manifest.parquet"), "--model", model_dir, "--out", str(out),
                                      "--color-by", "pattern", "--color-by", "source", "--color-by", "glasses", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("embedded 24 image(s), 0 left out; k-means k=2")
    assert result.stderr == ("note: --color-by source: one value, synthetic, in every embedded image that has one, so it "
                             "is not drawn\nnote: --color-by glasses: one value, 1, in every embedded image that has one, "
                             "so it is not drawn\n")  # glasses was drawn as 1 and (none), and the note said every image had one
    assert len(pd.read_parquet(out / "embeddings.parquet")) == 24
    written = result.stdout.splitlines()[1:]  # every file written is printed, clusters.csv included
    assert sorted(written) == sorted(str(p) for p in out.iterdir()), written
    assert sorted(p.name for p in out.glob("*.png")) == ["umap_label.png", "umap_mosaic.png", "umap_pattern.png"]


@pytest.mark.slow  # UMAP's first fit compiles with numba
def test_embed_takes_the_minimal_manifest_evaluate_takes(model_dir, planted_manifest, tmp_path):
    rows = planted_manifest[planted_manifest["split"] == "val"]
    for path in rows["uri"]:
        os.link(path, tmp_path / os.path.basename(path))
    minimal = pd.DataFrame({"uri": [os.path.basename(p) for p in rows["uri"]],  # relative to the manifest
                            "label": rows["label"].map({"ai": "fake", "real": "real"}).to_numpy()})
    minimal.to_csv(tmp_path / "minimal.csv", index=False)
    out = tmp_path / "embedding"
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "minimal.csv"), "--model", model_dir, "--out", str(out)])
    assert result.exit_code == 0, result.output  # was refused: 'missing column(s): format, ...'
    assert result.stdout.startswith("embedded 24 image(s), 0 left out; k-means k=2")
    table = pd.read_parquet(out / "embeddings.parquet")
    assert sorted(table["label"].value_counts().items()) == [("ai", 12), ("real", 12)]  # `fake` read as ai


@pytest.mark.slow  # UMAP's first fit compiles with numba
def test_embed_warns_of_a_repeated_uri_as_evaluate_does(model_dir, planted_manifest, tmp_path):
    rows = planted_manifest[planted_manifest["split"] == "val"][["uri", "label"]]
    pd.concat([rows, rows.head(1)]).to_csv(tmp_path / "twice.csv", index=False)
    out = tmp_path / "embedding"
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "twice.csv"), "--model", model_dir, "--out", str(out)])
    assert result.exit_code == 0, result.output  # was silent
    assert result.stderr == (f"warning: 1 row(s) of the manifest repeat a uri already in it (first: {rows['uri'].iloc[0]}); "
                             "each row is embedded and counted as one more image\n")
    assert result.stdout.startswith("embedded 25 image(s), 0 left out")  # kept, as evaluate scores each row
    assert len(pd.read_parquet(out / "embeddings.parquet")) == 25


def test_embed_with_more_clusters_than_images_is_a_usage_error(model_dir, planted_manifest, tmp_path):
    from fakescope.data import write_manifest

    rows = planted_manifest[planted_manifest["split"] == "val"].head(6).assign(
        pair_id="", width=64, height=64, format="PNG", sha256="")
    write_manifest(rows, str(tmp_path / "manifest.parquet"))
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "manifest.parquet"), "--model", model_dir,
                                      "--out", str(tmp_path / "embedding"), "--clusters", "10"])
    assert result.exit_code == 2, result.output  # was sklearn's ValueError and a traceback, after the UMAP fit
    assert result.stderr == "error: k-means with k=10 clusters needs at least 10 images, got 6\n"


def test_installed_command_explains_an_image(model_dir, images, tmp_path):
    out = tmp_path / "sub"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fakescope"), "explain", images[1],
                           "--model", model_dir, "--out", str(out), "--method", "gradcam", "--device", "cpu"],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{images[1]}\t{out / overlay_name(images[1])}_gradcam.png\n"


def test_explain_tiles_of_an_image_too_thin_to_tile_is_a_failure_naming_why(tmp_path):
    """It was a note that the tiles map "is not finite (the network gave NaN...)", and exit 0."""
    import torch

    from fakescope.io.image import MAX_PIXELS
    from fakescope.models import InputPolicy, ModelConfig, create_model, save_model

    torch.manual_seed(0)
    save_model(create_model("test_tiny").eval(), ModelConfig("wide", "test_tiny", input=InputPolicy(crop_size=640, grid=1)),
               tmp_path / "model")
    thin, square = tmp_path / "thin.png", tmp_path / "square.png"
    Image.new("RGB", (16_000, 32), "grey").save(thin)  # filling a 640-px tile: 320,000 x 640, over MAX_PIXELS
    Image.new("RGB", (640, 640), "grey").save(square)
    result = CliRunner().invoke(app, ["explain", str(thin), str(square), "--model", str(tmp_path / "model"),
                                      "--out", str(tmp_path / "out"), "--method", "tiles"])
    assert result.exit_code == 1
    assert result.stderr == (f"error: {thin}: image too long and thin: upscaling 16000x32 to fill a 640-px tile gives "
                             f"320000x640 (204,800,000 pixels), over {MAX_PIXELS:,}\n")
    assert [unhashed(p) for p in written(result.stdout)] == ["square_tiles.png"]
