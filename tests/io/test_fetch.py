"""`fetch_public` against a real loopback HTTP server: its time limit covers the whole download; through the proxy the
environment names, a real loopback one."""

from __future__ import annotations

import datetime
import os
import re
import socket
import ssl
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from forward_proxy import forward_proxy

from fakescope.io.fetch import TRUSTED_ENV, FetchError, TransientFetchError, URLRefused, fetch_public, fetch_url

BODY = 40


class _Drip(BaseHTTPRequestHandler):
    """Sends its 40-byte body a byte every 0.1 s (each read is quick, the whole is not), as the type the request's path
    ends in (`/page.html`: text/html); `/stall.png` a byte every 0.8 s, `/head.png` its headers a byte every 0.3 s,
    `/now.png` all at once, `/407.png` a 407 as a proxy would; `/to/HOST/PATH` redirects to `/PATH` on HOST at this port, keeping the connection open."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/to/"):
            host, _, path = self.path[4:].partition("/")
            self.wfile.write(f"HTTP/1.1 302 Found\r\nLocation: //{host}:{self.server.server_address[1]}/{path}\r\n"
                             "Content-Length: 0\r\n\r\n".encode())
            self.close_connection = False
            return
        if self.path == "/407.png":
            self.wfile.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            return
        head = (f"HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nContent-Type: "
                f"{'text/html; charset=utf-8' if self.path.endswith('.html') else 'image/png'}\r\n\r\n").encode()
        if self.path != "/head.png":
            self.wfile.write(head)
            head = b""
        gap = {"/stall.png": 0.8, "/head.png": 0.3, "/now.png": 0}.get(self.path, 0.1)
        try:
            for byte in head + b"x" * BODY:
                time.sleep(gap)
                self.wfile.write(bytes([byte]))
        except OSError:  # the client gave up
            pass


@contextmanager
def _serving(context: ssl.SSLContext | None = None):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def drip():
    with _serving() as origin:
        yield origin


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A server context whose self-signed certificate names `images.test` and `localhost`, and its file to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fakescope test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("images.test"), x509.DNSName("localhost")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context, str(folder / "cert.pem")


@pytest.fixture
def proxy_env(monkeypatch):
    """No proxy from the environment the tests run in; `images.test` and `other.test` resolve to loopback."""
    for name in [n for n in os.environ if n.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: resolve(
        "127.0.0.1" if host in ("images.test", "other.test") else host, *a, **k))
    return monkeypatch


def test_a_body_dripped_past_the_timeout_is_refused_at_the_timeout(drip):
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"^the file at that URL took over 1 s to download$"):
        fetch_public(drip + "/a.png", max_bytes=1 << 20, timeout=1, trusted=(drip,))  # each byte within 1 s: 4 s in all
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("path", ["/stall.png", "/head.png"])
def test_reads_just_within_the_timeout_end_at_the_timeout(drip, path):
    """Each read waited up to the time left when the request was sent: a byte every 0.8 s of a 1 s limit held the fetch
    1.6 s, headers a byte every 0.3 s as long as they lasted (12 s). Now each waits the time left: 1 s in all."""
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"^the file at that URL took over 1 s to download$"):
        fetch_public(drip + path, max_bytes=1 << 20, timeout=1, trusted=(drip,))
    assert time.monotonic() - start < 1.4


def test_a_body_within_the_timeout_is_fetched_whole(drip):
    assert fetch_public(drip + "/a.png", max_bytes=1 << 20, timeout=30, trusted=(drip,)) == b"x" * BODY


def test_a_web_page_is_refused_unread(drip):
    start = time.monotonic()
    with pytest.raises(FetchError, match=r"^the URL answered text/html, not an image \(a web page\? use the image's own"):
        fetch_public(drip + "/page.html", max_bytes=1 << 20, timeout=30, trusted=(drip,))
    assert time.monotonic() - start < 2  # not the 4 s its body takes


def test_an_http_url_goes_through_the_proxy_the_environment_names_to_the_checked_address(drip, proxy_env):
    """Image URLs were fetched directly whatever `HTTP_PROXY` said (the deadline transport replaced httpx's own, which
    reads it). The proxy is asked for the address that passed the check (not the name, which it would resolve again),
    its `Host` that address too, as RFC 9112 (3.2) wants of an absolute-form target (it was the host's name, which the
    proxy must replace); `NO_PROXY` names hosts fetched directly."""
    url = drip.replace("127.0.0.1", "images.test")
    with forward_proxy() as proxy:
        proxy_env.setenv("HTTP_PROXY", proxy.url)
        assert fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,)) == b"x" * BODY
        assert proxy.asked == [f"GET {drip}/now.png HTTP/1.1 Host: {drip.partition('://')[2]}"]
        proxy_env.setenv("no_proxy", "example.com,images.test")
        assert fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,)) == b"x" * BODY
        assert len(proxy.asked) == 1


@pytest.mark.parametrize("via", [None, "http", "https"])
def test_an_https_url_is_tunnelled_to_the_checked_address_and_its_certificate_checked_for_its_host(tls, proxy_env, via):
    """httpcore's CONNECT tunnel checked the certificate for the address it tunnels to, not the host (it ignores the
    `sni_hostname` extension, encode/httpcore#934), and an https:// proxy's own for the host: neither could fetch."""
    context, cert = tls
    proxy_env.setenv("SSL_CERT_FILE", cert)
    with _serving(context) as origin, forward_proxy(context if via == "https" else None) as proxy:
        url = origin.replace("127.0.0.1", "images.test")
        if via:
            proxy_env.setenv("HTTPS_PROXY", proxy.url)
        assert fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,)) == b"x" * BODY
        port = origin.rpartition(":")[2]
        assert proxy.asked == ([f"CONNECT 127.0.0.1:{port} HTTP/1.1 Host: 127.0.0.1:{port}"] if via else [])


