"""`evaluate`: score a manifest split with a model, exactly as its training recipe says, and measure it.

Images are read once, in chunks (the shortcut audit inspects its sample as they are read). Each chunk is scored
clean (pixel model, then provenance evidence fused in when `provenance` is on), embedded for the explanation figures
when asked (`explain_to`) and, for the robustness sweep, scored after every perturbation (pixel model only).
Metrics, bootstrap intervals, calibration, slices and a few example images end up in one `EvaluationReport`;
`report.write_report` renders it.
"""

from __future__ import annotations

import base64
import heapq
import io
import itertools
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from fakescope.data.audit import Inspections
from fakescope.data.manifest import SPLITS, check_rows, warn_repeated_uris
from fakescope.detection import verdict_for
from fakescope.detector import NO_FINITE_SCORE, Detector
from fakescope.errors import ConfigError, ImageLoadError, StorageError, UnscorableImages
from fakescope.evaluate.metrics import (
    binary_metrics,
    bootstrap_intervals,
    rate_intervals,
    reliability_curve,
    roc_pr_curves,
    uncertain_rate,
)
from fakescope.evaluate.robustness import CLEAN, PERTURBATIONS, Scorer, perturbed_scores, robustness_table
from fakescope.evaluate.shortcuts import audit_rows, shortcut_sample
from fakescope.evaluate.slices import slice_report, sliceable
from fakescope.io.image import LoadedImage, decode_image, read_source
from fakescope.models.bundle import LoadedModel
from fakescope.models.calibration import apply_calibration
from fakescope.train.augment import AugmentConfig, neutralize, recipe_preprocessing

THUMBNAIL_SIDE = 160
MIN_BOOTSTRAP = 1000  # Efron & Tibshirani (1993, ch. 19): at least 1000 resamples for percentile intervals
log = logging.getLogger(__name__)


