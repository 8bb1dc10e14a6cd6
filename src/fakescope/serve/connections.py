"""How `fakescope serve` runs uvicorn: a request-head timeout (uvicorn has none) and a cap on concurrent connections.

The cap is uvicorn's `limit_concurrency` rule, answered as every other busy answer is: 503, `{"detail": ...}` and
`Retry-After` (uvicorn's own answer is plain text `Service Unavailable`, without `Retry-After`).

uvicorn closes an idle keep-alive connection, and `ServeConfig.body_timeout_s` answers a stalled body 408, but a client
that sends half a request line and then nothing (slowloris) would hold its connection forever. `HeadTimeoutProtocol`
closes a connection whose request line and headers are not all in `ServeConfig.header_timeout_s` after it opened or
its last answer was sent, or (a body the app answered without reading) after that body's last bytes.

A stop (Ctrl-C, SIGTERM) takes about `ServeConfig.shutdown_grace_s`: `StoppingServer` stops the generation jobs as it
begins (`JobStore.stop`: no job starts from then on), the requests in flight get that long to be answered, the running
jobs what is left of it (`JobStore.close`), and `run` then exits without waiting for the threads of jobs still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from contextlib import suppress
from functools import partial

import h11
import uvicorn
from starlette.responses import JSONResponse
from uvicorn.main import STARTUP_FAILURE
from uvicorn.protocols.http.h11_impl import H11Protocol

from fakescope.serve.config import ServeConfig
from fakescope.serve.headers import ANSWER_HEADERS

BUSY = "the server is busy: too many connections and requests at once; try again shortly"
BUSY_RETRY_S = 1


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head takes more than `header_timeout_s`, and
    answering a request over `max_connections` connections or requests at once 503 in JSON."""

    def __init__(self, *args, header_timeout_s: float, max_connections: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.max_connections = header_timeout_s, max_connections
        self.head_timer: asyncio.TimerHandle | None = None
        self.app = partial(self._capped, self.app)

    async def _capped(self, app, scope, receive, send) -> None:
        """`app`, or the busy answer where uvicorn's `limit_concurrency` would refuse (this request's task counted)."""
        if self.max_connections is not None and (len(self.connections) >= self.max_connections
                                                 or len(self.tasks) > self.max_connections):
            self.logger.warning("Exceeded concurrency limit.")
            busy = JSONResponse({"detail": BUSY}, 503, {"Retry-After": str(BUSY_RETRY_S), "Connection": "close",
                                                        **ANSWER_HEADERS})
            return await busy(scope, receive, send)
        return await app(scope, receive, send)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE:  # an answered body: no idling
            self._wait_for_head()
        elif self.conn.their_state is h11.IDLE:  # a cycle uvicorn started here (an answered request's body came in)
            if self.head_timer is None:
                self._wait_for_head()
        elif self.conn.our_state is not h11.DONE and self.head_timer is not None:  # a new request's head is in
            self.head_timer.cancel()
            self.head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # the next request's head must come in time, and the rest of a body answered before it was read (each byte
        # of which cancels uvicorn's keep-alive timer) must not stall that long
        if not self.transport.is_closing() and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        super().connection_lost(exc)

    def _wait_for_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
        self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        if not self.transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.info("%srequest head not received in %g s: connection closed", client, self.header_timeout_s)
            self.transport.close()


def uvicorn_options(config: ServeConfig) -> dict:
    """The `uvicorn.run` / `uvicorn.Config` arguments for `config`'s head timeout, connection cap and shutdown grace
    (the most a stop waits for the requests in flight)."""
    return {"http": partial(HeadTimeoutProtocol, header_timeout_s=config.header_timeout_s,
                            max_connections=config.max_connections),
            "timeout_graceful_shutdown": config.shutdown_grace_s}


class StoppingServer(uvicorn.Server):
    """uvicorn's server, stopping the app's generation jobs as its shutdown begins, before the requests in flight are
    waited for (a job queued meanwhile would start, paid, after the stop began)."""

    async def shutdown(self, sockets=None) -> None:
        if (jobs := getattr(self.config.app.state, "jobs", None)) is not None:
            jobs.stop()
        await super().shutdown(sockets)


def run(app, config: ServeConfig, *, host: str, port: int) -> None:
    """Serve `app` as `uvicorn.run` does (exit 3 when it does not start), with `uvicorn_options(config)`.

    Where generation jobs were still running past their grace (marked failed by then), the process exits at once
    (`os._exit(0)`): Python would wait for their threads, as long as their requests take (up to the client's timeout).
    """
    server = StoppingServer(uvicorn.Config(app, host=host, port=port, log_level="info", **uvicorn_options(config)))
    with suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn raises it again once stopped
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
    if getattr(app.state, "abandoned", 0):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
