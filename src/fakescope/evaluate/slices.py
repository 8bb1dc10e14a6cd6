"""Per-slice results: by generator, by source and by each attribute column, each with its count.

A generator slice compares that generator's images with every real image of the evaluated set
(so its AUC answers "can the model tell this generator from real photos"); a source or attribute
slice holds the images with that value, of whichever labels they have. Every row also carries
the share of its images that fall in the model's uncertain band.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fakescope.data.manifest import HASH_COLUMN, MANIFEST_COLUMNS, MISSING_MARKERS, PROVENANCE_COLUMNS
from fakescope.evaluate.metrics import in_band

UNKNOWN = "unknown"


def attribute_columns(frame: pd.DataFrame, max_values: int = 20, exclude: tuple[str, ...] = ()) -> list[str]:
    """Columns beyond the manifest's own, its provenance ones and the split's `dhash`, `sliceable`, with 2 to
    `max_values` distinct values (e.g. glasses); `unsliced_columns` says why each other one is not."""
    return _kept(frame, unsliced_columns(frame, max_values, exclude), exclude)


def unsliced_columns(frame: pd.DataFrame, max_values: int = 20, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """The columns `attribute_columns` leaves out of those it considers, each with why (e.g. `glasses`: one value,
    `0`, in every row that has one)."""
    why = {}
    for c in _extra_columns(frame, exclude):
        if not sliceable(frame[c]):
            why[c] = "holds lists or mappings"
            continue
        values = frame[c].replace(["", *MISSING_MARKERS], np.nan).dropna()
        count = values.nunique()
        if count == 0:
            why[c] = "empty in every row"
        elif count == 1:
            why[c] = f"one value, {_value_name(values.iloc[0])}, in every row that has one"
        elif count > max_values:
            why[c] = f"{count} distinct values, more than {max_values}"
    return why


def _kept(frame: pd.DataFrame, left_out: dict[str, str], exclude: tuple[str, ...] = ()) -> list[str]:
    """The extra columns (`_extra_columns`) not in `left_out`, `unsliced_columns`' answer."""
    return [c for c in _extra_columns(frame, exclude) if c not in left_out]


def _extra_columns(frame: pd.DataFrame, exclude: tuple[str, ...]) -> list[str]:
    """Columns beyond the manifest's own, its provenance ones, the split's `dhash` and `exclude`."""
    skip = {*MANIFEST_COLUMNS, *PROVENANCE_COLUMNS, HASH_COLUMN, *exclude}
    return [c for c in frame.columns if c not in skip]


def sliceable(column: pd.Series) -> bool:
    """Whether every cell holds one value (no list, array or mapping, as a Parquet list column has), so rows can be
    grouped by it."""
    return bool(column.map(pd.api.types.is_scalar).all())


