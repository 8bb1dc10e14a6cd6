"""Fuse provenance evidence with the calibrated pixel score into one verdict.

Rules, in order (docs/forensics.md gives the reasoning):

1. Decisive evidence (an intact C2PA manifest declaring AI generation, a decoded generator
   watermark) decides `ai`; probability = max(pixel, evidence scores). A signed manifest
   outranks a watermark when both are present, even one declaring a partly generated image.
   Evidence pointing the other way (a camera manifest or EXIF) is named in the reason, except a trusted signer's
   intact capture manifest against a watermark: two strong contradicting records, neither clearly more reliable,
   give `uncertain`, decided by `conflict`, at the threshold, with both named in the reason.
2. An unsigned declaration of AI (`data["declares_ai"]`: generator metadata, whose detail says it is unsigned)
   also decides `ai`, unless an intact signed manifest declares a capture: a signature
   outranks forgeable metadata, so both are then weighed as hints (rule 3) and the reason says so. (A manifest
   that fails validation scores nothing; every reason names it, "; ignored c2pa: ...".)
3. Otherwise every other scored evidence (camera manifest, camera EXIF) shifts the pixel
   score in log-odds by logit(evidence score), i.e. it acts as a likelihood ratio; it can
   never push the probability below min(pixel, 0.01). Evidence without a score (absence of
   provenance, errors) changes nothing.
4. The verdict is `ai` at p >= band[1], `real` at p < band[0], `uncertain` in between.

A `real` or `uncertain` verdict with a pixel score and no scored C2PA manifest (at most unsigned hints, such as
camera EXIF) carries `PIXEL_ONLY` as its `caveat`: the pixel model can miss generators it never saw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from fakescope.detection import Evidence, Verdict, logit, verdict_for
from fakescope.errors import ConfigError

PIXEL = "pixel"
"""`decided_by` when the calibrated pixel score set the verdict."""
NONE = "none"
"""`decided_by` when there was neither a pixel score nor any scored evidence."""
FLOOR = 0.01
"""Hints never lower the probability below min(pixel score, FLOOR)."""
PIXEL_ONLY = "pixel model only, no signed provenance: not proof (it can miss unseen generators)"
"""The `caveat` of a `real` or `uncertain` verdict that no signed provenance (C2PA) backs: the pixel score, at most
nudged by unsigned hints."""
OUTRANKED = "unsigned AI metadata does not outrank a signed capture manifest: both weighed"
"""Opens the reason when a signed C2PA capture manifest keeps unsigned AI metadata from deciding."""
CONFLICT = "conflict"
"""`decided_by` when strong evidence contradicts itself: a generator watermark in pixels that a trusted signer's
intact C2PA manifest declares a capture."""
CONTRADICTED = "contradicting evidence, neither outranks the other: examine by hand"
"""Opens the reason of a `conflict`, before the two records."""


def caveat_for(verdict: str | None, pixel: float | None, scored_kinds: Iterable[str]) -> str | None:
    """`PIXEL_ONLY` for a `real` or `uncertain` verdict with a pixel score that no scored C2PA manifest backs (hints
    such as camera EXIF are unsigned and easily copied), else None."""
    return PIXEL_ONLY if pixel is not None and verdict in ("real", "uncertain") and "c2pa" not in set(scored_kinds) else None


@dataclass(frozen=True)
class Fused:
    """The fused answer: P(ai), the verdict, the evidence kind that decided it, why, and any caveat."""

    probability: float | None
    verdict: Verdict
    decided_by: str
    reason: str
    caveat: str | None = None


def fuse(pixel_probability: float | None, evidence: Iterable[Evidence], threshold: float,
         band: tuple[float, float]) -> Fused:
    """Combine a calibrated pixel P(ai) (None when no model ran) with evidence records.

    Args:
        pixel_probability: calibrated P(ai) from the pixel model, or None (as is NaN or inf: an overflowing
            model gave no score, and the evidence alone decides).
        evidence: records from `collect_evidence`.
        threshold: the model's decision threshold (named in the reason).
        band: (lower, upper) uncertain band around `threshold`.

    Raises:
        ConfigError: the pixel probability is finite but outside [0, 1], or the band does not contain the
            threshold or leaves [0, 1].

    Example:
        >>> fuse(0.7, [], 0.5, (0.4, 0.6)).verdict
        'ai'
    """
    pixel = pixel_probability if pixel_probability is not None and math.isfinite(pixel_probability) else None
    if pixel is not None and not 0.0 <= pixel <= 1.0:
        raise ConfigError(f"pixel probability must be in [0, 1] (or None), got {pixel_probability!r}")
    lower, upper = band
    if not 0.0 <= lower <= threshold <= upper <= 1.0:
        raise ConfigError(f"uncertain band {band} must satisfy 0 <= lower <= threshold {threshold} <= upper <= 1")
    evidence = list(evidence)
    scored = [e for e in evidence if e.score is not None]
    decisive = [e for e in scored if e.decisive]
    if decisive:
        best = max(decisive, key=lambda e: (e.kind == "c2pa", e.score))
        camera = next((e for e in scored if e.kind == "c2pa" and e.score < 0.5 and e.data.get("trusted")), None)
        if camera is not None and best.kind != "c2pa":
            pixel_text = "no pixel score" if pixel is None else f"pixel model {pixel:.3f}"
            return Fused(threshold, "uncertain", CONFLICT, f"{CONTRADICTED}; {best.kind}: {best.detail}; against "
                         f"{camera.kind}: {camera.detail}; {pixel_text} (not deciding){_ignored(evidence)}")
        return Fused(max(pixel or 0.0, *(e.score for e in decisive)), "ai", best.kind,
                     f"{best.kind}: {best.detail}{_despite(scored)}{_ignored(evidence)}")
    declared = [e for e in scored if e.data.get("declares_ai")]
    signed_capture = [e for e in scored if e.kind == "c2pa" and e.score < 0.5]
    if declared and not signed_capture:
        best = max(declared, key=lambda e: e.score)
        return Fused(max(pixel or 0.0, best.score), "ai", best.kind,
                     f"{best.kind}: {best.detail}{_despite(scored)}{_ignored(evidence)}")
    if pixel is None and not scored:
        return Fused(None, "uncertain", NONE, f"no pixel score and no provenance evidence{_ignored(evidence)}")
    rule = f"threshold {threshold:g}, uncertain band [{lower:g}, {upper:g})"
    if not scored:
        checked = any(e.kind != PIXEL for e in evidence)
        verdict = verdict_for(pixel, band)
        return Fused(pixel, verdict, PIXEL,
                     f"pixel model {pixel:.3f} ({rule}); " + ("no provenance decided" if checked else "provenance not checked")
                     + _ignored(evidence), caveat_for(verdict, pixel, ()))
    start = 0.5 if pixel is None else pixel
    probability = _sigmoid(logit(start) + sum(logit(e.score) for e in scored))
    if pixel is not None:
        probability = max(probability, min(pixel, FLOOR))
    verdict = verdict_for(probability, band)
    strongest = max(scored, key=lambda e: abs(logit(e.score)))
    shifts = "; ".join(f"{e.kind}: {e.detail} (odds x{_odds(e.score):.2g})" for e in scored) + _ignored(evidence)
    if declared:  # and a signed capture manifest: say why the declaration did not decide
        shifts = f"{OUTRANKED}; {shifts}"
    caveat = caveat_for(verdict, pixel, (e.kind for e in scored))
    if pixel is not None and verdict_for(pixel, band) == verdict:
        return Fused(probability, verdict, PIXEL, f"pixel model {pixel:.3f} -> {probability:.3f} ({rule}); {shifts}", caveat)
    origin = "no pixel score" if pixel is None else f"pixel model {pixel:.3f}"
    return Fused(probability, verdict, strongest.kind, f"{origin} -> {probability:.3f} ({rule}); {shifts}", caveat)


def _despite(scored: list[Evidence]) -> str:
    """The evidence that points the other way (a camera manifest or EXIF) when provenance decides `ai`."""
    return "".join(f"; despite {e.kind}: {e.detail}" for e in scored if e.score < 0.5)


def _ignored(evidence: list[Evidence]) -> str:
    """Provenance that is there but failed validation (a manifest copied from another file, a revoked signer), named
    so it is not missed."""
    return "".join(f"; ignored {e.kind}: {e.detail}" for e in evidence if e.score is None and e.data.get("ignored"))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _odds(score: float) -> float:
    return math.exp(logit(score))
