"""The request loop of a paid run: each job settled without a request where it can be, else sent and recorded.

A 429 with a `Retry-After` the client did not wait for (over its 120 s, or its retries spent) pauses the run: no
request is sent until the longest `Retry-After` given has passed, then its jobs (unpaid) are sent again. Once the
pauses would add up to more than `max_wait` seconds the run stops instead, its jobs recorded as failed (unpaid), for a
rerun to send. A pause lasts `MIN_PAUSE_S` to `MAX_PAUSE_S`. A 429 without a finite positive one fails its job, unpaid,
as other errors do.

A refusal no later request can pass (`openai_images.request_image`: the key, the model, the account), or an output
storage that fails (`StorageUnavailableError` writing to `out`), stops the run: nothing more is sent, and the other
requests in flight are waited for and recorded before it is raised, so the ledger counts none that was answered as maybe
billed (one whose image could not be written either is failed, billed, its answer spooled for a rerun to write).

Ctrl-C (or SIGTERM) stops the run at once: a pause ends, the client's waits before a retry end and nothing more is sent
(those jobs failed, unpaid, for a rerun to send), and only the requests on the wire are waited for and recorded.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait

import httpx  # noqa: F401 - here, in the main thread: `fetch_public` (answers by URL) imported it first in a worker,
import openai  # and the client in another found it half imported (an AttributeError: an image paid for, lost)

from fakescope.errors import ConfigError, FakescopeError, ImageLoadError, StorageUnavailableError
from fakescope.generate._budget import Budget, RunReport, count_tokens
from fakescope.generate._client import Unsent
from fakescope.generate._outputs import Made, finish, in_out
from fakescope.generate._plan import Job, jobs
from fakescope.generate.lease import Lease
from fakescope.generate.ledger import DONE, RUNNING, JobRecord, Ledger
from fakescope.generate.manifest import append_manifest
from fakescope.generate.openai_images import AnswerLost, LostImageError, OpenAIImagesConfig, request_image
from fakescope.io import storage
from fakescope.io.image import LoadedImage, load_image
from fakescope.io.redact import hide_secrets

log = logging.getLogger(__name__)
MIN_PAUSE_S, MAX_PAUSE_S = 1.0, 365 * 86400.0
"""The shortest and longest pause a 429 makes: a `Retry-After` of 0.001 s, answered again and again, resent the jobs
without end (`max_wait` was never reached), and one of 1e20 s ended the run in an `OverflowError` traceback."""


class Run:
    """The request loop of one run, with `out`'s lease and the ledger held: each job is settled without a request
    where it can be (done before, spooled, or made elsewhere), else sent, at most `concurrency` in flight."""

    def __init__(self, client, out: str, config: OpenAIImagesConfig, book: Ledger, lease: Lease, report: RunReport,
                 budget: Budget, *, concurrency: int, retry_interrupted: bool, manifest_name: str, manifest_every: float,
                 max_wait: float, found: dict[tuple[str, int | None], str | None] | None = None):
        self.client, self.out, self.config, self.book, self.lease = client, out, config, book, lease
        self.report, self.budget, self.price = report, budget, budget.price
        self.recorded = budget.price if budget.priced else None
        """The price the ledger records with a cost counted in this run; None where none is known (counted at 0)."""
        self.concurrency, self.retry_interrupted = concurrency, retry_interrupted
        self.manifest_name, self.manifest_every = manifest_name, manifest_every
        self.made = Made(out, manifest_name, found)  # the plan's damage findings: each output checked once
        records = list(book.jobs())  # the one read of the whole ledger before the first job
        self.paid_elsewhere = self.made.paid_elsewhere(records)
        report.elsewhere = len(self.paid_elsewhere)
        report.unpriced = sum(record.state == DONE and record.cost == 0 and record.price is None for record in records)
        report.maybe_before = sum(record.maybe_billed(self.price) for record in records)
        spent = sum(record.cost for record in records) + report.maybe_before
        report.spent_before = spent + (report.elsewhere + report.unpriced) * self.price
        self.in_flight: dict[Future, Job] = {}
        self.flush_at, self.flushed = time.monotonic() + manifest_every, 0
        """When the manifest is next written while images are made, and how many were done at its last write."""
        self.max_wait, self.waited, self.retry_after = max_wait, 0.0, 0.0
        """The most seconds the run pauses for rate limits in all, how long it has, and the pause now asked for."""
        self.limited: deque[Job] = deque()
        """Jobs answered 429 (unpaid), to send again after the pause."""

    def run(self, sources: Iterator[tuple[str, str, str, bytes | str]]) -> None:
        """Settle or send every job of `sources` until a limit stops it; Ctrl-C finishes the requests in flight.
        The manifest is written at the end whatever happened."""
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="fakescope-openai")
        try:
            queue = jobs(sources, self.config, self.book)
            while (job := self._next(queue)) is not None:
                if self._settled_unpaid(job):
                    continue
                if self.budget.exceeded(self.report, len(self.in_flight)):
                    self.report.stopped = "budget"
                    break
                self._send(executor, job)
            self._drain()
        except KeyboardInterrupt:
            self.report.stopped = "interrupted"
            self._stop_client()
            if self.in_flight:
                log.warning("interrupted: sending no more requests; waiting for the %d in flight (billed once "
                            "answered) to be saved", len(self.in_flight))
            self._drain()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            self._write_manifest()  # one that cannot be written still lets go (in `run_openai`)

    def _next(self, queue: Iterator[Job]) -> Job | None:
        """The next job to settle or send: a rate-limited one after its pause, else `queue`'s; None when there is none
        left, or the rate limit stopped the run (`report.stopped`)."""
        while True:
            if self.retry_after:
                self._drain()  # the requests in flight may be rate limited too
                if not self._pause():
                    return None
            if self.limited:
                return self.limited.popleft()
            if (job := next(queue, None)) is not None:
                return job
            self._drain()
            if not (self.retry_after or self.limited):
                return None

    def _pause(self) -> bool:
        """Wait out the rate limit, saying so in one line; False (the run stopped) where that passes `max_wait`."""
        seconds, self.retry_after = self.retry_after, 0.0
        if self.waited + seconds > self.max_wait:
            resume = datetime.datetime.now().astimezone() + datetime.timedelta(seconds=seconds)
            self.report.stopped = (f"rate limited: the API asks to wait {seconds:.0f} s, past --max-wait "
                                   f"{self.max_wait:.0f} s (waited {self.waited:.0f} s); rerun the same command after "
                                   f"{resume:%Y-%m-%d %H:%M %Z} to resume")
            return False
        log.warning("waiting %.0f s, rate limited (429, Retry-After); %d job(s) wait to be sent", seconds, len(self.limited))
        time.sleep(seconds)
        self.waited += seconds
        return True

    def _settled_unpaid(self, job: Job) -> bool:
        """Settle `job` without a request where none is needed or wanted; False where it is to be sent."""
        record = self.book.get(job.key)
        if record.state == DONE and self.made.holds(record.output):
            self.report.skipped += 1
            return True
        if (loaded := _spooled(self.book, job.key)) is not None:  # paid by a run that crashed or could not write it
            self._recover(job, record, loaded)
            return True
        if (found := self.made.row(job, self.config)) is not None:  # made by a run elsewhere, whose ledger this is not
            counted = found["uri"] in self.paid_elsewhere  # else this ledger has counted it already
            self.book.mark_done(job.key, found["uri"], self.price if counted else 0.0, found,
                                self.recorded if counted else None, answered=False)
            self.report.skipped += 1
            return True
        self.report.missing += record.state == DONE  # deleted from out since: made again
        if record.state == RUNNING and not self.retry_interrupted:
            self.report.unresolved += 1
            return True
        return False

    def _recover(self, job: Job, record: JobRecord, loaded: LoadedImage) -> None:
        """Finish `job` from its spooled answer, charged now only where a crash (not a failed write) left it: at the price
        its request was sent at, this run's where the ledger has none (an older version's). `spent_before` counted it
        as maybe billed: it is billed."""
        owed = record.state == RUNNING  # a failed write was charged when it failed
        price, recorded = (record.price, record.price) if record.price is not None else (self.price, self.recorded)
        charge = price if owed else 0.0
        self.report.maybe_before -= charge
        usage = json.loads(record.usage) if record.usage else None
        try:
            uri, row = finish(job, loaded, self.out, self.config, usage)
        except FakescopeError as exc:
            self._fail(job, exc, owed=charge, owed_price=recorded if owed else None)
            return
        self.book.mark_done(job.key, uri, charge, row, recorded if owed else None)
        self.report.recovered += 1
        count_tokens(self.report, row)

    def _send(self, executor: ThreadPoolExecutor, job: Job) -> None:
        """Send `job` once a slot is free (the manifest written when due, the lease checked first); where a rate limit
        came meanwhile, it waits with the rate-limited jobs instead."""
        while len(self.in_flight) >= self.concurrency:
            self._settle()
        if self.retry_after:
            self.limited.append(job)
            return
        made = self.report.done + self.report.recovered
        if time.monotonic() >= self.flush_at and made > self.flushed:
            self._write_manifest()
            self.flush_at, self.flushed = time.monotonic() + self.manifest_every, made
        self.lease.check()
        self.book.mark_running(job.key, self.recorded)
        self.in_flight[executor.submit(_execute, self.client, job, self.out, self.config, self.book)] = job

    def _drain(self) -> None:
        while self.in_flight:
            self._settle()

    def _settle(self) -> None:
        """Wait for a request to finish and record every finished one.

        Raises:
            ConfigError: no later request can succeed (the key, the model, the account); raised once the other requests
                in flight are recorded (`_record_rest`).
            StorageUnavailableError: the output storage, not an image, failed: pay for no more; raised once the other
                requests in flight are recorded.
        """
        finished, _ = wait(self.in_flight, return_when=FIRST_COMPLETED)
        stops = [stop for future in finished if (stop := self._record(future)) is not None]
        if not stops:
            return
        self._record_rest()
        refusals = [stop for stop in stops if isinstance(stop, ConfigError)]
        raise refusals[0] if refusals else stops[-1]

    def _record_rest(self) -> None:
        """Once a refusal or an outage stops the run: send nothing more, but wait for the requests still in flight (each
        as long as the client's timeout and retries allow; Ctrl-C stops the wait) and record how each ended, so the
        ledger holds no request as maybe billed that was answered. One still unanswered stays in flight, maybe billed."""
        self._stop_client()
        if self.in_flight:
            log.warning("stopping: waiting for the %d other request(s) in flight to record their answers",
                        len(self.in_flight))
        try:
            for future in as_completed(list(self.in_flight)):
                self._record(future)  # a further refusal or outage is recorded: the first stop is the one told
        except KeyboardInterrupt:
            pass

    def _record(self, future: Future) -> ConfigError | StorageUnavailableError | None:
        """Record one finished request in the ledger and the report; return the refusal or outage that failed it, if one
        did (the run stops)."""
        job = self.in_flight.pop(future)
        try:
            uri, row = future.result()
        except ConfigError as exc:  # answered (a refusal, unbilled): not left in flight, maybe billed, for a rerun
            self._fail(job, exc, billed=self.book.spool_path(job.key).is_file(), warn=False)
            return exc
        except LostImageError as exc:  # billed all the same: it counts against the budgets
            self._fail(job, exc, billed=True)
            return None
        except openai.RateLimitError as exc:  # not made: sent again after the pause (a rerun sends it if the run stops)
            seconds = retry_after(exc.response.headers)
            if seconds is None or seconds <= 0:
                self._fail(job, exc)
                return None
            seconds = min(max(seconds, MIN_PAUSE_S), MAX_PAUSE_S)
            self.book.mark_failed(job.key, f"RateLimitError: Retry-After {seconds:.0f} s (unpaid)")
            self.retry_after = max(self.retry_after, seconds)
            self.limited.append(job)
            return None
        except Unsent as exc:  # the run stopped before it was sent (again): failed, unpaid, for a rerun to send
            self.book.mark_failed(job.key, f"Unsent: {exc}; unpaid")
            return None
        except AnswerLost as exc:  # left in flight, as a crash leaves it: a rerun resends it unless at most once
            self.report.unresolved += 1
            self.report.spent += self.price  # it may have been billed: it counts against this run's budgets
            self.report.maybe += self.price
            log.warning("job %s: %s; the API may have billed it, so it is not resent in this run (a rerun resends it, "
                        "unless --at-most-once)", job.stem, hide_secrets(str(exc), self.client.api_key))
            return None
        except Exception as exc:  # noqa: BLE001 - recorded per job; the batch goes on
            paid = self.book.spool_path(job.key).is_file()  # an output that could not be written: parked, billed
            outage = isinstance(exc, StorageUnavailableError)  # raised by `_settle`, so not warned of here
            self._fail(job, exc, billed=paid, warn=not outage)
            return exc if outage else None
        self.book.mark_done(job.key, uri, self.price, row, self.recorded)
        self.report.done += 1
        count_tokens(self.report, row)
        self.report.spent += self.price
        return None

    def _stop_client(self) -> None:
        """Have the client send nothing more: its waits before a retry end at once (`Unsent`), so a stop does not wait
        for them (up to 120 s each); a client without `stop` (not `make_client`'s) finishes its retries."""
        if (stop := getattr(self.client, "stop", None)) is not None:
            stop()

    def _fail(self, job: Job, exc: Exception, *, billed: bool = False, owed: float = 0.0, owed_price: float | None = None,
              warn: bool = True) -> None:
        """Record a failed job; `billed`: its image was billed in this run (at this run's price), `owed`: the cost of one
        billed in an earlier run that crashed, at `owed_price`."""
        cost, reason = self.price if billed else owed, hide_secrets(str(exc), self.client.api_key)
        self.book.mark_failed(job.key, f"{type(exc).__name__}: {reason}", cost, self.recorded if billed else owed_price)
        self.report.failed += 1
        self.report.spent += self.price if billed else 0.0
        if warn:
            log.warning("job %s failed: %s", job.stem, reason)

    def _write_manifest(self) -> None:
        """Merge the rows of every done job whose image is in `out` into its manifest (not those a ledger copied from
        another folder records there)."""
        rows = [row for record in self.book.jobs(DONE) if record.row and in_out(self.out, (row := json.loads(record.row))["uri"])]
        if rows:
            self.report.manifest = storage.join(self.out, self.manifest_name)
            append_manifest(self.report.manifest, rows, drop=self.made.moved)


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
    return finish(job, loaded, out, config, usage)


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


def retry_after(headers) -> float | None:
    """Seconds a 429 asks to wait, as the `openai` client reads them: `retry-after-ms`, else `Retry-After` in seconds
    or as an HTTP date; None when neither says a finite number (`nan`, `inf`)."""
    try:
        return _finite(float(headers.get("retry-after-ms", "")) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after") or ""
    try:
        return _finite(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        when = when.replace(tzinfo=datetime.UTC)
    return (when - datetime.datetime.now(datetime.UTC)).total_seconds()


def _finite(seconds: float) -> float | None:
    return seconds if math.isfinite(seconds) else None
