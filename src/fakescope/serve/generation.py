"""Generation for the server and the web app: one uploaded real image in, ai images and their detections out.

`generate_from_upload` runs `fakescope.generate.run_openai` on a single source in its own
folder (ledger, manifest and outputs stay there); `public_error` hides local paths in its errors and `failure` secrets;
`save_pair` files a real image and the ai images made from it into a dataset folder with a merged `manifest.csv`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fakescope.detection import Detection
from fakescope.errors import ConfigError, FakescopeError
from fakescope.generate import (
    MANIFEST_COLUMNS,
    Ledger,
    OpenAIImagesConfig,
    run_openai,
)
from fakescope.generate.ledger import RUNNING
from fakescope.generate.manifest import manifest_row, merged_manifest
from fakescope.generate.openai_images import make_client
from fakescope.generate.runner import default_ledger_path
from fakescope.io import storage
from fakescope.io.image import MAX_PIXELS, decode_image
from fakescope.io.redact import hide_secrets
from fakescope.io.storage import Storage
from fakescope.serve.limits import check_image

if TYPE_CHECKING:  # annotations only: no import cost
    from openai import OpenAI

_LOCAL_PATH = re.compile(r"""(?<![\w.:/~-])(?:[A-Za-z]:[\\/]|~?/)[^\s'",;)\]]*[^\s'",;)\].:]""")
NO_KEY = "no OpenAI API key: pass one, or set OPENAI_API_KEY (environment or .env)"
UPLOAD_SOURCE = "upload"
LOST_ANSWER = "an answer timed out or broke off once sent: it may have been billed, so it was not asked again"
"""The `source` (origin) of images the web app saves: an upload and the ai images made from it."""


@dataclass(frozen=True)
class GeneratedImage:
    """One ai image made from the upload: where it was written, its bytes and its detection."""

    path: Path
    data: bytes
    detection: Detection


def openai_client(api_key: str | None = None, *, missing: str = NO_KEY, max_retries: int = 2, timeout: float = 120.0,
                  own_key_only: bool = False) -> OpenAI:
    """An `openai.OpenAI` client for `api_key`, else `OPENAI_API_KEY` (environment or `.env`) unless `own_key_only`.

    `OPENAI_BASE_URL` still applies. The key is handed to the client only, never logged.

    Raises:
        ConfigError: no key was given and none is configured; its message is `missing`, worded for where it is shown.
    """
    if own_key_only and not api_key:
        raise ConfigError(missing)
    try:
        return make_client(max_retries, timeout, api_key=api_key)
    except ConfigError:  # its only refusal: no key
        raise ConfigError(missing) from None


def public_error(message: str) -> str:
    """`message` with every local path (`/...`, `~/...`, `C:\\...`) replaced by `<path>`, for clients and pages."""
    return _LOCAL_PATH.sub("<path>", message)


@dataclass(frozen=True)
class Failure:
    """A generation's error: its one `line`, the `detail` to log, and whether it was `unexpected` (no `expected` type)."""

    line: str
    detail: str
    unexpected: bool


def failure(exc: Exception, key: str | None, expected: tuple[type[Exception], ...] = (FakescopeError,)) -> Failure:
    """A generation's error, `key` and the secrets `hide_secrets` knows as `***`.

    An `expected` error is its message as line and detail; another is `Type: message`, its detail the traceback.
    """
    if isinstance(exc, expected):
        line = hide_secrets(str(exc), key)
        return Failure(line, line, unexpected=False)
    line = hide_secrets(f"{type(exc).__name__}: {exc}", key)
    return Failure(line, hide_secrets("".join(traceback.format_exception(exc)).rstrip(), key), unexpected=True)


def upload_folder(workspace: str | os.PathLike, data: bytes, config: OpenAIImagesConfig) -> Path:
    """The folder under `workspace` for the images `config` makes from the upload `data`: one per upload, mode, model
    and parameters, so another model's images are neither shown with these nor refused as a rerun's."""
    key = hashlib.sha256(data + f"{config.model}:{config.params_hash()}".encode()).hexdigest()[:16]
    return Path(workspace) / key


