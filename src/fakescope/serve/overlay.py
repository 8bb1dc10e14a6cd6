"""Render a heatmap: a grey PNG of the raw values, or a colour map laid over the image; size an image for display."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def heatmap_image(heatmap: np.ndarray) -> Image.Image:
    """8-bit greyscale image of a [0, 1] heatmap (255 = P(ai) 1)."""
    return Image.fromarray(np.clip(np.asarray(heatmap, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def heatmap_overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "inferno") -> Image.Image:
    """Blend the colour-mapped heatmap (resized to the image) over an RGB image."""
    from matplotlib import colormaps

    grey = heatmap_image(heatmap).resize(image.size, Image.BILINEAR)
    coloured = colormaps[cmap](np.asarray(grey, dtype=np.float32) / 255.0)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blended = (1.0 - alpha) * base + alpha * coloured
    return Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def display_copy(image: Image.Image, max_side: int = 1600) -> Image.Image:
    """A copy no longer than `max_side` on either side (a 70 Mpx photo's overlay at full size takes ~9 GB)."""
    copy = image.copy()
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return copy


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
