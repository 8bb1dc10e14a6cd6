"""Read any `report.json` generically: its scalar metrics and every table it holds, as DataFrames.

A table is a list of records (`[{...}, ...]`) or a mapping of names to records
(`{"jpeg": {"auc": ...}, "png": {...}}`); scalars anywhere else become metrics named by
their dotted path. Nothing here assumes the report's exact layout.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

Scalar = (int, float, str, bool, type(None))


def report_contents(report: dict[str, Any]) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Split a report into `(metrics, tables)`, both keyed by dotted path, in document order.

    Example:
        >>> metrics, tables = report_contents({"auc": 0.9, "slices": [{"format": "JPEG", "auc": 0.8}]})
        >>> metrics, list(tables["slices"].columns)
        ({'auc': 0.9}, ['format', 'auc'])
    """
    metrics: dict[str, Any] = {}
    tables: dict[str, pd.DataFrame] = {}
    _walk(report, "", metrics, tables)
    return metrics, tables


def _walk(value: Any, path: str, metrics: dict, tables: dict) -> None:
    if isinstance(value, Scalar):
        metrics[path or "value"] = value
    elif _is_records(value):
        tables[path] = pd.DataFrame([_flat(r) for r in value])
    elif isinstance(value, dict) and value and all(_is_flat_record(v) for v in value.values()):
        tables[path] = pd.DataFrame.from_dict({k: _flat(v) for k, v in value.items()}, orient="index")
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{path}.{key}" if path else str(key), metrics, tables)
    elif isinstance(value, list) and all(isinstance(v, Scalar) for v in value):
        metrics[path] = ", ".join(map(str, value))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk(item, f"{path}[{index}]", metrics, tables)


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_flat_record(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, Scalar) or _is_short_list(v) for v in value.values())


def _is_short_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 8 and all(isinstance(v, Scalar) for v in value)


def _flat(record: dict) -> dict:
    """One level of nested dicts becomes `outer.inner` columns; other values stay as they are."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out
