"""Real servers on loopback: uvicorn running `create_app` in a thread, one detector for the session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import TOKEN, LiveServer, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))


@pytest.fixture(scope="session")
def detector():
    from fakescope.detector import Detector

    return Detector.load(device="cpu", batch_size=32, workers=2)


@pytest.fixture(scope="session")
def server(detector, tmp_path_factory):
    """A token-protected server with small limits (1 MB uploads, 1 Mpx images, 8 files per batch)."""
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, max_upload_mb=1, max_pixels=1_000_000, max_files=8, max_wait_ms=20,
                         jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


@pytest.fixture
def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="session")
def photo_bytes() -> bytes:
    """A 160x120 JPEG with smooth gradients and noise, standing in for a photo."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    base = np.stack([x * 1.5, y * 2.0, (x + y) * 0.8], axis=-1) + rng.normal(0, 12, (120, 160, 3))
    return encode(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), "JPEG", quality=90)


@pytest.fixture(scope="session")
def flat_png() -> bytes:
    return encode(Image.new("RGB", (96, 64), (200, 40, 90)))