@pytest.mark.parametrize("via", [None, "http"])
def test_a_tls_connection_is_reused_only_for_the_host_it_was_verified_for(tls, proxy_env, via):
    """`images.test` and `other.test` share an address; the certificate names `images.test` (and `localhost`) alone.
    Connections were pooled by address, so a redirect from one to the other reused the connection verified for
    `images.test` and never checked the certificate for `other.test`."""
    context, cert = tls
    proxy_env.setenv("SSL_CERT_FILE", cert)
    with _serving(context) as origin, forward_proxy() as proxy:
        if via:
            proxy_env.setenv("HTTPS_PROXY", proxy.url)
        port = origin.rpartition(":")[2]
        trusted = tuple(f"https://{host}:{port}" for host in ("images.test", "other.test", "localhost"))
        url = f"https://images.test:{port}/to/"
        with pytest.raises(FetchError, match=r"certificate is not valid for 'other\.test'") as refused:
            fetch_public(url + "other.test/now.png", max_bytes=1 << 20, timeout=5, trusted=trusted)
        assert not isinstance(refused.value, TransientFetchError)  # a certificate for another name: retrying won't help
        assert fetch_public(url + "localhost/now.png", max_bytes=1 << 20, timeout=5, trusted=trusted) == b"x" * BODY


def test_a_dripping_server_is_cut_at_the_deadline_through_the_proxy(drip, proxy_env):
    with forward_proxy() as proxy:
        proxy_env.setenv("HTTP_PROXY", proxy.url)
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"^the file at that URL took over 1 s to download$"):
            fetch_public(drip + "/head.png", max_bytes=1 << 20, timeout=1, trusted=(drip,))
        assert time.monotonic() - start < 1.4 and len(proxy.asked) == 1


def test_a_non_public_address_is_refused_before_asking_the_proxy(drip, proxy_env):
    with forward_proxy() as proxy:
        proxy_env.setenv("ALL_PROXY", proxy.url)
        with pytest.raises(URLRefused, match="resolves to 127.0.0.1, a non-public address"):
            fetch_public(drip + "/now.png", max_bytes=1 << 20, timeout=5)
        assert proxy.asked == []


