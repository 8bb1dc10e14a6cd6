"""Micro-batching: one worker thread owns the `Detector` and scores requests together.

Concurrent request handlers call `MicroBatcher.submit` and wait on a future; the worker
waits up to `max_wait_ms` after the first queued item for more, takes up to `max_batch`
items and calls `detector.predict(list)` once, so a loaded server runs full batches
and a quiet one answers a lone request without delay beyond `max_wait_ms`. At most `max_queue`
items wait: `submit(..., wait=False)` raises `ServerBusy` beyond that instead of queueing.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Self

from fakescope.detection import Detection
from fakescope.detector import Detector, ImageInput
from fakescope.errors import FakescopeError

_STOP = object()
RETRY_AFTER_RANGE = (1, 60)
"""The shortest and longest `Retry-After` (s) of a busy answer: a client told more than a minute would only be told again
when it came back, and a wait under a second is no wait."""
RECENT_CALLS = 8
"""The model calls `MicroBatcher.retry_after` times: the latest, so a load that changed (a first call's warm-up, a
larger image size) weighs no longer than these."""


class ServerBusy(FakescopeError):
    """The server's queue is full; `retry_after` is a suggested wait in seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def estimated_wait(waiting: int, busy_s: float, done: int, *, workers: int = 1, before_any: int = 1) -> int:
    """Whole seconds `waiting` items should take on `workers`, at the mean time per item of the `done` ones that took
    `busy_s` (`before_any` with none done), within `RETRY_AFTER_RANGE`."""
    low, high = RETRY_AFTER_RANGE
    seconds = waiting / workers * busy_s / done if done else before_any
    return min(max(round(seconds), low), high)


@dataclass
class BatchStats:
    """Counters for `/healthz` and tests: items scored and model calls made."""

    items: int = 0
    calls: int = 0
    largest: int = 0
    busy_s: float = 0.0

    def to_dict(self) -> dict:
        return {"items": self.items, "calls": self.calls, "largest_batch": self.largest, "busy_s": round(self.busy_s, 3)}


@dataclass
class _Request:
    item: ImageInput
    heatmap: bool
    future: Future = field(default_factory=Future)


class MicroBatcher:
    """Gather concurrent requests into `detector.predict` calls on one background thread.

    Example:
        >>> with MicroBatcher(Detector.load(), max_batch=16) as batcher:
        ...     detection = batcher.submit(open("examples/coffee.jpg", "rb").read()).result()
        >>> detection.verdict
        'real'
    """

    def __init__(self, detector: Detector, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 0):
        self.detector = detector
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.stats = BatchStats()
        self._recent: deque[tuple[int, float]] = deque(maxlen=RECENT_CALLS)  # (items, seconds) of the latest calls
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="fakescope-batcher", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        """Finish the queued requests, then stop the worker."""
        self._queue.put(_STOP)
        self._thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def room(self) -> int | None:
        """How many more items `submit(..., wait=False)` takes now; None without `max_queue`."""
        return max(self.max_queue - self.pending, 0) if self.max_queue else None

    def check_room(self, items: int = 1) -> None:
        """Raise `ServerBusy` unless `items` more fit in the queue now, as `submit(..., wait=False)` would (`serve.gate`
        checks before a request's body is read, and a batch its count before its URLs are fetched, so a full server
        receives and downloads nothing)."""
        room = self.room()
        if room is None or room >= items:
            return
        if items == 1:
            message = f"{self.max_queue} images are waiting for the model"
        else:  # all or none: a half-scored batch helps nobody
            message = f"no room for {items} image(s) in the model's queue ({room} of {self.max_queue} places free)"
        raise ServerBusy(f"the server is busy: {message}; try again shortly", self.retry_after())

    def submit(self, item: ImageInput, *, heatmap: bool = False, wait: bool = True) -> Future:
        """Queue one input; the future resolves to its `Detection` (with `heatmap` when asked).

        Raises:
            ServerBusy: `wait=False` and `max_queue` items are already waiting.
        """
        if not wait:
            self.check_room()
        request = _Request(item, heatmap)
        self._queue.put(request)
        return request.future

    def retry_after(self) -> int:
        """Whole seconds the queued items should take to score, at the time per item of the `RECENT_CALLS` latest model
        calls, within `RETRY_AFTER_RANGE`."""
        recent = list(self._recent)  # the worker appends meanwhile
        return estimated_wait(self.pending, sum(s for _, s in recent), sum(n for n, _ in recent))

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._gather(first)
            self._score(batch)
            if stop:
                return

    def _gather(self, first: _Request) -> tuple[list[_Request], bool]:
        batch, deadline = [first], time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _score(self, batch: list[_Request]) -> None:
        """Score plain and heatmap requests in a call each, counting each call in `stats` before its handlers hear
        back: a /healthz read after an answer counts the call behind it."""
        self.stats.largest = max(self.stats.largest, len(batch))
        for heatmap in (False, True):
            group = [r for r in batch if r.heatmap is heatmap]
            if not group:
                continue
            started = time.monotonic()
            try:
                results: list[Detection] = self.detector.predict([r.item for r in group], heatmap=heatmap)
            except Exception as exc:  # noqa: BLE001 - any failure must reach the waiting handlers
                self._count(group, started, called=False)
                for request in group:
                    request.future.set_exception(exc)
                continue
            self._count(group, started, called=True)
            for request, detection in zip(group, results):
                request.future.set_result(detection)

    def _count(self, group: list[_Request], started: float, *, called: bool) -> None:
        seconds = time.monotonic() - started
        self.stats.items += len(group)
        self.stats.calls += called
        self.stats.busy_s += seconds
        self._recent.append((len(group), seconds))
