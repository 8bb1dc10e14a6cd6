"""Run the evidence checkers over one image, turning any failure into an error record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from PIL import Image

from fakescope.detection import Evidence
from fakescope.errors import ConfigError
from fakescope.forensics.content_credentials import check_c2pa
from fakescope.forensics.metadata import check_metadata

if TYPE_CHECKING:
    import numpy as np
    import torch


def _watermark(data: bytes | None, image: Image.Image | np.ndarray | torch.Tensor) -> Evidence:
    from fakescope.forensics.watermark import check_watermark, read_watermark

    return check_watermark(image) if isinstance(image, Image.Image) else read_watermark(image)


EVIDENCE_KINDS = ("c2pa", "metadata", "watermark")
_CHECKERS: dict[str, Callable[[bytes | None, Image.Image | np.ndarray | torch.Tensor], Evidence]] = {
    "c2pa": lambda data, image: check_c2pa(data),
    "metadata": lambda data, image: check_metadata(data),
    "watermark": _watermark,
}


def collect_evidence(data: bytes | None, image: Image.Image | np.ndarray | torch.Tensor | None, *,
                     kinds: str | Iterable[str] = EVIDENCE_KINDS) -> list[Evidence]:
    """Gather provenance evidence for one image: one record per kind, in `kinds` order.

    `data` is the original file (None when only pixels are known: c2pa and metadata then
    report nothing); `image` the decoded RGB picture, or its (3, H, W) uint8 pixels, a numpy array or a tensor on
    any device (None when only `data` is known: the watermark kind needs pixels). No pixels are decoded again. A checker
    that fails for any reason yields `Evidence(kind, None, ..., error=...)` instead of raising.

    Raises:
        ConfigError: `kinds` names a kind that does not exist (checked before any work).

    Example:
        >>> [e.kind for e in collect_evidence(None, Image.new("RGB", (64, 64)))]
        ['c2pa', 'metadata', 'watermark']
    """
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = sorted(set(kinds) - set(_CHECKERS))
    if unknown:
        raise ConfigError(f"unknown evidence kind(s) {', '.join(unknown)}; known: {', '.join(EVIDENCE_KINDS)}")
    records = []
    for kind in kinds:
        try:
            records.append(_CHECKERS[kind](data, image))
        except Exception as exc:  # noqa: BLE001 - a broken file must never break a batch
            records.append(_failed(kind, exc))
    return records


def collect_watermarks(images: Sequence[np.ndarray | torch.Tensor]) -> list[Evidence]:
    """The watermark kind for many decoded (3, H, W) images at once (`read_watermarks`: batched on their
    device); a failure becomes an error record for each image instead of raising."""
    from fakescope.forensics.watermark import read_watermarks

    try:
        return read_watermarks(images)
    except Exception as exc:  # noqa: BLE001 - a broken image must never break a batch
        return [_failed("watermark", exc) for _ in images]


def _failed(kind: str, exc: Exception) -> Evidence:
    return Evidence(kind, None, f"{kind} check failed", error=f"{type(exc).__name__}: {exc}")
