"""A paid run's jobs (one per billable image), the names their outputs get, and the plan counted before it starts."""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fakescope.errors import ImageLoadError, NoSuchFileError, NoSuchFolderError, StorageError
from fakescope.generate._sources import image_uris, read_prompts
from fakescope.generate.ledger import DONE, JobRecord, Ledger, job_key, spool_file
from fakescope.generate.manifest import output_name, source_stem
from fakescope.generate.openai_images import MODES, OpenAIImagesConfig
from fakescope.io import storage
from fakescope.io.image import load_image

OUTPUT_FORMATS = ("png", "jpg", "jpeg", "webp")
"""File extensions of the saved images: the API's answers' (png, jpeg, webp), and `jpg` of a JPEG source's."""


@dataclass(frozen=True)
class Job:
    """One billable image: the `index`-th output for one source."""

    key: str
    source: str
    source_sha256: str
    stem: str
    index: int
    payload: bytes | str
    """Source image bytes, or the prompt in `generate` mode."""


def planned_sources(src: str, out: str, config: OpenAIImagesConfig,
                    split: str | None = None) -> list[tuple[str, str, str | None]]:
    """(source, name stem, sha256) of each source of a run over `src`, listed, not read: a prompt's sha256 (of its
    text), None for an image."""
    src, out = storage.absolute(src), storage.absolute(out)
    if config.mode == "generate":
        return [(f"{src}#L{number}", f"prompt{number}", hashlib.sha256(prompt.encode()).hexdigest())
                for number, prompt in read_prompts(src)]
    return [(uri, source_stem(uri), None) for uri in image_uris(src, exclude=out, split=split)]


def planned(src: str, out: str, config: OpenAIImagesConfig, split: str | None = None,
            sources: list[tuple[str, str, str | None]] | None = None,
            files: dict[str, int | None] | None = None,
            found: dict[tuple[str, int | None], str | None] | None = None,
            spooled: Iterable[JobRecord] = ()) -> tuple[int, int, int]:
    """(sources, requests, made) of a run over `src`: its sources (prompts in `generate` mode, else images; `sources`
    where `planned_sources` listed them already), the requests it may send at most (`sources * config.n` less `made`;
    copies are skipped too), and how many of those images `out` holds already (its `files`, where `files_in` listed
    them already), known by their names: a prompt's number, hash and image index; an image source's name stem and
    image index only (so one replaced by another of its name counts as made: a guess, not a bound). A damaged one
    (`damage`: empty, cut short; kept in `found` for the run, `known_damage`) is not made: the run makes it again. Nor
    is one whose answer the ledger parked (`spooled`: its jobs whose parked answer the run can write, as a run killed
    before its output was renamed into place leaves them), yet it is no request: the run writes it from the spool, unpaid."""
    sources = planned_sources(src, out, config, split) if sources is None else sources
    files = files_in(storage.absolute(out)) if files is None else files
    names, found = output_names(config), {} if found is None else found
    generated = config.mode == "generate"
    held = Counter((match[1], match[2] if generated else None, int(match[6]))
                   for uri, size in files.items()
                   if (match := names.search(uri.rsplit("/", 1)[-1])) and known_damage(uri, size, found) is None)
    wanted = Counter((_cut_stem(stem, config, index), digest and digest[:8], index)
                     for _, stem, digest in sources for index in range(config.n))
    stems = {source: stem for source, stem, _ in sources}  # `spooled` holds jobs of these sources and settings alone
    parked = Counter((_cut_stem(stems[record.source], config, record.index),
                      record.source_sha256[:8] if generated else None, record.index) for record in spooled)
    made = sum(min(count, held[key]) for key, count in wanted.items())
    answered = sum(min(count - min(count, held[key]), parked[key]) for key, count in wanted.items())
    return len(sources), len(sources) * config.n - made - answered, made


def spooled(ledger: Path, records: Iterable[JobRecord], sources: list[tuple[str, str, str | None]],
            config: OpenAIImagesConfig) -> list[JobRecord]:
    """The jobs of `records` of `config`'s settings and of `sources` (`planned_sources`) whose answer the ledger at
    `ledger` parked for the run to write unpaid (`planned`'s `spooled`), read without opening the ledger: the parked
    file decodes as an image (the run drops one that does not, and pays for the job again) and, for an image source, the
    file at its URI is still the one sent (read, one per parked answer: one replaced since is another job, paid)."""
    listed, settings = {source for source, _, _ in sources}, (config.model, config.mode, config.params_hash())
    kept = []
    for record in records:
        path = spool_file(ledger, record.key)
        if (record.state == DONE or record.source not in listed or (record.model, record.mode, record.params_hash) != settings
                or not path.is_file()):
            continue
        try:
            load_image(path.read_bytes(), keep_bytes=False)
            if (config.mode != "generate"
                    and hashlib.sha256(storage.read_bytes(record.source)).hexdigest() != record.source_sha256):
                continue
        except (OSError, ImageLoadError, StorageError):  # as the run finds it: not written from, paid
            continue
        kept.append(record)
    return kept


