"""The result objects every entry point returns and renders."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy only names the heatmap's type: `import fakescope` stays light
    import numpy as np

Verdict = Literal["ai", "real", "uncertain"]
CSV_FIELDS = ("path", "label", "score", "threshold", "decided_by", "reason", "model", "width", "height", "format", "evidence",
              "error", "caveat", "error_kind")
"""The columns of `detect --format csv` and of the web app's CSV download, in order (`csv_row` gives a row)."""
TRANSIENT, PERMANENT = "transient", "permanent"
"""A failed record's `error_kind`: it may pass (`Detection.transient`: a rerun tries it again), or it will not."""


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence: which kind, how strongly it says `ai` (P(ai) or None), and why.

    `decisive` marks provenance strong enough to decide the verdict on its own
    (a valid signed AI manifest, a decoded generator watermark).
    """

    kind: str
    score: float | None
    detail: str
    decisive: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __repr__(self) -> str:
        """What it says and why, with `data` as its keys (the default printed every watermark bit count)."""
        score = None if self.score is None else round(float(self.score), 3)
        flags = (", decisive=True" if self.decisive else "") + (f", error={self.error!r}" if self.error else "")
        return f"Evidence({self.kind!r}, score={score}, detail={self.detail!r}{flags}, data=[{', '.join(map(str, self.data))}])"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, `score` rounded to 6 places as a `Detection` record's own is."""
        out = {"kind": self.kind, "score": None if self.score is None else round(float(self.score), 6), "detail": self.detail}
        if self.decisive:
            out["decisive"] = True
        if self.data:
            out["data"] = self.data
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Evidence:
        """The inverse of `to_dict` (absent `decisive`, `data`, `error` read as their defaults)."""
        return cls(kind=record["kind"], score=record["score"], detail=record["detail"], decisive=record.get("decisive", False),
                   data=record.get("data", {}), error=record.get("error"))


@dataclass(frozen=True)
class Detection:
    """The answer for one image.

    `probability` is the calibrated P(ai); `verdict` is `ai`, `real` or `uncertain`
    (inside the model's uncertain band around `threshold`). `decided_by` names the
    evidence kind that set the verdict (`conflict` where strong evidence contradicts itself, `none` where there was
    none) and `reason` says why; `caveat`, when set, says in one clause why a `real` or
    `uncertain` verdict is weak (it rests on the pixel model, no signed provenance backing it). `heatmap` is a 2-D
    float array in [0, 1] when asked for. `transient` marks an `error` that may pass (a URL's fetch timed out, was
    refused, or answered 429 or 5xx: `fakescope.io.fetch.TransientFetchError`; a storage read throttled, answered 5xx or
    broken off past its retries: `fakescope.errors.StorageBusyError`; `error_kind` `transient` in `to_dict`); a scan
    rerun tries it again.
    """

    source: str
    probability: float | None
    verdict: Verdict | None
    threshold: float
    model: str
    evidence: tuple[Evidence, ...] = ()
    decided_by: str | None = None
    reason: str | None = None
    caveat: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    error: str | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False, compare=False)
    transient: bool = False

    def __repr__(self) -> str:
        """The answer at a glance (the default listed every evidence record's data), with the caveat's head (before its
        `:`) when set; `to_dict()` holds every field."""
        if self.error is not None:
            return f"Detection({self.source!r}, error={self.error!r}, model={self.model!r})"
        score = None if self.probability is None else round(float(self.probability), 3)
        caveat = "" if self.caveat is None else f", caveat={self.caveat.split(':')[0]!r}"
        return (f"Detection({self.source!r}, verdict={self.verdict!r}, probability={score}, decided_by={self.decided_by!r}, "
                f"evidence=[{', '.join(e.kind for e in self.evidence)}]{caveat}, model={self.model!r})")

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: the record of the CLI's JSONL, the REST API and the web page; a failed one adds
        `error` and `error_kind` (`transient` or `permanent`)."""
        out: dict[str, Any] = {
            "path": self.source,
            "score": None if self.probability is None else round(float(self.probability), 6),
            "label": self.verdict,
            "threshold": self.threshold,
            "model": self.model,
            "evidence": [e.to_dict() for e in self.evidence],
            "decided_by": self.decided_by,
            "reason": self.reason,
            "caveat": self.caveat,
            "width": self.width,
            "height": self.height,
            "format": self.format,
        }
        if self.error is not None:
            out["error"] = self.error
            out["error_kind"] = TRANSIENT if self.transient else PERMANENT
        return out

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Detection:
        """A `to_dict` record (a JSONL line, a REST reply) read back; `ValueError` names a missing key.

        `to_dict` drops the heatmap (it comes back None) and rounds `probability` and evidence scores to 6 places; the rest
        round-trips.
        """
        missing = [key for key in ("path", "score", "label", "threshold", "model") if key not in record]
        if missing:
            raise ValueError(f"not a Detection record: no {', '.join(map(repr, missing))}")
        return cls(source=record["path"], probability=record["score"], verdict=record["label"], threshold=record["threshold"],
                   model=record["model"], evidence=tuple(Evidence.from_dict(e) for e in record.get("evidence", ())),
                   decided_by=record.get("decided_by"), reason=record.get("reason"), caveat=record.get("caveat"),
                   width=record.get("width"), height=record.get("height"), format=record.get("format"),
                   error=record.get("error"), transient=record.get("error_kind") == TRANSIENT)

    @classmethod
    def failed(cls, source: str, error: str, model: str, threshold: float, *, transient: bool = False) -> Detection:
        """No score for `source`, only `error` saying why; `transient` when a rerun may succeed."""
        return cls(source=source, probability=None, verdict=None, threshold=threshold, model=model, error=error,
                   transient=transient)



def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """A `Detection.to_dict()` record as a CSV row: its evidence on one line (`evidence_line`s joined by `; `)."""
    return {**record, "evidence": "; ".join(evidence_line(e) for e in record["evidence"])}


def evidence_line(evidence: dict[str, Any]) -> str:
    """An `Evidence.to_dict()` record as the CLI table and CSVs show it: `kind 0.950: detail` (no score: `kind: detail`)."""
    score = "" if evidence["score"] is None else f" {evidence['score']:.3f}"
    return f"{evidence['kind']}{score}: {evidence['detail']}"


def verdict_for(probability: float, band: tuple[float, float]) -> Verdict:
    """`ai` at or above the band's upper edge, `real` below its lower edge, else `uncertain`."""
    lower, upper = band
    if probability >= upper:
        return "ai"
    if probability < lower:
        return "real"
    return "uncertain"


def logit(p: float) -> float:
    """The log-odds of `p`, clipped to [1e-6, 1 - 1e-6] so that 0 and 1 stay finite."""
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))
