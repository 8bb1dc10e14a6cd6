"""`Gate`: the ASGI middleware that refuses a request (host, origin, token, generation off, size, stall) unread."""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from fakescope.serve.batching import ServerBusy
from fakescope.serve.config import GENERATION_OFF, ServeConfig
from fakescope.serve.origins import host_refusal, origin_refusal
from fakescope.serve.request_image import too_large_message

MULTIPART_OVERHEAD = 64 * 1024
QUEUES = {"/v1/detect": "batcher", "/v1/detect/batch": "batcher", "/v1/explain": "batcher", "/v1/generate": "jobs"}
"""The `app.state` queue (`MicroBatcher`, `JobStore`) each POST route's upload joins: refused unread when it is full."""


class Gate:
    """ASGI middleware: refuse a request before its body is read, not after.

    FastAPI parses a multipart form (spooling its files to disk) before dependencies run, so everything is
    checked here: 403 for a non-loopback `Host` on loopback or a POST or DELETE from another origin's page
    (`serve.origins`), 401 for a `/v1/*` call without the token, 503 for an image to score or a generation job while
    its queue is full (a multipart upload was received whole, and spooled, before the route could refuse it). A body
    over the request's limit answers 413, from `Content-Length` before reading or on the chunk of a chunked body that
    passes it; a body that sends nothing for `body_timeout_s`, or less than `body_min_rate` bytes per second in it,
    answers 408.
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
        if scope["method"] == "POST" and scope["path"] in QUEUES:
            try:  # a batch's own count is checked once its form is read
                getattr(scope["app"].state, QUEUES[scope["path"]]).check_room()
            except ServerBusy as exc:
                return await JSONResponse({"detail": str(exc)}, 503, {"Retry-After": str(exc.retry_after)})(scope, receive, send)
        files = self.config.max_files if scope["path"].endswith("/batch") else 1
        limit = files * self.config.max_upload_bytes + MULTIPART_OVERHEAD
        too_large = too_large_message(self.config, files)
        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return await JSONResponse({"detail": too_large}, 413)(scope, receive, send)
        read, ended = 0, False
        window, window_bytes = time.monotonic(), 0  # each `body_timeout_s` must bring `body_min_rate` bytes a second

        async def counted_receive():
            nonlocal read, ended, window, window_bytes
            if ended:  # the body is in: later messages (a disconnect) may wait as long as they like
                return await receive()
            stall, rate = self.config.body_timeout_s, self.config.body_min_rate
            try:  # a byte every few seconds held the connection for hours
                message = await asyncio.wait_for(receive(), max(window + stall - time.monotonic(), 0))
            except TimeoutError:
                if not window_bytes:
                    raise HTTPException(408, f"request body timed out: no bytes for {stall:g} s") from None
                raise HTTPException(408, f"request body too slow: {window_bytes:,} bytes in {stall:g} s, under "
                                         f"{rate:g} bytes/s") from None
            size = len(message.get("body", b""))
            read, window_bytes = read + size, window_bytes + size
            if window_bytes >= rate * stall:  # a new window: no credit saved up by a fast start
                window, window_bytes = time.monotonic(), 0
            ended = not message.get("more_body", False)
            if read > limit:
                raise HTTPException(413, too_large)
            return message

        await self.app(scope, counted_receive, send)


def generates(path: str) -> bool:
    """Whether `path` is a generation route's (`/v1/generate`, `/v1/jobs/...`), as the router matches it."""
    return path == "/v1/generate" or path.startswith("/v1/jobs/")


def authorised(header: str, token: str | None) -> bool:
    """Whether an `Authorization` header carries the bearer token (compared in constant time); any does without one."""
    if token is None:
        return True
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())
