"""A paid run's outputs: written with their manifest rows, and found in `out` where a run made them already."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from fakescope.errors import ImageLoadError
from fakescope.generate._plan import OUTPUT_FORMATS, Job, any_output, files_in, output_uri
from fakescope.generate.ledger import JobRecord
from fakescope.generate.manifest import manifest_row, manifest_rows
from fakescope.generate.openai_images import OpenAIImagesConfig
from fakescope.io import storage
from fakescope.io.image import LoadedImage, load_image
from fakescope.io.inputs import path_text

log = logging.getLogger(__name__)


def finish(job: Job, loaded: LoadedImage, out: str, config: OpenAIImagesConfig, usage: dict | None) -> tuple[str, dict]:
    """Write the output image and build its manifest row, `usage` in its params (idempotent: same job, same URI)."""
    uri = output_uri(job, out, config, loaded.format.lower())
    storage.write_bytes(uri, loaded.data)
    return uri, _row(job, uri, loaded, config, usage)


def _row(job: Job, uri: str, loaded: LoadedImage, config: OpenAIImagesConfig, usage: dict | None = None) -> dict:
    return manifest_row(
        uri=uri, source_uri=job.source, source_sha256=job.source_sha256, generator=config.model, model=config.model,
        params={**config.params(), **({"usage": usage} if usage else {})},
        width=loaded.width, height=loaded.height, format=loaded.format, data=loaded.data,
    )


class Made:
    """The images `out` already holds, listed once (one paged listing, not a request per image) before the first job, and
    its manifest, read at the first job the ledger does not know as done.

    `out` is the record of what was made: an image at a job's output name is that job done, wherever it ran.
    """

    def __init__(self, out: str, manifest_name: str):
        self.out, self.manifest = out, storage.join(out, manifest_name)
        self._files: set[str] | None = None
        self.rows: dict[str, dict] | None = None

    @property
    def files(self) -> set[str]:
        """The files `out` held when first asked."""
        if self._files is None:
            self._files = set(files_in(self.out))
        return self._files

    def paid_elsewhere(self, records: Iterable[JobRecord]) -> set[str]:
        """The images `out` holds, of any model and parameters (known by their names), that a ledger of `records` did
        not pay for (nor has in flight)."""
        paid = {(record.source_sha256[:8], record.model, record.mode, record.params_hash[:6], record.index)
                for record in records if record.paid}
        found = ((uri, any_output(uri.rsplit("/", 1)[-1])) for uri in self.files)
        return {uri for uri, key in found if key is not None and key not in paid}

    def holds(self, uri: str | None) -> bool:
        """Whether the output of a done job still exists: in the listing, else (an output outside `out`) asked for itself."""
        return uri is not None and (uri in self.files or storage.exists(uri))

    def row(self, job: Job, config: OpenAIImagesConfig) -> dict | None:
        """The manifest row of `job`'s output if `out` holds it, its manifest's row reused, else read; else None."""
        files = self.files  # listed first: an unreachable `out` fails naming itself, not its manifest
        if self.rows is None:
            self.rows = manifest_rows(self.manifest)
        for uri in (output_uri(job, self.out, config, extension) for extension in OUTPUT_FORMATS):
            if uri not in files:
                continue
            if (row := self.rows.get(uri)) and row.get("pair_id") == job.source_sha256:
                return {**row, "source_uri": path_text(job.source)}
            try:
                return _row(job, uri, load_image(storage.read_bytes(uri)), config)
            except ImageLoadError as exc:
                log.warning("making %s again: the existing file is unreadable (%s)", uri, exc)
        return None
