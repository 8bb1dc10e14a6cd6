"""Estimate the JPEG quality that produced a file's quantisation tables.

libjpeg (and so Pillow, OpenCV, most web software) scales the two Annex K tables by one
quality factor; cameras and Photoshop use tables of their own. Matching the tables against
every libjpeg quality says which family of encoder wrote the file and at what quality.
"""

from __future__ import annotations

import numpy as np

_ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,
    7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31,
    39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
])
_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])[_ZIGZAG]
_CHROMA = np.array([17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
                   + [47, 66] + [99] * 6 + [99] * 32)[_ZIGZAG]


def _libjpeg_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    luma, chroma = ((np.clip((base * scale + 50) // 100, 1, 255)) for base in (_LUMA, _CHROMA))
    return luma, chroma


_QUALITIES = np.arange(1, 101)
_LIBJPEG = np.stack([np.stack(_libjpeg_tables(int(q))) for q in _QUALITIES])  # (100 qualities, luma/chroma, 64)


def estimate_quality(tables: dict[int, list[int]]) -> dict[str, object] | None:
    """Return {"quality": 1-100, "tables": "libjpeg" | "custom"} for DQT tables, or None without any.

    The quality is the libjpeg setting whose luminance table is closest (the higher one on a tie);
    `libjpeg` means every table matched that setting exactly.
    """
    if 0 not in tables:
        return None
    luma = np.asarray(tables[0])
    distance = np.abs(_LIBJPEG[:, 0] - luma).sum(axis=1)
    best = len(distance) - 1 - int(np.argmin(distance[::-1]))  # the last minimum: the highest quality
    luma_ref, chroma_ref = _LIBJPEG[best]
    exact = np.array_equal(luma_ref, luma) and (1 not in tables or np.array_equal(chroma_ref, np.asarray(tables[1])))
    return {"quality": int(_QUALITIES[best]), "tables": "libjpeg" if exact else "custom"}