@pytest.mark.parametrize("proxy, why", [
    ("socks5://user:hunter22@127.0.0.1:1080", "cannot fetch http:// URLs through a socks5:// proxy (HTTP_PROXY or "
                                              "ALL_PROXY): only http:// and https:// proxies are supported"),
    ("http://user:hunter22@proxy:port", "the proxy for http:// URLs (HTTP_PROXY or ALL_PROXY) is not a valid URL"),
])
def test_a_proxy_fakescope_cannot_use_is_one_line_that_hides_its_password(drip, proxy_env, proxy, why):
    proxy_env.setenv("ALL_PROXY", proxy)
    with pytest.raises(FetchError) as error:
        fetch_public(drip + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(drip,))
    assert str(error.value) == why


@pytest.mark.parametrize("scheme, refuse, transient, why", [
    ("https", "503 Service Unavailable", True, "the proxy for https:// URLs ({}, from HTTPS_PROXY or ALL_PROXY) answered "
                                               "503 Service Unavailable"),
    ("https", "502 Bad Gateway", True, "the proxy for https:// URLs ({}, from HTTPS_PROXY or ALL_PROXY) answered 502 Bad "
                                       "Gateway"),
    ("https", "403 Forbidden", False, "the proxy for https:// URLs ({}, from HTTPS_PROXY or ALL_PROXY) answered 403 "
                                      "Forbidden"),
    ("https", "407 Proxy Authentication Required", False, "the proxy for https:// URLs ({}, from HTTPS_PROXY or "
                                                          "ALL_PROXY) answered 407 Proxy Authentication Required"),
    ("http", "407 Proxy Authentication Required", False, "the proxy for http:// URLs ({}, from HTTP_PROXY or ALL_PROXY) "
                                                         "answered 407 Proxy Authentication Required"),
    ("http", "503 Service Unavailable", True, "HTTP Error 503: Service Unavailable"),  # the proxy's or the server's
])
def test_a_proxy_that_refuses_is_transient_only_when_busy(proxy_env, scheme, refuse, transient, why):
    """A proxy refusing the CONNECT was an `httpx.ProxyError`, a permanent `ProxyError: 503 Service Unavailable`
    (a scan rerun never retried it, serve answered 502); its 407 to a plain request an `HTTP Error 407` from no one."""
    url = f"{scheme}://images.test:1"
    with forward_proxy() as proxy:
        proxy.refuse = refuse
        proxy_env.setenv("ALL_PROXY", proxy.url.replace("://", "://user:hunter22@"))
        with pytest.raises(FetchError) as error:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,))
    expected = why.format(proxy.url.partition("://")[2])
    assert (str(error.value), isinstance(error.value, TransientFetchError)) == (expected, transient)
    assert len(proxy.asked) == 1


@pytest.mark.parametrize("refuse, status, transient, why", [
    ("503 Service Unavailable", 'proxy.test; error=destination_unavailable; details="no route, sorry; later"', True,
     "the proxy for http:// URLs ({}, from HTTP_PROXY or ALL_PROXY) answered 503 Service Unavailable "
     "(error=destination_unavailable)"),
    ("403 Forbidden", "cdn.test; received-status=200, proxy.test; error=http_request_denied", False,
     "the proxy for http:// URLs ({}, from HTTP_PROXY or ALL_PROXY) answered 403 Forbidden (error=http_request_denied)"),
    ("503 Service Unavailable", 'cdn.test; error=connection_refused, "proxy, test"; received-status=503', True,
     "HTTP Error 503: Service Unavailable"),
    ("503 Service Unavailable", None, True, "HTTP Error 503: Service Unavailable"),
])
def test_a_plain_http_answer_is_the_proxys_where_its_proxy_status_says_it_made_it(proxy_env, refuse, status, transient,
                                                                                  why):
    """A proxy's own 503 to a plain http request read `HTTP Error 503`, as the server's might. Where the last member of
    its `Proxy-Status` (RFC 9209), the intermediary nearest fakescope, has an `error`, the proxy made it and is named; one
    it passed on (`received-status`, an `error` of an intermediary before it) or no field stays the server's."""
    with forward_proxy() as proxy:
        proxy.refuse, proxy.proxy_status = refuse, status
        proxy_env.setenv("HTTP_PROXY", proxy.url.replace("://", "://user:hunter22@"))
        with pytest.raises(FetchError) as error:
            fetch_public("http://images.test:1/now.png", max_bytes=1 << 20, timeout=5, trusted=("http://images.test:1",))
    expected = why.format(proxy.url.partition("://")[2])
    assert (str(error.value), isinstance(error.value, TransientFetchError)) == (expected, transient)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_cannot_be_reached_is_transient_and_named(proxy_env, scheme):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    proxy_env.setenv(f"{scheme.upper()}_PROXY", f"http://user:hunter22@127.0.0.1:{port}")
    url = f"{scheme}://images.test:1"
    with pytest.raises(TransientFetchError) as error:
        fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,))
    assert str(error.value) == (f"the proxy for {scheme}:// URLs (127.0.0.1:{port}, from {scheme.upper()}_PROXY or "
                                "ALL_PROXY) could not be reached ([Errno 111] Connection refused)")


