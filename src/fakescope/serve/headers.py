"""`AnswerHeaders`: the ASGI middleware that gives every answer `ANSWER_HEADERS`."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders

ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
"""On every answer, errors and the connection cap's 503 (`serve.connections`) included: no answer is read as another
type than it is sent as, and no cache (a proxy's, the browser's) keeps the results of a user's upload. An answer that
sets its own `Cache-Control` keeps it."""


class AnswerHeaders:
    """ASGI middleware: add `ANSWER_HEADERS` to every answer that does not set them itself."""

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

        await self.app(scope, receive, marked_send)
