"""Read any `report.json` generically: its scalar metrics and every table it holds, as DataFrames.

A table is a list of records (`[{...}, ...]`), a mapping of names to records
(`{"jpeg": {"auc": ...}, "png": {...}}`), or a list of more than `SHORT_LIST` scalars (a mapping of
such lists of one length, like a ROC curve's `fpr` and `tpr`, is one table with a column each);
scalars and short lists anywhere else become metrics named by their dotted path. Nothing here
assumes the report's exact layout.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

Scalar = (int, float, str, bool, type(None))
SHORT_LIST = 8


def report_contents(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Split a report into `(metrics, tables)`, both keyed by dotted path, in document order
    (tables of records first, then those of long lists).

    Example:
        >>> metrics, tables = report_contents({"auc": 0.9, "slices": [{"format": "JPEG", "auc": 0.8}]})
        >>> metrics, list(tables["slices"].columns)
        ({'auc': 0.9}, ['format', 'auc'])
    """
    metrics: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    series: dict[str, pd.DataFrame] = {}
    _walk(report, "", metrics, tables, series)
    return metrics, {**tables, **series}


def value_text(value: Any) -> str:
    """A metric as the page shows it: a float to 4 decimals, as report.html and the grids have them, trailing zeros
    dropped (0.4722, not 0.47222222222222215; 0.5; 1), one that would round to 0 to 2 significant digits (1.2e-05);
    anything else as `str` has it."""
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    if value and abs(value) < 5e-5:
        return f"{value:.2g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _walk(value: Any, path: str, metrics: dict, tables: dict, series: dict) -> None:
    if isinstance(value, Scalar):
        metrics[path or "value"] = value
    elif _is_records(value):
        tables[path] = pd.DataFrame([_flat(r) for r in value])
    elif _is_columns(value):
        series[path] = pd.DataFrame(value)
    elif isinstance(value, dict) and value and all(_is_flat_record(v) for v in value.values()):
        tables[path] = pd.DataFrame.from_dict({k: _flat(v) for k, v in value.items()}, orient="index")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}.{key}" if path else str(key), metrics, tables, series)
    elif _is_short_list(value):
        metrics[path] = ", ".join(map(value_text, value))
    elif isinstance(value, list) and all(isinstance(v, Scalar) for v in value):
        series[path] = pd.DataFrame({path.rpartition(".")[2]: value})
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", metrics, tables, series)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_flat_record(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Scalar) or _is_short_list(v) for v in value.values())


def _is_short_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= SHORT_LIST and all(isinstance(v, Scalar) for v in value)


def _is_columns(value: Any) -> bool:
    """A mapping of long lists of scalars, all of one length (`{"fpr": [...], "tpr": [...]}`)."""
    if not isinstance(value, dict) or not value:
        return False
    lists = list(value.values())
    return (all(isinstance(v, list) and all(isinstance(x, Scalar) for x in v) for v in lists)
            and len({len(v) for v in lists}) == 1 and len(lists[0]) > SHORT_LIST)


def _flat(record: dict) -> dict:
    """One level of nested dicts becomes `outer.inner` columns; other values stay as they are."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