def jobs(sources: Iterator[tuple[str, str, str, bytes | str]], config: OpenAIImagesConfig, book: Ledger) -> Iterator[Job]:
    """Register and yield each source's `config.n` jobs; a byte-identical copy of an earlier source (the same
    images) yields none."""
    params, params_hash, seen = config.params(), config.params_hash(), set()
    for source, stem, digest, payload in sources:
        for index in range(config.n):
            key = job_key(digest, config.mode, config.model, params_hash, index)
            if key in seen:
                continue
            seen.add(key)
            book.add(key, source, digest, config.mode, config.model, params_hash, index, params)
            yield Job(key, source, digest, stem, index, payload)


def output_uri(job: Job, out: str, config: OpenAIImagesConfig, extension: str) -> str:
    return storage.join(out, output_name(job.stem, _name_tail(config, job.source_sha256[:8], job.index, extension)))


def _name_tail(config: OpenAIImagesConfig, sha8: str, index: int, extension: str) -> str:
    """What follows a source's stem in an output's name: `-<sha256[:8]>-<model>-<mode>-<params hash[:6]>-<index>.<ext>`."""
    return f"-{sha8}-{config.model}-{config.mode}-{config.params_hash()[:6]}-{index}.{extension}"


def _cut_stem(stem: str, config: OpenAIImagesConfig, index: int) -> str:
    """`stem` as a PNG output's name holds it (cut to fit, as `output_uri` cuts it)."""
    tail = _name_tail(config, "0" * 8, index, "png")
    return output_name(stem, tail).removesuffix(tail)


def output_names(config: OpenAIImagesConfig | None = None) -> re.Pattern:
    """Matches the names `output_uri` gives `config`'s outputs (any model's and parameters' without one); groups:
    stem, sha256[:8], model, mode, params hash[:6], index."""
    model, mode, params = ((re.escape(config.model), config.mode, config.params_hash()[:6]) if config else
                           (".+", "|".join(MODES), "[0-9a-f]{6}"))
    return re.compile(rf"(.*)-([0-9a-f]{{8}})-({model})-({mode})-({params})-(\d+)\.(?:{'|'.join(OUTPUT_FORMATS)})$")


_ANY_OUTPUT = output_names()
"""`output_names` of any model and parameters, built once: `any_output` runs on every file of an output folder."""


def any_output(name: str) -> tuple[str, str, str, str, int] | None:
    """(sha256[:8], model, mode, params hash[:6], index) of an output's name, of any model and parameters; else None."""
    match = _ANY_OUTPUT.search(name)
    return (match[2], match[3], match[4], match[5], int(match[6])) if match else None


def files_in(out: str) -> dict[str, int | None]:
    """The files directly in `out` (one paged listing, asking nothing before it), each with the size the listing gave
    (`storage.list_sizes`; None for a local file or a Drive shortcut); none where `out` does not exist yet."""
    try:
        return dict(storage.list_sizes(out, recursive=False))
    except NoSuchFolderError:
        return {}


def known_damage(uri: str, size: int | None, found: dict[tuple[str, int | None], str | None]) -> str | None:
    """`damage(uri, size)`, checked once: kept in `found` by (uri, listed size), so a run takes its plan's finding for a
    file listed alike (`Made` leaves out a damaged local one's: read again, it is whole where its copy ended since)."""
    if (uri, size) not in found:
        found[uri, size] = damage(uri, size)
    return found[uri, size]


def damage(uri: str, size: int | None = None) -> str | None:
    """What is wrong with the image file `uri`, known without reading it whole: `empty` (an object store's by its size:
    `size`, as its listing gave it, else asked, one request), or, for a local one, by its first and last bytes, not
    decoded, `cut short` (a PNG without its IEND chunk, a JPEG without its end marker, a WebP shorter than its header
    says, such as a half-copied file); None where it looks whole. A run makes a damaged one again, and its plan counts it
    as a request (`planned`)."""
    if storage.is_remote(uri):  # an upload is whole or absent, yet may be of no bytes
        try:
            return "empty" if (storage.size(uri) if size is None else size) == 0 else None
        except NoSuchFileError as exc:  # listed, yet gone: deleted since, or a Drive shortcut whose target is
            return f"gone ({exc.reason})"
    try:
        with open(uri.removeprefix("file://"), "rb") as handle:
            head = handle.read(12)
            size = handle.seek(0, io.SEEK_END)
            handle.seek(max(size - 12, 0))
            tail = handle.read()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not size:
        return "empty"
    whole = {b"\x89PNG": tail.endswith(b"IEND\xaeB`\x82"), b"\xff\xd8\xff": tail.endswith(b"\xff\xd9"),
             b"RIFF": head[8:12] == b"WEBP" and int.from_bytes(head[4:8], "little") + 8 <= size}
    return next((None if ok else "cut short" for magic, ok in whole.items() if head.startswith(magic)),
                "not a PNG, JPEG or WebP image")
