"""List the source images of a generation run through `fakescope.io.storage`."""

from __future__ import annotations

from collections.abc import Iterator

from fakescope.io import storage
from fakescope.io.inputs import IMAGE_SUFFIXES


def image_uris(src: str, exclude: str | None = None) -> Iterator[str]:
    """Yield `src` itself if it names an image file, else every image under it (sorted per listing).

    URIs under `exclude` (an output folder inside the source folder) are left out.
    """
    if src.lower().endswith(IMAGE_SUFFIXES):
        yield src
        return
    prefix = exclude.rstrip("/") + "/" if exclude else None
    for uri in storage.list_files(src, suffixes=IMAGE_SUFFIXES):
        if not (prefix and uri.startswith(prefix)):
            yield uri
