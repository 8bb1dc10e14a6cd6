"""`Gate`: the ASGI middleware that refuses a request (host, origin, token, generation off, size, stall, memory) unread."""

from __future__ import annotations

import asyncio
import hmac
import math
import time

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from fakescope.serve.batching import ServerBusy
from fakescope.serve.config import GENERATION_OFF, ServeConfig
from fakescope.serve.connections import BUSY_RETRY_S
from fakescope.serve.limits import HELD, MULTIPART_OVERHEAD, Held
from fakescope.serve.origins import host_refusal, origin_refusal
from fakescope.serve.request_image import too_large_message

QUEUES = {"/v1/detect": "batcher", "/v1/detect/batch": "batcher", "/v1/explain": "batcher", "/v1/generate": "jobs"}
"""The `app.state` queue (`MicroBatcher`, `JobStore`) each POST route's upload joins: refused unread when it is full."""


class Gate:
    """ASGI middleware: refuse a request before its body is read, not after.

    FastAPI parses a multipart form (spooling its files to disk) before dependencies run, so everything is
    checked here: 403 for a non-loopback `Host` on loopback or a POST or DELETE from another origin's page
    (`serve.origins`), 401 for a `/v1/*` call without the token, 503 for an image to score or a generation job while
    its queue is full (a multipart upload was received whole, and spooled, before the route could refuse it). A body
    over the request's limit answers 413, from `Content-Length` before reading or on the chunk of a chunked body that
    passes it; a body that sends nothing for `body_timeout_s`, or less in it than its pace (`body_min_rate` bytes per
    second, or for a body holding more of the budget than that pays for, its bytes held over `max_body_seconds`), 408.

    The body of an upload to a `QUEUES` route is held in memory until it is answered (a raw body as read, a multipart
    file read back from its spool), so its bytes are taken from the app's `BodyBudget` (`ServeConfig.max_body_memory_mb`)
    before any is read, from `Content-Length` (a chunked body's chunk by chunk), and given back once the answer is
    sent, whatever it is: a body that does not fit answers 503 with `Retry-After`, one over the whole budget 413. The
    request's `Held` (`scope[HELD]`) counts them, and the images a route fetches for it (`request_image.URLFetcher`).
    """

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        refusal = (host_refusal(headers, scope.get("server"), self.config.allowed_hosts)
                   or origin_refusal(scope["method"], headers, self.config.cors_origins))
        if refusal:
            return await JSONResponse({"detail": refusal}, 403)(scope, receive, send)
        if scope["path"].startswith("/v1/") and not authorised(headers.get("authorization", ""), self.config.token):
            answer = JSONResponse({"detail": "missing or wrong bearer token"}, 401, {"WWW-Authenticate": "Bearer"})
            return await answer(scope, receive, send)
        if not self.config.generation and generates(scope["path"]):
            return await JSONResponse({"detail": GENERATION_OFF}, 403)(scope, receive, send)
        uploads = scope["method"] == "POST" and scope["path"] in QUEUES
        if uploads:
            try:  # a batch's own count is checked once its form is read
                getattr(scope["app"].state, QUEUES[scope["path"]]).check_room()
            except ServerBusy as exc:
                return await JSONResponse({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after)})(scope, receive, send)
        files = self.config.max_files if scope["path"].endswith("/batch") else 1
        limit = files * self.config.max_upload_bytes + MULTIPART_OVERHEAD
        too_large = too_large_message(self.config, files)
        length = headers.get("content-length")
        expected = int(length) if length and length.isdigit() else None  # None: chunked
        if expected is not None and expected > limit:
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        held = scope[HELD] = Held(scope["app"].state.bodies)  # bytes of the budget held until the request is answered
        if uploads and expected and (refusal := memory_refusal(held, expected, expected)):
            return await JSONResponse({"detail": refusal.detail}, refusal.status_code, refusal.headers)(scope, receive, send)
        read, ended = 0, False
        window, window_bytes = time.monotonic(), 0  # each `body_timeout_s` must bring `pace` bytes a second

        async def counted_receive():
            nonlocal read, ended, window, window_bytes
            if ended:  # the body is in: later messages (a disconnect) may wait as long as they like
                return await receive()
            stall = self.config.body_timeout_s
            try:  # a byte every few seconds held the connection for hours
                message = await asyncio.wait_for(receive(), max(window + stall - time.monotonic(), 0))
            except TimeoutError:
                if not window_bytes:
                    raise HTTPException(408, f"request body timed out: no bytes for {stall:g} s") from None
                raise HTTPException(408, too_slow(window_bytes, held.bytes, self.config)) from None
            size = len(message.get("body", b""))
            read, window_bytes = read + size, window_bytes + size
            if window_bytes >= pace(held.bytes, self.config) * stall:  # a new window: no credit saved up by a fast start
                window, window_bytes = time.monotonic(), 0
            ended = not message.get("more_body", False)
            if read > limit:
                raise HTTPException(413, too_large)
            if uploads and expected is None and size and (refusal := memory_refusal(held, size, read)):
                raise refusal
            return message

        try:
            await self.app(scope, counted_receive, send)
        finally:  # answered, failed, timed out or left: the bytes are free again
            held.give_back()


def pace(held: int, config: ServeConfig) -> float:
    """Bytes a second a body holding `held` bytes of the budget must bring: enough to bring them in `max_body_seconds`,
    and at least `body_min_rate` (20 MB held at 500 bytes/s kept that much of the budget for 11 h)."""
    return max(config.body_min_rate, held / config.max_body_seconds)


def too_slow(window_bytes: int, held: int, config: ServeConfig) -> str:
    """The 408 line for a body holding `held` bytes that brought only `window_bytes` in a `body_timeout_s` window."""
    rate = pace(held, config)
    line = f"request body too slow: {window_bytes:,} bytes in {config.body_timeout_s:g} s, under {math.ceil(rate):,} bytes/s"
    if rate > config.body_min_rate:
        line += f", the pace that brings the {held:,} bytes it holds in memory in {config.max_body_seconds:g} s"
    return line


def memory_refusal(held: Held, size: int, body: int) -> HTTPException | None:
    """None once `size` more bytes of a body of `body` bytes (so far) are taken for `held`; else the answer: 413 for a
    body over the whole budget, 503 with `Retry-After` while other bodies hold too much of it."""
    if body > held.budget.limit:
        return HTTPException(413, f"upload too large: over the {held.budget.limit / 1024 / 1024:g} MB this server holds "
                                  "for all request bodies at once")
    if not held.take(size):
        return HTTPException(503, held.budget.busy(), {"Retry-After": str(BUSY_RETRY_S)})
    return None


def generates(path: str) -> bool:
    """Whether `path` is a generation route's (`/v1/generate`, `/v1/jobs/...`), as the router matches it."""
    return path == "/v1/generate" or path.startswith("/v1/jobs/")


def authorised(header: str, token: str | None) -> bool:
    """Whether an `Authorization` header carries the bearer token (compared in constant time); any does without one."""
    if token is None:
        return True
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
