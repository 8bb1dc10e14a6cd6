"""Run a paid generation over many sources: bounded concurrency, a resumable ledger, a budget.

Example:
    >>> from fakescope.generate import OpenAIImagesConfig, run_openai
    >>> report = run_openai("photos/", "fakes/", OpenAIImagesConfig(mode="variation", n=2, price_per_image=0.05),
    ...                     max_spend=1.0)  # doctest: +SKIP
    >>> report.done, report.spent, report.tokens  # doctest: +SKIP
    (4, 0.2, 1696)
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from fakescope.cache import cache_dir
from fakescope.errors import ConfigError, FakescopeError, ImageLoadError, StorageUnavailableError
from fakescope.generate._sources import image_uris
from fakescope.generate.lease import LEASE_SECONDS, Lease
from fakescope.generate.ledger import DONE, RUNNING, JobRecord, Ledger, job_key
from fakescope.generate.manifest import (
    MANIFEST_NAME, append_manifest, manifest_row, manifest_rows, output_name, source_stem,
)
from fakescope.generate.openai_images import LostImageError, OpenAIImagesConfig, make_client, request_image
from fakescope.generate.openai_models import check_served
from fakescope.io import storage
from fakescope.io.image import LoadedImage, load_image
from fakescope.io.inputs import path_text

log = logging.getLogger(__name__)

LEDGER_NAME = ".fakescope-ledger.sqlite"
OUTPUT_FORMATS = ("png", "jpeg", "webp")
"""File extensions of the images the Images API answers with."""


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


@dataclass
class RunReport:
    """What one run did. `stopped` is None, `budget` or `interrupted`."""

    done: int = 0
    skipped: int = 0
    recovered: int = 0
    failed: int = 0
    unresolved: int = 0
    missing: int = 0
    """Jobs the ledger records as done whose output `out` no longer holds (deleted): they are made again, paid again."""
    spent: float = 0.0
    spent_before: float = 0.0
    """Estimated spend of earlier runs: what the ledger holds (jobs recovered from the spool included), plus
    `elsewhere` images at this run's price."""
    elsewhere: int = 0
    """Images `out` held at the start, made with this run's model and parameters (by their names), that this ledger
    did not pay for: another machine's (or a lost ledger's) runs. Counted in `spent_before`; a job that finds its image
    among them is done, unpaid, and the ledger records it at this run's price."""
    stopped: str | None = None
    manifest: str | None = None
    ledger: str | None = None
    tokens: int | None = None
    """Total tokens the API reported for this run's done and recovered images (GPT image models; each image's `usage` is
    in its params); None where none reported usage (dall-e models never do)."""


def default_ledger_path(out: str) -> Path:
    """`<out>/.fakescope-ledger.sqlite` for a local output folder, else one per URI in `cache_dir("ledgers")`.

    `s3://b/fakes` and `s3://b/fakes/` name the same folder, so they share a ledger (one that an earlier
    version made for `s3://b/fakes/`, hashing the URI as typed, is still used where it is the one that exists).
    """
    if not storage.is_remote(out):
        return Path(out.removeprefix("file://")) / LEDGER_NAME
    folder = cache_dir("ledgers")
    base = out.rstrip("/")
    paths = [folder / f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}.sqlite" for uri in (base, base + "/")]
    return next((path for path in paths if path.exists()), paths[0])


