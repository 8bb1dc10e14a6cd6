"""Sending Drive requests: the client's retries, resumed uploads, ranged downloads, and 404 for a remembered folder id."""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from fakescope.io.storage import HEAD_BYTES

log = logging.getLogger(__name__)

RETRIES = 5
"""Times a request is sent again while Drive answers 429, 5xx or a 403 rate limit, or drops the connection."""


class Gone(Exception):
    """Drive answered 404 for a folder id taken from the cache: the folder was deleted meanwhile."""


def execute(request: Any) -> Any:
    """`request.execute`, whose client retries transient answers and dropped connections (`RETRIES` times).

    The client does not retry a resumable upload's chunk whose connection dropped or timed out: that upload
    goes on here, from the bytes Drive holds, with the client's backoff (random up to 2, 4, 8... s).
    """
    attempt = 0
    while True:
        try:
            return request.execute(num_retries=RETRIES)
        except (ConnectionError, TimeoutError) as exc:
            attempt += 1
            if request.resumable_uri is None or attempt > RETRIES:
                raise
            delay = random.random() * 2**attempt
            log.info("Google Drive dropped an upload (%s); retry %d of %d in %.1f s from the bytes it holds",
                     type(exc).__name__, attempt, RETRIES, delay)
            time.sleep(delay)


def download(request: Any, chunk: int, check: Callable[[bytes], None] | None = None) -> bytes:
    """The bytes of a `get_media` request, fetched `chunk` bytes a request (ranged, with the client's retries). `check`
    gets the first `HEAD_BYTES` as soon as the first chunk is in: what it raises stops the download there."""
    from googleapiclient.http import MediaIoBaseDownload

    buffer = io.BytesIO()
    downloader = MediaIoBaseDownload(buffer, request, chunksize=chunk)
    done = False
    while not done:
        done = downloader.next_chunk(num_retries=RETRIES)[1]
        if check:
            check(buffer.getvalue()[:HEAD_BYTES])
            check = None
    return buffer.getvalue()


def checked(request: Any, cached: bool) -> Any:
    """`execute(request)` on a folder whose id may be `cached`: Drive's 404 for such an id raises `Gone`."""
    from googleapiclient.errors import HttpError

    try:
        return execute(request)
    except HttpError as exc:
        if cached and int(exc.resp.status) == 404:
            raise Gone from exc
        raise
