"""A real loopback forward proxy, as `HTTP_PROXY`/`HTTPS_PROXY` name one: an absolute-form GET is forwarded to the host
its URL names (its `Host` header replaced by that, as RFC 9112 asks), a CONNECT is tunnelled; `asked` keeps each request
line and the `Host` header it came with. Set `refuse` (`503 Service Unavailable`, `407 Proxy Authentication Required`) and
it answers every request so instead, as a busy proxy or one asking for credentials does, with `proxy_status` as its
`Proxy-Status` (RFC 9209) if set."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _Forward(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, *args) -> None:
        pass

    def refused(self) -> bool:
        """Note the request; answer it as `refuse` says, if set."""
        self.server.asked.append(f"{self.requestline} Host: {self.headers['Host']}")
        if self.server.refuse:
            status, _, reason = self.server.refuse.partition(" ")
            self.send_response(int(status), reason)
            if status == "407":
                self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
            if self.server.proxy_status:
                self.send_header("Proxy-Status", self.server.proxy_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return bool(self.server.refuse)

    def do_GET(self) -> None:
        if self.refused():
            return
        url = urlsplit(self.path)
        upstream = socket.create_connection((url.hostname, url.port or 80), timeout=10)
        kept = [f"{k}: {v}" for k, v in self.headers.items() if k.lower() not in ("host", "connection", "proxy-connection")]
        head = [f"GET {url.path or '/'}{'?' * bool(url.query)}{url.query} HTTP/1.1", f"Host: {url.netloc}", *kept,
                "Connection: close"]
        upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        _pipe(upstream.recv, self.connection, upstream)
        self.close_connection = True

    def do_CONNECT(self) -> None:
        if self.refused():
            return
        host, _, port = self.path.rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
        self.send_response(200, "Connection established")
        self.end_headers()
        threading.Thread(target=_pipe, args=(self.rfile.read1, upstream, upstream), daemon=True).start()
        _pipe(upstream.recv, self.connection, upstream)
        self.close_connection = True


def _pipe(read, to: socket.socket, upstream: socket.socket) -> None:
    """Copy what `read` gives to `to` as it comes (a dripped byte at once) until either side ends, then end `upstream`."""
    try:
        while data := read(65536):
            to.sendall(data)
    except OSError:
        pass
    finally:
        try:
            upstream.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True
    asked: list[str]
    refuse: str | None = None
    proxy_status: str | None = None


@contextmanager
def forward_proxy(context: ssl.SSLContext | None = None) -> Iterator[_Proxy]:
    """A loopback proxy (TLS with `context`: an https:// proxy) whose URL is `.url`, shut down on exit."""
    server = _Proxy(("127.0.0.1", 0), _Forward)
    server.asked = []
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.url = f"{'https' if context else 'http'}://localhost:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