def run_openai(
    src: str,
    out: str,
    config: OpenAIImagesConfig,
    *,
    ledger: str | os.PathLike | None = None,
    concurrency: int = 4,
    max_images: int | None = None,
    max_spend: float | None = None,
    max_total_spend: float | None = None,
    split: str | None = None,
    retry_interrupted: bool = True,
    manifest_name: str = MANIFEST_NAME,
    manifest_every: float = 60.0,
    lease_seconds: float = LEASE_SECONDS,
    client=None,
    confirm: Callable[[int, int, int], None] | None = None,
) -> RunReport:
    """Make `config.n` images per source with the OpenAI Images API, resumably.

    Args:
        src: Image file or folder (any storage URI), a local glob, or a dataset manifest (`.csv`/`.parquet`) whose `real`
            rows are the sources; in `generate` mode a text file of prompts, one per line.
        out: Output folder (any storage URI); the manifest is merged into `out/<manifest_name>`.
        config: Mode, model and parameters.
        ledger: SQLite ledger path; default `default_ledger_path(out)`. Reuse it to resume. Without it (another
            machine, a wiped cache) a job whose image `out` holds is still done for free: its row comes from
            `out`'s manifest, else from the image. Two runs into one `s3://` or `gdrive://` `out` from two ledgers are
            kept apart by its lease (`fakescope.generate.lease`, which says how far Drive's can be trusted).
        concurrency: Requests in flight at once.
        max_images: Stop after this many new images in this run.
        max_spend: Stop before the estimated spend of this run (`config.price()` per image billed, an image
            lost after billing, such as a URL that could not be fetched, or parked because its output could
            not be written, included) exceeds this (USD).
        max_total_spend: Stop before the estimated spend of all runs into `out` exceeds this (USD): the cost the
            ledger's jobs record, plus the images `out` holds that were made with this model and these parameters
            but not paid through this ledger (another machine's runs; `RunReport.elsewhere`) at this run's price,
            plus this run's. Re-running with the same value spends nothing more. Jobs done without a budget at a
            price the table lacks are recorded at 0; images of other models or parameters in `out` are not counted.
        split: Take only this split's real rows of a manifest `src`.
        retry_interrupted: Resend jobs a crash left in flight without a spooled response
            (at-least-once); False skips them (at-most-once). See `fakescope.generate.ledger`.
        manifest_name: `manifest.csv` or `manifest.parquet`.
        manifest_every: Seconds between writes of the manifest while images are made (it is also written at the
            end), so a killed run leaves most of its rows for a rerun elsewhere to reuse.
        lease_seconds: How long an `s3://` or `gdrive://` `out`'s lease lasts unrenewed (a run killed elsewhere frees it
            this late).
        client: An `openai.OpenAI` client; default `make_client()`.
        confirm: Called with `planned(src, out, config, split)`: (sources, requests, made), the number of sources
            (prompts in `generate` mode), of requests the run may send at most and of images `out` holds already,
            once every option and `src` are checked and before anything is created or sent; raise from it to refuse
            the run. Counting lists `src` once more (reads its prompts file) and `out`.

    Returns:
        A `RunReport`; Ctrl-C finishes the requests in flight, writes the manifest and returns
        with `stopped="interrupted"` (one before the first job raises `KeyboardInterrupt`, `out`'s lease and the ledger
        let go of either way). A job the ledger records as done is skipped only while `out` holds its output
        (one listing of `out`, not a request per image); one deleted since is made, and paid for, again (`missing`).

    Raises:
        ConfigError, StorageError: `src` is missing or gives no source (no image; in `generate` mode, not UTF-8 text or
            no prompt): raised before anything is made under `out` or the cache.
        StorageUnavailableError: `out` became unreachable; the run stops paying, and a rerun writes the
            images it had paid for from the spool without paying again.
        StorageError: another run holds `out`'s lease, or took it over from this one (which then stops paying).
    """
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if split is not None and config.mode == "generate":
        raise ConfigError("a split can only be taken from a dataset manifest of images, not from prompts")
    src, out = storage.absolute(src), storage.absolute(out)  # the manifest's uris work from any folder
    budget = _Budget.of(config, max_images, max_spend, max_total_spend)
    client = client or make_client()
    check_served(config.model, client.base_url)  # a retired model on api.openai.com: one line, before any upload
    sources = _sources(src, out, config, split)
    first = next(sources)  # a bad src fails here, before anything is made under `out` or the cache
    if confirm is not None:
        confirm(*planned(src, out, config, split))
    report = RunReport(ledger=str(ledger or default_ledger_path(out)))
    lease = Lease(out, lease_seconds)
    with contextlib.ExitStack() as held:  # a Ctrl-C anywhere from here on still lets go of the lease and the ledger
        held.callback(lease.release)
        lease.acquire()
        book = held.enter_context(Ledger(report.ledger, claim=True))
        run = _Run(client, out, config, book, lease, report, budget, concurrency=concurrency,
                   retry_interrupted=retry_interrupted, manifest_name=manifest_name, manifest_every=manifest_every)
        run.run(itertools.chain([first], sources))
    if report.missing:
        log.warning("%d image(s) the ledger records as made were no longer in %s: they are made (and paid for) again",
                    report.missing, out)
    return report


