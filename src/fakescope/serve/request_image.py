"""Reading a request's image: the multipart `file` part, the raw body or a JSON body's `url` (fetched), within the
upload and pixel limits; a batch's JSON `urls`."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from fastapi import HTTPException, Request, UploadFile
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from fakescope.errors import ImageLoadError
from fakescope.io.fetch import (
    URL_TIMEOUT_S,
    FetchError,
    FetchTooLarge,
    TransientFetchError,
    URLRefused,
    fetch_url,
    url_name,
)
from fakescope.io.redact import redact_urls
from fakescope.serve.batching import ServerBusy, estimated_wait
from fakescope.serve.config import ServeConfig
from fakescope.serve.connections import BUSY_RETRY_S
from fakescope.serve.limits import HELD, BodyBudget, Held, check_image
from fakescope.serve.schemas import ImageURL, ImageURLs

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
NO_IMAGE = "no image: send multipart field 'file' or the raw image bytes as the body"
FETCH_WORKERS = 8
BATCH_FETCHES = 2
"""The most of a batch's URLs fetched at once (the others wait for these), so a batch leaves the pool to other clients."""
FETCH_RETRY_AFTER = 10
"""The `Retry-After` (s) of the 503 for an image URL whose fetch failed for a reason that may pass (the image server's
trouble: when it passes, this server cannot know)."""
RECENT_FETCHES = 16
"""The fetches `URLFetcher.retry_after` times: the latest."""
JSON_BODY = {ImageURL: 'a JSON body is {"url": "https://..."}', ImageURLs: 'a JSON body is {"urls": ["https://...", ...]}'}
ONE_FILE = "send one image (/v1/detect/batch takes several, as 'files' parts)"
SEND_FILE = "send the image as a 'file' part, e.g. curl -F file=@photo.jpg"
SEND_FILES = "send each image as a 'files' part, e.g. curl -F files=@a.jpg -F files=@b.jpg"
M = TypeVar("M", bound=BaseModel)


async def one_upload(request: Request, file: UploadFile | None, config: ServeConfig) -> tuple[str, bytes]:
    """The multipart `file` part, the image at a JSON body's `url`, or else the raw request body."""
    if file is not None:
        await only_file(request)
        return file.filename or "upload", await read_upload(file, config)
    media = media_type(request)
    if media in FORM_TYPES:  # FastAPI has read the body as a form, and it has no `file` part
        raise HTTPException(422, f"{NO_IMAGE} ({media} needs a 'file' part; raw bytes need an image Content-Type)")
    data = await read_body(request, config)
    if media == "application/json":
        return await fetch_image(request, _json_body(ImageURL, data).url, config)
    if not data:
        raise HTTPException(422, NO_IMAGE)
    return "upload", data


async def batch_urls(request: Request, config: ServeConfig) -> list[str]:
    """The URLs of an `ImageURLs` JSON body, at most `max_files`; a request that is not JSON has no `files` part."""
    if media_type(request) != "application/json":
        raise HTTPException(422, f"files: Field required ({SEND_FILES})")
    urls = _json_body(ImageURLs, await read_body(request, config)).urls
    if len(urls) > config.max_files:
        raise HTTPException(413, f"too many URLs: {len(urls)} (the limit is {config.max_files} per request)")
    return urls


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, lower case ('' when it has none)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, config: ServeConfig) -> bytes:
    """The raw request body, at most the upload limit (413 beyond), held once: the `BodyBudget` counts it once."""
    body = io.BytesIO()  # `getvalue` hands its buffer over uncopied (a bytearray's `bytes()` held the body twice)
    try:
        async for chunk in request.stream():
            body.write(chunk)
            if body.tell() > config.max_upload_bytes:
                raise HTTPException(413, too_large_message(config))
    except ClientDisconnect:  # as FastAPI answers for a form: no traceback in the log for a client that left
        raise HTTPException(400, "the client closed the connection before the body ended") from None
    return body.getvalue()


