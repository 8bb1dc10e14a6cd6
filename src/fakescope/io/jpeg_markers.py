"""Walk a JPEG's marker segments: its headers, never its pixels (a few microseconds a file)."""

from __future__ import annotations

import struct
from collections.abc import Generator
from typing import NamedTuple

FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2})
"""Start-of-frame markers of baseline, extended and progressive Huffman JPEGs (what every decoder reads)."""


class Frame(NamedTuple):
    """A JPEG's start-of-frame header."""

    marker: int
    precision: int
    height: int
    width: int
    components: int
    component_ids: bytes


def segments(data: bytes | memoryview, *, bodies: bool = True) -> Generator[tuple[int, bytes | None], None, int]:
    """(marker, body) of each segment before the first scan; returns the offset where the walk stopped.

    Raises ValueError where the structure is damaged, after yielding the segments before it.
    """
    data = memoryview(data)
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at offset {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: the headers lie before
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if length < 2 or pos + 2 + length > len(data):
            raise ValueError(f"segment 0x{marker:02X} truncated")
        yield marker, bytes(data[pos + 4:pos + 2 + length]) if bodies else None
        pos += 2 + length
    return pos


def header_end(data: bytes) -> int | None:
    """Offset of a JPEG's first scan (its metadata segments all lie before); None if the walk breaks."""
    walk = segments(data, bodies=False)
    try:
        while True:
            next(walk)
    except StopIteration as done:
        return done.value
    except ValueError:
        return None


class Header(NamedTuple):
    """What a decoder must know before it decodes: the frame, the EXIF orientation, the colour coding."""

    frame: Frame
    orientation: int
    rgb_coded: bool
    """Three components stored as RGB rather than YCbCr (an Adobe APP14 transform of 0, or
    component ids 'R', 'G', 'B'), which decoders that assume YCbCr get wrong."""


def read_header(data: bytes) -> Header | None:
    """The first start-of-frame header (of `FRAME_MARKERS`), the EXIF orientation (1 without one) and
    the colour coding; None for damaged headers or a frame of another kind (lossless,
    arithmetic-coded, hierarchical)."""
    frame, orientation, adobe_transform = None, 1, None
    try:
        for marker, body in segments(data):
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
                precision, height, width, count = struct.unpack(">BHHB", body[:6])
                frame = Frame(marker, precision, height, width, count, bytes(body[6:6 + 3 * count:3]))
            elif marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
                orientation = _orientation(body)
            elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
                adobe_transform = body[11]
    except (ValueError, struct.error):
        return None
    if frame is None or frame.marker not in FRAME_MARKERS:
        return None
    rgb_coded = frame.components == 3 and (adobe_transform == 0 or frame.component_ids == b"RGB")
    return Header(frame, orientation, rgb_coded)


def _orientation(exif_segment: bytes) -> int:
    from PIL import Image

    from fakescope.io.image import quiet_pillow

    quiet_pillow()
    exif = Image.Exif()
    try:
        exif.load(exif_segment)
    except Exception:  # noqa: BLE001 - unreadable EXIF: an unknown orientation
        return 0
    return int(exif.get(0x0112, 1) or 1)