@dataclass(frozen=True)
class _Budget:
    """A run's limits, and the price each image it pays for is counted at."""

    price: float
    max_images: int | None
    max_spend: float | None
    max_total_spend: float | None

    @classmethod
    def of(cls, config: OpenAIImagesConfig, max_images: int | None, max_spend: float | None,
           max_total_spend: float | None) -> _Budget:
        """A capped spend needs `config.price()` (ConfigError without one); uncapped, an unknown price counts as 0."""
        capped = max_spend is not None or max_total_spend is not None
        price = config.price() if capped else (config.known_price() or 0.0)
        return cls(price, max_images, max_spend, max_total_spend)

    def exceeded(self, report: RunReport, in_flight: int) -> bool:
        """Whether one more request, beside the `in_flight` ones, would pass a limit."""
        if self.max_images is not None and report.done + in_flight + 1 > self.max_images:
            return True
        spend = report.spent + (in_flight + 1) * self.price
        if self.max_spend is not None and spend > self.max_spend + 1e-9:
            return True
        return self.max_total_spend is not None and report.spent_before + spend > self.max_total_spend + 1e-9


class _Run:
    """The request loop of one run, with `out`'s lease and the ledger held: each job is settled without a request
    where it can be (done before, spooled, or made elsewhere), else sent, at most `concurrency` in flight."""

    def __init__(self, client, out: str, config: OpenAIImagesConfig, book: Ledger, lease: Lease, report: RunReport,
                 budget: _Budget, *, concurrency: int, retry_interrupted: bool, manifest_name: str, manifest_every: float):
        self.client, self.out, self.config, self.book, self.lease = client, out, config, book, lease
        self.report, self.budget, self.price = report, budget, budget.price
        self.concurrency, self.retry_interrupted = concurrency, retry_interrupted
        self.manifest_name, self.manifest_every = manifest_name, manifest_every
        self.made = _Made(out, manifest_name)
        self.paid_elsewhere = self.made.paid_elsewhere(book, config)
        report.elsewhere = len(self.paid_elsewhere)
        report.spent_before = book.spent() + report.elsewhere * self.price
        self.in_flight: dict[Future, Job] = {}
        self.flush_at, self.flushed = time.monotonic() + manifest_every, 0
        """When the manifest is next written while images are made, and how many were done at its last write."""

    def run(self, sources: Iterator[tuple[str, str, str, bytes | str]]) -> None:
        """Settle or send every job of `sources` until a limit stops it; Ctrl-C finishes the requests in flight.
        The manifest is written at the end whatever happened."""
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="fakescope-openai")
        try:
            for job in _jobs(sources, self.config, self.book):
                if self._settled_unpaid(job):
                    continue
                if self.budget.exceeded(self.report, len(self.in_flight)):
                    self.report.stopped = "budget"
                    break
                self._send(executor, job)
            self._drain()
        except KeyboardInterrupt:
            self.report.stopped = "interrupted"
            self._drain()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            self._write_manifest()  # one that cannot be written still lets go (in `run_openai`)

    def _settled_unpaid(self, job: Job) -> bool:
        """Settle `job` without a request where none is needed or wanted; False where it is to be sent."""
        record = self.book.get(job.key)
        if record.state == DONE and self.made.holds(record.output):
            self.report.skipped += 1
            return True
        self.report.missing += record.state == DONE  # deleted from out since: made again
        if (loaded := _spooled(self.book, job.key)) is not None:  # paid by a run that crashed or could not write it
            self._recover(job, record, loaded)
            return True
        if (found := self.made.row(job, self.config)) is not None:  # made by a run elsewhere, whose ledger this is not
            cost = self.price if found["uri"] in self.paid_elsewhere else 0.0
            self.book.mark_done(job.key, found["uri"], cost, found)
            self.report.skipped += 1
            return True
        if record.state == RUNNING and not self.retry_interrupted:
            self.report.unresolved += 1
            return True
        return False

    def _recover(self, job: Job, record: JobRecord, loaded: LoadedImage) -> None:
        """Finish `job` from its spooled answer, charged now only where a crash (not a failed write) left it."""
        owed = self.price if record.state == RUNNING else 0.0  # a failed write was charged when it failed
        self.report.spent_before += owed
        usage = json.loads(record.usage) if record.usage else None
        try:
            uri, row = _finish(job, loaded, self.out, self.config, usage)
        except FakescopeError as exc:
            self._fail(job, exc, charge=owed)
            return
        self.book.mark_done(job.key, uri, owed, row)
        self.report.recovered += 1
        _count_tokens(self.report, row)

    def _send(self, executor: ThreadPoolExecutor, job: Job) -> None:
        """Send `job` once a slot is free (the manifest written when due, the lease checked first)."""
        while len(self.in_flight) >= self.concurrency:
            self._settle()
        made = self.report.done + self.report.recovered
        if time.monotonic() >= self.flush_at and made > self.flushed:
            self._write_manifest()
            self.flush_at, self.flushed = time.monotonic() + self.manifest_every, made
        self.lease.check()
        self.book.mark_running(job.key)
        self.in_flight[executor.submit(_execute, self.client, job, self.out, self.config, self.book)] = job

    def _drain(self) -> None:
        while self.in_flight:
            self._settle()

    def _settle(self) -> None:
        """Wait for a request to finish and record every finished one.

        Raises:
            ConfigError: no later request can succeed (the key, the model, the account).
            StorageUnavailableError: the output storage, not an image, failed: pay for no more.
        """
        finished, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        outages = [outage for future in finished if (outage := self._record(future)) is not None]
        if outages:
            raise outages[-1]

    def _record(self, future: Future) -> StorageUnavailableError | None:
        """Record one finished request in the ledger and the report; return the outage that failed it, if one did."""
        job = self.in_flight.pop(future)
        try:
            uri, row = future.result()
        except ConfigError:
            raise
        except LostImageError as exc:  # billed all the same: it counts against the budgets
            self._fail(job, exc, cost=self.price)
            return None
        except Exception as exc:  # recorded per job; the batch goes on
            paid = self.book.spool_path(job.key).is_file()  # an output that could not be written: parked, billed
            outage = isinstance(exc, StorageUnavailableError)  # raised by `_settle`, so not warned of here
            self._fail(job, exc, cost=self.price if paid else 0.0, warn=not outage)
            return exc if outage else None
        self.book.mark_done(job.key, uri, self.price, row)
        self.report.done += 1
        _count_tokens(self.report, row)
        self.report.spent += self.price
        return None

    def _fail(self, job: Job, exc: Exception, cost: float = 0.0, charge: float = 0.0, warn: bool = True) -> None:
        """Record a failed job; `cost` was billed in this run, `charge` in an earlier one (both go to the ledger)."""
        self.book.mark_failed(job.key, f"{type(exc).__name__}: {exc}", cost + charge)
        self.report.failed += 1
        self.report.spent += cost
        if warn:
            log.warning("job %s failed: %s", job.stem, exc)

    def _write_manifest(self) -> None:
        """Merge the rows of every done job into `out`'s manifest."""
        rows = [json.loads(record.row) for record in self.book.jobs(DONE) if record.row]
        if rows:
            self.report.manifest = storage.join(self.out, self.manifest_name)
            append_manifest(self.report.manifest, rows)


