"""Background generation jobs for `POST /v1/generate` and `GET /v1/jobs/{id}`."""

from __future__ import annotations

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
from fakescope.serve.generation import GeneratedImage, generate_from_upload

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


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
    outputs: list[GeneratedImage] = field(default_factory=list)

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
                {"index": i, "image": f"/v1/jobs/{self.id}/outputs/{i}", "detection": out.detection.to_dict()}
                for i, out in enumerate(self.outputs)
            ],
        }


class JobStore:
    """Run generation jobs on a small thread pool and keep their state in memory."""

    def __init__(self, root: Path, detect: Callable[[bytes], Detection], *, workers: int = 2):
        self.root = Path(root)
        self.detect = detect
        self._jobs: dict[str, GenerationJob] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-generate")

    def submit(self, data: bytes, config: OpenAIImagesConfig, client, *, filename: str = "upload") -> GenerationJob:
        """Queue one job; returns at once with the job in state `queued`."""
        job_id = uuid.uuid4().hex[:16]
        job = GenerationJob(job_id, config, self.root / job_id)
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
        try:
            job.outputs = generate_from_upload(data, job.config, job.folder, client=client, detect=self.detect, filename=filename)
            job.state = DONE
        except FakescopeError as exc:
            job.error, job.state = str(exc), FAILED
        except Exception as exc:  # noqa: BLE001 - a job records its failure; the server goes on
            job.error, job.state = f"{type(exc).__name__}: {exc}", FAILED
        job.finished = time.time()
