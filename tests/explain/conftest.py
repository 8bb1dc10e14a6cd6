"""A detector trained in seconds to spot a planted local artefact, and images to explain with it.

The artefact is an 8x8 black-and-white checkerboard of 2-pixel cells pasted at a random place
into ai images; real images are the same kind of smooth colour fields without it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "fakescope-numba-cache"))

import numpy as np
import pandas as pd
import pytest
from explain_helpers import ARTEFACT, TRAIN_SIDE, plant, smooth_field
from PIL import Image


@pytest.fixture(scope="session")
def planted_manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """112 real and 112 ai 64x64 PNGs (100 + 100 train, 12 + 12 val), in a manifest frame."""
    root = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(112):
        for label in ("real", "ai"):
            pixels = smooth_field(2 * i + (label == "ai"), TRAIN_SIDE)
            if label == "ai":
                plant(pixels, *(int(v) for v in rng.integers(0, TRAIN_SIDE - ARTEFACT, 2)))
            path = root / f"{label}{i:03d}.png"
            Image.fromarray(pixels).save(path)
            rows.append({"uri": str(path), "label": label, "source": "synthetic", "generator": "checker" if label == "ai" else "",
                         "split": "train" if i < 100 else "val", "pattern": "checker" if label == "ai" else "plain"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def planted_model(planted_manifest: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """`test_tiny` trained on the planted set (CPU, 5 short epochs, about 10 s on one thread)."""
    from fakescope.models import load_model
    from fakescope.train import AugmentConfig, TrainConfig, train

    off = AugmentConfig(bottom_crop=0, base_jpeg_quality=None, resize_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0)
    out = tmp_path_factory.mktemp("planted-run")
    cfg = TrainConfig(manifest="planted", out=str(out), name="planted-checker", architecture="test_tiny", pretrained=False,
                      epochs=5, samples_per_epoch=320, batch_size=32, lr=3e-3, num_workers=0, device="cpu", amp=False,
                      patience=10, augment=off)
    saved = train(cfg, planted_manifest, progress=False)  # one torch thread: set for the session in tests/conftest.py
    assert saved.metrics["val"]["auc"] > 0.95, saved.metrics["val"]
    return load_model(out / "model")


@pytest.fixture(scope="session")
def model_dir(planted_model) -> str:
    return planted_model.location
