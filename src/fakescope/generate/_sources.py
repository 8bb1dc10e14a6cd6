"""List the source images of a generation run: a file, a folder, a glob, or the real rows of a dataset manifest."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

from fakescope.data.manifest import MANIFEST_SUFFIXES
from fakescope.errors import ConfigError, StorageError
from fakescope.io import storage
from fakescope.io.inputs import IMAGE_SUFFIXES, expand_glob, list_images


def image_uris(src: str, exclude: str | None = None, split: str | None = None) -> Iterator[str]:
    """Yield `src` itself if it names an image file, the `real` rows of a dataset manifest, else every image under it.

    A manifest (`.csv`/`.parquet`, as `fakescope dataset build/split` write) gives its `real` rows
    in order, relative URIs resolved against its folder, only those of `split` when one is given.
    A local glob (`photos/*.jpg`, `photos/**/*.png`) gives the images it matches, folders walked, as
    `fakescope detect` expands it; one of manifests (`shards/*.csv`) gives each one's real rows, in name order.
    URIs under `exclude` (an output folder inside the source folder) are left out.

    Raises:
        StorageError: `src` names an image file that does not exist.
        ConfigError: no image was found (none listed, or all under `exclude`), or a glob matched no manifest.
    """
    if src.lower().endswith(MANIFEST_SUFFIXES):
        for manifest in _manifests(src):
            yield from _manifest_reals(manifest, split)
        return
    if split is not None:
        raise ConfigError(f"a split can only be taken from a dataset manifest (.csv or .parquet), not {src}")
    prefix = exclude.rstrip("/") + "/" if exclude else None
    found = excluded = False
    for uri in _listed(src):
        if prefix and uri.startswith(prefix):
            excluded = True
        else:
            found = True
            yield uri
    if not found:
        raise ConfigError(f"no images in {src}" + (f" outside its output folder {exclude}" if excluded else ""))


def _listed(src: str) -> Iterator[str]:
    path = src.removeprefix("file://")
    if not storage.is_remote(src) and glob.has_magic(path) and not os.path.exists(path):
        yield from expand_glob(path)
        return
    if src.lower().endswith(IMAGE_SUFFIXES):
        if not storage.exists(src):
            raise StorageError("no such file", source=src)
        yield src
        return
    yield from list_images(src)


def _manifests(src: str) -> list[str]:
    """`src`, or the manifests a local glob of them matches, sorted (as `fakescope scan` reads them)."""
    path = src.removeprefix("file://")
    if storage.is_remote(src) or not glob.has_magic(path) or os.path.exists(path):
        return [src]
    if not (matched := sorted(glob.glob(path, recursive=True))):
        raise ConfigError(f"no manifest matches {src}")
    return matched


def _manifest_reals(src: str, split: str | None) -> list[str]:
    from fakescope.data import read_rows

    rows = read_rows(src)
    chosen = rows["label"] == "real"
    if split is not None:
        chosen &= rows["split"].astype(str) == split
    if not chosen.any():
        raise ConfigError(f"manifest {src} lists no real images" + (f" in split {split!r}" if split is not None else ""))
    return list(rows.loc[chosen, "uri"])
