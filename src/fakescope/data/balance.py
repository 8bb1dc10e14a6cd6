"""Balance a manifest: downsample every stratum to one size, keeping pairs whole."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fakescope.data.manifest import as_missing, validate_manifest
from fakescope.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def balance_manifest(
    frame: pd.DataFrame, by: str | Sequence[str] = ("label",), *, seed: int = 0, per_stratum: int | None = None
) -> pd.DataFrame:
    """Downsample so every stratum (combination of `by` values) has the same number of rows, keeping pairs whole.

    A real image and every ai image made from it (one `pair_id`) are kept or dropped together, so
    balancing never orphans a fake or unpairs a real; a row without a pair is its own group. Strata
    are filled rarest first, each walking its rows in seeded random order and keeping a row's whole
    group when that takes no stratum past `per_stratum`. Without pairs this is a seeded sample of
    `per_stratum` rows from each stratum. A pair spans strata of both labels, so a stratum can end
    short: balancing `label` keeps each pair's ratio (one real to two variations, say). A combination
    of `by` values that no row has (ai images of one gender, say) stays empty, with a warning; rows lacking
    a value (ai images without attributes, or a `MISSING_MARKERS` one) form strata of their own, also with a warning.
    Where no pair fits
    (each puts more rows into one stratum than `per_stratum`, as one real face of a group with two variations
    does against the default of 1), it raises ConfigError rather than return no rows.

    Args:
        frame: The manifest.
        by: Columns defining strata: `("label",)` balances classes; `("label", "gender")` also
            balances an attribute (one string is one column). Missing attribute values form their own stratum.
        seed: Seed of the random choice of kept groups.
        per_stratum: Most rows to keep per stratum; default the smallest stratum's size.
    """
    import numpy as np

    by = [by] if isinstance(by, str) else list(by)
    unknown = [c for c in by if c not in frame.columns]
    if unknown:
        raise ConfigError(f"cannot balance by unknown column(s) {', '.join(unknown)}")
    frame = frame.reset_index(drop=True)
    values = as_missing(frame[by])
    stratum = values.groupby(by, dropna=False, sort=True).ngroup().to_numpy()
    sizes = np.bincount(stratum)
    _warn_empty_strata(frame.assign(**values), by)
    count = per_stratum if per_stratum is not None else int(sizes.min())
    pair = frame["pair_id"].fillna("").astype(str).to_numpy()
    group = np.where(pair != "", pair, [f"row:{i}" for i in range(len(frame))])  # no pair: its own group
    members = frame.groupby(group, sort=False).indices
    filled, keep, seen = np.zeros(len(sizes), dtype=np.int64), np.zeros(len(frame), dtype=bool), set()
    for s in np.argsort(sizes, kind="stable"):
        rows = np.flatnonzero(stratum == s)
        for row in rows[np.random.RandomState(seed).permutation(len(rows))]:  # pandas' sample(random_state=seed)
            if filled[s] >= count:
                break
            if group[row] in seen:
                continue
            seen.add(group[row])
            taken = np.bincount(stratum[members[group[row]]], minlength=len(sizes))
            if (filled + taken <= count).all():
                filled += taken
                keep[members[group[row]]] = True
    if len(frame) and not keep.any():  # else an empty manifest would be written, and train fail on it later
        limit = f"{count} per stratum" + (" (the smallest stratum's size)" if per_stratum is None else "")
        raise ConfigError(f"balancing by {','.join(by)} keeps no rows: the limit is {limit} and each pair (a real image "
                          "and the ai images made from it) puts more rows than that into one stratum; raise per_stratum "
                          "(--per-stratum) or balance by fewer columns")
    logger.info("balanced %d strata to at most %d rows: kept %d of %d rows", len(sizes), count, int(keep.sum()), len(frame))
    return validate_manifest(frame[keep])


def _warn_empty_strata(frame: pd.DataFrame, by: list[str]) -> None:
    """Warn about combinations of known `by` values that no row has (ai images of women, say): no balancing can fill
    them; and about rows lacking a value (ai images without attributes), which are balanced as strata of their own."""
    values = frame[by]
    known = values.notna().all(axis=1)
    observed = set(values[known].astype(str).drop_duplicates().itertuples(index=False, name=None))
    levels = [values[c].dropna().astype(str).unique() for c in by]
    empty = [combo for combo in itertools.product(*levels) if combo not in observed]
    if empty:
        logger.warning("%d of the %d strata have no rows, so they stay empty (first: %s)", len(empty),
                       len(empty) + len(observed), ", ".join(f"{c}={v}" for c, v in zip(by, empty[0])))
    if not known.all():
        lacking = frame.loc[~known, "label"].value_counts().sort_index()
        logger.warning("%d row(s) (%s) lack a value of %s: they are balanced as strata of their own", int((~known).sum()),
                       ", ".join(f"{label}: {n}" for label, n in lacking.items()),
                       ", ".join(c for c in by if values[c].isna().any()))