def generator_slices(labels: np.ndarray, probs: np.ndarray, generators: pd.Series, threshold: float,
                     band: tuple[float, float]) -> list[dict]:
    """One row per generator: its ai images against all real images.

    `n` counts the generator's images, `n_real` the reals it is compared with; `recall` and
    `uncertain_rate` are over the generator's images only.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    names = _names(generators)
    real = labels == 0
    reals = np.sort(probs[real])
    ai = pd.DataFrame({"slice": names[~real], "p": probs[~real]})
    below, not_above = np.searchsorted(reals, ai["p"], "left"), np.searchsorted(reals, ai["p"], "right")
    # each ai image's share of reals it outscores (ties half): their mean is the AUC;
    # its precision among its own generator's images and all reals scoring at least as high: their mean is the AP
    ai["wins"] = (below + not_above) / 2.0 / max(len(reals), 1)
    own_above = ai.groupby("slice")["p"].rank(method="max", ascending=False)
    ai["precision"] = own_above / (own_above + len(reals) - below)
    ai["called"] = ai["p"] >= threshold
    ai["uncertain"] = in_band(ai["p"], band)
    sums = ai.groupby("slice", sort=True).agg(n=("p", "size"), auc=("wins", "mean"), ap=("precision", "mean"),
                                                recall=("called", "mean"), mean_probability=("p", "mean"),
                                                uncertain=("uncertain", "mean"))
    both = real.any()
    return [{
        "slice": gen,
        "n": int(s.n),
        "n_real": int(real.sum()),
        "auc": float(s.auc) if both else float("nan"),
        "ap": float(s.ap) if both else float("nan"),
        "recall": float(s.recall),
        "mean_probability": float(s.mean_probability),
        "uncertain_rate": float(s.uncertain),
    } for gen, s in zip(sums.index, sums.itertuples(index=False))]


def group_slices(labels: np.ndarray, probs: np.ndarray, groups: pd.Series, threshold: float,
                 band: tuple[float, float]) -> list[dict]:
    """One row per distinct value of `groups` (missing values are left out), over its own images.

    Metrics that need a class the slice lacks are NaN: AUC needs both, recall needs ai
    images, the false-positive rate needs real ones.
    """
    labels, probs = np.asarray(labels).astype(int), np.asarray(probs, float)
    frame = pd.DataFrame({"slice": [_value_name(v) for v in groups], "y": labels, "p": probs}).dropna(subset=["slice"])
    ai, called = frame["y"] == 1, frame["p"] >= threshold
    frame = frame.assign(correct=called == ai, hit=called & ai, false_alarm=called & ~ai,
                         uncertain=in_band(frame["p"], band),
                         ai_rank=frame.groupby("slice")["p"].rank(method="average").where(ai, 0.0))
    sums = frame.groupby("slice", sort=True).agg(
        n=("y", "size"), n_ai=("y", "sum"), correct=("correct", "mean"), hits=("hit", "sum"),
        false_alarms=("false_alarm", "sum"), mean_probability=("p", "mean"), uncertain=("uncertain", "mean"),
        ai_rank=("ai_rank", "sum"))
    rows = []
    for value, s in zip(sums.index, sums.itertuples(index=False)):
        n_ai, n_real = int(s.n_ai), int(s.n - s.n_ai)
        # Mann-Whitney: the AUC from the ai images' ranks among the slice's scores (ties count half)
        auc = (s.ai_rank - n_ai * (n_ai + 1) / 2) / (n_ai * n_real) if n_ai and n_real else float("nan")
        rows.append({
            "slice": value,
            "n": int(s.n),
            "n_ai": n_ai,
            "n_real": n_real,
            "auc": float(auc),
            "accuracy": float(s.correct),
            "recall": float(s.hits / n_ai) if n_ai else float("nan"),
            "false_positive_rate": float(s.false_alarms / n_real) if n_real else float("nan"),
            "mean_probability": float(s.mean_probability),
            "uncertain_rate": float(s.uncertain),
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
        `{"generator": [rows], "source": [rows], "attributes": {column: [rows]}, "not_sliced": {column: why}}`,
        `not_sliced` naming the extra columns left out by default, or of `attributes` those empty in every row.
    """
    labels = (frame["label"] == "ai").to_numpy().astype(int)
    if attributes is None:
        not_sliced = unsliced_columns(frame)
        columns = _kept(frame, not_sliced)
    else:  # asked for: sliced whatever it holds, but a column with no value would be an empty table with no word
        not_sliced = {c: "empty in every row" for c in attributes if all(_value_name(v) is None for v in frame[c])}
        columns = [c for c in attributes if c not in not_sliced]
    return {
        "generator": generator_slices(labels, probs, frame["generator"], threshold, band),
        "source": group_slices(labels, probs, pd.Series(_names(frame["source"])), threshold, band),
        "attributes": {c: group_slices(labels, probs, frame[c].reset_index(drop=True), threshold, band) for c in columns},
        "not_sliced": not_sliced,
    }


def not_sliced_line(not_sliced: dict[str, str]) -> str:
    """`slice_report`'s `not_sliced`, when it names columns, as one line."""
    return "attribute columns not sliced: " + "; ".join(f"{c} ({why})" for c, why in not_sliced.items())


def _names(values: pd.Series) -> np.ndarray:
    """Slice names as strings, with missing or empty values named `unknown`."""
    return np.array([_value_name(v) or UNKNOWN for v in values], dtype=object)


def _value_name(value: object) -> str | None:
    """A cell as a slice name: None when missing, empty or a `MISSING_MARKERS` one, `1` rather than `1.0` for whole floats."""
    if value is None or (not isinstance(value, str) and pd.isna(value)) or str(value) in ("", *MISSING_MARKERS):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)
