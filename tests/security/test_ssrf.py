"""Server-side fetches (Images API URL answers, the web app's pasted URLs) never reach the server's own network."""

from __future__ import annotations

import io
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fakescope.generate.ledger import Ledger
from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
from fakescope.generate.runner import LEDGER_NAME, run_openai
from fakescope.io import fetch
from fakescope.io.fetch import FetchError, TransientFetchError, URLRefused, fetch_public

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from openai_server import ImagesAPIServer  # noqa: E402

API_KEY = "sk-test-key-not-a-secret"


class _Internal(ThreadingHTTPServer):
    """A service on loopback, as an instance metadata endpoint or an admin port would be: counts what it is asked."""

    daemon_threads = True

    def __init__(self, redirect_to: str | None = None):
        super().__init__(("127.0.0.1", 0), _InternalHandler)
        self.hits: list[str] = []
        self.redirect_to = redirect_to
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, format="PNG")
        self.image = buffer.getvalue()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _InternalHandler(BaseHTTPRequestHandler):
    server: _Internal

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.server.image)))
        self.end_headers()
        self.wfile.write(self.server.image)


@pytest.fixture
def internal():
    server = _Internal()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(monkeypatch):
    server = ImagesAPIServer(api_key=API_KEY).start()
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    yield server
    server.stop()


def _photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (10, 120, 200)).save(path)
    return path


def test_an_image_url_on_the_servers_own_network_is_refused_unfetched(api, internal, tmp_path):
    """The API (or a compromised OPENAI_BASE_URL) answers a URL of another local service: it is never asked."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", response_format="url")
    api.faults = [f"url={internal.origin}/latest/meta-data/iam"]
    report = run_openai(str(_photo(tmp_path)), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, report.failed, internal.hits) == (0, 1, [])
    with Ledger(tmp_path / "out" / LEDGER_NAME) as ledger:
        error = next(ledger.jobs("failed")).error
    assert "refused to fetch from '127.0.0.1': it resolves to 127.0.0.1, a non-public address" in error


def test_the_configured_api_server_itself_may_answer_urls(api, tmp_path):
    """OPENAI_BASE_URL is the operator's choice: its own image URLs are fetched even on loopback."""
    config = OpenAIImagesConfig(model="dall-e-2", mode="variation", size="256x256", response_format="url")
    report = run_openai(str(_photo(tmp_path)), str(tmp_path / "out"), config, client=make_client(max_retries=0))
    assert (report.done, report.failed) == (1, 0)


def test_a_redirect_from_a_trusted_server_to_a_private_one_is_refused(internal):
    target = internal.origin + "/secret.png"
    trusted = _Internal(redirect_to=target)
    try:
        with pytest.raises(FetchError, match="resolves to 127.0.0.1, a non-public address"):
            fetch_public(trusted.origin + "/files/0.png", max_bytes=1 << 20, timeout=5, trusted=(trusted.origin,))
        assert trusted.hits == ["/files/0.png"] and internal.hits == []
        internal.redirect_to = None
        assert fetch_public(target, max_bytes=1 << 20, timeout=5, trusted=(internal.origin,)) == internal.image
        with pytest.raises(FetchError, match=r"over 10 bytes"):
            fetch_public(target, max_bytes=10, timeout=5, trusted=(internal.origin,))
    finally:
        trusted.shutdown()
        trusted.server_close()


def test_a_redirect_to_a_malformed_url_is_a_fetch_error(internal):
    """A Location that httpx takes but urljoin cannot parse (a stray IPv6 bracket) raised ValueError, not FetchError,
    so an Images API answer's image lost that way was no billed, lost image (986221d made the first URL's FetchErrors)."""
    internal.redirect_to = "http://a]b/x.png"
    with pytest.raises(FetchError, match=r"^redirected to no valid URL \(Invalid IPv6 URL\)$"):
        fetch_public(internal.origin + "/0.png", max_bytes=1 << 20, timeout=5, trusted=(internal.origin,))
    assert internal.hits == ["/0.png"]


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254, a non-public address"),
    ("http://10.0.0.7/x.png", "10.0.0.7, a non-public address"),
    ("http://[::1]:8000/x.png", "::1, a non-public address"),
    ("http://[::ffff:127.0.0.1]/x.png", "a non-public address"),
    ("http://0.0.0.0:8000/x.png", "0.0.0.0, a non-public address"),
    ("http://[64:ff9b::a9fe:a9fe]/x.png", "64:ff9b::a9fe:a9fe, a non-public address"),  # NAT64 to 169.254.169.254
    ("http://[64:ff9b::a00:7]/x.png", "64:ff9b::a00:7, a non-public address"),  # NAT64 to 10.0.0.7
    ("http://[2002:7f00:1::1]/x.png", "2002:7f00:1::1, a non-public address"),  # 6to4 from 127.0.0.1
    ("http://localhost:8000/x.png", "a non-public address"),
    ("https://user:pw@192.168.1.1/x.png", "192.168.1.1, a non-public address"),
    ("file:///etc/passwd", "only http:// and https:// URLs can be fetched, not file: ones"),
    ("ftp://example.com/x.png", "not ftp: ones"),
    ("//example.com/x.png", "not schemeless: ones"),
])
def test_non_public_and_non_http_urls_are_refused_before_connecting(url, why):
    with pytest.raises(FetchError, match=why.replace(".", r"\.").replace("[", r"\[")):
        fetch_public(url, max_bytes=1 << 20, timeout=5)


def test_resolving_the_host_counts_in_the_fetch_limit_and_its_timeout_is_transient():
    """`getaddrinfo` ran outside the fetch's time limit: a DNS server that never answers held the fetch (a server's fetch
    thread) for as long as the resolver's own retries. Here every resolver thread is held, as such DNS servers would
    hold them (no network needed, the resolver itself not replaced), so resolving `localhost` waits: the fetch gives
    up at its limit in one line, a transient error as DNS `EAI_AGAIN` is, and resolves again once a thread is free."""
    release = threading.Event()
    held = [fetch._resolvers().submit(release.wait) for _ in range(fetch.RESOLVER_THREADS)]
    try:
        start = time.monotonic()
        with pytest.raises(TransientFetchError, match=r"^cannot resolve host 'localhost': no answer within the 0\.5 s "
                                                      r"limit$"):
            fetch_public("http://localhost:8000/x.png", max_bytes=1 << 20, timeout=0.5)
        assert time.monotonic() - start < 5  # it waited 0.5 s, not for the resolution
    finally:
        release.set()
    assert all(h.result(timeout=5) for h in held)
    with pytest.raises(URLRefused, match="^refused to fetch from 'localhost': it resolves to .*, a non-public address$"):
        fetch_public("http://localhost:8000/x.png", max_bytes=1 << 20, timeout=5)
