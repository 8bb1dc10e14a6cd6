"""A loopback HTTP proxy in front of the real S3 test server that answers chosen requests with S3 errors.

Requests pass through unchanged (the Host header too, so SigV4 signatures still verify) except the
next `times` requests whose method is `method` (and whose path ends with `suffix`), which get an S3 XML error such as 503 SlowDown, or
(status 0) the upstream answer's headers and half its body before the connection is closed.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class S3FaultProxy:
    """Forward to `upstream` (an `http://host:port` S3 endpoint); `fail(...)` queues injected errors."""

    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._faults: list[tuple[str, str, int, str]] = []  # (method, suffix, status, code), used first to last
        self.injected = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail(self, method: str, status: int, code: str, times: int = 1, suffix: str = "") -> None:
        """Answer the next `times` `method` requests for a path ending with `suffix` with `status` and the S3 error `code`
        (status 0: drop mid-body)."""
        with self._lock:
            self._faults += [(method, suffix, status, code)] * times

    def clear(self) -> None:
        """Drop the injected errors not used yet."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> tuple[int, str] | None:
        with self._lock:
            for i, (wanted, suffix, status, code) in enumerate(self._faults):
                if wanted == method and path.split("?")[0].endswith(suffix):
                    del self._faults[i]
                    self.injected += 1
                    return status, code
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take_fault(self.command, self.path)
                if fault is not None and fault[0]:
                    status, code = fault
                    payload = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                               f"<Message>injected by the test proxy</Message></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():  # a HEAD answer keeps the object's length
                        if key.lower() not in _HOP_BY_HOP and (self.command == "HEAD" or key.lower() != "content-length"):
                            self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data if fault is None else data[: len(data) // 2])
                    if fault is not None:
                        self.close_connection = True
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        return Handler
