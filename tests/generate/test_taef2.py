"""The taef2 autoencoder: architecture with random weights, strict loading, and a real round trip."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import ConfigError, ModelLoadError
from fakescope.generate import taef2 as taef2_module
from fakescope.generate.taef2 import TAEF2, WEIGHTS_ENV, build_decoder, build_encoder, resolve_weights_dir
from fakescope.io.image import load_image

REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    root = Path(os.environ.get("FAKESCOPE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set FAKESCOPE_SHARED_DATA)")
    return root


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255**2 / np.mean((x - y) ** 2)))


@pytest.fixture(scope="module")
def random_taef2() -> TAEF2:
    torch.manual_seed(0)
    return TAEF2(device="cpu", batch_size=2)


def test_architecture_has_published_keys_and_sizes():
    encoder, decoder = build_encoder().state_dict(), build_decoder().state_dict()
    assert len(encoder) == 79 and len(decoder) == 79
    assert encoder["11.pool.0.weight"].shape == (256, 64, 1, 1)
    assert "2.bias" not in encoder and encoder["14.weight"].shape == (32, 64, 3, 3)
    assert decoder["1.weight"].shape == (64, 32, 3, 3) and decoder["19.weight"].shape == (3, 64, 3, 3)
    assert "7.bias" not in decoder and "3.pool.1.bias" in decoder and "8.pool.0.weight" not in decoder


def test_latent_shape_and_odd_sizes_round_trip_to_source_shape(random_taef2):
    x = torch.rand(3, 3, 37, 50)
    assert random_taef2.encoder(torch.rand(1, 3, 64, 48)).shape == (1, 32, 8, 6)
    out = random_taef2.reconstruct_tensor(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_reconstruct_keeps_order_and_size_across_batches(random_taef2):
    sizes = [(40, 33), (64, 64), (40, 33), (40, 33), (17, 90)]
    images = [Image.new("RGB", size, (i * 40, 100, 200)) for i, size in enumerate(sizes)]
    fakes = random_taef2.reconstruct(images)
    assert [fake.size for fake in fakes] == sizes
    assert all(fake.mode == "RGB" for fake in fakes)
    assert np.array_equal(np.asarray(fakes[0]), np.asarray(random_taef2.reconstruct([images[0]])[0]))


def _input_shapes(model: TAEF2) -> list[tuple[int, ...]]:
    """Shapes of every input the first (full-resolution) convolution sees, recorded as they come."""
    shapes: list[tuple[int, ...]] = []
    model.encoder[0].register_forward_pre_hook(lambda _module, args: shapes.append(tuple(args[0].shape)))
    return shapes


def test_large_images_run_in_tiles_with_the_untiled_result(monkeypatch):
    torch.manual_seed(0)
    model = TAEF2(device="cpu")
    monkeypatch.setattr(taef2_module, "TILE", 16)  # 128 px cores, 96 px margins: a 448 px wide image is 4 tiles
    x = torch.rand(1, 3, 64, 448)
    with torch.inference_mode():
        whole = model.decoder(model.encoder(x)).clamp(0, 1)
    shapes = _input_shapes(model)
    tiled = model.reconstruct_tensor(x)
    assert len(shapes) == 4 and max(shape[-1] for shape in shapes) == 320  # no pass holds the whole image
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_reconstruct_bounds_the_pixels_of_one_batch(monkeypatch):
    monkeypatch.setattr(taef2_module, "PIXELS_PER_PASS", 2 * 48 * 40)
    model = TAEF2(device="cpu", batch_size=3)
    shapes = _input_shapes(model)
    fakes = model.reconstruct([Image.new("RGB", (48, 40), "red")] * 5 + [Image.new("RGB", (99, 97))])
    assert [fake.size for fake in fakes] == [(48, 40)] * 5 + [(99, 97)]
    assert [shape[0] for shape in shapes] == [2, 2, 1, 1]  # 2 of 3 fit the budget; an image over it goes alone


def test_from_dir_is_strict_about_keys(tmp_path, random_taef2):
    torch.save(random_taef2.encoder.state_dict(), tmp_path / "taef2_encoder.pth")
    decoder = random_taef2.decoder.state_dict()
    decoder.pop("19.bias")
    torch.save(decoder, tmp_path / "taef2_decoder.pth")
    with pytest.raises(ModelLoadError, match="19.bias"):
        TAEF2.from_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="not found"):
        TAEF2.from_dir(tmp_path / "missing")


def test_a_bad_device_is_one_line_naming_the_accepted_ones(tmp_path, random_taef2):
    """As every entry point says it (`detector.resolve_device`), not torch's list of every device type it knows."""
    message = "invalid device 'cdua': use cpu, cuda, cuda:N, mps or auto"
    with pytest.raises(ConfigError) as excinfo:
        TAEF2(device="cdua")
    assert str(excinfo.value) == message
    torch.save(random_taef2.encoder.state_dict(), tmp_path / "taef2_encoder.pth")
    torch.save(random_taef2.decoder.state_dict(), tmp_path / "taef2_decoder.pth")
    Image.new("RGB", (64, 48), "red").save(tmp_path / "red.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "taef2", str(tmp_path / "red.png"), "--out", str(out),
                                      "--weights", str(tmp_path), "--device", "cdua"])
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n", result.output
    assert not out.exists()


