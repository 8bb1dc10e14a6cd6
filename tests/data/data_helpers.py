"""Generated images for the dataset tests (plain functions, imported by name: conftest modules share one name)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SIDE = 64
PER_CLASS = 16


def smooth_image(seed: int, side: int = SIDE) -> Image.Image:
    """A smooth random colour field with mild noise: distinct per seed, photo-like enough to hash."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-6, 7, (side, side, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def watermark(image: Image.Image) -> Image.Image:
    """Stamp faint text into the bottom-right corner, like thispersondoesnotexist's StyleGAN2 credit."""
    marked = image.copy()
    draw = ImageDraw.Draw(marked)
    draw.text((SIDE // 2, SIDE - 11), "SG2 (K)", fill=(235, 235, 235))
    return marked
