"""`fetch_public` against a real loopback HTTP server: its time limit covers the whole download."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fakescope.io.fetch import FetchError, fetch_public

BODY = 40


class _Drip(BaseHTTPRequestHandler):
    """Sends its 40-byte body a byte every 0.1 s (each read is quick, the whole is not), as the type the request's path
    ends in (`/page.html`: text/html); `/stall.png` a byte every 0.8 s, `/head.png` its headers a byte every 0.3 s."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        head = (f"HTTP/1.1 200 OK\r\nContent-Length: {BODY}\r\nContent-Type: "
                f"{'text/html; charset=utf-8' if self.path.endswith('.html') else 'image/png'}\r\n\r\n").encode()
        if self.path != "/head.png":
            self.wfile.write(head)
            head = b""
        gap = {"/stall.png": 0.8, "/head.png": 0.3}.get(self.path, 0.1)
        try:
            for byte in head + b"x" * BODY:
                time.sleep(gap)
                self.wfile.write(bytes([byte]))
        except OSError:  # the client gave up
            pass


@pytest.fixture
def drip():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


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
