"""Binary detection metrics on P(ai) scores, with bootstrap (and, for counted rates, exact binomial) intervals.

Every function takes labels (1 = ai, 0 = real) and one finite score per label; anything else
(lengths that differ, other labels, NaN or inf scores) raises a one-line `fakescope.ConfigError` (a `ValueError`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest
from sklearn import metrics as skm

from fakescope.errors import ConfigError


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width bins: the mean |accuracy - confidence| weighted by bin size (NaN for no images)."""
    labels, probs = _checked(labels, probs)
    if not labels.size:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(labels[mask].mean() - probs[mask].mean())
    return float(ece)


def reliability_curve(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Per-bin mean predicted probability, observed frequency of `ai`, and count."""
    labels, probs = _checked(labels, probs)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "frequency": [], "count": []}
    for b in range(bins):
        mask = which == b
        if mask.any():
            out["confidence"].append(float(probs[mask].mean()))
            out["frequency"].append(float(labels[mask].mean()))
            out["count"].append(int(mask.sum()))
    return out


def equal_error_rate(labels: np.ndarray, probs: np.ndarray) -> float:
    """The error rate where the false-positive and false-negative rates meet, over every ROC point (NaN for one class).

    scikit-learn's default reduced curve drops the points where they meet inside a flat stretch.
    """
    labels, probs = _checked(labels, probs)
    if len(np.unique(labels)) < 2:
        return float("nan")
    fpr, tpr, _ = skm.roc_curve(labels, probs, drop_intermediate=False)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of any scores that rank images (logits as well as probabilities); NaN for one class."""
    labels, scores = _checked(labels, scores)
    return float(skm.roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float | list]:
    """AUC, AP, accuracy, balanced accuracy, precision, recall, EER, ECE and the confusion matrix.

    Metrics that need both classes are NaN when only one is present, and so are recall without ai images and
    precision when no image is called ai (scikit-learn's "ill-defined"); every metric is NaN for no images.
    """
    labels, probs = _checked(labels, probs)
    if not labels.size:  # a fold or slice that kept nothing: scikit-learn refuses empty input
        return {"n": 0, "n_ai": 0, **dict.fromkeys(INTERVAL_METRICS, float("nan")), "confusion": [[0, 0], [0, 0]]}
    pred = (probs >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    return {
        "n": len(labels),
        "n_ai": int(labels.sum()),
        "auc": auc_score(labels, probs),
        "ap": float(skm.average_precision_score(labels, probs)) if both else float("nan"),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, pred)) if both else float("nan"),
        "precision": float(skm.precision_score(labels, pred, zero_division=np.nan)),
        "recall": float(skm.recall_score(labels, pred)) if labels.any() else float("nan"),
        "eer": equal_error_rate(labels, probs),
        "ece": expected_calibration_error(labels, probs),
        "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def bootstrap_ci(
    labels: np.ndarray, probs: np.ndarray, metric: str = "auc", threshold: float = 0.5,
    n: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one metric of `INTERVAL_METRICS` (`bootstrap_intervals` for one)."""
    return bootstrap_intervals(labels, probs, threshold, n, level, seed, metrics=(metric,))[metric]


def _percentiles(values: list[float], level: float) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values, leaving out the NaN ones (a precision of a resample
    with no image called ai); NaN when none is left."""
    values = [v for v in values if not np.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


INTERVAL_METRICS = ("auc", "ap", "accuracy", "balanced_accuracy", "precision", "recall", "eer", "ece")
FEW_PER_LABEL = 10
"""Images of a label below which bootstrap intervals are flagged as understated (`few_images_note`)."""


def few_images_note(n: int, n_ai: int) -> str | None:
    """Why the intervals of `n` images, `n_ai` of them ai, understate the uncertainty; None from `FEW_PER_LABEL` of each
    label present (images of one label have intervals of that label's metrics alone).

    A percentile bootstrap cannot reach past the values its resamples take: every resample of a perfect
    ranking is perfect, so 3 ai and 3 real images ranked right give AUC [1, 1].
    """
    if min((c for c in (n_ai, n - n_ai) if c), default=0) >= FEW_PER_LABEL:
        return None
    if n_ai in (0, n) and n:
        return (f"only {n} {'ai' if n_ai else 'real'} image(s): with fewer than {FEW_PER_LABEL} the bootstrap intervals "
                f"understate the uncertainty ({n} images all called right get accuracy [1, 1])")
    return (f"only {n_ai} ai and {n - n_ai} real image(s): with fewer than {FEW_PER_LABEL} of a label the bootstrap "
            "intervals understate the uncertainty (a perfect ranking of 3 and 3 gets AUC [1, 1])")


def in_band(probs, band: tuple[float, float]):
    """Whether each score lies inside the uncertain band [lower, upper) (an array or a pandas Series, as given)."""
    return (probs >= band[0]) & (probs < band[1])


def uncertain_rate(probs: np.ndarray, band: tuple[float, float]) -> float:
    """Share of scores inside the uncertain band [lower, upper) (NaN for no scores)."""
    probs = _finite(probs)
    if probs.size == 0:
        return float("nan")
    return float(in_band(probs, band).mean())


RATES = ("false_positive_rate", "miss_rate", "uncertain_rate_real", "uncertain_rate_ai")


def rate_intervals(labels: np.ndarray, probs: np.ndarray, threshold: float, band: tuple[float, float],
                   level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Counted rates with exact (Clopper-Pearson) binomial intervals, each `{count, of, value, ci}`.

    `false_positive_rate`: reals at or above `threshold`; `miss_rate`: ai images below it (1 - recall);
    `uncertain_rate_real` / `_ai`: images of the label inside the band [lower, upper). A label with no images gets
    NaN. Unlike a percentile bootstrap, 0 of 500 reals flagged gives [0, 0.0074], not [0, 0].
    """
    labels, probs = _checked(labels, probs)
    real, ai = probs[labels == 0], probs[labels == 1]
    inside = in_band(probs, band)
    counts = {
        "false_positive_rate": ((real >= threshold).sum(), real.size),
        "miss_rate": ((ai < threshold).sum(), ai.size),
        "uncertain_rate_real": (inside[labels == 0].sum(), real.size),
        "uncertain_rate_ai": (inside[labels == 1].sum(), ai.size),
    }
    return {name: _exact_rate(int(k), int(n), level) for name, (k, n) in counts.items()}


def _exact_rate(count: int, of: int, level: float) -> dict[str, Any]:
    if not of:
        return {"count": 0, "of": 0, "value": float("nan"), "ci": (float("nan"), float("nan"))}
    ci = binomtest(count, of).proportion_ci(confidence_level=level, method="exact")
    return {"count": count, "of": of, "value": count / of, "ci": (float(ci.low), float(ci.high))}


def roc_pr_curves(labels: np.ndarray, probs: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """ROC (fpr, tpr) and precision-recall points, for plotting; empty when one class is missing."""
    labels, probs = _checked(labels, probs)
    if len(np.unique(labels)) < 2:
        return {"roc": {"fpr": [], "tpr": []}, "pr": {"precision": [], "recall": []}}
    fpr, tpr, _ = skm.roc_curve(labels, probs)
    precision, recall, _ = skm.precision_recall_curve(labels, probs)
    return {
        "roc": {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist()},
        "pr": {"precision": precision.round(6).tolist(), "recall": recall.round(6).tolist()},
    }


def bootstrap_intervals(
    labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, n: int = 1000, level: float = 0.95,
    seed: int = 0, metrics: tuple[str, ...] = INTERVAL_METRICS,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of several metrics from one shared set of resamples.

    Each resample is a vector of per-image counts, and every metric is computed from count
    weights over the sorted distinct scores in O(images), so 1000 resamples of 10,000 images
    take seconds. Resamples that miss a label the images hold are skipped (all of them: NaN intervals).
    Images of one label (reals alone, to count false positives) get intervals from resamples of them for
    the metrics defined on one label (accuracy, precision, recall of ai images, ECE), NaN for the rest.
    Values match `binary_metrics`.

    Example:
        >>> ci = bootstrap_intervals(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), n=200)
        >>> sorted(ci)[:2]
        ['accuracy', 'ap']
    """
    labels, probs = _checked(labels, probs)
    unknown = sorted(set(metrics) - set(INTERVAL_METRICS))
    if unknown:
        raise ConfigError(f"no bootstrap interval for {', '.join(unknown)}; known: {', '.join(INTERVAL_METRICS)}")
    if len(labels) == 0 or n <= 0:
        return {m: (float("nan"), float("nan")) for m in metrics}
    both = len(np.unique(labels)) == 2
    scores, inverse = np.unique(-probs, return_inverse=True)  # distinct scores, descending
    scores = -scores
    rng = np.random.default_rng(seed)
    values: dict[str, list[float]] = {m: [] for m in metrics}
    for _ in range(n):
        counts = np.bincount(rng.integers(0, len(labels), len(labels)), minlength=len(labels))
        pos = np.bincount(inverse, weights=counts * labels, minlength=len(scores))
        neg = np.bincount(inverse, weights=counts * (1 - labels), minlength=len(scores))
        if both and (pos.sum() == 0 or neg.sum() == 0):
            continue
        point = weighted_metrics(scores, pos, neg, threshold)
        for m in metrics:
            values[m].append(point[m])
    return {m: _percentiles(v, level) for m, v in values.items()}


def weighted_metrics(
    scores: np.ndarray, pos: np.ndarray, neg: np.ndarray, threshold: float = 0.5, bins: int = 15
) -> dict[str, float]:
    """The scalar metrics of `binary_metrics` from ai / real weights at distinct descending scores.

    With weight on one label only, AUC, AP, balanced accuracy and EER are NaN, and so is recall without ai weight.
    """
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    n_pos, n_neg = tp[-1], fp[-1]
    called = scores >= threshold
    tp_t, fp_t = pos[called].sum(), neg[called].sum()
    which = np.clip(np.digitize(scores, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    weight = pos + neg
    bin_conf = np.bincount(which, weights=weight * scores, minlength=bins)
    bin_pos = np.bincount(which, weights=pos, minlength=bins)
    nan = float("nan")
    out = {
        "auc": nan,
        "ap": nan,
        "accuracy": float((tp_t + n_neg - fp_t) / (n_pos + n_neg)),
        "balanced_accuracy": nan,
        "precision": float(tp_t / (tp_t + fp_t)) if tp_t + fp_t > 0 else nan,
        "recall": float(tp_t / n_pos) if n_pos else nan,
        "eer": nan,
        "ece": float(np.abs(bin_pos - bin_conf).sum() / weight.sum()),
    }
    if not (n_pos and n_neg):  # one label: nothing to rank it against
        return out
    tpr = np.concatenate([[0.0], tp / n_pos])
    fpr = np.concatenate([[0.0], fp / n_neg])
    specificity = 1.0 - fp_t / n_neg
    eer_at = int(np.argmin(np.abs((1.0 - tpr) - fpr)))
    out.update(
        auc=float(np.trapezoid(tpr, fpr)),
        ap=float(np.sum(np.diff(tpr) * np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0))),
        balanced_accuracy=float((tp_t / n_pos + specificity) / 2.0),
        eer=float(((1.0 - tpr[eer_at]) + fpr[eer_at]) / 2.0),
    )
    return out


def _checked(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 ints and scores as floats; a one-line `ConfigError` for what cannot be measured.

    scikit-learn's own refusals name neither the count nor the place, and the bootstrap and
    calibration code would otherwise turn NaN into numbers silently.
    """
    labels, shape = np.asarray(labels), np.shape(scores)
    if labels.ndim != 1 or labels.shape != shape:
        raise ConfigError(f"labels and scores must be 1-D and of one length, got shapes {labels.shape} and {shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ConfigError(f"labels must be 0 (real) or 1 (ai), got {sorted(set(labels.tolist()) - {0, 1})[:3]}")
    return labels.astype(int), _finite(scores)


def _finite(scores: np.ndarray) -> np.ndarray:
    """Scores as floats, refused with a one-line `ConfigError` when any is NaN or infinite."""
    scores = np.asarray(scores, float)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ConfigError(f"{bad.size} of {scores.size} score(s) are NaN or infinite (first at index {bad[0]}: "
                         f"{scores[bad[0]]}); drop or fix them before measuring")
    return scores
