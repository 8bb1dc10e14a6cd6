"""IPTC digital source types: which ones declare AI generation and which declare a capture.

The same vocabulary appears in C2PA actions (`digitalSourceType`) and in XMP
(`Iptc4xmpExt:DigitalSourceType`), always as a URI ending in the term.
"""

from __future__ import annotations

AI_GENERATED = frozenset({"trainedAlgorithmicMedia"})
"""The whole image was made by a trained model."""
AI_COMPOSITE = frozenset({"compositeWithTrainedAlgorithmicMedia"})
"""Part of the image was made by a trained model (e.g. generative fill)."""
CAPTURE = frozenset({"digitalCapture", "computationalCapture", "compositeCapture", "negativeFilm", "positiveFilm"})
"""The image records light from a real scene (camera, phone, a composite of captures, scanned film)."""


def source_term(value: object) -> str | None:
    """Return the bare IPTC term of a digital source type URI or term, or None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().rstrip("/").rsplit("/", 1)[-1]
