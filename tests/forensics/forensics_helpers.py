"""Helpers shared by the forensics tests (a uniquely named module, importable from any test file)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"

def photo_like(size: int = 512, seed: int = 0) -> Image.Image:
    """A 1/f-noise colour image: natural-image-like spectrum, no flat areas."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :]
    amp = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / size) ** 1.1

    def field() -> np.ndarray:
        return np.real(np.fft.ifft2(amp * np.exp(2j * np.pi * rng.random((size, size)))))

    base = field()
    arr = np.stack([base + 0.35 * field() for _ in range(3)], -1)
    arr = (arr - arr.min()) / (arr.max() - arr.min()) * 235 + 10
    return Image.fromarray(arr.astype(np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()
