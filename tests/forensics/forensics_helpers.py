"""Helpers shared by the forensics tests (a uniquely named module, importable from any test file)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
UTF8 = (1, 90, "\x1b%G")  # IIM 1:90 coded character set: UTF-8


def iim(*datasets: tuple[int, int, str], encoding: str = "utf-8") -> bytes:
    """An IPTC-IIM record: one 0x1C tag marker, record, dataset, 16-bit length and value per dataset."""
    return b"".join(b"\x1c" + bytes([record, number]) + struct.pack(">H", len(raw)) + raw
                    for record, number, value in datasets for raw in [value.encode(encoding)])


def irb(*resources: tuple[int, bytes], name: bytes = b"") -> bytes:
    """A Photoshop image resource block: per resource '8BIM', its id, a Pascal `name` and its data, each padded to
    even length (as Photoshop writes it in JPEG APP13 and exiftool in a PNG's raw IPTC profile)."""
    pascal = bytes([len(name)]) + name + b"\x00" * ((len(name) + 1) % 2)
    return b"".join(b"8BIM" + struct.pack(">H", code) + pascal + struct.pack(">I", len(data)) + data
                    + b"\x00" * (len(data) % 2) for code, data in resources)


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
