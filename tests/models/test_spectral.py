"""The spectral baseline: its features, its contract with the other zoo models, and that it learns."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fakescope.errors import ConfigError
from fakescope.models import architecture_info, create_model, list_models, load_model, save_model
from fakescope.models.config import ModelConfig
from fakescope.models.spectral import SpectralLR, _ring_averager


def test_registered_with_its_input_policy():
    assert "spectral_lr" in list_models()
    info = architecture_info("spectral_lr")
    assert (info.input.crop_size, info.input.grid) == (128, 3)
    assert isinstance(create_model("spectral_lr", pretrained=True), SpectralLR)  # nothing to pretrain
    with pytest.raises(ConfigError, match="no pretrained backbone"):
        create_model("spectral_lr", pretrained="weights.pth")


def test_shapes_and_the_classifier_contract():
    model = create_model("spectral_lr").eval()
    x = torch.randn(3, 3, 128, 96)
    features = model.forward_features(x)
    assert features.shape == (3, 72, 4, 3)  # 3 channels x 24 rings, one column per 32 px patch
    assert model(x).shape == (3,)
    torch.testing.assert_close(model(x), model.forward_head(features))
    assert model.embed(x).shape == (3, 72)
    assert model(torch.randn(1, 3, 20, 50)).shape == (1,)  # smaller than a patch: padded, still scored


def test_ring_averager_rows_average_each_ring():
    rings = _ring_averager(32, 24)
    assert rings.shape == (32 * 32, 24)
    assert torch.allclose(rings.sum(0), torch.ones(24))  # every ring has members, each weighted 1/count
    assert rings[0].sum() == 0  # the DC term is left out


def test_a_pure_frequency_lands_in_its_ring():
    model = SpectralLR(patch=32, bins=24)
    _yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = torch.cos(2 * math.pi * 8 * xx / 32).expand(1, 3, 32, 32)  # 8 cycles per 32 px: 0.25 cycles/px
    rings = model.forward_features(wave)[0, :24, 0, 0]
    lowest, corner = 1 / 32, 0.5 * math.sqrt(2)  # rings span [1/32, 0.707] cycles/px in 24 equal steps
    assert int(rings.argmax()) == int((0.25 - lowest) / (corner - lowest) * 24) == 7


def test_learns_to_tell_grain_from_smooth_images_and_round_trips(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    base = torch.nn.functional.interpolate(torch.rand(32, 3, 6, 6), size=64, mode="bicubic")
    noise = torch.from_numpy(rng.normal(0, 0.08, (16, 3, 64, 64))).float()
    x = torch.cat([base[:16] + noise, base[16:]])  # real: grain; ai: smooth
    y = torch.cat([torch.zeros(16), torch.ones(16)])
    model = create_model("spectral_lr")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(25):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert loss.item() < 0.1
    assert bool(logits[16:].min() > logits[:16].max())
    save_model(model, ModelConfig(name="spectral", architecture="spectral_lr"), tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded.network(x), logits)


def test_explains_by_tiles_and_names_that_option_where_grad_cam_cannot_run(tmp_path):
    from fakescope import Detector

    save_model(create_model("spectral_lr").eval(), ModelConfig("spectral", "spectral_lr"), tmp_path / "m")
    detector = Detector.load(tmp_path / "m", device="cpu")
    image = (np.random.default_rng(0).random((256, 320, 3)) * 255).astype(np.uint8)
    heatmap = detector.explain(image, "tiles")
    assert heatmap.shape == (256, 320) and np.isfinite(heatmap).all()
    with pytest.raises(ConfigError, match=r"^SpectralLR: no module produces the forward_features output to explain "
                                          r"\(per-tile heatmaps, --method tiles, work for every model\)$"):
        detector.explain(image, "gradcam")
