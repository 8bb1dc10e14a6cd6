"""Binary detection metrics on P(ai) scores, with bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width bins: the mean |accuracy - confidence| weighted by bin size."""
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
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
    labels, probs = np.asarray(labels, float), np.asarray(probs, float)
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
    """The error rate where the false-positive and false-negative rates meet."""
    fpr, tpr, _ = skm.roc_curve(labels, probs)
    fnr = 1.0 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def binary_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, float | list]:
    """AUC, AP, accuracy, balanced accuracy, precision, recall, EER, ECE and the confusion matrix.

    Metrics that need both classes are NaN when only one is present.
    """
    labels = np.asarray(labels).astype(int)
    probs = np.asarray(probs, float)
    pred = (probs >= threshold).astype(int)
    both = len(np.unique(labels)) == 2
    tn, fp, fn, tp = skm.confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    return {
        "n": int(len(labels)),
        "n_ai": int(labels.sum()),
        "auc": float(skm.roc_auc_score(labels, probs)) if both else float("nan"),
        "ap": float(skm.average_precision_score(labels, probs)) if both else float("nan"),
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(labels, pred)) if both else float("nan"),
        "precision": float(skm.precision_score(labels, pred, zero_division=0)),
        "recall": float(skm.recall_score(labels, pred, zero_division=0)),
        "eer": equal_error_rate(labels, probs) if both else float("nan"),
        "ece": expected_calibration_error(labels, probs),
        "confusion": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def bootstrap_ci(
    labels: np.ndarray, probs: np.ndarray, metric: str = "auc", threshold: float = 0.5,
    n: int = 1000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of one metric of `binary_metrics` (resampling images)."""
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(labels), len(labels))
        if metric in ("auc", "ap", "eer", "balanced_accuracy") and len(np.unique(labels[idx])) < 2:
            continue
        values.append(_single(metric, labels[idx], probs[idx], threshold))
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def _single(metric: str, labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    if metric == "auc":
        return float(skm.roc_auc_score(labels, probs))
    if metric == "ap":
        return float(skm.average_precision_score(labels, probs))
    return float(binary_metrics(labels, probs, threshold)[metric])
