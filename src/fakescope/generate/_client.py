"""The HTTP client under `make_client`'s `openai.OpenAI`: it never waits twice for an answer the API may have billed.

The `openai` client resends a request whose answer timed out or broke off, as it does a 429 or a 5xx; but the API may
have made and billed that image already, so the resend pays twice (and breaks `--at-most-once`). Here a read timeout,
or a connection lost once the answer's headers came, raises `LostAnswer`, an `openai.OpenAIError` the client
does not retry; the run leaves that job as a crash would (in flight, unresolved). A connection lost before any answer
(a stale keep-alive connection) is still retried: no answer was made.
"""

from __future__ import annotations

import httpx2
import openai

from fakescope.generate.openai_images import AnswerLost


class LostAnswer(AnswerLost, openai.OpenAIError):
    """The answer to a sent request was lost: it may have been made and billed."""


class OnceClient(openai.DefaultHttpxClient):
    """`openai.DefaultHttpxClient` whose `send` reads the whole answer itself, raising `LostAnswer` where it is lost."""

    def send(self, request: httpx2.Request, *, stream: bool = False, **kwargs) -> httpx2.Response:
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
