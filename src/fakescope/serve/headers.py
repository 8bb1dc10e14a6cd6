"""`AnswerHeaders`: the ASGI middleware that gives every answer `ANSWER_HEADERS`, and refuses a request framed twice."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse

ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
"""On every answer, errors and the connection cap's 503 (`serve.connections`) included: no answer is read as another
type than it is sent as, and no cache (a proxy's, the browser's) keeps the results of a user's upload. An answer that
sets its own `Cache-Control` keeps it."""
TWO_FRAMINGS = "a request may not carry both Content-Length and Transfer-Encoding"


class AnswerHeaders:
    """ASGI middleware: add `ANSWER_HEADERS` to every answer that does not set them itself.

    It is the outermost, so it also refuses, unread, a request with both `Content-Length` and `Transfer-Encoding` (400,
    closing the connection; RFC 9112 6.1): uvicorn read its body as chunked, while a proxy in front may have framed it
    by its length and passed the rest on as another request (request smuggling).
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def marked_send(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ANSWER_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        names = {name for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            return await JSONResponse({"detail": TWO_FRAMINGS}, 400, {"Connection": "close"})(scope, receive, marked_send)
        await self.app(scope, receive, marked_send)
