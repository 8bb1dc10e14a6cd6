"""IPTC-IIM records and the Photoshop image resource blocks (IRB) that carry them in JPEG APP13 and PNG raw profiles.

Formats: IPTC-NAA IIM 4.2 (a 0x1C marker, record, dataset and length per dataset; a length with its top bit set counts
the bytes of a longer length) and Adobe's image resources ('8BIM', a 16-bit id, a Pascal name padded to even length,
a 32-bit size and the data padded to even length); IIM is resource 0x0404.
"""

from __future__ import annotations

import struct

IRB_IPTC = 0x0404
PHOTOSHOP = b"Photoshop 3.0\x00"
"""Opens a JPEG APP13 segment holding an image resource block."""


def irb_iim(irb: bytes) -> bytes | None:
    """The IIM record of an image resource block (with or without its 'Photoshop 3.0' signature), or None."""
    pos = len(PHOTOSHOP) if irb.startswith(PHOTOSHOP) else 0
    while irb[pos:pos + 4] == b"8BIM" and pos + 7 <= len(irb):
        code, name = struct.unpack(">HB", irb[pos + 4:pos + 7])
        pos += 6 + (name + 2 & ~1)
        if pos + 4 > len(irb):
            break
        (size,) = struct.unpack(">I", irb[pos:pos + 4])
        if code == IRB_IPTC:
            return irb[pos + 4:pos + 4 + size]
        pos += 4 + size + (size & 1)
    return None


def iim_datasets(record: bytes) -> dict[tuple[int, int], list[bytes]]:
    """Each dataset's values by (record, dataset), in order (a repeated dataset has several); zero padding ends it.

    Raises:
        ValueError: a dataset lacks its 0x1C marker or is cut short (one line, naming the offset).
    """
    datasets: dict[tuple[int, int], list[bytes]] = {}
    pos = 0
    while pos < len(record) and record[pos]:
        start = pos
        if record[pos] != 0x1C or pos + 5 > len(record):
            raise ValueError(f"no IIM dataset at byte {start:,} (0x1C marker and 4-byte header expected)")
        key, (size,) = (record[pos + 1], record[pos + 2]), struct.unpack(">H", record[pos + 3:pos + 5])
        pos += 5
        if size & 0x8000:  # extended dataset: the low bits count the bytes of its length
            size, pos = int.from_bytes(record[pos:pos + (size & 0x7FFF)], "big"), pos + (size & 0x7FFF)
        value = record[pos:pos + size]
        if len(value) < size:
            raise ValueError(f"IIM dataset {key[0]}:{key[1]:02d} at byte {start:,} cut short")
        datasets.setdefault(key, []).append(value)
        pos += size
    return datasets
