"""Background generation jobs for `POST /v1/generate` and `GET /v1/jobs/{id}`.

Each job lives in its own folder under the store's root: the upload, the generation ledger and
outputs, and `job.json`, its record, rewritten (atomically) at every change of state. A new
store reads the records back, so finished jobs and their images outlive a server restart; a
job that was queued or running when the server stopped is marked failed, never resent, its error saying what its ledger
records as paid (a job is not resumed: the image submitted again is a new job, paid again).

`close` (the server stopping) cancels the queued jobs (never sent, nothing paid), has the running ones send nothing more
(no retry either) and gives them `grace_s` to record the answers of the requests on the wire; those still running then
are marked failed the same way, at once, and their threads left to end with their requests.

`delete` stops a queued job before anything is sent and marks a running one cancelled (the
requests already sent finish and are kept: the API bills them anyway); on a finished job it
deletes the folder, `job.json` first (a half-deleted folder is never restored). At most `max_jobs` jobs are queued or
running: `submit` raises `ServerBusy` beyond that, its wait estimated from the jobs run so far. A job's `error` names no
local path; the server's log has the detail. Neither shows the request's own OpenAI key (`X-OpenAI-Key`, in no
environment variable) nor another secret `hide_secrets` knows.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakescope.detection import Detection
from fakescope.errors import FakescopeError, StorageError
from fakescope.forensics.fusion import PIXEL, caveat_for
from fakescope.generate import Ledger, OpenAIImagesConfig
from fakescope.generate.ledger import RUNNING as IN_FLIGHT
from fakescope.generate.runner import default_ledger_path
from fakescope.io import storage
from fakescope.serve.batching import ServerBusy, estimated_wait
from fakescope.serve.generation import failure, generate_from_upload, public_error, shortfall
from fakescope.serve.limits import DEFAULT_SHUTDOWN_GRACE_S

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
UNFINISHED = (QUEUED, RUNNING)
RECORD_NAME = "job.json"
INTERRUPTED = "interrupted by a server stop"
NOT_RESUMED = "a job is not resumed: submit the image again (a new job, paid again)"
CANCELLED_QUEUED = "cancelled before any request was sent"
STOPPED_QUEUED = "cancelled by a server stop before any request was sent (nothing was paid); submit the image again"
STOPPING = "the server is stopping: it starts no generation job; try again once it is back"
CANCELLED_RUNNING = "cancelled while running: the requests already sent were finished (and billed)"
RETRY_AFTER_S = 30
"""The `Retry-After` (s) of full generation jobs before any job has run: nothing to estimate from."""
log = logging.getLogger(__name__)


class JobBusy(FakescopeError):
    """A job cannot be deleted yet: its worker is still writing its folder."""


@dataclass(frozen=True)
class JobOutput:
    """One ai image a job made: its file and its detection record."""

    path: Path
    detection: dict[str, Any]


@dataclass
class GenerationJob:
    """One generation request and, once done, its ai images with their detections."""

    id: str
    config: OpenAIImagesConfig
    folder: Path
    state: str = QUEUED
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    outputs: list[JobOutput] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON answer of `GET /v1/jobs/{id}`."""
        return {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
            "config": {**self.config.to_dict(), "output_format": self.config.save_format},  # as made, not None
            "outputs": [
                {"index": i, "image": f"/v1/jobs/{self.id}/outputs/{i}", "detection": out.detection}
                for i, out in enumerate(self.outputs)
            ],
        }

    def save(self) -> None:
        """Write `job.json` into the job's folder (atomically: `storage.write_bytes` renames a temporary file)."""
        record = {**self.to_dict(), "files": [os.path.relpath(out.path, self.folder) for out in self.outputs]}
        storage.write_bytes(str(self.folder / RECORD_NAME), json.dumps(record).encode())

    @classmethod
    def load(cls, folder: Path) -> GenerationJob:
        """Read a job back from its folder's `job.json`; one saved before `output_format` was made as PNGs (`png`)."""
        record = json.loads((folder / RECORD_NAME).read_text())
        outputs = [JobOutput(folder / name, _with_caveat(out["detection"]))
                   for name, out in zip(record["files"], record["outputs"])]
        config = OpenAIImagesConfig(**{"output_format": "png", **record["config"]})
        return cls(record["id"], config, folder, record["state"], record["created"], record["finished"], record["error"],
                   outputs)


def _with_caveat(detection: dict) -> dict:
    """A detection record as saved; one saved before records carried `caveat` gets it from its verdict and evidence."""
    if "caveat" in detection:
        return detection
    scored = [e for e in detection.get("evidence", []) if e.get("score") is not None]
    pixel = next((e["score"] for e in scored if e["kind"] == PIXEL), None)
    return {**detection, "caveat": caveat_for(detection.get("label"), pixel, (e["kind"] for e in scored))}


