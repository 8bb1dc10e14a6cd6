"""A real server on loopback and image encoding for the serve tests (imported by name: conftest modules share one name)."""

from __future__ import annotations

import io
import socket
import threading
import time
from typing import Self

from PIL import Image

TOKEN = "serve-test-token"
BATCH_NEEDS_FILES = "files: Field required (send each image as a 'files' part, e.g. curl -F files=@a.jpg -F files=@b.jpg)"


class LiveServer:
    """`create_app(config, detector=...)` served by uvicorn on 127.0.0.1 at a free port (as `fakescope serve` runs it:
    `StoppingServer`, with `uvicorn_options`)."""

    def __init__(self, config, detector):
        import uvicorn

        from fakescope.serve import create_app
        from fakescope.serve.connections import StoppingServer, uvicorn_options

        self.app = create_app(config, detector=detector)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = StoppingServer(uvicorn.Config(self.app, log_level="warning", lifespan="on", **uvicorn_options(config)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def ended(job, timeout: float = 30):
    """Wait until a `JobStore` job ends (`JobStore.close` cancels one still queued); returns it."""
    deadline = time.monotonic() + timeout
    while job.state in ("queued", "running"):
        assert time.monotonic() < deadline, job.to_dict()
        time.sleep(0.02)
    return job


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
