"""Manifest rows for ai images made from real ones, merged into a CSV or Parquet file next to them.

Columns match the dataset manifest (`uri, label, source, generator, pair_id, split, width,
height, format, sha256`) plus `source_uri` (the real image or prompt line an output was made from),
`model` and `params` (JSON). `source` is the origin's name where known, else empty (`dataset merge`
gives an ai image its face's); `pair_id` is the real image's sha256, so a real photo and every ai
image derived from it share one id (and one split). Rows of an older manifest, which named the real
image in `source`, are moved over as `fakescope.data.manifest.legacy_sources` reads them.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from fakescope.data.manifest import MANIFEST_SUFFIXES, legacy_sources, read_table, require_columns
from fakescope.errors import ConfigError, NoSuchFileError
from fakescope.io import storage
from fakescope.io.inputs import path_text
from fakescope.io.storage import Storage

MANIFEST_COLUMNS = (
    "uri", "label", "source", "generator", "pair_id", "split",
    "width", "height", "format", "sha256", "source_uri", "model", "params",
)
MANIFEST_NAME = "manifest.csv"
NAME_MAX = 255
"""Longest output file name in bytes (most file systems' limit)."""


def check_manifest_name(name: str) -> None:
    """Refuse (`ConfigError`) a manifest name that is no plain `.csv` or `.parquet` file name (it is joined to `out`)."""
    if "/" in name or "\\" in name or not name.lower().endswith(MANIFEST_SUFFIXES):
        raise ConfigError(f"manifest name {name!r}: expected a file name in the output folder ending .csv or .parquet, "
                          f"as {MANIFEST_NAME}")


def source_stem(source: str) -> str:
    """The file stem of a source URI for naming its outputs; bytes of a non-UTF-8 name become U+FFFD."""
    stem = PurePosixPath(source.rsplit("/", 1)[-1]).stem
    return stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def output_name(stem: str, tail: str) -> str:
    """`stem + tail`, the stem cut (UTF-8 safe) so the name fits `NAME_MAX` bytes: a long but legal source
    name would otherwise make an output name the file system refuses, after the image was made (or paid for)."""
    room = NAME_MAX - len(tail.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + tail


def manifest_row(
    *,
    uri: str,
    source_uri: str,
    source_sha256: str,
    generator: str,
    model: str,
    params: Mapping[str, Any],
    width: int,
    height: int,
    format: str,
    data: bytes,
    origin: str = "",
) -> dict[str, Any]:
    """One `label=ai` row linking an output to what it was made from (`source_uri`), with the model and its parameters.

    `origin` is the `source` (collection) of the real image, where known. A `source_uri` whose name is
    not UTF-8 is recorded with `\\udcNN` escapes, as `fakescope detect` prints it.
    """
    return {
        "uri": uri,
        "label": "ai",
        "source": origin,
        "generator": generator,
        "pair_id": source_sha256,
        "split": "",
        "width": width,
        "height": height,
        "format": format,
        "sha256": hashlib.sha256(data).hexdigest(),
        "source_uri": path_text(source_uri),
        "model": model,
        "params": json.dumps(dict(params), sort_keys=True),
    }


def manifest_rows(uri: str) -> dict[str, dict[str, Any]]:
    """The rows of the manifest at `uri` by their `uri`; {} where there is none yet (`_existing`: read at once).

    Raises:
        ConfigError, StorageError: it exists but cannot be read as a manifest (before anything is made or paid for).
    """
    frame = _existing(uri)
    return {} if frame is None else {str(row["uri"]): row for row in frame.to_dict("records")}


def append_manifest(uri: str, rows: Iterable[Mapping[str, Any]], *, store: Storage = storage,
                    drop: Iterable[str] = ()) -> int:
    """Merge rows into the manifest at `uri` (`.csv` or `.parquet`), replacing rows with the same `uri` and dropping
    those whose `uri` is in `drop` (images since listed under another uri).

    Re-running a generation therefore never duplicates rows. Returns the manifest's row count. `store` reads and
    writes it (default `fakescope.io.storage`; the web app's `serve.paths.RootFolder`).
    """
    data, count = merged_manifest(uri, rows, store=store, drop=drop)
    store.write_bytes(uri, data)
    return count


def merged_manifest(uri: str, rows: Iterable[Mapping[str, Any]], *, store: Storage = storage,
                    drop: Iterable[str] = ()) -> tuple[bytes, int]:
    """What `append_manifest` would write to `uri`, and its row count; nothing is written."""
    import pandas as pd

    new = pd.DataFrame(list(rows), columns=list(MANIFEST_COLUMNS))
    parquet = uri.lower().endswith(".parquet")
    if (old := _existing(uri, store)) is not None:
        old = old[~old["uri"].isin([*new["uri"], *drop])]
        new = pd.concat([old, new], ignore_index=True)
    buffer = io.BytesIO()
    if parquet:
        new.to_parquet(buffer, index=False)
    else:
        new.to_csv(buffer, index=False)
    return buffer.getvalue(), len(new)


def _existing(uri: str, store=storage):
    """`_read(uri, store)`, None where there is no file at `uri` (the read's `NoSuchFileError`): not asked first whether
    it exists, which cost an S3 HEAD or a Drive lookup per read and could change before the read."""
    try:
        return _read(uri, store)
    except NoSuchFileError:
        return None


def _read(uri: str, store=storage):
    """The manifest at `uri` as a DataFrame, older layouts moved over (see `legacy_sources`).

    Raises:
        ConfigError: It is no manifest or has no uri column, said as every manifest reader says it
            (`fakescope.data.manifest.read_table`, `require_columns`).
    """
    frame = read_table(uri, empty_ok=True, store=store, keep_default_na=False)
    require_columns(frame, ("uri",), f"manifest {uri}", advice="move it away to start a new one")
    return legacy_sources(frame)