def _count_tokens(report: RunReport, row: dict) -> None:
    usage = json.loads(row["params"]).get("usage") or {}
    if "total_tokens" in usage:
        report.tokens = (report.tokens or 0) + usage["total_tokens"]


def planned(src: str, out: str, config: OpenAIImagesConfig, split: str | None = None) -> tuple[int, int, int]:
    """(sources, requests, made) of a run over `src`: its sources (prompts in `generate` mode, else images, listed, not
    read), the requests it may send at most (`sources * config.n` less `made`; copies are skipped too), and how many of
    those images `out` holds already, known by their names: a prompt's number, hash and image index; an image source's
    name stem and image index only (so one replaced by another of its name counts as made: a guess, not a bound)."""
    src, out = storage.absolute(src), storage.absolute(out)
    if config.mode == "generate":
        stems = [(f"prompt{number}", hashlib.sha256(prompt.encode()).hexdigest()[:8]) for number, prompt in _prompts(src)]
    else:
        stems = [(source_stem(uri), None) for uri in image_uris(src, exclude=out, split=split)]
    names = _output_names(config)
    held = Counter((match[1], match[2] if config.mode == "generate" else None, int(match[3]))
                   for uri in _listing(out) if (match := names.search(uri.rsplit("/", 1)[-1])))
    wanted = Counter((_cut_stem(stem, config, index), digest, index) for stem, digest in stems for index in range(config.n))
    made = sum(min(count, held[key]) for key, count in wanted.items())
    return len(stems), len(stems) * config.n - made, made


