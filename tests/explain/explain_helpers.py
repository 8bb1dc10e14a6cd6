"""Planted-artefact images shared by the explanation tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

ARTEFACT = 8
TRAIN_SIDE = 64


def smooth_field(seed: int, side: int | tuple[int, int]) -> np.ndarray:
    """A smooth colour field, `side` x `side` or (height, width)."""
    height, width = (side, side) if isinstance(side, int) else side
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC)).copy()


def plant(pixels: np.ndarray, top: int, left: int) -> np.ndarray:
    yy, xx = np.mgrid[0:ARTEFACT, 0:ARTEFACT]
    pixels[top:top + ARTEFACT, left:left + ARTEFACT] = np.where(((yy // 2 + xx // 2) % 2 == 0)[..., None], 255, 0)
    return pixels


def planted_image(seed: int, side: int | tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """A smooth field (square, or (height, width)) with the artefact at a seeded place; returns it and the artefact's centre."""
    height, width = (side, side) if isinstance(side, int) else side
    top, left = (int(v) for v in np.random.default_rng(seed).integers(0, (height - ARTEFACT, width - ARTEFACT)))
    return Image.fromarray(plant(smooth_field(seed, side), top, left)), (top + ARTEFACT // 2, left + ARTEFACT // 2)
