"""A client that stops sending its body mid-way is answered 408 and let go, not held forever."""

from __future__ import annotations

import http.client
import json
import socket
import time

import httpx
import pytest
from serve_helpers import TOKEN, LiveServer


@pytest.fixture(scope="module")
def impatient(detector, tmp_path_factory):
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, body_timeout_s=1, jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


@pytest.mark.parametrize("content_type", ["image/jpeg", "multipart/form-data; boundary=XX"])
def test_a_stalled_body_is_answered_408(impatient, content_type):
    lines = ["POST /v1/detect HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 100000", f"Content-Type: {content_type}",
             f"Authorization: Bearer {TOKEN}"]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(impatient.url.rsplit(":", 1)[1])), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"--XX\r\n")  # then nothing more
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 408
        assert json.loads(answer.read()) == {"detail": "request body timed out: no bytes for 1 s"}
    assert time.monotonic() - started < 10


def test_a_body_sent_in_time_is_still_scored(impatient, photo_bytes):
    answer = httpx.post(f"{impatient.url}/v1/detect", headers={"Authorization": f"Bearer {TOKEN}"},
                        files={"file": ("p.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 200 and answer.json()["path"] == "p.jpg"
