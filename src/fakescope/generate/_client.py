"""The HTTP client under `make_client`'s `openai.OpenAI`: it never waits twice for an answer the API may have billed.

The `openai` client resends a request whose answer timed out or broke off, as it does a 429 or a 5xx; but the API may
have made and billed that image already, so the resend pays twice (and breaks `--at-most-once`). Here a read timeout,
or a connection lost once the answer's headers came, raises `LostAnswer`, an `openai.OpenAIError` the client
does not retry; the run leaves that job as a crash would (in flight, unresolved). A connection lost before any answer
(a stale keep-alive connection) is still retried: no answer was made.

`StoppableClient.stop` (Ctrl-C) ends the client's wait before a retry (up to 120 s for a 429's `Retry-After`) at once,
and sends no request from then on: the request not sent raises `Unsent`, unbilled.
"""

from __future__ import annotations

import threading

import httpx2
import openai

from fakescope.generate.openai_images import AnswerLost


class LostAnswer(AnswerLost, openai.OpenAIError):
    """The answer to a sent request was lost: it may have been made and billed."""


class Unsent(openai.OpenAIError):
    """A request not sent (or not sent again after a 429, a 5xx or a connection error): the run stopped. Not billed."""


class OnceClient(openai.DefaultHttpxClient):
    """`openai.DefaultHttpxClient` whose `send` reads the whole answer itself, raising `LostAnswer` where it is lost, and
    sends nothing once `stopping` is set (`Unsent`)."""

    def __init__(self, stopping: threading.Event | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stopping = stopping or threading.Event()

    def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs) -> httpx2.Response:
        if self.stopping.is_set():
            raise Unsent("the run stopped before it was sent")
        try:
            response = super().send(request, stream=True, **kwargs)
        except httpx2.ReadTimeout as exc:
            raise LostAnswer(f"no answer within the timeout ({exc})") from None
        if not stream:
            try:
                response.read()
            except httpx2.ReadTimeout:
                response.close()
                raise LostAnswer("the answer stopped halfway for longer than the timeout") from None
            except httpx2.TransportError as exc:
                response.close()
                raise LostAnswer(f"the answer broke off ({type(exc).__name__}: {exc})") from None
        return response


class StoppableClient(openai.OpenAI):
    """`openai.OpenAI` over a `OnceClient` whose waits before a retry end at once on `stop`, the retry not sent."""

    def __init__(self, *, http_client: OnceClient | None = None, **kwargs):  # `copy` passes its own http_client
        self.stopping = http_client.stopping if http_client is not None else threading.Event()
        super().__init__(http_client=http_client or OnceClient(self.stopping), **kwargs)

    def stop(self) -> None:
        """Send no request from now on, and end the waits before a retry (each raises `Unsent`)."""
        self.stopping.set()

    def _sleep_for_retry(self, *, retries_taken: int, max_retries: int, options, response: httpx2.Response | None) -> None:
        seconds = self._calculate_retry_timeout(max_retries - retries_taken, options, response.headers if response else None)
        if self.stopping.wait(seconds):
            why = f"a {response.status_code} answer" if response is not None else "a connection error"
            raise Unsent(f"the run stopped while it waited to send it again after {why}")