def test_weights_dir_from_env_and_missing_default(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert resolve_weights_dir() == tmp_path
    monkeypatch.delenv(WEIGHTS_ENV)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"give one \(--weights\) or set {WEIGHTS_ENV} .* \(the default, "
                                          r"\.\./shared/data/generators/taef2, is not there from "):
        resolve_weights_dir()


@pytest.mark.shared
def test_real_weights_load_strictly_and_reconstruct_a_photo():
    data = _shared_data()
    weights = data / "generators" / "taef2"
    photos = sorted((data / "real-imagenet-sample").glob("*.JPEG"))
    if not photos or not weights.is_dir():
        pytest.skip(f"taef2 weights or imagenet sample missing under {data}")
    taef2 = TAEF2.from_dir(weights, device="cpu")
    photo = Image.open(photos[0]).convert("RGB").resize((256, 256), Image.BICUBIC)
    odd = photo.crop((0, 0, 251, 203))
    fake, fake_odd = taef2.reconstruct([photo, odd])
    assert fake.size == (256, 256) and fake_odd.size == (251, 203)
    assert _psnr(photo, fake) > 20.0
    assert _psnr(odd, fake_odd) > 20.0
    assert not np.array_equal(np.asarray(photo), np.asarray(fake))


@pytest.mark.shared
def test_real_weights_turn_odd_inputs_into_aligned_outputs_and_skip_only_the_unusable(tmp_path):
    data = _shared_data()
    weights = data / "generators" / "taef2"
    photos = sorted((data / "real-imagenet-sample").glob("*.JPEG"))
    if not photos or not weights.is_dir():
        pytest.skip(f"taef2 weights or imagenet sample missing under {data}")
    photo = Image.open(photos[0]).convert("RGB").resize((128, 96), Image.BICUBIC)
    src = tmp_path / "src"
    src.mkdir()
    photo.convert("CMYK").save(src / "cmyk.jpg", quality=95)
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257).save(src / "grey16.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(src / "palette.png", transparency=0)
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # 96x128 on disk; EXIF orientation 6 shows it 128x96
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(src / "rotated.jpg", exif=exif, quality=95)
    photo.resize((1500, 32), Image.BICUBIC).save(src / "wide.png")
    Image.new("RGB", (1, 1)).save(src / "dot.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", "taef2", str(src), "--out", str(out), "--weights", str(weights),
                                      "--device", "cpu"])
    assert result.exit_code == 1 and "5 images written, 1 unusable source(s) skipped" in result.stdout, result.output
    assert result.stderr == f"warning: skipping {src / 'dot.png'}: image too small: 1x1 (minimum side 32 px)\n"
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert sorted(Path(uri).name.split("-")[0] for uri in manifest["uri"]) == ["cmyk", "grey16", "palette", "rotated", "wide"]
    for row in manifest.itertuples():
        source, fake = load_image(row.source_uri).image, Image.open(row.uri)
        assert fake.size == source.size == (row.width, row.height)  # rotated: as shown, 128x96
        assert _psnr(source, fake.convert("RGB")) > 25.0, row.source_uri
