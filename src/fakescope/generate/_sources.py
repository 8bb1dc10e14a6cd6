"""List the source images of a generation run: a file, a folder, or the real rows of a dataset manifest."""

from __future__ import annotations

from collections.abc import Iterator

from fakescope.data.manifest import MANIFEST_SUFFIXES
from fakescope.errors import ConfigError
from fakescope.io import storage
from fakescope.io.inputs import IMAGE_SUFFIXES


def image_uris(src: str, exclude: str | None = None, split: str | None = None) -> Iterator[str]:
    """Yield `src` itself if it names an image file, the `real` rows of a dataset manifest, else every image under it.

    A manifest (`.csv`/`.parquet`, as `fakescope dataset build/split` write) gives its `real` rows
    in order, relative URIs resolved against its folder, only those of `split` when one is given.
    Folder URIs under `exclude` (an output folder inside the source folder) are left out.
    """
    if src.lower().endswith(MANIFEST_SUFFIXES):
        yield from _manifest_reals(src, split)
        return
    if split is not None:
        raise ConfigError(f"a split can only be taken from a dataset manifest (.csv or .parquet), not {src}")
    if src.lower().endswith(IMAGE_SUFFIXES):
        yield src
        return
    prefix = exclude.rstrip("/") + "/" if exclude else None
    for uri in storage.list_files(src, suffixes=IMAGE_SUFFIXES):
        if not (prefix and uri.startswith(prefix)):
            yield uri


def _manifest_reals(src: str, split: str | None) -> list[str]:
    from fakescope.data import read_rows

    rows = read_rows(src)
    chosen = rows["label"] == "real"
    if split is not None:
        chosen &= rows["split"].astype(str) == split
    if not chosen.any():
        raise ConfigError(f"manifest {src} lists no real images" + (f" in split {split!r}" if split is not None else ""))
    return list(rows.loc[chosen, "uri"])