class JobStore:
    """Run generation jobs on a small thread pool; keep their records on disk under `root`."""

    def __init__(self, root: Path, detect: Callable[[bytes], Detection], *, workers: int = 2, max_jobs: int = 16):
        self.root = Path(root)
        self.detect = detect
        self.max_jobs = max_jobs
        self._jobs = self._restore()
        self._futures: dict[str, Future] = {}
        self._clients: dict[str, Any] = {}
        """The OpenAI client of each running job, told to send nothing more when the server stops."""
        self._stopped: float | None = None
        """When `stop` was called (`time.monotonic`)."""
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-generate")
        self._workers, self._runs, self._run_s = workers, 0, 0.0

    def submit(self, data: bytes, config: OpenAIImagesConfig, client, *, filename: str = "upload",
               release: Callable[[], None] | None = None) -> GenerationJob:
        """Queue one job; returns at once with the job in state `queued`.

        `release` is called once `data` is no longer held: the job ran (whatever its end) or was cancelled before it
        ran, or at once when it is refused.

        Raises:
            ServerBusy: `max_jobs` jobs are already queued or running, or the server is stopping.
            StorageError: the job's record cannot be written.
        """
        job_id = uuid.uuid4().hex[:16]
        job = GenerationJob(job_id, config, self.root / job_id)
        try:
            with self._lock:
                self._check_room()
                job.save()
                self._jobs[job_id] = job
                self._futures[job_id] = future = self._pool.submit(self._run, job, data, client, filename)
        except BaseException:
            if release:
                release()
            raise
        if release:
            future.add_done_callback(lambda _: release())
        return job

    def check_room(self) -> None:
        """Raise `ServerBusy` when `max_jobs` jobs are queued or running, as `submit` would (`serve.gate` asks before a
        request's upload is read)."""
        with self._lock:
            self._check_room()

    def _check_room(self) -> None:
        if self._stopped is not None:
            raise ServerBusy(STOPPING, RETRY_AFTER_S)
        if (unfinished := sum(j.state in UNFINISHED for j in self._jobs.values())) >= self.max_jobs:
            raise ServerBusy(f"too many generation jobs: {self.max_jobs} are queued or running; try again later",
                             estimated_wait(unfinished, self._run_s, self._runs, workers=self._workers,
                                            before_any=RETRY_AFTER_S))

    def get(self, job_id: str) -> GenerationJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def delete(self, job_id: str) -> GenerationJob | None:
        """Cancel a queued or running job, or forget a finished one and delete its folder; None for an unknown id.

        A queued job is never sent; a running one is marked cancelled and its worker finishes the
        requests already sent (billed whatever happens), keeping their images.

        Raises:
            JobBusy: a cancelled job whose worker is still finishing (its folder is still being written).
            StorageError: a finished job's record cannot be removed (the job is kept).
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            if job.state in UNFINISHED:
                self._cancel(job, CANCELLED_QUEUED if job.state == QUEUED else CANCELLED_RUNNING)
                return job
            if job_id in self._futures:
                raise JobBusy(f"job {job_id} is cancelled but still finishing the requests it had sent; try again shortly")
            try:  # the record first: a folder left half-deleted is then never restored as a job
                (job.folder / RECORD_NAME).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot delete generation job %s: %s", job_id, exc)
                raise StorageError(f"job {job_id} could not be deleted: the server cannot write its jobs folder") from None
            del self._jobs[job_id]
        shutil.rmtree(job.folder, ignore_errors=True)
        if job.folder.exists():
            log.warning("generation job %s is deleted, but files remain in %s", job_id, job.folder)
        return job

    def stop(self) -> None:
        """Start no job from now on: refuse new ones (`ServerBusy`), cancel the queued ones (`STOPPED_QUEUED`) and have
        the running ones send no request more (their clients' `stop`; the requests on the wire still get their answers)."""
        with self._lock:
            if self._stopped is not None:
                return
            self._stopped = time.monotonic()
            for job in self._jobs.values():
                if job.state == QUEUED:
                    self._cancel(job, STOPPED_QUEUED)
            clients = list(self._clients.values())
        for client in clients:
            if (stop := getattr(client, "stop", None)) is not None:  # `make_client`'s; another finishes its retries
                stop()

    def close(self, grace_s: float = DEFAULT_SHUTDOWN_GRACE_S) -> int:
        """Stop (`stop`), wait until `grace_s` seconds after that for the running jobs to end, then mark those still
        running failed (`interrupted`) and leave their threads to end with their requests; returns how many threads are
        left so (a job cancelled while running included).

        Python waits for those threads at exit: a process that means to exit in time leaves without (`os._exit`).
        """
        self.stop()
        with self._lock:
            running = list(self._futures.values())
        _, left_running = wait(running, timeout=max(0.0, self._stopped + grace_s - time.monotonic()))
        with self._lock:
            left = [job for job in self._jobs.values() if job.state == RUNNING]
        notes = {job.id: interrupted(job) for job in left}  # outside the lock: the ledgers are read
        with self._lock:
            for job in left:
                if job.state == RUNNING:
                    log.warning("generation job %s was still running %g s after the server began to stop: %s", job.id,
                                grace_s, notes[job.id])
                    job.state, job.error, job.finished = FAILED, notes[job.id], time.time()  # `_run` leaves it so
                    _save(job)
        self._pool.shutdown(wait=False, cancel_futures=True)
        return len(left_running)

    def _cancel(self, job: GenerationJob, note: str) -> None:
        """Cancel a queued or running job (the lock held): a queued one never runs (`_run` skips it)."""
        if self._futures[job.id].cancel():
            del self._futures[job.id]
        job.state, job.error, job.finished = CANCELLED, note, time.time()
        _save(job)

    def _run(self, job: GenerationJob, data: bytes, client, filename: str) -> None:
        with self._lock:
            if job.state != QUEUED:  # cancelled while the pool was taking it
                self._futures.pop(job.id, None)
                return
            job.state = RUNNING
            self._clients[job.id] = client
            _save(job)
        started = time.monotonic()
        outputs: list[JobOutput] = []
        try:
            made = generate_from_upload(data, job.config, job.folder, client=client, detect=self.detect, filename=filename)
            outputs = [JobOutput(image.path, image.detection.to_dict()) for image in made]
            state, error = DONE, shortfall(made, job.config, job.folder)
        except Exception as exc:  # noqa: BLE001 - a job records its failure; the server goes on
            failed = failure(exc, client.api_key)
            state, error = FAILED, failed.line
            if failed.unexpected:  # its traceback
                log.warning("generation job %s failed: %s", job.id, failed.detail)
        if error and (public := public_error(error)) != error:
            log.warning("generation job %s: %s", job.id, error)
            error = public
        with self._lock:
            self._runs, self._run_s = self._runs + 1, self._run_s + time.monotonic() - started
            self._futures.pop(job.id, None)
            self._clients.pop(job.id, None)
            if job.state == FAILED:  # `close` gave up on it: its record says what was paid by then
                return
            job.outputs = outputs
            if job.state != CANCELLED:  # a cancelled job keeps its note; its images were paid for, so kept
                job.error, job.finished = error, time.time()
                job.state = state  # last: a poll that sees the job ended sees its outputs and finish time too
            _save(job)

    def _restore(self) -> dict[str, GenerationJob]:
        """Every job recorded under `root`; unfinished ones become failed (`interrupted`)."""
        jobs = {}
        for record in sorted(self.root.glob(f"*/{RECORD_NAME}")):
            try:
                job = GenerationJob.load(record.parent)
            except (OSError, ValueError, KeyError, TypeError, FakescopeError) as exc:  # never fatal to the server
                why = exc if isinstance(exc, FakescopeError) else f"{type(exc).__name__}: {exc}"
                log.warning("generation job %s is not restored (its %s is kept): %s", record.parent.name, RECORD_NAME, why)
                continue
            if job.state in (QUEUED, RUNNING):
                job.state, job.error, job.finished = FAILED, interrupted(job), time.time()
                job.save()
            jobs[job.id] = job
        return jobs


def interrupted(job: GenerationJob) -> str:
    """The error of a job the server stopped before it ended: what its ledger records as billed and as sent unanswered
    (maybe billed), and that it is not resumed."""
    path = default_ledger_path(str(job.folder / "ai"))  # `generate_from_upload`'s
    sent = []
    if path.is_file():
        try:
            with Ledger(path) as book:
                sent = [(record, book.spool_path(record.key).is_file()) for record in book.jobs() if record.attempts]
        except StorageError as exc:
            log.warning("generation job %s: %s", job.id, exc)
            return f"{INTERRUPTED}; its ledger cannot be read (the server's log says why); {NOT_RESUMED}"
    if not sent:
        return f"{INTERRUPTED} before any request was sent (nothing was paid); submit the image again"
    unanswered = sum(record.state == IN_FLIGHT and not spooled for record, spooled in sent)
    billed = sum(record.paid for record, _ in sent) - unanswered
    return (f"{INTERRUPTED}: of {job.config.n} image(s), {billed} billed and {unanswered} sent but unanswered (maybe "
            f"billed); {NOT_RESUMED}")


def _save(job: GenerationJob) -> None:
    """Save a job's record from a worker; a failure is logged, and the job still ends in memory."""
    try:
        job.save()
    except OSError:  # StorageError too
        log.warning("cannot save the record of generation job %s", job.id, exc_info=True)
