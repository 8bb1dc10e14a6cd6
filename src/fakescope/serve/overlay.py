"""Render a heatmap: a grey PNG of the raw values, or a colour map laid over the image, and its colour key; size an
image for display."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def heatmap_image(heatmap: np.ndarray) -> Image.Image:
    """8-bit greyscale image of a [0, 1] heatmap (255 = P(ai) 1)."""
    return Image.fromarray(np.clip(np.asarray(heatmap, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def heatmap_overlay(image: Image.Image, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "inferno") -> Image.Image:
    """Blend the colour-mapped heatmap (resized to the image) over an RGB image.

    Colours come from a 256-entry table and the blend runs on 8-bit pixels: a few bytes per pixel,
    where float arrays took over 100 (about 5 GB more for a 49 Mpx image).
    """
    grey = heatmap_image(heatmap).resize(image.size, Image.BILINEAR)
    coloured = Image.fromarray(colour_table(cmap)[np.asarray(grey)], "RGB")
    return Image.blend(image.convert("RGB"), coloured, alpha)


def colour_table(cmap: str = "inferno") -> np.ndarray:
    """The colour map's 256 RGB colours as uint8, row i for P(ai) i/255."""
    from matplotlib import colormaps

    return np.round(colormaps[cmap](np.arange(256) / 255.0)[:, :3] * 255.0).astype(np.uint8)


def colour_scale(height: int = 14, cmap: str = "inferno") -> Image.Image:
    """The overlay's colour key: a 256-pixel bar from P(ai) 0 on the left to 1 on the right, at full strength."""
    return Image.fromarray(np.repeat(colour_table(cmap)[None], height, axis=0), "RGB")


def display_copy(image: Image.Image, max_side: int = 1600) -> Image.Image:
    """A copy no longer than `max_side` on either side (a 70 Mpx photo's overlay at full size takes ~9 GB)."""
    copy = image.copy()
    copy.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return copy


def image_bytes(image: Image.Image, format: str = "PNG") -> bytes:  # noqa: A002 - Pillow's own word
    """Encode a PIL image as PNG, or as an RGB JPEG at quality 95 (what Streamlit shows a PIL image as; given
    these bytes it encodes nothing)."""
    buffer = io.BytesIO()
    if format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format=format)
    return buffer.getvalue()
