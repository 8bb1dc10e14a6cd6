"""A real loopback HTTP server of images, for the tests of image URLs as inputs (CLI, Python, REST)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler(image: bytes, big: int, load: dict | None):
    answered: set[str] = set()

    class Images(BaseHTTPRequestHandler):
        """`/*.png`: the image (any query); `/missing.png`: 404; `/page.html`: a web page; `/big.png`: `big` bytes of an
        image's signature and zeros; `/text.png`: text called a PNG; `/slow.png`: the image after 1 s, counting the
        requests at once in `load`; `/busy.png`: 503; `/limited.png`: 429; `/flaky.png`: 503 the first time each query
        asks, the image after; `/drip.png`: the image a byte every 0.8 s."""

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.partition("?")[0]
            if path == "/slow.png" and load is not None:
                with load["lock"]:
                    load["now"] += 1
                    load["peak"] = max(load["peak"], load["now"])
                time.sleep(1)
                with load["lock"]:
                    load["now"] -= 1
            if path == "/missing.png":
                self.send_error(404)
                return
            if path in ("/busy.png", "/limited.png") or (path == "/flaky.png" and self.path not in answered):
                answered.add(self.path)
                self.send_error(429 if path == "/limited.png" else 503)
                return
            body = {"/page.html": b"<html>not an image</html>", "/big.png": image[:64] + bytes(big),
                    "/text.png": b"not an image"}.get(path, image)
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if path.endswith(".html") else "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                if path == "/drip.png":
                    for byte in body:
                        time.sleep(0.8)
                        self.wfile.write(bytes([byte]))
                else:
                    self.wfile.write(body)
            except OSError:  # the client stopped reading at the limit
                pass

    return Images


@contextmanager
def serving_images(image: bytes, *, big: int, load: dict | None = None) -> Iterator[str]:
    """The origin (`http://127.0.0.1:PORT`) of a loopback server of `image`, shut down on exit."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(image, big, load))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