def generate_from_upload(
    data: bytes,
    config: OpenAIImagesConfig,
    folder: str | os.PathLike,
    *,
    client: OpenAI,
    detect: Callable[[bytes], Detection],
    filename: str = "upload",
) -> list[GeneratedImage]:
    """Make `config.n` ai images from one real image and score each with `detect`.

    Each detection's `source` is its image's file name, made from the upload's (sanitised) name.

    A folder that already holds images made for this upload and config returns them without asking again.

    Raises:
        ImageLoadError: the upload's header is not that of a supported image (nothing is written or sent).
        FakescopeError: the API refused the request or every request failed.
    """
    if config.mode == "generate":
        raise ConfigError("uploads make variations or edits; use mode variation or edit")
    fmt, _, _ = check_image(data, MAX_PIXELS)  # the header only: the generator decodes the source itself
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{_stem(filename)}.{fmt.lower()}"
    source.write_bytes(data)
    report = run_openai(str(source), str(folder / "ai"), config, client=client, concurrency=min(config.n, 4))
    if report.manifest is None:  # no job done, in this run or an earlier one into the same folder
        failed = report.failed + report.unresolved
        raise FakescopeError(f"no image was generated ({failed} request(s) failed: {_failure_reasons(report.ledger)})")
    rows = pd.read_csv(report.manifest, keep_default_na=False)
    outputs = []
    for uri in rows["uri"]:
        image_bytes = Path(uri).read_bytes()
        detection = replace(detect(image_bytes), source=Path(uri).name)  # named after the upload, no server path
        outputs.append(GeneratedImage(Path(uri), image_bytes, detection))
    return outputs


def shortfall(images: list[GeneratedImage], config: OpenAIImagesConfig, folder: str | os.PathLike) -> str | None:
    """Why `generate_from_upload(..., folder)` gave fewer than `config.n` images, or None when it gave them all."""
    if len(images) >= config.n:
        return None
    reasons = _failure_reasons(default_ledger_path(str(Path(folder) / "ai")))
    return f"{config.n - len(images)} of {config.n} images were not generated: {reasons or 'no reason recorded'}"


def _failure_reasons(ledger: str | os.PathLike) -> str:
    """The errors of a run's failed jobs, and a line for the answers it lost (in flight in the ledger once it ended)."""
    with Ledger(ledger) as book:
        errors = [job.error for job in book.jobs("failed") if job.error]
        errors += [LOST_ANSWER for _ in book.jobs(RUNNING)]
        return "; ".join(dict.fromkeys(errors))


def save_pair(
    dataset: str,
    real: bytes,
    generated: list[bytes],
    config: OpenAIImagesConfig,
    *,
    filename: str = "upload",
    store: Storage = storage,
) -> str:
    """Write the real image to `<dataset>/real/` and the ai ones to `<dataset>/ai/<model>/`, and merge the manifest.

    Rows follow `fakescope.generate.MANIFEST_COLUMNS`, with absolute URIs; the real image and its ai
    images share `pair_id` (the real image's sha256), so splits keep them together; every row's
    `source` is `upload`, and the real row's `source_uri` is the uploaded file name (kept as written when the manifest
    is read: no file of the dataset), the ai rows' the real image's URI. Returns the manifest URI.
    `store` writes the files (default `fakescope.io.storage`; the web app's `serve.paths.RootFolder`).
    All or nothing: every image is decoded and the manifest merged before the first write, and where a write fails
    the images this call made (not those that were there before) are removed again.
    """
    dataset = storage.absolute(dataset)
    loaded = decode_image(real)
    digest = hashlib.sha256(real).hexdigest()
    stem = f"{_stem(filename)}-{digest[:8]}"
    real_uri = storage.join(dataset, "real", f"{stem}.{loaded.format.lower()}")
    files = {real_uri: real}
    rows = [{
        "uri": real_uri, "label": "real", "source": UPLOAD_SOURCE, "generator": "", "pair_id": digest, "split": "",
        "width": loaded.width, "height": loaded.height, "format": loaded.format, "sha256": digest,
        "source_uri": filename, "model": "", "params": "",
    }]
    for index, data in enumerate(generated):
        image = decode_image(data)
        name = f"{stem}-{config.model}-{config.mode}-{config.params_hash()[:6]}-{index}.{image.format.lower()}"
        uri = storage.join(dataset, "ai", config.model, name)
        files[uri] = data
        rows.append(manifest_row(
            uri=uri, source_uri=real_uri, source_sha256=digest, origin=UPLOAD_SOURCE, generator=config.model, model=config.model,
            params=config.params(), width=image.width, height=image.height, format=image.format, data=data,
        ))
    manifest = storage.join(dataset, "manifest.csv")
    table, _ = merged_manifest(manifest, [{k: row[k] for k in MANIFEST_COLUMNS} for row in rows], store=store)
    made = [uri for uri in files if not store.exists(uri)]
    try:
        for uri, data in files.items():
            store.write_bytes(uri, data)
        store.write_bytes(manifest, table)
    except BaseException:
        for uri in made:
            with contextlib.suppress(OSError, FakescopeError):  # the write's own error is the one to tell
                store.remove(uri)
        raise
    return manifest


def _stem(filename: str) -> str:
    stem = Path(filename).stem or "upload"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60]
