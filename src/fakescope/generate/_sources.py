"""The sources of a generation run: images (a file, a folder, a glob, or the real rows of a dataset manifest), or the
prompts of a text file."""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fakescope.data.manifest import MANIFEST_SUFFIXES
from fakescope.errors import ConfigError, StorageError
from fakescope.generate.manifest import source_stem
from fakescope.generate.openai_models import prompt_too_long
from fakescope.io import storage
from fakescope.io.inputs import IMAGE_SUFFIXES, expand_glob, list_images, path_text

if TYPE_CHECKING:  # `generate_local` lists images without loading the Images API client
    from fakescope.generate.openai_images import OpenAIImagesConfig


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


def read_sources(
    src: str, out: str, config: OpenAIImagesConfig, split: str | None
) -> Iterator[tuple[str, str, str, bytes | str]]:
    """Yield (source URI, name stem, sha256, payload) for every source, lazily."""
    if config.mode == "generate":
        for number, prompt in read_prompts(src, config.model):
            yield f"{src}#L{number}", f"prompt{number}", hashlib.sha256(prompt.encode()).hexdigest(), prompt
        return
    for uri in image_uris(src, exclude=out, split=split):
        data = storage.read_bytes(uri)
        yield uri, source_stem(uri), hashlib.sha256(data).hexdigest(), data


def read_prompts(src: str, model: str | None = None) -> list[tuple[int, str]]:
    """(line number, prompt) for each non-blank line of a prompts file; with `model`, one over its prompt limit
    (`openai_models.prompt_too_long`) refuses the file, every line checked before any request."""
    try:
        lines = storage.read_bytes(src).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:  # an image given where --mode generate takes its prompts
        raise ConfigError(f"{path_text(src)}: not a prompts file (UTF-8 text, one prompt per line): byte "
                          f"{exc.object[exc.start]:#04x} at {exc.start} is not UTF-8") from None
    prompts = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise ConfigError(f"{path_text(src)}: no prompt in it (UTF-8 text, one prompt per line)")
    for number, prompt in prompts if model is not None else ():
        if too_long := prompt_too_long(model, prompt):
            raise ConfigError(f"{path_text(src)} line {number}: {too_long} (every line is checked before any request)")
    return prompts