@contextmanager
def _silent_proxy():
    """The port of a loopback listener that never accepts: the first connection completes (in the kernel's queue of
    one), its TLS handshake unanswered; once that is held, further connections are not answered at all."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        yield silent.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_does_not_answer_the_connection_in_time_is_named(proxy_env, scheme):
    """A connection to the proxy that timed out was the fetch's own `the file at that URL took over 1 s to download`, as
    if the image's server were slow."""
    url = f"{scheme}://images.test:1"
    with _silent_proxy() as port, socket.create_connection(("127.0.0.1", port)):
        proxy_env.setenv("ALL_PROXY", f"http://user:hunter22@127.0.0.1:{port}")
        start = time.monotonic()
        with pytest.raises(TransientFetchError) as error:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=1, trusted=(url,))
    assert time.monotonic() - start < 2.5
    assert str(error.value) == (f"the proxy for {scheme}:// URLs (127.0.0.1:{port}, from {scheme.upper()}_PROXY or "
                                "ALL_PROXY) could not be reached (timed out)")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_that_never_answers_the_connect_is_named(proxy_env, scheme):
    """A proxy that took the connection but never answered the CONNECT was the fetch's own `the file at that URL took
    over 1 s to download`, as if the image's server were slow. A plain http request it never answers may wait on the
    server: that stays the fetch's own time limit."""
    url = f"{scheme}://images.test:1"
    with _silent_proxy() as port:
        proxy_env.setenv("ALL_PROXY", f"http://user:hunter22@127.0.0.1:{port}")
        start = time.monotonic()
        with pytest.raises(TransientFetchError) as error:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=1, trusted=(url,))
    assert time.monotonic() - start < 2.5
    assert str(error.value) == (f"the proxy for https:// URLs (127.0.0.1:{port}, from HTTPS_PROXY or ALL_PROXY) did not "
                                "answer the CONNECT (timed out)" if scheme == "https" else
                                "the file at that URL took over 1 s to download")


def _lookup_held(monkeypatch, name: str, release: threading.Event) -> None:
    """`getaddrinfo` of `name` waits as a DNS server that never answers holds it, until `release` or 3 s, then fails as
    the system's resolver gives up (`EAI_AGAIN`); other names resolve as before."""
    resolve = socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        if host != name:
            return resolve(host, *args, **kwargs)
        release.wait(3)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_proxy_name_whose_lookup_never_answers_is_named_at_the_time_limit(proxy_env, scheme):
    """httpcore resolved the proxy's name in the fetch's thread, outside its time limit: a DNS server that never
    answered held the fetch (a REST server's fetch thread) until the system's resolver gave up, then blamed no lookup
    (`could not be reached ([Errno -3] ...)`). It is resolved on the resolver threads, waited on until the limit."""
    release = threading.Event()
    _lookup_held(proxy_env, "proxy.test", release)
    proxy_env.setenv("ALL_PROXY", "http://user:hunter22@proxy.test:3128")
    url = f"{scheme}://images.test:1"
    start = time.monotonic()
    try:
        with pytest.raises(TransientFetchError) as error:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=0.5, trusted=(url,))
        took = time.monotonic() - start
    finally:
        release.set()
    assert took < 1.5
    assert str(error.value) == (f"the proxy for {scheme}:// URLs (proxy.test:3128, from {scheme.upper()}_PROXY or "
                                "ALL_PROXY) could not be resolved (timed out)")


