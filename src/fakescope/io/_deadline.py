"""An httpx transport whose every wait (connect, TLS handshake, each read and write) lasts at most the time left before
one deadline, so a server that drips its headers or body cannot hold a fetch past it: httpcore gives each read the
request's whole read timeout, however late the read comes. It connects directly or through an http(s):// proxy."""

from __future__ import annotations

import time

import httpcore
import httpx

from fakescope.io.fetch import _resolve


class DeadlineTransport(httpx.HTTPTransport):
    """`httpx.HTTPTransport` on `backend`, through `proxy` (an `http://` or `https://` URL) if given: httpx takes no
    network backend (encode/httpx#3749), so the pool it made is replaced by one with the same (default) settings that
    has it, an `httpcore.HTTPProxy` as httpx makes for a proxy."""

    def __init__(self, backend: DeadlineBackend, proxy: str | None = None):
        context = httpx.create_ssl_context()
        super().__init__(verify=context)
        if proxy is None:
            self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=backend)
            return
        via = httpx.Proxy(proxy)  # its user info taken out as `auth`
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(scheme=via.url.raw_scheme, host=via.url.raw_host, port=via.url.port,
                                   target=via.url.raw_path),
            proxy_auth=via.raw_auth, proxy_headers=via.headers.raw, ssl_context=context,
            proxy_ssl_context=context if via.url.scheme == "https" else None, network_backend=backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """The answer to `request`; through a proxy, a timeout awaiting its answer to a `CONNECT` is a `ProxyError`, as
        the image's server was not asked yet (it takes the request's `trace` extension to tell)."""
        if not isinstance(self._pool, httpcore.HTTPProxy):
            return super().handle_request(request)
        connecting = False  # a CONNECT sent, its answer not come

        def trace(event: str, info: dict) -> None:
            nonlocal connecting
            if event == "http11.send_request_headers.started":
                connecting = info["request"].method == b"CONNECT"
            elif event == "http11.receive_response_headers.complete":
                connecting = False

        request.extensions = {**request.extensions, "trace": trace}
        try:
            return super().handle_request(request)
        except httpx.TimeoutException as exc:
            if connecting:
                raise httpx.ProxyError("did not answer the CONNECT (timed out)", request=request) from exc
            raise


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's `SyncBackend`, every wait of its streams cut to the seconds left before `deadline` (a
    `time.monotonic()`); one past it raises httpcore's timeout at once, which httpx passes on as its own. For a pool
    whose every connection goes to a proxy (`proxy`: its scheme, `http` or `https`), resolving its name, a connection to
    it or a TLS handshake with it (an https:// one) that fails or times out is a `ProxyError`, as the image's server was
    not asked."""

    def __init__(self, deadline: float, *, proxy: str | None = None):
        self.deadline, self.proxy = deadline, proxy
        self.names: dict[str, str] = {}
        """The host name each checked address stands for: TLS with that address checks its certificate for that name, as
        the `sni_hostname` extension would, which httpcore's proxy tunnel ignores (encode/httpcore#934) and an
        https:// proxy would take for its own name. Its pool keeps connections by address, so a backend (and the
        pool on it) serves one host name."""
        self._backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None) -> httpcore.NetworkStream:
        """A connection to `host` (the checked address; a proxy's name, resolved within the deadline on the fetch's
        resolver threads, as `socket.create_connection` would resolve it unbounded, each of its addresses in turn)."""
        wait = self.wait(timeout, httpcore.ConnectTimeout)
        if not self.proxy:
            return DeadlineStream(self._backend.connect_tcp(host, port, wait, local_address, socket_options), self)
        try:
            addresses = [info[4][0] for info in _resolve(host, port, wait)]
        except TimeoutError:
            raise httpcore.ProxyError("could not be resolved (timed out)") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ProxyError(f"could not be resolved ({exc})") from exc
        for address in addresses:  # `localhost` may be ::1 first, the proxy listening on 127.0.0.1 alone
            try:
                wait = self.wait(timeout, httpcore.ConnectTimeout)
                stream = self._backend.connect_tcp(address, port, wait, local_address, socket_options)
                return DeadlineStream(stream, self, to_proxy=self.proxy == "https")
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failed = exc  # the last one's, as `socket.create_connection` raises
        raise httpcore.ProxyError(f"could not be reached ({failed})") from failed

    def wait(self, timeout: float | None, error: type[httpcore.TimeoutException]) -> float:
        """`timeout`, at most the seconds left; `error` when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("timed out")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A stream of a `DeadlineBackend`, each wait within its deadline; `to_proxy`: a connection to an https:// proxy, whose
    TLS is the proxy's own (TLS on the stream that makes is the tunnel's, to the image's server)."""

    def __init__(self, stream: httpcore.NetworkStream, backend: DeadlineBackend, *, to_proxy: bool = False):
        self._stream, self._backend, self._to_proxy = stream, backend, to_proxy

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.wait(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.wait(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        try:
            wait = self._backend.wait(timeout, httpcore.ConnectTimeout)
        except httpcore.ConnectTimeout:
            self._stream.close()  # httpcore leaves that to a stream whose handshake fails, as `SyncStream`'s closes
            raise
        if self._to_proxy:  # checked for the proxy's own name, whatever checked address that may be too
            try:
                return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, wait), self._backend)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                raise httpcore.ProxyError(f"failed its TLS handshake ({exc})") from exc
        name = self._backend.names.get(server_hostname, server_hostname)
        return DeadlineStream(self._stream.start_tls(ssl_context, name, wait), self._backend)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)
