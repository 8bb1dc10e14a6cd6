"""A rerun's settings against those recorded for its `out` (the ledger's paid jobs, the manifest's rows): the same
sources under other settings are new jobs, paid again, and new ones would mix two sets in one folder."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from fakescope.errors import ConfigError
from fakescope.generate._encoding import SAVE_FORMATS
from fakescope.generate._plan import any_output, output_names
from fakescope.generate.ledger import JobRecord, Ledger
from fakescope.generate.openai_images import VARIATION_PROMPT, OpenAIImagesConfig, params_hash
from fakescope.io import storage
from fakescope.io.inputs import path_text

ROW_EXTRAS = ("usage", "upload", "crop")
"""Keys a manifest row's params add, per image, to its run's settings (`fakescope.generate._outputs`)."""
_CHOICES = ("pass the same options to resume that run, --new-settings to pay for a second set beside it, or use "
            "another --out")
OPTIONS = {"mode": "--mode", "model": "--model", "size": "--size", "quality": "--quality", "prompt": "--prompt",
           "mask": "--mask", "input_fidelity": "--input-fidelity", "format": "--format", "resize": "--resize-to-source"}
"""The settings that make a job's key, by the `generate openai` option that sets each."""


def paid_jobs(ledger: Path) -> list[JobRecord]:
    """The jobs the ledger at `ledger` records as paid (`JobRecord.paid`), read without claiming it; none where it does
    not exist."""
    if not ledger.is_file():
        return []
    with Ledger(ledger) as book:
        return [record for record in book.jobs() if record.paid]


def check_settings(paid: list[JobRecord], config: OpenAIImagesConfig, sources: Sequence[tuple[str, str, str | None]],
                   digests: Iterable[str] = ()) -> None:
    """Refuse a run of which a source was paid for only under other settings (a rerun missing an option).

    `paid`: `paid_jobs`; `sources`: `planned_sources`, an image known by its URI, a prompt by its sha256; `digests`:
    further sha256s to know sources by (the first image's, read already).

    Raises:
        ConfigError: naming the first such source, how many more there are, and the options that differ from the
            settings last paid for.
    """
    uris = _uris(sources)
    held: dict[str, list[JobRecord]] = {}
    for record in of_sources(paid, sources, digests, uris=uris):
        held.setdefault(record.source if record.source in uris else record.source_sha256, []).append(record)
    settings = (config.mode, config.model, config.params_hash())
    other = [records[-1] for records in held.values()
             if not any((record.mode, record.model, record.params_hash) == settings for record in records)]
    if not other:
        return
    last = other[0]
    more = f" (and {len(other) - 1} more source(s))" if len(other) > 1 else ""
    raise ConfigError(f"the ledger of this --out paid for {last.source}{more} with "
                      f"{_differs(_settings(last), last.params_hash, config)}: {_CHOICES}")


def of_sources(records: Iterable[JobRecord], sources: Sequence[tuple[str, str, str | None]],
               digests: Iterable[str] = (), *, uris: set[str] | None = None) -> list[JobRecord]:
    """The `records` of `sources` (`planned_sources`: an image known by its URI, a prompt by its sha256) or of
    `digests` (further sha256s to know sources by); `uris`: `sources`' URIs (`_uris`), where the caller has them."""
    uris = _uris(sources) if uris is None else uris
    digests = {*digests, *(digest for _, _, digest in sources if digest is not None)}
    return [record for record in records if record.source in uris or record.source_sha256 in digests]


def _uris(sources: Sequence[tuple[str, str, str | None]]) -> set[str]:
    """The URIs of `sources`' images, as the ledger records them."""
    return {path_text(source) for source, _, digest in sources if digest is None}


def check_recorded(paid: list[JobRecord], rows: Mapping[str, Mapping], config: OpenAIImagesConfig,
                   files: Iterable[str] = ()) -> None:
    """Refuse a run into an `out` whose recorded settings are all other than `config`'s, whatever its sources: new
    sources would mix two settings in one set (PNG and JPEG fakes by batch, a shortcut). Recorded: the settings of the
    ledger's `paid` jobs (`paid_jobs`), of `rows` (`out`'s manifest, `manifest_rows`) named as `generate openai`
    names its images (a run on another machine), and of the other `files` so named (`files_in`: images copied without
    their ledger or manifest), known by their names' parameters hash; a second set beside them is made with
    `new_settings`.

    Raises:
        ConfigError: naming the options that differ from the settings recorded last (where only a name knows them,
            those of this run's mode and model that give its hash, `--format` and `--resize-to-source`, else the hash).
    """
    recorded = [((record.mode, record.model, record.params_hash[:6]), _settings(record)) for record in paid]
    for uri, row in rows.items():
        if any_output(uri.rsplit("/", 1)[-1]) is not None and isinstance(row.get("params"), str) and row["params"]:
            params = {key: value for key, value in json.loads(row["params"]).items() if key not in ROW_EXTRAS}
            recorded.append(((params.get("mode"), row.get("model"), params_hash(params)[:6]),
                             {"model": row.get("model"), **params}))
    named: dict[tuple[str, str, str], dict | None] = {}
    for uri in files:
        if uri not in rows and (name := any_output(uri.rsplit("/", 1)[-1])) is not None:
            key = (name[2], name[1], name[3])  # mode, model, parameters hash
            if key not in named:  # once per settings: a folder holds thousands of images
                named[key] = _named(config, *key)
            recorded.append((key, named[key]))
    if not recorded or (config.mode, config.model, config.params_hash()[:6]) in {key for key, _ in recorded}:
        return
    (_, _, hashed), before = recorded[-1]
    raise ConfigError(f"this --out's images were made with {_differs(before, hashed, config)}: {_CHOICES}")


