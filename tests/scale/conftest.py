"""Generated image folders and a shared bundled-model detector for the scale tests."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

SIZES = [(300, 200), (90, 70), (256, 256), (400, 120), (150, 333), (64, 64)]


@pytest.fixture
def image_folder(tmp_path):
    """Six noise images (JPEG and PNG, some smaller than a tile), a nested one and a broken file."""
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate(SIZES):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image.save(folder / (f"img{i}.jpg" if i % 2 else f"img{i}.png"))
    Image.fromarray(rng.integers(0, 256, (120, 130, 3), dtype=np.uint8)).save(folder / "nested" / "deep.jpg", quality=80)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="session")
def detector():
    from fakescope.detector import Detector

    return Detector.load(device="cpu", batch_size=4, workers=2, provenance=False)


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    """Keep ONNX exports out of the user's cache (one folder per test session)."""
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
