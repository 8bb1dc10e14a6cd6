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
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fakescope.cache import cache_dir
from fakescope.errors import ConfigError
from fakescope.generate._budget import Budget, RunReport
from fakescope.generate._loop import Run
from fakescope.generate._outputs import done_elsewhere
from fakescope.generate._plan import files_in, planned, planned_sources, spooled
from fakescope.generate._settings import (
    check_earlier_format,
    check_recorded,
    check_settings,
    check_stretched,
    of_sources,
    paid_jobs,
)
from fakescope.generate._sources import read_sources
from fakescope.generate.lease import LEASE_SECONDS, Lease
from fakescope.generate.ledger import Ledger
from fakescope.generate.manifest import MANIFEST_NAME, check_manifest_name, manifest_rows
from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
from fakescope.generate.openai_models import check_served
from fakescope.io import storage
from fakescope.io._local import remove_stale_temporaries

if TYPE_CHECKING:  # annotations only: no import cost
    from openai import OpenAI

log = logging.getLogger(__name__)

LEDGER_NAME = ".fakescope-ledger.sqlite"
MAX_WAIT = 900.0
"""The most seconds a run pauses for rate limits by default (`run_openai`'s `max_wait`)."""
STALE_PART_S = 3600.0
"""How old (unchanged) a temporary output file in a local `out` is before a run removes it as a killed run's."""
__all__ = ["LEDGER_NAME", "MAX_WAIT", "RunReport", "default_ledger_path", "planned", "run_openai"]


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
    client: OpenAI | Callable[[], OpenAI] | None = None,
    confirm: Callable[[int, int, int], None] | None = None,
    new_settings: bool = False,
    max_wait: float = MAX_WAIT,
) -> RunReport:
    """Make `config.n` images per source with the OpenAI Images API, resumably.

    Args:
        src: Image file or folder (any storage URI), a local glob, or a dataset manifest (`.csv`/`.parquet`) whose `real`
            rows are the sources; in `generate` mode a text file of prompts, one per line.
        out: Output folder (any storage URI); the manifest is merged into `out/<manifest_name>`. In a local one, the
            hidden temporary files a killed run's writes left are removed once unchanged for `STALE_PART_S`.
        config: Mode, model and parameters.
        ledger: SQLite ledger path; default `default_ledger_path(out)`. Reuse it to resume. Without it (another
            machine, a wiped cache) a job whose image `out` holds is still done for free: its row comes from
            `out`'s manifest, else from the image. Two runs into one `s3://` or `gdrive://` `out` from two ledgers are
            kept apart by its lease (`fakescope.generate.lease`, which says how far Drive's can be trusted).
        concurrency: Requests in flight at once.
        max_images: Stop after this many new images in this run.
        max_spend: Stop before the estimated spend of this run (`config.price()` per image billed, an image
            lost after billing, such as a URL that could not be fetched, or parked because its output could
            not be written, and a request whose answer timed out or broke off (`RunReport.maybe`) included) exceeds
            this (USD).
        max_total_spend: Stop before the estimated spend of all runs into `out` exceeds this (USD): the cost the
            ledger's jobs record (requests whose answer never came, which may have been billed, included:
            `RunReport.maybe_before`), plus, at this run's price, the images `out` holds (of any model and parameters,
            known by their names) not paid through this ledger (another machine's runs; `RunReport.elsewhere`) and
            the jobs the ledger records as done at no cost without a price (made without a budget at a price the table
            lacks, or by an older version; `RunReport.unpriced`; not those made at `price_per_image=0`, which are
            free), plus this run's. Re-running with the same value spends nothing
            more.
        split: Take only this split's real rows of a manifest `src`.
        retry_interrupted: Resend jobs a crash left in flight without a spooled response
            (at-least-once); False skips them (at-most-once). See `fakescope.generate.ledger`.
        manifest_name: `manifest.csv` or `manifest.parquet`.
        manifest_every: Seconds between writes of the manifest while images are made (it is also written at the
            end), so a killed run leaves most of its rows for a rerun elsewhere to reuse.
        lease_seconds: How long an `s3://` or `gdrive://` `out`'s lease lasts unrenewed (a run killed elsewhere frees it
            this late).
        client: An `openai.OpenAI` client, or a function making one, called once `src`, `out` and the settings are
            checked (a missing key is said after a wrong `src`: fixing the key first would not make the run); default
            `make_client()`.
        confirm: Called with `planned(src, out, config, split)`: (sources, requests, made), the number of sources
            (prompts in `generate` mode), of requests the run may send at most and of images `out` holds already,
            once every option, `src` and the settings are checked and before anything is created or sent; raise from it
            to refuse the run. Counting lists `src` once more (reads its prompts file; an image source whose answer the
            ledger parked, `_plan.spooled`); `out`'s listing is the checks', and
            what it finds of `out`'s images (whole or damaged) the run's.
        new_settings: Make images under other settings (mode, model, parameters) than those recorded for `out`: a
            second set beside the first. Without it such a run, as a rerun that left out an option (`--prompt`) would
            be, is refused before `confirm` is called, naming the options that differ: where the ledger paid for any of
            its sources under other settings only (checked on every source: an image known by its URI, or the first
            one's sha256, a prompt by its text; listing `src` once more where the ledger paid for any), and whatever its
            sources where none of the ledger's paid jobs, of `out`'s manifest rows nor of its images' names (images
            copied without either) has its settings (new sources
            would mix two settings in one set, such as PNG and JPEG fakes by batch). Nor is a run into an `out` that
            holds images of these options saved as versions before `output_format` saved them (`--format png`, not
            resized; known by their names, without a ledger too).
        max_wait: The most seconds the run pauses, in all, for rate limits (a 429 with a `Retry-After` the client did
            not wait for: over 120 s, or once its retries are spent); a longer wait stops it (`stopped` says when to
            rerun), its rate-limited jobs recorded as failed, unpaid (`fakescope.generate._loop`).

    Returns:
        A `RunReport`; Ctrl-C finishes the requests in flight, writes the manifest and returns
        with `stopped="interrupted"` (one before the first job raises `KeyboardInterrupt`, `out`'s lease and the ledger
        let go of either way). A job the ledger records as done is skipped only while `out` holds its output, whole
        (one listing of `out`; a local output's first and last bytes read, once, for the plan where one is made, again
        by the run where the plan found it damaged (a copy that ended since), a remote
        one's size as that listing gave it, `_plan.damage`); one deleted, damaged or saved in another folder (a ledger
        copied without its images; warned of,
        with how many of this run's sources' images, before `confirm`) is made, and paid for, again (`missing`).

    Raises:
        ConfigError, StorageError: `src` is missing or gives no source (no image; in `generate` mode, not UTF-8 text or
            no prompt), or `manifest_name` is no `.csv` or `.parquet` file name: raised before anything is made under
            `out` or the cache.
        StorageUnavailableError: `out` became unreachable; the run stops paying, records how the requests in flight
            ended, and a rerun writes the images it had paid for from the spool without paying again.
        StorageError: another run holds `out`'s lease, or took it over from this one (which then stops paying).
        ConfigError: the ledger paid for a source only under other settings, or `out` records only other settings,
            and `new_settings` is False; or `out` holds dall-e-2 images of these options that an earlier version
            stretched to their photo's aspect (`check_stretched`), whatever `new_settings`.
    """
    if concurrency < 1:
        raise ConfigError("concurrency must be at least 1")
    if split is not None and config.mode == "generate":
        raise ConfigError("a split can only be taken from a dataset manifest of images, not from prompts")
    check_manifest_name(manifest_name)
    src, out = storage.absolute(src), storage.absolute(out)  # the manifest's uris work from any folder
    budget = Budget.of(config, max_images, max_spend, max_total_spend)
    sources = read_sources(src, out, config, split)
    first = next(sources)  # a bad src fails here, before anything is made under `out` or the cache
    report = RunReport(ledger=str(ledger or default_ledger_path(out)))
    recorded = paid_jobs(Path(report.ledger))
    paid = [] if new_settings else recorded
    listed = planned_sources(src, out, config, split) if recorded or confirm is not None else []
    check_settings(paid, config, listed, [first[2]])
    held = files_in(out)  # first, listed once: an unreachable `out` fails naming itself, not its manifest
    manifest = storage.join(out, manifest_name)
    rows = manifest_rows(manifest) if manifest in held else {}
    if not new_settings:
        check_recorded(paid, rows, config, held)
        check_earlier_format(out, held, config)  # images without a ledger or manifest row: known by their names
    check_stretched(out, held, rows, config)  # the same names: a second set cannot be made beside them
    if elsewhere := done_elsewhere(of_sources(recorded, listed, [first[2]]), out, held, config):
        log.warning("the ledger records %d image(s) of this run's sources with these options as made in another folder "
                    "(as %s), not in %s: this run makes them again, paid again (counted in its plan and budgets); to keep "
                    "them unpaid, stop it and copy them into %s", len(elsewhere), elsewhere[0], out, out)
    client = client() if callable(client) else client or make_client()  # the key is asked for after the free checks
    check_served(config.model, client.base_url)  # a retired model on api.openai.com: one line, before any upload
    found: dict[tuple[str, int | None], str | None] = {}  # what the plan finds damaged, or not, the run takes as found
    if confirm is not None:
        parked = spooled(Path(report.ledger), recorded, listed, config)
        confirm(*planned(src, out, config, split, listed, held, found, parked))
    lease = Lease(out, lease_seconds)
    with contextlib.ExitStack() as stack:  # a Ctrl-C anywhere from here on still lets go of the lease and the ledger
        stack.callback(lease.release)
        lease.acquire()
        book = stack.enter_context(Ledger(report.ledger, claim=True))
        if not storage.is_remote(out) and (removed := remove_stale_temporaries(out, STALE_PART_S)):
            log.info("removed %d temporary file(s) a killed run left in %s", removed, out)
        run = Run(client, out, config, book, lease, report, budget, concurrency=concurrency,
                   retry_interrupted=retry_interrupted, manifest_name=manifest_name, manifest_every=manifest_every,
                   max_wait=max_wait, found=found)
        run.run(itertools.chain([first], sources))
    if report.missing:
        log.warning("%d image(s) the ledger records as made were not in %s (deleted, damaged, or in another folder): "
                    "they are made (and paid for) again",
                    report.missing, out)
    return report
