"""Real servers on loopback: uvicorn running `create_app` in a thread, one detector for the session."""

from __future__ import annotations

import io
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Self

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))

TOKEN = "serve-test-token"


class LiveServer:
    """`create_app(config, detector=...)` served by uvicorn on 127.0.0.1 at a free port."""

    def __init__(self, config, detector):
        import uvicorn

        from fakescope.serve import create_app

        self.app = create_app(config, detector=detector)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
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


@pytest.fixture(scope="session")
def detector():
    from fakescope.detector import Detector

    return Detector.load(device="cpu", batch_size=32, workers=2)


@pytest.fixture(scope="session")
def server(detector, tmp_path_factory):
    """A token-protected server with small limits (1 MB uploads, 1 Mpx images, 8 files per batch)."""
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, max_upload_mb=1, max_pixels=1_000_000, max_files=8, max_wait_ms=20,
                         jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


@pytest.fixture
def auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def photo_bytes() -> bytes:
    """A 160x120 JPEG with smooth gradients and noise, standing in for a photo."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    base = np.stack([x * 1.5, y * 2.0, (x + y) * 0.8], axis=-1) + rng.normal(0, 12, (120, 160, 3))
    return encode(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)), "JPEG", quality=90)


@pytest.fixture(scope="session")
def flat_png() -> bytes:
    return encode(Image.new("RGB", (96, 64), (200, 40, 90)))