def _jobs(sources: Iterator[tuple[str, str, str, bytes | str]], config: OpenAIImagesConfig, book: Ledger) -> Iterator[Job]:
    """Register and yield each source's `config.n` jobs; a byte-identical copy of an earlier source (the same
    images) yields none."""
    params_hash, seen = config.params_hash(), set()
    for source, stem, digest, payload in sources:
        for index in range(config.n):
            key = job_key(digest, config.mode, config.model, params_hash, index)
            if key in seen:
                continue
            seen.add(key)
            book.add(key, source, digest, config.mode, config.model, params_hash, index)
            yield Job(key, source, digest, stem, index, payload)


def _sources(
    src: str, out: str, config: OpenAIImagesConfig, split: str | None
) -> Iterator[tuple[str, str, str, bytes | str]]:
    """Yield (source URI, name stem, sha256, payload) for every source, lazily."""
    if config.mode == "generate":
        for number, prompt in _prompts(src):
            yield f"{src}#L{number}", f"prompt{number}", hashlib.sha256(prompt.encode()).hexdigest(), prompt
        return
    for uri in image_uris(src, exclude=out, split=split):
        data = storage.read_bytes(uri)
        yield uri, source_stem(uri), hashlib.sha256(data).hexdigest(), data


def _prompts(src: str) -> list[tuple[int, str]]:
    """(line number, prompt) for each non-blank line of a prompts file."""
    try:
        lines = storage.read_bytes(src).decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:  # an image given where --mode generate takes its prompts
        raise ConfigError(f"{path_text(src)}: not a prompts file (UTF-8 text, one prompt per line): byte "
                          f"{exc.object[exc.start]:#04x} at {exc.start} is not UTF-8") from None
    prompts = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
    if not prompts:
        raise ConfigError(f"{path_text(src)}: no prompt in it (UTF-8 text, one prompt per line)")
    return prompts


def _execute(client, job: Job, out: str, config: OpenAIImagesConfig, book: Ledger) -> tuple[str, dict]:
    if config.mode == "generate":
        data, usage = request_image(client, config, prompt=job.payload)
    else:
        data, usage = request_image(client, config, source=job.payload)
    try:
        loaded = load_image(data)
    except ImageLoadError as exc:
        raise LostImageError(f"the API answered with an unreadable image: {exc}") from exc
    book.write_spool(job.key, data)  # from here on the paid image survives a crash or a failed write
    book.record_usage(job.key, usage)
    return _finish(job, loaded, out, config, usage)


def _spooled(book: Ledger, key: str) -> LoadedImage | None:
    """The parked answer of a job that is not done, or None.

    An unreadable one (parked by a version that spooled before decoding) is dropped: the job is sent again.
    """
    data = book.read_spool(key)
    if data is None:
        return None
    try:
        return load_image(data)
    except ImageLoadError:
        book.spool_path(key).unlink(missing_ok=True)
        return None


