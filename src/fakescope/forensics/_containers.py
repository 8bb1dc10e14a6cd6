"""Pull metadata blocks out of encoded image bytes without decoding any pixels.

PNG and JPEG are walked chunk by chunk / segment by segment (so PNG text after IDAT is
seen, and compressed text is inflated under a size cap); other formats (HEIF and AVIF through
pillow-heif and Pillow) go through Pillow's header parser, as does a TIFF's IPTC-IIM record. PNG text chunks holding
ImageMagick's and exiftool's raw profiles (`Raw profile type exif`, `APP1`, `xmp`, `iptc`, `8bim`) are decoded into the
EXIF, XMP and IPTC-IIM they carry. Damage stops the walk and is recorded, never raised.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fakescope.forensics._iim import PHOTOSHOP, iim_datasets, irb_iim
from fakescope.io import jpeg_markers
from fakescope.io.image import pixel_limit, sniff_format

if TYPE_CHECKING:
    from PIL.ImageFile import ImageFile

MAX_TEXT_BYTES = 8 * 1024 * 1024
"""Compressed PNG text inflating past this is not read (a zip bomb guard)."""
_XMP_JPEG = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"
_XMP_PNG_KEY = "XML:com.adobe.xmp"
_EXIF = (b"Exif\x00\x00", b"MM\x00*", b"II*\x00")
"""How EXIF opens: a JPEG APP1's signature, or a TIFF header (big- or little-endian)."""
_RAW_PROFILE = "Raw profile type "
_RAW_PROFILE_TEXT = re.compile(r"\n[^\n]*\n\s*(\d+)\n(.*)", re.DOTALL)
"""A raw profile's text: a newline, a description, a newline, the byte count (space-padded), a newline, the bytes in
hex (ImageMagick's `Magick_png_write_raw_profile`; exiftool writes the same)."""


@dataclass
class MetadataBlocks:
    """Raw metadata found in one file."""

    format: str | None
    text: dict[str, str] = field(default_factory=dict)
    exif: bytes | None = None
    xmp: list[bytes] = field(default_factory=list)
    """Standard XMP packets (a JPEG should hold one; each of several is kept)."""
    xmp_extension: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    """A JPEG's extended XMP chunks by GUID: (full length, offset, chunk), as found."""
    iptc: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)
    """IPTC-IIM datasets by (record, dataset), each value as found (a repeated dataset has several)."""
    quant_tables: dict[int, list[int]] = field(default_factory=dict)
    """JPEG DQT tables by id, 64 values in the file's zigzag order."""
    errors: list[str] = field(default_factory=list)


def read_blocks(data: bytes) -> MetadataBlocks:
    """Collect text chunks, EXIF, XMP and JPEG quantisation tables from `data`."""
    fmt = sniff_format(data)
    blocks = MetadataBlocks(fmt)
    reader = {"PNG": _read_png, "JPEG": _read_jpeg}.get(fmt or "", _read_with_pillow)
    try:
        reader(memoryview(data), blocks)
    except Exception as exc:  # noqa: BLE001 - damaged files raise many types (struct, zlib, Pillow's own)
        blocks.errors.append(f"{fmt or 'file'} structure damaged: {exc}")
    return blocks


