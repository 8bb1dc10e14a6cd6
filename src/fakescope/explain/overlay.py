"""Heatmap overlays: an image with a colour-mapped map over it, a colour bar and a caption, as PNG."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from fakescope.errors import ConfigError
from fakescope.io import storage
from fakescope.io.image import to_rgb

MAX_FIGURE_INCHES = 7.0
MIN_FIGURE_INCHES = (4.0, 3.0)
"""Width and height that keep the caption and the colour bar's label whole beside a very tall or wide image."""
DPI = 100
MAX_DRAWN_SIDE = int(2 * MAX_FIGURE_INCHES * DPI)
"""Longer inputs are shrunk to this side before drawing (the figure shows at most 700 px of it)."""


def overlay_png(
    image: Image.Image,
    heatmap: np.ndarray,
    caption: str,
    *,
    scale_label: str = "relative evidence of ai",
    alpha: float = 0.45,
    cmap: str = "jet",
) -> bytes:
    """Render `heatmap` (H x W in [0, 1], the size of `image` as displayed) over `image`; return PNG bytes.

    `image` is drawn as fakescope decodes it, so as the map was computed: turned upright by its EXIF orientation,
    alpha on white, greyscale, palette and 16-bit as 8-bit RGB.

    Example:
        >>> from fakescope import Detector
        >>> image = Image.open("examples/coffee.jpg")
        >>> png = overlay_png(image, Detector.load().explain(image), "P(ai) = 0.16")
        >>> Image.open(io.BytesIO(png)).format
        'PNG'
    """
    heatmap, image = np.asarray(heatmap), to_rgb(image)
    if heatmap.shape != (image.height, image.width):
        raise ConfigError(f"heatmap {heatmap.shape} does not match the image's {image.height}x{image.width}")
    scale = MAX_FIGURE_INCHES / max(image.width, image.height)
    size = (max(image.width * scale + 1.4, MIN_FIGURE_INCHES[0]), max(image.height * scale + 0.8, MIN_FIGURE_INCHES[1]))
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    image, heatmap = _drawn_size(image, heatmap)
    axes = figure.add_subplot()
    axes.imshow(image)
    shown = axes.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, interpolation="bilinear")
    axes.set_axis_off()
    axes.set_title(caption, fontsize=9, wrap=True)
    figure.colorbar(shown, ax=axes, shrink=0.8, label=scale_label)
    return figure_png(figure)


def _drawn_size(image: Image.Image, heatmap: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Image and map area-averaged to `MAX_DRAWN_SIDE` (matplotlib would resample megapixels as float64)."""
    shrink = MAX_DRAWN_SIDE / max(image.width, image.height)
    if shrink >= 1:
        return image, heatmap
    size = (max(1, round(image.width * shrink)), max(1, round(image.height * shrink)))
    small = Image.fromarray(np.asarray(heatmap, np.float32)).resize(size, Image.Resampling.BOX)
    return image.resize(size, Image.Resampling.BOX), np.asarray(small)


def save_overlay(uri: str, image: Image.Image, heatmap: np.ndarray, caption: str, **options) -> str:
    """Write `overlay_png(...)` to a local path or storage URI; return the URI."""
    storage.write_bytes(uri, overlay_png(image, heatmap, caption, **options))
    return uri


def figure_png(figure: Figure) -> bytes:
    """A matplotlib figure as PNG bytes (no pyplot, no global state)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