def _finish(job: Job, loaded: LoadedImage, out: str, config: OpenAIImagesConfig, usage: dict | None) -> tuple[str, dict]:
    """Write the output image and build its manifest row, `usage` in its params (idempotent: same job, same URI)."""
    uri = _output_uri(job, out, config, loaded.format.lower())
    storage.write_bytes(uri, loaded.data)
    return uri, _row(job, uri, loaded, config, usage)


def _output_uri(job: Job, out: str, config: OpenAIImagesConfig, extension: str) -> str:
    return storage.join(out, output_name(job.stem, _name_tail(config, job.source_sha256[:8], job.index, extension)))


def _name_tail(config: OpenAIImagesConfig, sha8: str, index: int, extension: str) -> str:
    """What follows a source's stem in an output's name: `-<sha256[:8]>-<model>-<mode>-<params hash[:6]>-<index>.<ext>`."""
    return f"-{sha8}-{config.model}-{config.mode}-{config.params_hash()[:6]}-{index}.{extension}"


def _cut_stem(stem: str, config: OpenAIImagesConfig, index: int) -> str:
    """`stem` as a PNG output's name holds it (cut to fit, as `_output_uri` cuts it)."""
    tail = _name_tail(config, "0" * 8, index, "png")
    return output_name(stem, tail).removesuffix(tail)


def _output_names(config: OpenAIImagesConfig) -> re.Pattern:
    """Matches the names `_output_uri` gives `config`'s outputs; groups: stem, sha256[:8], index."""
    tail = re.escape(f"-{config.model}-{config.mode}-{config.params_hash()[:6]}-")
    return re.compile(rf"(.*)-([0-9a-f]{{8}}){tail}(\d+)\.(?:{'|'.join(OUTPUT_FORMATS)})$")


def _listing(out: str) -> list[str]:
    """The files directly in `out` (one paged listing); none where it does not exist yet."""
    return list(storage.list_files(out, recursive=False)) if storage.exists(out) else []


def _row(job: Job, uri: str, loaded: LoadedImage, config: OpenAIImagesConfig, usage: dict | None = None) -> dict:
    return manifest_row(
        uri=uri, source_uri=job.source, source_sha256=job.source_sha256, generator=config.model, model=config.model,
        params={**config.params(), **({"usage": usage} if usage else {})},
        width=loaded.width, height=loaded.height, format=loaded.format, data=loaded.data,
    )


class _Made:
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
            self._files = set(_listing(self.out))
        return self._files

    def paid_elsewhere(self, book: Ledger, config: OpenAIImagesConfig) -> set[str]:
        """The images of `config`'s jobs `out` holds that `book` did not pay for (nor has in flight)."""
        params_hash, names = config.params_hash(), _output_names(config)
        paid = {(record.source_sha256[:8], record.index) for record in book.jobs()
                if (record.model, record.mode, record.params_hash) == (config.model, config.mode, params_hash)
                and (record.state in (DONE, RUNNING) or record.cost > 0)}
        found = ((uri, names.search(uri.rsplit("/", 1)[-1])) for uri in self.files)
        return {uri for uri, match in found if match and (match[2], int(match[3])) not in paid}

    def holds(self, uri: str | None) -> bool:
        """Whether the output of a done job still exists: in the listing, else (an output outside `out`) asked for itself."""
        return uri is not None and (uri in self.files or storage.exists(uri))

    def row(self, job: Job, config: OpenAIImagesConfig) -> dict | None:
        """The manifest row of `job`'s output if `out` holds it, its manifest's row reused, else read; else None."""
        files = self.files  # listed first: an unreachable `out` fails naming itself, not its manifest
        if self.rows is None:
            self.rows = manifest_rows(self.manifest)
        for uri in (_output_uri(job, self.out, config, extension) for extension in OUTPUT_FORMATS):
            if uri not in files:
                continue
            if (row := self.rows.get(uri)) and row.get("pair_id") == job.source_sha256:
                return {**row, "source_uri": path_text(job.source)}
            try:
                return _row(job, uri, load_image(storage.read_bytes(uri)), config)
            except ImageLoadError as exc:
                log.warning("making %s again: the existing file is unreadable (%s)", uri, exc)
        return None