def _read_png(data: memoryview, blocks: MetadataBlocks) -> None:
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) < length:
            raise ValueError(f"chunk {kind.decode('latin-1')!r} truncated")
        if kind == b"tEXt":
            key, _, value = bytes(body).partition(b"\x00")
            _put_text(key.decode("latin-1"), value.decode("latin-1"), blocks)
        elif kind == b"zTXt":
            key, _, rest = bytes(body).partition(b"\x00")
            _put_text(key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1"), blocks)
        elif kind == b"iTXt":
            key, value = _itxt(bytes(body))
            if key == _XMP_PNG_KEY:
                blocks.xmp.append(value)
            else:
                _put_text(key, value.decode("utf-8", "replace"), blocks)
        elif kind == b"eXIf":
            blocks.exif = bytes(body)
        elif kind == b"IEND":
            return
        pos += 12 + length


def _put_text(key: str, value: str, blocks: MetadataBlocks) -> None:
    """A PNG text chunk: a raw profile goes where what it carries goes, any other text to `blocks.text`."""
    if not key.startswith(_RAW_PROFILE):
        blocks.text[key] = value
        return
    kind, data = key.removeprefix(_RAW_PROFILE).lower(), _raw_profile(value)
    if data is None:
        blocks.errors.append(f"PNG text chunk {key!r} is no raw profile (a header, then the bytes it counts in hex); "
                             "not read")
    elif kind in ("exif", "app1") and data.startswith(_EXIF):
        blocks.exif = blocks.exif or data  # a standard eXIf chunk wins
    elif kind == "xmp" or (kind == "app1" and data.startswith(_XMP_JPEG)):
        blocks.xmp.append(data.removeprefix(_XMP_JPEG))
    elif kind in ("iptc", "8bim"):  # IIM, or (as exiftool writes it) a Photoshop resource block holding it
        _read_iim(data if data.startswith(b"\x1c") else irb_iim(data), blocks)


def _raw_profile(text: str) -> bytes | None:
    """The bytes a raw profile's text holds, or None where it is no raw profile or holds other than the count it states."""
    match = _RAW_PROFILE_TEXT.match(text)
    with contextlib.suppress(ValueError):
        if match and len(data := bytes.fromhex(match.group(2))) == int(match.group(1)):  # fromhex skips line breaks
            return data
    return None


def _itxt(body: bytes) -> tuple[str, bytes]:
    key, _, rest = body.partition(b"\x00")
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    return key.decode("latin-1"), _inflate(text) if compressed else text


def _inflate(payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, MAX_TEXT_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"compressed text inflates past {MAX_TEXT_BYTES:,} bytes")
    return out


def _read_jpeg(data: memoryview, blocks: MetadataBlocks) -> None:
    for marker, body in jpeg_markers.segments(data):
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00") and blocks.exif is None:
            blocks.exif = body
        elif marker == 0xE1 and body.startswith(_XMP_JPEG):
            blocks.xmp.append(body[len(_XMP_JPEG):])
        elif marker == 0xE1 and body.startswith(_XMP_EXTENSION):
            _read_extension(body[len(_XMP_EXTENSION):], blocks)
        elif marker == 0xDB:
            _read_dqt(body, blocks)
        elif marker == 0xFE:
            blocks.text["comment"] = body.decode("latin-1")
        elif marker == 0xED and body.startswith(PHOTOSHOP):  # its resource 0x0404 holds the IPTC-IIM record
            _read_iim(irb_iim(bytes(body)), blocks)


def _read_extension(body: bytes, blocks: MetadataBlocks) -> None:
    """One extended XMP segment: a 32-character GUID, the full length, this chunk's offset, the chunk."""
    if len(body) < 40:
        blocks.errors.append("XMP unreadable: extension segment shorter than its 40-byte header")
        return
    full, offset = struct.unpack(">II", body[32:40])
    guid = body[:32].decode("latin-1")
    blocks.xmp_extension.setdefault(guid, []).append((full, offset, body[40:]))


def _read_dqt(body: bytes, blocks: MetadataBlocks) -> None:
    pos = 0
    while pos < len(body):
        precision, table_id = body[pos] >> 4, body[pos] & 0x0F
        size = 128 if precision else 64
        raw = body[pos + 1:pos + 1 + size]
        if len(raw) < size:
            raise ValueError("quantisation table truncated")
        blocks.quant_tables[table_id] = list(struct.unpack(">64H", raw)) if precision else list(raw)
        pos += 1 + size


def _read_with_pillow(data: memoryview, blocks: MetadataBlocks) -> None:
    from PIL import Image

    with pixel_limit(), Image.open(io.BytesIO(data)) as img:  # parses headers only
        info = img.info
        exif = info.get("exif")
        tiff = bytes(data) if blocks.format == "TIFF" else None  # a TIFF's own tags are its EXIF (Software, Make, ...)
        blocks.exif = exif if isinstance(exif, bytes) else tiff
        xmp = info.get("xmp") or info.get(_XMP_PNG_KEY)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8")
        if isinstance(xmp, bytes):
            blocks.xmp.append(xmp)
        blocks.text.update({k: v for k, v in info.items() if isinstance(k, str) and isinstance(v, str)})
        _read_iptc(img, blocks)


def _read_iim(record: bytes | None, blocks: MetadataBlocks) -> None:
    """The datasets of an IPTC-IIM record (JPEG APP13, PNG raw profile), the first one found; a damaged one is an error."""
    if record is None or blocks.iptc:
        return
    try:
        blocks.iptc = iim_datasets(record)
    except ValueError as exc:
        blocks.errors.append(f"IPTC-IIM unreadable: {exc}")


def _read_iptc(img: ImageFile, blocks: MetadataBlocks) -> None:
    """IPTC-IIM datasets of an opened TIFF (Pillow's `getiptcinfo`, its IPTC-NAA tag); a damaged record is an error."""
    from PIL import IptcImagePlugin

    try:
        found = IptcImagePlugin.getiptcinfo(img) or {}
    except Exception as exc:  # noqa: BLE001 - Pillow raises SyntaxError, OSError and others on a broken record
        blocks.errors.append(f"IPTC-IIM unreadable: {exc}")
        return
    blocks.iptc = {key: value if isinstance(value, list) else [value] for key, value in found.items()}
