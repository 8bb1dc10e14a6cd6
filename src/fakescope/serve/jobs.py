"""Background generation jobs for `POST /v1/generate` and `GET /v1/jobs/{id}`.

Each job lives in its own folder under the store's root: the upload, the generation ledger and
outputs, and `job.json`, its record, rewritten (atomically) at every change of state. A new
store reads the records back, so finished jobs and their images outlive a server restart; a
job that was queued or running when the server stopped is marked failed, never resent.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakescope.detection import Detection
from fakescope.errors import FakescopeError
from fakescope.generate import OpenAIImagesConfig
from fakescope.io import storage
from fakescope.serve.generation import generate_from_upload, shortfall

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
RECORD_NAME = "job.json"
INTERRUPTED = "interrupted by a server restart; submit the image again"


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
            "config": self.config.to_dict(),
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
        """Read a job back from its folder's `job.json`."""
        record = json.loads((folder / RECORD_NAME).read_text())
        outputs = [JobOutput(folder / name, out["detection"]) for name, out in zip(record["files"], record["outputs"])]
        return cls(record["id"], OpenAIImagesConfig(**record["config"]), folder, record["state"], record["created"],
                   record["finished"], record["error"], outputs)


class JobStore:
    """Run generation jobs on a small thread pool; keep their records on disk under `root`."""

    def __init__(self, root: Path, detect: Callable[[bytes], Detection], *, workers: int = 2):
        self.root = Path(root)
        self.detect = detect
        self._jobs = self._restore()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-generate")

    def submit(self, data: bytes, config: OpenAIImagesConfig, client, *, filename: str = "upload") -> GenerationJob:
        """Queue one job; returns at once with the job in state `queued`."""
        job_id = uuid.uuid4().hex[:16]
        job = GenerationJob(job_id, config, self.root / job_id)
        job.save()
        with self._lock:
            self._jobs[job_id] = job
        self._pool.submit(self._run, job, data, client, filename)
        return job

    def get(self, job_id: str) -> GenerationJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: GenerationJob, data: bytes, client, filename: str) -> None:
        job.state = RUNNING
        job.save()
        outputs: list[JobOutput] = []
        try:
            made = generate_from_upload(data, job.config, job.folder, client=client, detect=self.detect, filename=filename)
            outputs = [JobOutput(image.path, image.detection.to_dict()) for image in made]
            state, error = DONE, shortfall(made, job.config, job.folder)
        except FakescopeError as exc:
            state, error = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a job records its failure; the server goes on
            state, error = FAILED, f"{type(exc).__name__}: {exc}"
        job.outputs, job.error, job.finished = outputs, error, time.time()
        job.state = state  # last: a poll that sees the job ended sees its outputs and finish time too
        job.save()

    def _restore(self) -> dict[str, GenerationJob]:
        """Every job recorded under `root`; unfinished ones become failed (`INTERRUPTED`)."""
        jobs = {}
        for record in sorted(self.root.glob(f"*/{RECORD_NAME}")):
            try:
                job = GenerationJob.load(record.parent)
            except (OSError, ValueError, KeyError, TypeError, FakescopeError):
                continue  # an unreadable record is skipped, never fatal to the server
            if job.state in (QUEUED, RUNNING):
                job.state, job.error, job.finished = FAILED, INTERRUPTED, time.time()
                job.save()
            jobs[job.id] = job
        return jobs