@dataclass
class EvaluationReport:
    """Every number of one evaluation; `to_dict()` is what report.json holds.

    `overall` scores the final probability (pixel model fused with provenance evidence when
    `provenance` is on); `pixel_overall` the pixel model alone. `scores` has one record per
    image; `thumbnails` maps example uris to data URIs for the HTML report and stays out of JSON.
    `robustness_skipped` lists the images a perturbation could not be applied to (`uri`,
    `perturbation`, `error`): every robustness row leaves them out. `shortcuts` is the audit of the
    scored rows (`fakescope.evaluate.shortcuts.audit_rows`), None when skipped. `rates` are the false-positive, miss and
    uncertain rates per label with exact binomial intervals (`metrics.rate_intervals`). `figures` are the explanation
    figures drawn into `explain_to`, `(title, PNG path)` pairs for `write_report`'s `extra_figures`, out of JSON.
    """

    model: str
    location: str
    split: str
    threshold: float
    band: tuple[float, float]
    provenance: bool
    preprocessing: dict[str, Any]
    overall: dict[str, Any]
    pixel_overall: dict[str, Any]
    intervals: dict[str, tuple[float, float]]
    reliability: dict[str, list[float]]
    curves: dict[str, dict[str, list[float]]]
    verdicts: dict[str, int]
    decided_by: dict[str, int]
    slices: dict[str, Any]
    robustness: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    examples: list[dict[str, Any]]
    failures: list[dict[str, str]]
    seconds: float
    robustness_skipped: list[dict[str, str]] = field(default_factory=list)
    shortcuts: dict[str, Any] | None = None
    rates: dict[str, dict[str, Any]] = field(default_factory=dict)
    thumbnails: dict[str, str] = field(default_factory=dict, repr=False)
    figures: list[tuple[str, Path]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: NaN becomes None, tuples become lists, thumbnails and figures are left out."""
        return _json_safe({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("thumbnails", "figures")})


def evaluate(
    model_or_detector: Detector | LoadedModel | str | os.PathLike | None,
    manifest: pd.DataFrame,
    split: str = "test",
    *,
    robustness: bool = True,
    perturbations: str | list[str] | None = None,
    bootstrap: int = 1000,
    examples: int = 12,
    provenance: bool = True,
    attributes: str | list[str] | None = None,
    device: str = "auto",
    batch_size: int = 32,
    progress: bool = False,
    audit: bool = True,
    explain_to: str | os.PathLike | None = None,
) -> EvaluationReport:
    """Evaluate a detector on one split of a manifest (`split="all"` takes every row).

    Args:
        model_or_detector: a `Detector`, a `LoadedModel`, or a model name / path / hf:// reference.
        manifest: manifest rows with at least `uri` and `label` (and `split` unless `split="all"`), checked and
            normalised by `check_rows` (`fake` is `ai`; an unknown label or split is refused).
        robustness: also score every image after each perturbation (`perturbations`, default all).
        bootstrap: resamples for the confidence intervals: 0 skips them, else at least `MIN_BOOTSTRAP`.
        examples: how many example images (mistakes first) the report shows.
        provenance: fuse C2PA / metadata / watermark evidence into the final probability.
        attributes: columns to slice by; default every low-cardinality extra column.
        progress: count the images read on stderr (and show a Hub download's progress bars).
        audit: check the rows for shortcuts (format, JPEG quality, size, metadata, watermark) that separate
            the labels, as `fakescope dataset audit` does, on a sample of about 1000 images per label, inspected as
            the scoring pass reads them (not read again).
        explain_to: a local folder to draw the explanation figures in (`fakescope.explain.report_figures`, needs the
            explain extra), from the images as scored: none is read again (`EvaluationReport.figures`).

    Raises:
        ConfigError: `bootstrap` is below `MIN_BOOTSTRAP` (and not 0), the split is empty, labels, a perturbation or an
            attribute column are unknown or missing, an attribute column holds lists or mappings, no image could be read
            and scored, or (with `provenance`) `FAKESCOPE_C2PA_TRUST_ANCHORS` names an unreadable file.

    Example:
        >>> report = evaluate("fakescope-default", read_rows("manifest.csv"))  # doctest: +SKIP
        >>> round(report.overall["auc"], 3), report.intervals["auc"]  # doctest: +SKIP
    """
    started = time.perf_counter()
    check_bootstrap(bootstrap)
    if provenance:  # as the Detector does: a bad trust list fails now, not quietly on every signed image
        from fakescope.forensics.content_credentials import trust_anchors_from_env

        trust_anchors_from_env()
    rows = _split_rows(manifest, split)
    perturbations, attributes = ([x] if isinstance(x, str) else x for x in (perturbations, attributes))  # one name
    if robustness and perturbations is not None and not perturbations:
        raise ConfigError("perturbations is empty: name some, or pass None for all of them")
    names = list(dict.fromkeys(perturbations or PERTURBATIONS)) if robustness else []  # a repeated one: scored once
    unknown = sorted(set(names) - set(PERTURBATIONS))
    if unknown:
        raise ConfigError(f"unknown perturbation(s) {', '.join(unknown)}; known: {', '.join(PERTURBATIONS)}")
    absent = [c for c in attributes or [] if c not in rows.columns]
    if absent:
        raise ConfigError(f"no attribute column(s) {', '.join(absent)} in the manifest; "
                          f"it has {', '.join(map(str, rows.columns))}")
    nested = [c for c in attributes or [] if not sliceable(rows[c])]
    if nested:  # else the slicing, after every image is scored, fails on them
        raise ConfigError(f"attribute column(s) {', '.join(nested)} hold lists or mappings, not one value per image to "
                          "slice by")
    detector = _as_detector(model_or_detector, device, batch_size, progress)  # after the checks: a typo waits for no model load
    warn_repeated_uris(rows, f"split {split!r}", "scored")
    config = detector.model.config
    recipe = recipe_preprocessing(config)
    scorer, clean = make_scorer(detector, recipe), make_scorer(detector, None)  # clean: of images neutralized once
    figures = None
    if explain_to is not None:
        from fakescope.explain.report import ReportFigures

        model = detector.torch_model  # its network runs channels_last, which moves features by 1e-9 and flips a UMAP:
        own = model.with_network(None) if model.weights else model  # one built afresh from the weights, as load_model's
        figures = ReportFigures(own, rows, explain_to)

    sample = shortcut_sample(rows) if audit else None
    inspections = Inspections(frozenset(sample.rows["uri"]) if sample else frozenset())  # inspected as read
    kept, records, failures, skipped, shown = [], [], [], [], _Examples(examples, detector.threshold)
    swept: dict[str, list[np.ndarray]] = {CLEAN: [], **{n: [] for n in names}}
    chunk = max(batch_size, 16)
    with tqdm(total=len(rows), desc="evaluate", unit="img", file=sys.stderr, disable=not progress, leave=False) as bar:
        for start in range(0, len(rows), chunk):
            part = rows.iloc[start:start + chunk]
            loaded = []
            for index, uri in zip(part.index, part["uri"]):
                data = item = None
                try:
                    data = read_source(uri)
                    item = decode_image(data, keep_bytes=provenance)
                    loaded.append((index, item))
                except (ImageLoadError, StorageError) as exc:
                    failures.append({"uri": str(uri), "error": exc.reason})
                    if figures is not None:
                        figures.fail(uri, exc.reason)
                inspections.add(str(uri), data, item and item.image)  # if its sample's and not yet (a repeated uri)
            bar.update(len(part))
            if not loaded:
                continue
            ready, unscorable = _prepared([item.image for _, item in loaded], recipe)
            pixel = np.full(len(loaded), np.nan)
            pixel[list(ready)] = _score_each(clean, list(ready.values()), unscorable, list(ready))
            for n, reason in sorted(unscorable.items()):  # read, but too large to re-encode, or to upscale to a tile
                failures.append({"uri": str(rows.at[loaded[n][0], "uri"]), "error": reason})
                if figures is not None:
                    figures.fail(rows.at[loaded[n][0], "uri"], reason)
            if figures is not None:  # as report_figures reads them: each image as the model scored it
                for n, image in ready.items():
                    if n not in unscorable:
                        figures.add(rows.at[loaded[n][0], "uri"], image)
            finite = np.isfinite(pixel)  # a model that overflows gives no score: a failure, not a metric's NaN
            failures += [{"uri": str(rows.at[index, "uri"]), "error": f"{NO_FINITE_SCORE} ({p})"}
                         for n, ((index, _), p, ok) in enumerate(zip(loaded, pixel, finite)) if not ok and n not in unscorable]
            loaded, pixel = [pair for pair, ok in zip(loaded, finite) if ok], pixel[finite]
            if not loaded:
                continue
            images = [item.image for _, item in loaded]
            swept[CLEAN].append(pixel)
            errors: list[tuple[int, str, str]] = []
            for name, probs in perturbed_scores(images, scorer, names, errors).items():
                swept[name].append(probs)
            skipped += [{"uri": str(rows.at[loaded[i][0], "uri"]), "perturbation": name, "error": message}
                        for i, name, message in errors]
            for (index, item), p in zip(loaded, pixel):
                kept.append(index)
                records.append(_record(rows.loc[index], item, float(p), detector, provenance))
                shown.offer(len(records) - 1, int(records[-1]["label"] == "ai"), records[-1]["probability"], item.image)
    if not records:
        raise ConfigError(f"none of the {len(rows)} image(s) of split {split!r} could be read and scored")
    shortcuts = audit_rows(sample, recipe, provenance, inspections=inspections) if sample else None  # reads none
    if skipped:
        first = skipped[0]
        log.warning("%d image(s) left out of the robustness sweep: a perturbation could not be applied, or its "
                    "result scored (first: %s, %s: %s)", len({s["uri"] for s in skipped}), first["uri"], first["perturbation"],
                    first["error"])

    scored = rows.loc[kept].reset_index(drop=True)
    labels = (scored["label"] == "ai").to_numpy().astype(int)
    probs = np.array([r["probability"] for r in records])
    pixel = np.concatenate(swept[CLEAN])
    threshold, band = detector.threshold, detector.band
    chosen = shown.picked()
    drawn = figures.draw() if figures is not None else []
    return EvaluationReport(
        model=config.name,
        location=detector.model.location,
        split=split,
        threshold=threshold,
        band=band,
        provenance=provenance,
        preprocessing=asdict(recipe) if recipe else {},
        overall={**binary_metrics(labels, probs, threshold), "uncertain_rate": uncertain_rate(probs, band)},
        pixel_overall={**binary_metrics(labels, pixel, threshold), "uncertain_rate": uncertain_rate(pixel, band)},
        intervals=bootstrap_intervals(labels, probs, threshold, n=bootstrap) if bootstrap else {},
        reliability=reliability_curve(labels, probs),
        curves=roc_pr_curves(labels, probs),
        verdicts=dict(Counter(r["verdict"] for r in records)),
        decided_by=dict(Counter(r["decided_by"] for r in records)),
        slices=slice_report(scored, probs, threshold, band, attributes),
        robustness=robustness_table(labels, {k: np.concatenate(v) for k, v in swept.items()}, threshold) if names else [],
        scores=records,
        examples=[{**records[i], "kind": kind} for i, kind, _ in chosen],
        failures=failures,
        robustness_skipped=skipped,
        shortcuts=shortcuts,
        rates=rate_intervals(labels, probs, threshold, band),
        seconds=round(time.perf_counter() - started, 2),
        thumbnails={records[i]["uri"]: _data_uri(small) for i, _, small in chosen},
        figures=drawn,
    )


def make_scorer(detector: Detector, recipe: AugmentConfig | None) -> Scorer:
    """A function from RGB images to calibrated pixel P(ai): recipe preprocessing, tiles, model, calibration.

    It raises `UnscorableImages` (the others' scores in it) for images too large to re-encode or to upscale to a tile.
    """
    calibration = detector.model.config.calibration

    def score(images: list[Image.Image]) -> np.ndarray:
        ready, reasons = _prepared(images, recipe)
        probs = np.full(len(images), np.nan)
        probs[list(ready)] = apply_calibration(calibration, _score_each(detector.predict_logits, list(ready.values()),
                                                                  reasons, list(ready)))
        if reasons:
            raise UnscorableImages(reasons, probs)
        return probs

    return score


def _prepared(images: list[Image.Image], recipe: AugmentConfig | None) -> tuple[dict[int, Image.Image], dict[int, str]]:
    """The images through the recipe preprocessing, by their place in `images`, and why each left out failed (too large
    to re-encode)."""
    ready, reasons = {}, {}
    for n, image in enumerate(images):
        try:
            ready[n] = neutralize(image, recipe) if recipe else image
        except ImageLoadError as exc:
            reasons[n] = exc.reason
    return ready, reasons


def _score_each(score: Scorer, images: list[Image.Image], reasons: dict[int, str],
           places: list[int]) -> np.ndarray:
    """`score(images)`, NaN for those it cannot score (`UnscorableImages`), whose reasons go into `reasons` under their
    `places`."""
    try:
        return score(images)
    except UnscorableImages as exc:
        reasons.update({places[j]: reason for j, reason in exc.reasons.items()})
        return exc.scores


class _Examples:
    """The example images the report shows, picked as records are scored: the most confident mistakes (up to half of
    `k`, largest error |label - P(ai)| first), then the most confident hits of each label in turn (smallest error
    first); ties to the earlier record. Each is kept with its thumbnail, made as it is offered: none is read again."""

    def __init__(self, k: int, threshold: float):
        self.k, self.threshold = k, threshold
        self._heaps: dict[tuple[str, int], list[tuple[float, int, Image.Image]]] = {}  # the lowest-ranked kept first

    def offer(self, i: int, label: int, probability: float, image: Image.Image) -> None:
        """Record `i` (label 1: ai), scored `probability`, kept while it ranks among those that could be shown."""
        error, wrong = abs(label - probability), (probability >= self.threshold) != bool(label)
        kind, size, key = ("mistake", self.k // 2, (error, -i)) if wrong else ("correct", self.k, (-error, -i))
        heap = self._heaps.setdefault((kind, 0 if wrong else label), [])  # mistakes of both labels rank together
        if len(heap) < size:
            heapq.heappush(heap, (*key, _small(image)))
        elif size and key > heap[0][:2]:
            heapq.heapreplace(heap, (*key, _small(image)))

    def picked(self) -> list[tuple[int, str, Image.Image]]:
        """`(record index, kind, thumbnail)` in the order shown, kind `mistake` or `correct`."""
        def ranked(kind: str, label: int) -> list[tuple[int, str, Image.Image]]:
            return [(-i, kind, small) for _, i, small in sorted(self._heaps.get((kind, label), []), reverse=True)]

        mistakes = ranked("mistake", 0)
        hits = [x for pair in itertools.zip_longest(ranked("correct", 1), ranked("correct", 0)) for x in pair if x]
        return mistakes + hits[: self.k - len(mistakes)]


def _record(row: pd.Series, item: LoadedImage, pixel: float, detector: Detector, provenance: bool) -> dict[str, Any]:
    """One image's scores; with provenance, its evidence is fused with the pixel score."""
    probability, verdict, decided_by = pixel, verdict_for(pixel, detector.band), "pixel"
    if provenance:
        from fakescope.forensics import collect_evidence, fuse

        fused = fuse(pixel, collect_evidence(item.data, item.image), detector.threshold, detector.band)
        probability, verdict, decided_by = fused.probability, fused.verdict, fused.decided_by
    return {
        "uri": str(row["uri"]),
        "label": str(row["label"]),
        "generator": _text(row.get("generator")),
        "source": _text(row.get("source")),
        "probability": float(probability),
        "pixel_probability": pixel,
        "verdict": verdict,
        "decided_by": decided_by,
    }


def _as_detector(model: Detector | LoadedModel | str | os.PathLike | None, device: str, batch_size: int,
                 progress: bool) -> Detector:
    if isinstance(model, Detector):
        return model
    if isinstance(model, LoadedModel):
        from fakescope.detector import resolve_device

        return Detector(model, device=resolve_device(device), batch_size=batch_size, provenance=False)
    return Detector.load(model, device=device, batch_size=batch_size, provenance=False, progress=progress)


def check_bootstrap(n: int) -> None:
    """Refuse a resample count too small for a 95% percentile interval (its tails would be a few resamples)."""
    if n < 0 or 0 < n < MIN_BOOTSTRAP:
        raise ConfigError(f"bootstrap of {n} resample(s) gives no meaningful 95% interval: use at least "
                          f"{MIN_BOOTSTRAP}, or 0 for no intervals")


def check_split(split: str) -> None:
    """Refuse a split to evaluate that is none of train, val, test or all (else a typo reads as an empty split)."""
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"unknown split {split!r}: use {', '.join(SPLITS)} or all")


def _split_rows(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    check_split(split)
    manifest = check_rows(manifest, split_required=False)
    if split == "all":
        rows = manifest
    elif "split" not in manifest.columns:
        raise ConfigError("manifest has no split column; use split='all'")
    else:
        rows = manifest[manifest["split"].astype(str) == split]
    if rows.empty:
        raise ConfigError(f"split {split!r} of the manifest is empty")
    return rows.reset_index(drop=True)


def _small(image: Image.Image) -> Image.Image:
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return small


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _text(value: Any) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value