def _named(config: OpenAIImagesConfig, mode: str, model: str, hashed: str) -> dict | None:
    """The settings of an image named with `model`, `mode` and parameters hash `hashed`, where they are `config`'s but
    for `--format` and `--resize-to-source`; else None (unknown)."""
    for save_format, resize in itertools.product(SAVE_FORMATS, (False, True)):
        try:
            named = dataclasses.replace(config, model=model, mode=mode, output_format=save_format, resize_to_source=resize)
        except ConfigError:  # options that model or mode does not take
            continue
        if named.params_hash().startswith(hashed):
            return {"mode": mode, "model": model, **named.params()}
    return None


def _differs(before: dict | None, hashed: str, config: OpenAIImagesConfig) -> str:
    """What differs between recorded settings `before` (None where unknown, known by their hash `hashed` only) and
    `config`'s, as options: `--size 1536x1024; this run has --size 1024x1024`."""
    now = {"mode": config.mode, "model": config.model, **config.params()}
    keys = [key for key in OPTIONS if before is not None and before.get(key) != now.get(key)]
    keys = [key for key in keys if key in ("mode", "model")] or keys  # the other parameters follow from those
    if not keys:  # an older ledger's job that was never done: its parameters are not known
        return f"other parameters (hash {hashed[:6]}) than this run's"
    return (f"{', '.join(_option(key, before.get(key)) for key in keys)}; this run has "
            f"{', '.join(_option(key, now.get(key)) for key in keys)}")


def check_earlier_format(out: str, files: Iterable[str], config: OpenAIImagesConfig) -> None:
    """Refuse a run whose images `out` holds already (its `files`, `files_in`) saved as earlier versions saved them (the
    API's PNG, at its size), named by the same options otherwise: found by their names, so without a ledger or a
    manifest too (another machine, a wiped cache).

    Raises:
        ConfigError: in one line, naming the options that would resume that run.
    """
    earlier = dataclasses.replace(config, output_format="png", resize_to_source=False)
    if earlier.params_hash() == config.params_hash():
        return
    names = output_names(earlier)
    if any(names.search(uri.rsplit("/", 1)[-1]) for uri in files):
        raise ConfigError(f"{out} holds images made with these options and --format png, no --resize-to-source (as "
                          "versions before --format saved them): pass --format png to resume that run, --new-settings "
                          "to make this set beside it, or use another --out")


def check_stretched(out: str, files: Iterable[str], rows: Mapping[str, Mapping], config: OpenAIImagesConfig) -> None:
    """Refuse a dall-e-2 `--resize-to-source` run into an `out` holding images of its options that versions before
    `crop_box` stretched to their photo's aspect: not square, as each is now (resized to the square it was made from),
    under the same names, so a rerun would take them as made and mix the two in one set. Known by their manifest row's
    size (`rows`, `manifest_rows`), else by the image's header (another machine, no manifest).

    Raises:
        ConfigError: in one line, naming how many and the first.
    """
    if config.model != "dall-e-2" or not config.resize_to_source:
        return
    names = output_names(config)
    stretched = [uri for uri in files if names.search(uri.rsplit("/", 1)[-1]) and not _square(uri, rows.get(uri))]
    if stretched:
        raise ConfigError(f"{out} holds {len(stretched)} image(s) of these options stretched to their photo's aspect by a "
                          f"version before dall-e-2's were resized to the square they were made from (as "
                          f"{stretched[0].rsplit('/', 1)[-1]}): delete them to have them made again, paid again, or use "
                          "another --out")


def _square(uri: str, row: Mapping | None) -> bool:
    """Whether the image at `uri` is square: by its manifest `row`'s size, else its header (an unreadable one counts as
    square: the run makes it again)."""
    if row is not None and str(row.get("width", "")).isdigit() and str(row.get("height", "")).isdigit():
        return int(row["width"]) == int(row["height"])
    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            return image.width == image.height
    except (OSError, ValueError, Image.DecompressionBombError):
        return True


def _settings(record: JobRecord) -> dict | None:
    """The mode, model and parameters of `record`'s run: recorded when it was added, else in its manifest row."""
    params = record.params or (json.loads(record.row)["params"] if record.row else None)
    return {"mode": record.mode, "model": record.model, **json.loads(params)} if params else None


def _option(key: str, value: object) -> str:
    if key == "format":  # recorded only as `source`: none is `png`, what earlier versions saved
        return f"--format {value or 'png'}"
    if key == "resize":
        return OPTIONS[key] if value else f"no {OPTIONS[key]}"
    if value is None or (key == "prompt" and value == VARIATION_PROMPT):
        return f"no {OPTIONS[key]}"
    return f"{OPTIONS[key]} {shlex.quote(str(value))}"
