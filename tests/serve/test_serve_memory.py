"""The server-wide budget for request bodies held in memory (`ServeConfig.max_body_memory_mb`), on a real server."""

from __future__ import annotations

import http.client
import json
import socket
import time

import httpx
import pytest
from serve_helpers import LiveServer

from fakescope.errors import ConfigError
from fakescope.serve import ServeConfig

MB = 1024 * 1024
BUSY = {"detail": "the server is busy: request bodies fill its memory for them (3 MB); try again shortly"}


@pytest.fixture(scope="module")
def small_budget(detector, tmp_path_factory):
    """3 MB for all bodies at once, 2 MB per image, and a 1 s stall limit so a held body soon times out."""
    config = ServeConfig(token=None, max_upload_mb=2, max_body_memory_mb=3, max_files=2, body_timeout_s=1,
                         body_min_rate=1, jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


def _open(live, path: str, head: list[str], body: bytes = b"") -> socket.socket:
    """A connection that has sent a POST's head (and `body`, perhaps a part of it)."""
    sock = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5)
    sock.sendall(("\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *head]) + "\r\n\r\n").encode() + body)
    return sock


def _answer(sock: socket.socket) -> tuple[int, str | None, dict]:
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    return answer.status, answer.getheader("Retry-After"), json.loads(answer.read())


def _held_drops_to(live, value: int) -> int:
    deadline = time.monotonic() + 4
    while live.app.state.bodies.held != value and time.monotonic() < deadline:
        time.sleep(0.02)
    return live.app.state.bodies.held


def test_bodies_past_the_budget_are_refused_unread_and_every_byte_comes_back(small_budget, photo_bytes):
    """Raw uploads were read into memory, 20 MB each for up to 512 connections at once (10 GB), with no server-wide cap."""
    live = small_budget
    image = photo_bytes + bytes(int(1.5 * MB) - len(photo_bytes))  # a JPEG and padding after its end
    raw = [f"Content-Length: {len(image)}", "Content-Type: image/jpeg"]
    stalled = _open(live, "/v1/detect", raw, image[:1000])  # held: times out (408)
    leaving = _open(live, "/v1/detect", raw, image[:1000])  # held: its client leaves
    assert _held_drops_to(live, 2 * len(image)) == 2 * len(image)
    form = ["Content-Length: 900000", "Content-Type: multipart/form-data; boundary=XX",
            "Connection: close"]
    chunked = ["Transfer-Encoding: chunked", "Content-Type: image/png",
               "Connection: close"]
    for path, head, body in (("/v1/explain", form, b""), ("/v1/detect", chunked, b"10000\r\n" + bytes(0x10000) + b"\r\n")):
        with _open(live, path, head, body) as refused:  # a multipart body counts: its files are read back from the spool
            assert _answer(refused) == (503, "1", BUSY)
    assert live.app.state.bodies.held == 2 * len(image)
    leaving.close()
    status, _, detail = _answer(stalled)
    stalled.close()
    assert (status, detail) == (408, {"detail": "request body timed out: no bytes for 1 s"})
    assert _held_drops_to(live, 0) == 0
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for _ in range(2):  # fits again, and gives its bytes back each time
            assert client.post("/v1/detect", content=image).status_code == 200
            assert _held_drops_to(live, 0) == 0  # once the answer is sent: the client may read it first
        too_big = client.post("/v1/detect/batch", files=[("files", (f"{i}.jpg", image, "image/jpeg")) for i in range(2)])
    assert too_big.status_code == 413 and _held_drops_to(live, 0) == 0
    assert too_big.json() == {"detail": "upload too large: over the 3 MB this server holds for all request bodies at once"}


def test_the_budget_must_hold_one_upload():
    with pytest.raises(ConfigError, match=r"max_body_memory_mb \(20\) must be at least max_upload_mb \(20\) plus 64 KB"):
        ServeConfig(max_body_memory_mb=20)
    assert ServeConfig().max_body_memory_bytes == 2048 * MB
