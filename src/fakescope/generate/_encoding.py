"""How a local generator's ai image is saved: like its source (`source`), so no file property tells it, or as a PNG.

Under `source` an ai image takes its source's format, colour mode, alpha and ICC profile:

- JPEG: the source's quantization tables and chroma subsampling.
- WebP: lossless for a lossless source; a lossy one at `WEBP_QUALITY` (Pillow cannot estimate a WebP's quality).
- any other: PNG.
- greyscale stays greyscale, a palette image is mapped to the source's own palette, and the source's alpha (or a
  palette's transparency) is put back on the ai pixels, which the generator made from the source composited on white.
- 16-bit sources give 8-bit images: the generators take and give 8 bits per channel.
- an ai image of another size than its source (the Images API's) takes the source's alpha or palette transparency
  scaled to its own size (nearest neighbour).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

from fakescope.io.image import upright

SAVE_FORMATS = ("source", "png")
"""`source`: each ai image saved like its source; `png`: as a PNG (`generate openai`: the API's own, unchanged)."""
WEBP_QUALITY = 80
"""The quality of a lossy WebP source's ai image (Pillow's default)."""
Encoding = tuple[str, dict[str, Any]]
"""(file extension, Pillow save options) of one output."""
_GREY = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def encoding_of(data: bytes, output_format: str) -> Encoding:
    """How to save the ai image of the source `data` under `output_format` (`source` or `png`), from its header alone;
    PNG for a source whose header Pillow cannot read (`load_image` says why)."""
    if output_format == "source":
        try:
            with Image.open(io.BytesIO(data)) as header:
                if header.format in ("JPEG", "MPO") and header.quantization:
                    sampling = JpegImagePlugin.get_sampling(header)
                    return "jpg", {"format": "JPEG", "qtables": header.quantization,
                                   **({"subsampling": sampling} if sampling != -1 else {})}
                if header.format == "WEBP":
                    return "webp", {"format": "WEBP", **({"lossless": True} if _lossless_webp(data)
                                                         else {"quality": WEBP_QUALITY})}
        except Exception:  # noqa: BLE001, S110 - Pillow raises many types for broken files: saved as PNG below
            pass
    return "png", {"format": "PNG"}


def encode(image: Image.Image, source: bytes, encoding: Encoding, output_format: str) -> bytes:
    """The file of the generator's RGB `image` made from `source`, saved as `encoding` says; under `source` in the
    source's colour mode, with its alpha and ICC profile (see the module)."""
    options = encoding[1]
    if output_format == "source":
        with Image.open(io.BytesIO(source)) as opened:  # its pixels decoded only for a palette or alpha
            image = _like(image, opened)
            if icc := opened.info.get("icc_profile"):
                options = {**options, "icc_profile": icc}
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def _like(image: Image.Image, source: Image.Image) -> Image.Image:
    """`image` in `source`'s mode: greyscale, the source's palette, the source's alpha where it has one (turned upright,
    as the generator's input was)."""
    if source.mode == "P":
        source = _sized(source, image.size)
        made = np.asarray(image.quantize(palette=source))
        if "transparency" in source.info:  # the pixels the source shows as transparent keep its index
            indices = np.asarray(source)
            transparent = np.asarray(source.convert("RGBA").getchannel("A")) < 255
            made = np.where(transparent, indices, made)
        result = Image.fromarray(made.astype(np.uint8), "P")
        result.putpalette(source.getpalette(rawmode="RGB"))
        result.info = {key: source.info[key] for key in ("transparency",) if key in source.info}
        return result
    grey = source.mode in _GREY or source.mode.startswith("I;")
    result = image.convert("L" if grey else "RGB")
    if source.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        result.putalpha(_sized(source, image.size).getchannel("A"))
    return result


def _sized(source: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`source` upright, at `size` (nearest neighbour, which keeps a palette's indices) where it has another."""
    source = upright(source)
    return source if source.size == size else source.resize(size, Image.NEAREST)


def _lossless_webp(data: bytes) -> bool:
    """Whether a WebP file's image is VP8L (lossless), from its RIFF chunk names."""
    offset = 12
    while offset + 8 <= len(data):
        name, size = data[offset:offset + 4], int.from_bytes(data[offset + 4:offset + 8], "little")
        if name in (b"VP8 ", b"VP8L"):
            return name == b"VP8L"
        offset += 8 + size + (size & 1)
    return False
