"""Merge manifests (the labelled, split reals and the ai images generated from them) into one.

An ai image generated from a manifest's real row carries that row's sha256 as its `pair_id` but no
source, split or attributes of its own; in the merged manifest it takes its pair's, so the pair stays
in one split and per-source and per-attribute slices count it with its face.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from fakescope.data.manifest import (
    HASH_COLUMN,
    MANIFEST_COLUMNS,
    PROVENANCE_COLUMNS,
    read_manifest,
    resolve_uris,
    validate_manifest,
)
from fakescope.data.splits import check_distance, find_split_leaks
from fakescope.errors import ConfigError

logger = logging.getLogger(__name__)

NOT_ATTRIBUTES = {*MANIFEST_COLUMNS, *PROVENANCE_COLUMNS, HASH_COLUMN}
"""Columns that describe one file or its making, never inherited through the pair."""


def merge_manifests(uris: str | Sequence[str], *, max_distance: int = 4, workers: int = 8,
                    progress: bool = False) -> pd.DataFrame:
    """One manifest from several: rows concatenated in order, relative URIs resolved against their own file.

    A uri listed twice keeps its first row. Rows without a source take their pair's; rows without a split take their
    pair's (a pair with
    one split among its rows); rows without attributes take those of a row of their pair that has
    them; an integer attribute (0/1) stays integer where every row ends with a value. Rows that already
    have splits and leak across them are an error (`find_split_leaks`, as `dataset audit` finds them): a pair
    or an identical file in two splits, or a near copy (dHash within `max_distance` bits, -1: off; split rows
    without a `dhash` are read) in another split.

    Example:
        >>> merged = merge_manifests(["reals.parquet", "fakes/dall-e-2/manifest.csv"])  # doctest: +SKIP
    """
    uris = [uris] if isinstance(uris, str) else uris
    check_distance(max_distance)
    if not uris:
        raise ConfigError("merge needs at least one manifest")
    tables = [resolve_uris(read_manifest(uri), uri) for uri in uris]
    frame = pd.concat(tables, ignore_index=True)
    repeated = frame["uri"].duplicated()
    if repeated.any():
        logger.warning("%d uri(s) listed in more than one manifest: kept each one's first row", int(repeated.sum()))
        frame = frame[~repeated].reset_index(drop=True)
    leaks = find_split_leaks(frame, max_distance=max_distance, workers=workers, progress=progress)
    if leaks:
        raise ConfigError(f"the manifests disagree on splits: {leaks[0]}")
    frame = inherit_from_pairs(frame, ["split"], has=frame["split"] != "")
    frame = inherit_from_pairs(frame, ["source"], has=frame["source"] != "")
    attributes = [c for c in frame.columns if c not in NOT_ATTRIBUTES]
    if attributes:
        frame = inherit_from_pairs(frame, attributes, has=frame[attributes].notna().any(axis=1))
        integers = [c for c in attributes if all(pd.api.types.is_integer_dtype(t[c]) for t in tables if c in t)]
        frame = _restore_integers(frame, integers)
    return validate_manifest(frame)


def inherit_from_pairs(frame: pd.DataFrame, columns: list[str], *, has: pd.Series) -> pd.DataFrame:
    """Rows where `has` is False take `columns` from the first row of their pair_id where it is True.

    Filled column by column, so a column no row takes keeps its dtype (an all-present 0/1 column stays int).
    """
    donors = frame[has & (frame["pair_id"] != "")].drop_duplicates("pair_id").set_index("pair_id")[columns]
    takers = ~has & frame["pair_id"].isin(donors.index)
    frame = frame.copy()
    for column in columns:
        frame[column] = frame[column].mask(takers, frame["pair_id"].map(donors[column]))
    logger.info("%d row(s) took %s from their pair", int(takers.sum()), ", ".join(columns))
    return frame


def _restore_integers(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns`, integers at the source, back to int64 where every row has a value (joins made them float)."""
    whole = [c for c in columns if frame[c].notna().all()]
    return frame.astype(dict.fromkeys(whole, "int64"))