def test_every_address_of_the_proxy_name_is_tried_in_order(drip, proxy_env):
    """The proxy's name resolved within the time limit is connected to as `socket.create_connection` did: each address
    in turn (`localhost` may be ::1 first, a proxy listening on 127.0.0.1 alone)."""
    resolve, asked = socket.getaddrinfo, []

    def lookup(host, *args, **kwargs):
        asked.append(host)
        if host == "proxy.test":
            return resolve("::1", *args, **kwargs) + resolve("127.0.0.1", *args, **kwargs)
        return resolve(host, *args, **kwargs)

    proxy_env.setattr(socket, "getaddrinfo", lookup)
    with forward_proxy() as proxy:
        proxy_env.setenv("HTTP_PROXY", proxy.url.replace("localhost", "proxy.test"))
        assert fetch_public(drip + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(drip,)) == b"x" * BODY
    assert len(proxy.asked) == 1 and asked.count("proxy.test") == 1


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_https_proxy_whose_tls_fails_is_named(tls, proxy_env, scheme):
    """A TLS handshake with an https:// proxy that failed (its certificate not trusted, or no answer) was a
    `ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED] ...` or the fetch's own time limit, as if the image's server had
    failed; a certificate refused stays permanent, a handshake timed out is transient."""
    url = f"{scheme}://images.test:1"
    context, _ = tls  # its certificate not trusted here: no SSL_CERT_FILE
    with forward_proxy(context) as proxy:
        proxy_env.setenv("ALL_PROXY", proxy.url.replace("://", "://user:hunter22@"))
        with pytest.raises(FetchError) as refused:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,))
    assert not isinstance(refused.value, TransientFetchError) and proxy.asked == []
    assert str(refused.value).startswith(f"the proxy for {scheme}:// URLs ({proxy.url.partition('://')[2]}, from "
                                         f"{scheme.upper()}_PROXY or ALL_PROXY) failed its TLS handshake ([SSL: "
                                         "CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    with _silent_proxy() as port:
        proxy_env.setenv("ALL_PROXY", f"https://user:hunter22@127.0.0.1:{port}")
        with pytest.raises(TransientFetchError) as silent:
            fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=1, trusted=(url,))
    assert re.fullmatch(rf"the proxy for {scheme}:// URLs \(127\.0\.0\.1:{port}, from {scheme.upper()}_PROXY or ALL_PROXY\) "
                        r"failed its TLS handshake \(_ssl\.c:\d+: The handshake operation timed out\)", str(silent.value))


@pytest.mark.parametrize("via", [False, True])
def test_a_host_name_in_unicode_is_fetched_by_its_idna_name(drip, proxy_env, via):
    """`http://bücher.test/...` raised a bare UnicodeEncodeError (its name went into the `Host` header as written, which
    takes ASCII): it is resolved, named to the server and checked in TLS as `xn--bcher-kva.test` (through a proxy, an
    http request names the address alone)."""
    resolve = socket.getaddrinfo
    proxy_env.setattr(socket, "getaddrinfo", lambda host, *a, **k: resolve(  # as the system's resolver is asked it
        "127.0.0.1" if host.encode("idna") == b"xn--bcher-kva.test" else host, *a, **k))
    port = drip.rpartition(":")[2]
    url = f"http://bücher.test:{port}"
    with forward_proxy() as proxy:
        if via:
            proxy_env.setenv("HTTP_PROXY", proxy.url)
        assert fetch_public(url + "/now.png", max_bytes=1 << 20, timeout=5, trusted=(url,)) == b"x" * BODY
    assert proxy.asked == ([f"GET {drip}/now.png HTTP/1.1 Host: 127.0.0.1:{port}"] if via else [])


