"""A paid run's outputs: written with their manifest rows, and found in `out` where a run made them already."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

from PIL import Image

from fakescope.errors import ImageLoadError
from fakescope.generate._encoding import encode, encoding_of
from fakescope.generate._plan import OUTPUT_FORMATS, Job, any_output, files_in, known_damage, output_uri
from fakescope.generate.ledger import DONE, JobRecord
from fakescope.generate.manifest import manifest_row, manifest_rows
from fakescope.generate.openai_images import OpenAIImagesConfig, crop_box, upload_size
from fakescope.io import storage
from fakescope.io.image import LoadedImage, load_image, upright_size
from fakescope.io.inputs import path_text

log = logging.getLogger(__name__)


def finish(job: Job, loaded: LoadedImage, out: str, config: OpenAIImagesConfig, usage: dict | None) -> tuple[str, dict]:
    """Write the API's image `loaded` as `config` says (`saved`) and build its manifest row, `usage` in its params
    (idempotent: same job, same URI, same bytes)."""
    size = _source_size(job, config)
    data, extension = saved(job, loaded, config, size)
    uri = output_uri(job, out, config, extension)
    storage.write_bytes(uri, data)
    return uri, _row(job, uri, loaded if data is loaded.data else load_image(data, keep_bytes=False), data, config,
                     size, usage)


def _source_size(job: Job, config: OpenAIImagesConfig) -> tuple[int, int] | None:
    """The upright size of the job's source image, from its header (None in `generate` mode: it has none)."""
    if config.mode == "generate":
        return None
    with Image.open(io.BytesIO(job.payload)) as header:
        return upright_size(header)


def saved(job: Job, loaded: LoadedImage, config: OpenAIImagesConfig,
          source_size: tuple[int, int] | None) -> tuple[bytes, str]:
    """(file bytes, extension) of the API's image `loaded`: its own bytes under `png`; else resized (Lanczos) where
    `config.resize_to_source` to the source's upright size `source_size` (dall-e-2's to its `crop_box`'s, the part of
    the source it was made from), and saved like the source under `source` (`fakescope.generate._encoding`), as an RGB
    PNG under `png`."""
    if config.save_format == "png" and not config.resize_to_source:
        return loaded.data, loaded.format.lower()
    image, source = loaded.image, job.payload
    if config.resize_to_source and source_size:
        size = source_size
        if (box := crop_box(size, config)) is not None:
            size = (box[2] - box[0], box[3] - box[1])
        if image.size != size:
            image = image.resize(size, Image.LANCZOS)
    encoding = encoding_of(source, config.save_format)
    return encode(image, source, encoding, config.save_format), encoding[0]


def _row(job: Job, uri: str, loaded: LoadedImage, data: bytes, config: OpenAIImagesConfig,
         source_size: tuple[int, int] | None, usage: dict | None = None) -> dict:
    """The manifest row of the file `data` (decoded: `loaded`; its source's upright size `source_size`):
    `config.params()`, with `usage`, the size of a downscaled upload (`upload`) and the box of the source dall-e-2 was
    sent (`crop`: left, top, right, bottom) where there are."""
    params = config.params()
    if source_size is not None:
        if (sent := upload_size(source_size, config)) is not None:
            params["upload"] = f"{sent[0]}x{sent[1]}"
        if (box := crop_box(source_size, config)) is not None:
            params["crop"] = list(box)
    return manifest_row(
        uri=uri, source_uri=job.source, source_sha256=job.source_sha256, generator=config.model, model=config.model,
        params={**params, **({"usage": usage} if usage else {})},
        width=loaded.width, height=loaded.height, format=loaded.format, data=data,
    )


