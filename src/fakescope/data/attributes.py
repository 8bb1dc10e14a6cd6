"""Join an attribute table (CSV) onto a manifest by file stem."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fakescope.data.build import file_stem
from fakescope.data.manifest import MISSING_MARKERS, read_csv, validate_manifest
from fakescope.data.merge import inherit_from_pairs
from fakescope.errors import ConfigError
from fakescope.io import storage

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)


def join_attributes(frame: pd.DataFrame, table_uri: str, *, key: str | None = None) -> pd.DataFrame:
    """Left-join an attribute table (CSV) onto the manifest by file stem.

    Args:
        frame: The manifest.
        table_uri: A CSV whose `key` column (default: its first column) names image files,
            e.g. `ffhq_attributes.csv` with `ffhq_file,expression,glasses,gender,race`.
        key: The file-name column of the table.

    Rows are matched on the file name without extension, so `00001.png` in the table matches
    `real/00001.jpg`. A row with no match of its own is matched by the file name in its `source_uri`
    (the upload's name, for images the web app saved), else takes the attributes of a matched row
    with its `pair_id`, the face it was made from (an ai image such as `00001-<hash>-dall-e-2-...`).
    Attribute columns that clash with manifest columns get an `attr_` prefix; `MISSING_MARKERS` values are missing.
    A table that matches no
    image at all (the wrong key column, say), or gives one file stem rows with different attributes (the
    first is kept), is logged as a warning.
    """
    data = storage.read_bytes(table_uri)
    try:
        columns = read_csv(data, nrows=0).columns  # as the table is read below: pandas' index column dropped
    except ValueError as exc:
        raise ConfigError(f"cannot read attribute table {table_uri}: {exc}") from None
    key = key or columns[0]
    if key not in columns:
        raise ConfigError(f"attribute table {table_uri} has no column {key!r}")
    if len(columns) < 2:
        raise ConfigError(f"attribute table {table_uri} has no column besides its file names ({key!r})")
    try:
        table = read_csv(data, dtype={key: str}, na_values=list(MISSING_MARKERS))  # `00001` names a file
    except ValueError as exc:
        raise ConfigError(f"cannot read attribute table {table_uri}: {type(exc).__name__}: {exc}") from None
    example = f" (such as {table[key].iloc[0]})" if len(table) else ""
    table = table.assign(_stem=table[key].astype(str).map(file_stem)).drop(columns=[key])
    _warn_conflicting_rows(table, table_uri)
    table = table.drop_duplicates("_stem").rename(columns={c: f"attr_{c}" for c in table.columns if c in frame.columns})
    known = set(table["_stem"])
    made_from = frame["source_uri"] if "source_uri" in frame else [""] * len(frame)
    stems = [own if own in known else file_stem(source) for own, source in zip(frame["uri"].map(file_stem), made_from)]
    joined = frame.assign(_stem=stems).merge(table, on="_stem", how="left").drop(columns="_stem")
    columns = [c for c in table.columns if c != "_stem"]
    own = joined[columns].notna().any(axis=1)
    joined = inherit_from_pairs(joined, columns, has=own)
    through_pair = int((joined[columns].notna().any(axis=1) & ~own).sum())
    if not any(stem in known for stem in stems):
        logger.warning("no image matched a row of %s by its file-name column %r%s: its attributes are all empty; "
                       "is that the right key column?", table_uri, key, example)
    logger.info("attributes matched %d of %d rows (%d through their pair)", int(own.sum()) + through_pair,
                len(frame), through_pair)
    return validate_manifest(joined)


def _warn_conflicting_rows(table: pd.DataFrame, table_uri: str) -> None:
    """Warn where rows of one file stem (`00001.png`, `00001.jpg`) give it different attributes: the first is kept."""
    distinct = table.drop_duplicates().groupby("_stem").size()
    conflicting = distinct[distinct > 1]
    if len(conflicting):
        logger.warning("%d file name(s) have rows with different attributes in %s (first: %s); the first row of each "
                       "is kept", len(conflicting), table_uri, conflicting.index[0])
