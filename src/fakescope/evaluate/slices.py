"""Per-slice results: by generator, by source and by each attribute column, each with its count.

A generator slice compares that generator's images with every real image of the evaluated set
(so its AUC answers "can the model tell this generator from real photos"); a source or attribute
slice holds the images with that value, of whichever labels they have. Every row also carries
the share of its images that fall in the model's uncertain band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from fakescope.data.manifest import MANIFEST_COLUMNS
from fakescope.data.splits import HASH_COLUMN
from fakescope.evaluate.metrics import uncertain_rate

UNKNOWN = "unknown"


def attribute_columns(frame: pd.DataFrame, max_values: int = 20, exclude: tuple[str, ...] = ()) -> list[str]:
    """Columns beyond the manifest's own (and the split's `dhash`) with 2 to `max_values` distinct values (e.g. glasses)."""
    skip = {*MANIFEST_COLUMNS, HASH_COLUMN, *exclude}
    return [c for c in frame.columns if c not in skip and 2 <= frame[c].replace("", np.nan).nunique() <= max_values]


def generator_slices(labels: np.ndarray, probs: np.ndarray, generators: pd.Series, threshold: float,
                     band: tuple[float, float]) -> list[dict]:
    """One row per generator: its ai images against all real images.

    `n` counts the generator's images, `n_real` the reals it is compared with; `recall` and
    `uncertain_rate` are over the generator's images only.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    names = _names(generators)
    real = labels == 0
    rows = []
    for gen in sorted(set(names[~real])):
        own = (names == gen) & ~real
        pair = own | real
        both = real.any()
        rows.append({
            "slice": gen,
            "n": int(own.sum()),
            "n_real": int(real.sum()),
            "auc": float(skm.roc_auc_score(labels[pair], probs[pair])) if both else float("nan"),
            "ap": float(skm.average_precision_score(labels[pair], probs[pair])) if both else float("nan"),
            "recall": float((probs[own] >= threshold).mean()),
            "mean_probability": float(probs[own].mean()),
            "uncertain_rate": uncertain_rate(probs[own], band),
        })
    return rows


def group_slices(labels: np.ndarray, probs: np.ndarray, groups: pd.Series, threshold: float,
                 band: tuple[float, float]) -> list[dict]:
    """One row per distinct value of `groups` (missing values are left out), over its own images.

    Metrics that need a class the slice lacks are NaN: AUC needs both, recall needs ai
    images, the false-positive rate needs real ones.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    values = np.array([_value_name(v) for v in groups], dtype=object)
    rows = []
    for value in sorted({v for v in values if v is not None}):
        mask = values == value
        y, p = labels[mask], probs[mask]
        called = p >= threshold
        rows.append({
            "slice": value,
            "n": int(mask.sum()),
            "n_ai": int(y.sum()),
            "n_real": int((y == 0).sum()),
            "auc": float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan"),
            "accuracy": float((called == y).mean()),
            "recall": float(called[y == 1].mean()) if (y == 1).any() else float("nan"),
            "false_positive_rate": float(called[y == 0].mean()) if (y == 0).any() else float("nan"),
            "mean_probability": float(p.mean()),
            "uncertain_rate": uncertain_rate(p, band),
        })
    return rows


def slice_report(frame: pd.DataFrame, probs: np.ndarray, threshold: float, band: tuple[float, float],
                 attributes: list[str] | None = None) -> dict:
    """Generator, source and attribute slices of scored manifest rows.

    Args:
        frame: manifest rows (label, generator, source and any attribute columns), in score order.
        probs: P(ai) per row.
        attributes: attribute columns to slice by; default `attribute_columns(frame)`.

    Returns:
        `{"generator": [rows], "source": [rows], "attributes": {column: [rows]}}`.
    """
    labels = (frame["label"] == "ai").to_numpy().astype(int)
    columns = attribute_columns(frame) if attributes is None else attributes
    return {
        "generator": generator_slices(labels, probs, frame["generator"], threshold, band),
        "source": group_slices(labels, probs, pd.Series(_names(frame["source"])), threshold, band),
        "attributes": {c: group_slices(labels, probs, frame[c].reset_index(drop=True), threshold, band) for c in columns},
    }


def _names(values: pd.Series) -> np.ndarray:
    """Slice names as strings, with missing or empty values named `unknown`."""
    return np.array([_value_name(v) or UNKNOWN for v in values], dtype=object)


def _value_name(value: object) -> str | None:
    """A cell as a slice name: None when missing or empty, `1` rather than `1.0` for whole floats."""
    if value is None or (not isinstance(value, str) and pd.isna(value)) or str(value) == "":
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