class Made:
    """The images `out` already holds, listed once (one paged listing) before the first job, each checked whole once
    (`damage`; a remote one by the size that listing gave; one the plan checked, listed alike, by its finding, but for
    a damaged local one, read again: one half-copied when the plan read it may be whole now), and its manifest, read at
    the first job the ledger does not know as done.

    `out` is the record of what was made: an image at a job's output name is that job done, wherever it ran. Its
    manifest's row is found by the image's uri, else by its name where the row's uri is elsewhere (a folder moved or
    copied with its manifest): that row moves to the image's uri (the old one in `moved`, for the manifest to drop).
    """

    def __init__(self, out: str, manifest_name: str, found: dict[tuple[str, int | None], str | None] | None = None):
        self.out, self.manifest = out, storage.join(out, manifest_name)
        self.found = {key: why for key, why in (found or {}).items() if why is None or storage.is_remote(key[0])}
        """What `damage` found of each file checked, by (uri, listed size): the plan's (`known_damage`), but a damaged
        local file's (its copy may have ended since)."""
        self._files: dict[str, int | None] | None = None
        self.rows: dict[str, dict] | None = None
        self._elsewhere: dict[str, str] = {}
        """The uris of manifest rows outside `files`, by file name."""
        self.moved: set[str] = set()
        """The uris of manifest rows moved to the image of their name in `out`."""

    @property
    def files(self) -> dict[str, int | None]:
        """The files `out` held when first asked, with the sizes their listing gave (`files_in`)."""
        if self._files is None:
            self._files = files_in(self.out)
        return self._files

    def paid_elsewhere(self, records: Iterable[JobRecord]) -> set[str]:
        """The images `out` holds, of any model and parameters (known by their names), that a ledger of `records` did
        not pay for (nor has in flight)."""
        paid = {(record.source_sha256[:8], record.model, record.mode, record.params_hash[:6], record.index)
                for record in records if record.paid}
        found = ((uri, any_output(uri.rsplit("/", 1)[-1])) for uri in self.files)
        return {uri for uri, key in found if key is not None and key not in paid}

    def holds(self, uri: str | None) -> bool:
        """Whether `out` still holds the output of a done job, whole (`damage`): in the listing, else asked for itself.
        One in another folder (a ledger copied into an empty `out` without its images) is not held: it is made here."""
        return (uri is not None and in_out(self.out, uri) and (uri in self.files or storage.exists(uri))
                and known_damage(uri, self.files.get(uri), self.found) is None)

    def row(self, job: Job, config: OpenAIImagesConfig) -> dict | None:
        """The manifest row of `job`'s output if `out` holds it whole (`damage`; a damaged one is warned of, to be made
        again), its manifest's row reused, else read; else None."""
        files = self.files  # listed first: an unreachable `out` fails naming itself, not its manifest
        if self.rows is None:
            self.rows = manifest_rows(self.manifest)
            self._elsewhere = {listed.rsplit("/", 1)[-1]: listed for listed in self.rows if listed not in files}
        for uri in (output_uri(job, self.out, config, extension) for extension in OUTPUT_FORMATS):
            if uri not in files:
                continue
            if (why := known_damage(uri, files[uri], self.found)) is not None:
                log.warning("making %s again (paid again): the file there is %s", uri, why)
                continue
            listed = uri if uri in self.rows else self._elsewhere.get(uri.rsplit("/", 1)[-1])
            if listed is not None and (row := self.rows[listed]).get("pair_id") == job.source_sha256:
                if listed != uri:
                    self.moved.add(listed)
                return {**row, "uri": uri, "source_uri": path_text(job.source)}
            try:
                data = storage.read_bytes(uri)
                return _row(job, uri, load_image(data, keep_bytes=False), data, config, _source_size(job, config))
            except ImageLoadError as exc:
                log.warning("making %s again: the existing file is unreadable (%s)", uri, exc)
        return None


def in_out(out: str, uri: str) -> bool:
    """Whether `uri` names a file directly in `out`."""
    return uri == storage.join(out, uri.rsplit("/", 1)[-1])


def done_elsewhere(records: Iterable[JobRecord], out: str, held: Iterable[str], config: OpenAIImagesConfig) -> list[str]:
    """The images of `config`'s done jobs in `records` saved in another folder than `out` (a ledger copied into `out`
    without them), whose names `out` (listed as `held`) lacks: a run into `out` makes them again."""
    names, params_hash = {uri.rsplit("/", 1)[-1] for uri in held}, config.params_hash()
    return [record.output for record in records
            if record.state == DONE and (record.model, record.mode, record.params_hash) == (config.model, config.mode,
                                                                                            params_hash)
            and record.output and not in_out(out, record.output) and record.output.rsplit("/", 1)[-1] not in names]