def _json_body(model: type[M], body: bytes) -> M:
    """`body` as `model` (`ImageURL`, `ImageURLs`); a 422 saying what is wrong otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(map(str, error["loc"]))
        raise HTTPException(422, f"{JSON_BODY[model]}; {where + ': ' if where else ''}{error['msg']}") from None


class URLFetcher:
    """The pool `fetch_image` downloads on: at most `workers` URLs at once, apart from the default executor (the heatmap
    renders), so slow image servers hold no more than these threads; a batch takes `BATCH_FETCHES` of them.

    A URL's `timeout` counts from when it was asked for, its wait for a thread included: one still waiting then is not
    fetched but refused (`ServerBusy`), so clients filling the threads hold no other request past its limit. A fetch
    holds its `max_bytes` of the request bodies' `BodyBudget` until it ends, so 8 fetches of 20 MB count as uploads do.
    """

    def __init__(self, workers: int = FETCH_WORKERS, timeout: float = URL_TIMEOUT_S):
        self.workers, self.timeout = workers, timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fakescope-fetch")
        self._lock = threading.Lock()
        self._waiting = 0
        self._recent: deque[float] = deque(maxlen=RECENT_FETCHES)  # seconds each of the latest fetches held a thread

    async def fetch(self, url: str, max_bytes: int, held: Held) -> bytes:
        """The bytes at `url` (`fetch_url`), at most `max_bytes`; `ServerBusy` when no thread took it in time, or when
        `max_bytes` do not fit in `held`'s budget once one did.

        `max_bytes` are taken from the budget when a thread starts the fetch (a URL waiting for one holds none: else
        cheap requests naming slow URLs held it all) and given back when it ends, however it ends (a request cancelled
        mid-fetch: once its thread stops); the bytes fetched are then `held`'s until its request is answered.
        """
        with self._lock:
            self._waiting += 1
        future = self._pool.submit(self._fetch, url, max_bytes, time.monotonic(), held.budget)
        future.add_done_callback(self._unqueue_cancelled)  # a client that left before its turn
        try:
            data = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # its thread may still be fetching
            future.add_done_callback(partial(_give_fetched, held.budget))
            raise
        held.keep(len(data))
        return data

    def retry_after(self) -> int:
        """Whole seconds the waiting URLs should take on the threads, at the time of the `RECENT_FETCHES` latest
        fetches, within `RETRY_AFTER_RANGE`."""
        recent = list(self._recent)
        return estimated_wait(self._waiting, sum(recent), len(recent), workers=self.workers,
                              before_any=round(self.timeout))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fetch(self, url: str, max_bytes: int, asked: float, budget: BodyBudget) -> bytes:
        """`fetch_url` within `max_bytes` of `budget`; the bytes fetched stay taken from it (the caller's to give back)."""
        started = time.monotonic()
        with self._lock:
            self._waiting -= 1
        if started - asked >= self.timeout:
            raise ServerBusy(f"the server is busy: every URL fetch thread was taken for {self.timeout:g} s; "
                             "try again shortly", self.retry_after())
        if not budget.take(max_bytes):
            raise ServerBusy(budget.busy(), BUSY_RETRY_S)
        data = b""
        try:
            data = fetch_url(url, max_bytes, timeout=self.timeout, started=asked)
        finally:
            budget.give(max_bytes - len(data))
            self._recent.append(time.monotonic() - started)
        return data

    def _unqueue_cancelled(self, future: Future) -> None:
        if future.cancelled():
            with self._lock:
                self._waiting -= 1


def _give_fetched(budget: BodyBudget, future: Future) -> None:
    """Give back the bytes a fetch kept for a request that left before it ended."""
    if not future.cancelled() and future.exception() is None:
        budget.give(len(future.result()))


async def fetch_image(request: Request, url: str, config: ServeConfig) -> tuple[str, bytes]:
    """The URL as named (`url_name`) and its bytes, fetched as `fetch_url` does within the upload limit on
    the app's `URLFetcher`: a refused URL is a 422, a file over the limit a 413 (as an upload), a fetch that may pass
    (`TransientFetchError`: a timeout, a refused or dropped connection, 408/425/429/5xx) a 503 with `Retry-After`
    `FETCH_RETRY_AFTER`, one no thread took within the time limit a 503 with the threads' estimated wait, one whose
    upload limit does not fit in the request bodies' memory a 503 with `Retry-After: 1`, another failed fetch a 502,
    each naming the URL as shown."""
    name = url_name(url)
    try:
        return name, await request.app.state.fetcher.fetch(url, config.max_upload_bytes, request.scope[HELD])
    except ServerBusy as exc:
        raise HTTPException(503, f"could not fetch {name}: {exc}", {"Retry-After": str(exc.retry_after)}) from None
    except FetchError as exc:
        status = 422 if isinstance(exc, URLRefused) else 413 if isinstance(exc, FetchTooLarge) else 502
        retry = isinstance(exc, TransientFetchError)
        raise HTTPException(503 if retry else status, f"could not fetch {name}: {redact_urls(str(exc))}",
                            {"Retry-After": str(FETCH_RETRY_AFTER)} if retry else None) from None


async def only_file(request: Request) -> None:
    """Refuse a form with several `file` parts: FastAPI would hand over the last one alone."""
    count = len((await request.form()).getlist("file"))  # the form FastAPI parsed, not read again
    if count > 1:
        raise HTTPException(422, f"{count} 'file' parts: {ONE_FILE}")


async def read_upload(file: UploadFile, config: ServeConfig) -> bytes:
    """An uploaded file's bytes, at most the upload limit (413 beyond)."""
    data = await file.read(config.max_upload_bytes + 1)
    if len(data) > config.max_upload_bytes:
        raise HTTPException(413, too_large_message(config))
    return data


def too_large_message(config: ServeConfig, files: int = 1) -> str:
    """The 413 line; a batch's says both limits, as its body may pass their product with images under the first."""
    batch = f", {files} images per request" if files > 1 else ""
    return f"upload too large: the limit is {config.max_upload_mb:g} MB per image{batch}"


def check_image_422(data: bytes, config: ServeConfig) -> None:
    """`limits.check_image` as a 422."""
    try:
        check_image(data, config.max_pixels)
    except ImageLoadError as exc:
        raise HTTPException(422, str(exc)) from None