@pytest.mark.parametrize("host, trusted", [("bücher.test", "xn--bcher-kva.test"), ("xn--bcher-kva.test", "BÜCHER.test")])
def test_a_trusted_origin_matches_its_host_in_unicode_or_idna(drip, proxy_env, host, trusted):
    """A trusted origin was matched as written: `https://bücher.test` did not exempt `https://xn--bcher-kva.test` (the
    same host), nor the other way round, so its loopback address was refused."""
    resolve = socket.getaddrinfo
    proxy_env.setattr(socket, "getaddrinfo", lambda name, *a, **k: resolve(
        "127.0.0.1" if name == "xn--bcher-kva.test" else name, *a, **k))
    port = drip.rpartition(":")[2]
    url = f"http://{host}:{port}/now.png"
    assert fetch_public(url, max_bytes=1 << 20, timeout=5, trusted=(f"http://{trusted}:{port}",)) == b"x" * BODY
    with pytest.raises(URLRefused, match="a non-public address"):
        fetch_public(url, max_bytes=1 << 20, timeout=5, trusted=(f"http://{trusted}:{int(port) + 1}",))


def test_a_trusted_origin_that_is_no_valid_url_is_one_line(proxy_env):
    """A bad port in `FAKESCOPE_TRUSTED_ORIGINS` raised a bare `ValueError` from every URL fetch."""
    proxy_env.setenv(TRUSTED_ENV, "http://images.intranet:8080, http://intranet:bad")
    with pytest.raises(FetchError) as error:
        fetch_url("http://images.test/a.png", timeout=5)
    assert str(error.value) == ("FAKESCOPE_TRUSTED_ORIGINS names no valid origin: 'http://intranet:bad' (Port could not "
                                "be cast to integer value as 'bad')")


def test_a_tls_handshake_due_past_the_deadline_closes_its_connection(drip):
    """httpcore leaves closing a connection whose TLS handshake failed to the stream (`SyncStream.start_tls` does): one
    refused before the handshake, the deadline having passed since the connect, stayed open."""
    import httpcore

    from fakescope.io._deadline import DeadlineBackend

    backend = DeadlineBackend(time.monotonic() + 5)
    stream = backend.connect_tcp("127.0.0.1", int(drip.rpartition(":")[2]))
    connection = stream.get_extra_info("socket")
    backend.deadline = time.monotonic()
    with pytest.raises(httpcore.ConnectTimeout):
        stream.start_tls(ssl.create_default_context(), "images.test")
    assert connection.fileno() == -1


def test_a_407_from_the_server_inside_a_tunnel_is_the_servers(tls, proxy_env):
    """Every 407 through a proxy was the proxy's, though inside a CONNECT tunnel only the server answers (the proxy's
    own 407 to the CONNECT is an `httpx.ProxyError`): it blamed HTTPS_PROXY's credentials for the server's answer."""
    context, cert = tls
    proxy_env.setenv("SSL_CERT_FILE", cert)
    with _serving(context) as origin, forward_proxy() as proxy:
        proxy_env.setenv("HTTPS_PROXY", proxy.url)
        url = origin.replace("127.0.0.1", "images.test")
        with pytest.raises(FetchError) as error:
            fetch_public(url + "/407.png", max_bytes=1 << 20, timeout=5, trusted=(url,))
    assert str(error.value) == "HTTP Error 407: Proxy Authentication Required" and len(proxy.asked) == 1


def test_a_fetched_body_is_held_once():
    """The serve body budget counts a fetch's bytes once, so the fetch holds them once (a bytearray's `bytes()` copy held
    them twice at the end: a peak of 2x). The body is made before tracing, and sent uncopied."""
    import tracemalloc

    body = b"\x89PNG\r\n\x1a\n" + bytes(8 * 1024 * 1024)

    class Whole(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            self.wfile.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: image/png\r\n\r\n".encode())
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Whole)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    fetch_public(f"{origin}/big.png", max_bytes=2 * len(body), timeout=30, trusted=(origin,))  # imports httpx's parts
    tracemalloc.start()
    try:
        fetched = fetch_public(f"{origin}/big.png", max_bytes=2 * len(body), timeout=30, trusted=(origin,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        httpd.shutdown()
        httpd.server_close()
    assert fetched == body and peak < 1.3 * len(body)  # 2.05 x with the copy, 1.11 x without
