"""Run a local image-to-image generator (taef2, diffusers) over a folder, writing ai images and a manifest.

Each ai image is saved as its source was (`output_format="source"`, `fakescope.generate._encoding`): a JPEG
source's with the source's own quantization tables and chroma subsampling, a WebP's as WebP, any other as PNG, in
the source's colour mode with its alpha, so real and ai images carry the same compression. `output_format="png"`
saves every one as an RGB PNG, which makes "PNG = ai" a shortcut beside JPEG reals.

Example:
    >>> from fakescope.generate import TAEF2, generate_local
    >>> taef2 = TAEF2.from_dir("../shared/data/generators/taef2")  # doctest: +SKIP
    >>> generate_local("photos/", "fakes/", taef2.reconstruct, generator="taef2", model="taef2")  # doctest: +SKIP
    (250, 'fakes/manifest.csv', 0, 0)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from PIL import Image

from fakescope.errors import ConfigError, FakescopeError, ImageLoadError, reason_about
from fakescope.generate._encoding import SAVE_FORMATS, Encoding, encode, encoding_of
from fakescope.generate._sources import image_uris
from fakescope.generate.manifest import (
    MANIFEST_NAME,
    append_manifest,
    check_manifest_name,
    manifest_row,
    manifest_rows,
    output_name,
    source_stem,
)
from fakescope.io import storage
from fakescope.io.image import load_image
from fakescope.io.inputs import path_text

log = logging.getLogger(__name__)

ImageToImage = Callable[[Sequence[Image.Image]], Sequence[Image.Image]]


def generate_local(
    src: str,
    out: str,
    generate: ImageToImage,
    *,
    generator: str,
    model: str,
    params: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    manifest_name: str = MANIFEST_NAME,
    split: str | None = None,
    output_format: str = "source",
) -> tuple[int, str | None, int, int]:
    """Turn every image under `src` into one ai image in `out`, named after its source, saved as `output_format`
    says (see `SAVE_FORMATS`).

    `src` may be a local glob, or a dataset manifest (`.csv`/`.parquet`): its `real` rows are the
    sources, only those of `split` when one is given. A missing file or no image at all is an error.

    Sources whose output already exists are skipped, so an interrupted run resumes: its row is taken from the
    manifest in `out` where that lists it, else rebuilt from the output (one that cannot be read is made again).
    Unreadable sources are logged and skipped.

    Returns:
        (images written in this run, manifest URI or None when nothing was written, unreadable sources skipped,
        images made by an earlier run and kept).

    Raises:
        ConfigError: `output_format` is not one of `SAVE_FORMATS`, or `manifest_name` is no manifest name.
        FakescopeError: `generate` returned other than one image per source of a batch (before that batch is saved).
    """
    if output_format not in SAVE_FORMATS:
        raise ConfigError(f"output format {output_format!r}: use {' or '.join(SAVE_FORMATS)}")
    check_manifest_name(manifest_name)
    src, out = storage.absolute(src), storage.absolute(out)  # the manifest's uris work from any folder
    rows: list[dict] = []
    row_params = dict(params or {})
    written, unreadable = 0, []
    manifest = storage.join(out, manifest_name)
    earlier = manifest_rows(manifest)
    pending = _pending(src, out, generator, rows, unreadable, generator_row=(model, row_params), split=split,
                       earlier=earlier, output_format=output_format)
    for batch in _batches(pending, batch_size):
        outputs = list(generate([image for *_, image in batch]))
        if len(outputs) != len(batch):  # zip would drop the sources past the shorter one without a word
            raise FakescopeError(f"the generator returned {len(outputs)} images for {len(batch)} sources: it must "
                                 "return one per source, in order")
        for (uri, digest, target, encoding, source, _), image in zip(batch, outputs, strict=True):
            data = encode(image, source, encoding, output_format)
            storage.write_bytes(target, data)
            rows.append(_row(target, uri, digest, generator, model, row_params, data))
            written += 1
    if not rows:
        return 0, None, len(unreadable), 0
    append_manifest(manifest, rows)
    return written, manifest, len(unreadable), len(rows) - written


def output_uri(out: str, source: str, digest: str, generator: str, extension: str = "png") -> str:
    """Where the ai image made from `source` goes: `<out>/<stem>-<sha8>-<generator>.<extension>`."""
    return storage.join(out, output_name(source_stem(source), f"-{digest[:8]}-{generator}.{extension}"))


def _row(target: str, source: str, digest: str, generator: str, model: str, params: dict, data: bytes) -> dict:
    loaded = load_image(data, keep_bytes=False)
    return manifest_row(
        uri=target, source_uri=source, source_sha256=digest, generator=generator, model=model, params=params,
        width=loaded.width, height=loaded.height, format=loaded.format, data=data,
    )


def _pending(
    src: str, out: str, generator: str, rows: list[dict], unreadable: list[str], generator_row: tuple[str, dict],
    split: str | None, earlier: dict[str, dict], output_format: str,
) -> Iterator[tuple[str, str, str, Encoding, bytes, Image.Image]]:
    """Yield (source, sha256, target, encoding, source bytes, image) still to do; rows of outputs made earlier go to
    `rows`, unreadable
    sources to `unreadable`.

    A source with the same name and bytes as an earlier one (a copy in another folder) maps to the
    same output: it is made and listed once.
    """
    targets: set[str] = set()
    for uri in image_uris(src, exclude=out, split=split):
        try:
            data = storage.read_bytes(uri)
            digest = hashlib.sha256(data).hexdigest()
            encoding = encoding_of(data, output_format)
            target = output_uri(out, uri, digest, generator, encoding[0])
            if target in targets:
                log.info("%s is a copy of an earlier source; its ai image is %s", uri, target)
                continue
            targets.add(target)
            if storage.exists(target) and (row := _earlier_row(target, uri, digest, generator, generator_row, earlier)):
                rows.append(row)
                continue
            image = load_image(data).image
        except FakescopeError as exc:
            log.warning("skipping %s: %s", uri, reason_about(exc, uri))
            unreadable.append(uri)
            continue
        yield uri, digest, target, encoding, data, image


def _earlier_row(
    target: str, source: str, digest: str, generator: str, generator_row: tuple[str, dict], earlier: dict[str, dict]
) -> dict | None:
    """The row of an output made by an earlier run, or None (with a warning) when it must be made again:
    it is unreadable, or the manifest says it was made by another model or with other parameters.

    The manifest's row is reused where it names the same source bytes, model and parameters: no download.
    """
    wanted = {"model": generator_row[0], "params": json.dumps(generator_row[1], sort_keys=True)}
    if row := earlier.get(target):
        if any(row.get(key, value) != value for key, value in wanted.items()):  # a column it lacks tells nothing
            log.warning("remaking %s: it was made with %s %s", target, row.get("model"), row.get("params"))
            return None
        if row.get("pair_id") == digest:
            return {**row, "source_uri": path_text(source)}
    try:
        return _row(target, source, digest, generator, *generator_row, storage.read_bytes(target))
    except ImageLoadError as exc:
        log.warning("remaking %s: the existing file is unreadable (%s)", target, exc)
        return None


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
