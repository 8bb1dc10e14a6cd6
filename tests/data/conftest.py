"""Tiny generated datasets: a faces-like layout with the shortcuts of the shared faces set, and a clean one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from data_helpers import PER_CLASS, SIDE, encode, smooth_image, watermark
from PIL import Image


@pytest.fixture(scope="session")
def faces_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """real/ holds PNGs named .jpg; fake/stylegan2/ holds watermarked JPEG q75 (the shared faces shortcuts).

    Also: fake/variations/r000_var1.png is derived from real/r000.jpg (a pair), and
    real/r015_copy.jpg is r015 re-encoded (a near duplicate).
    """
    root = tmp_path_factory.mktemp("faces")
    (root / "real").mkdir()
    (root / "fake" / "stylegan2").mkdir(parents=True)
    (root / "fake" / "variations").mkdir()
    for i in range(PER_CLASS):
        (root / "real" / f"r{i:03d}.jpg").write_bytes(encode(smooth_image(i), "PNG"))
        fake = watermark(smooth_image(1000 + i))
        (root / "fake" / "stylegan2" / f"f{i:03d}.jpg").write_bytes(encode(fake, "JPEG", quality=75))
    variation = np.asarray(smooth_image(0), dtype=np.int16)[:, ::-1] // 2 + 60
    (root / "fake" / "variations" / "r000_var1.png").write_bytes(encode(Image.fromarray(variation.astype(np.uint8)), "PNG"))
    copy = smooth_image(PER_CLASS - 1).resize((SIDE - 8, SIDE - 8))
    (root / "real" / f"r{PER_CLASS - 1:03d}_copy.jpg").write_bytes(encode(copy, "PNG"))
    return root


@pytest.fixture(scope="session")
def clean_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both classes as JPEG q90 through one pipeline, no watermark: nothing should be flagged."""
    root = tmp_path_factory.mktemp("clean")
    for label, offset in (("real", 0), ("fake", 5000)):
        os.makedirs(root / label)
        for i in range(PER_CLASS):
            (root / label / f"{label}{i:03d}.jpg").write_bytes(encode(smooth_image(offset + i), "JPEG", quality=90))
    return root


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    """The shared faces set from `$FAKESCOPE_SHARED_DATA` or ../shared/data beside the repo; skips if absent."""
    base = os.environ.get("FAKESCOPE_SHARED_DATA") or str(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    folder = Path(base) / "faces-ffhq128-vs-stylegan2"
    if not folder.is_dir():
        pytest.skip(f"shared faces data not found at {folder}; set FAKESCOPE_SHARED_DATA")
    return folder
