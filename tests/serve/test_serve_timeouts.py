"""A client that stops sending its request head or body mid-way is let go (closed, 408), not held forever; connections
beyond the cap answer 503."""

from __future__ import annotations

import http.client
import json
import select
import socket
import time

import httpx
import pytest
from serve_helpers import TOKEN, LiveServer


@pytest.fixture(scope="module")
def impatient(detector, tmp_path_factory):
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, body_timeout_s=1, header_timeout_s=2, jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


def until(condition, timeout: float = 10.0) -> bool:
    """Whether `condition()` came true within `timeout` seconds (polled): the server registers a socket the kernel
    accepted, or notices one closed, whenever its busy event loop gets to it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize(("content_type", "sent", "detail"), [
    ("image/jpeg", b"", "request body timed out: no bytes for 1 s"),
    ("multipart/form-data; boundary=XX", b"--XX\r\n", "request body too slow: 6 bytes in 1 s, under 500 bytes/s")])
def test_a_stalled_body_is_answered_408(impatient, content_type, sent, detail):
    lines = ["POST /v1/detect HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 100000", f"Content-Type: {content_type}",
             f"Authorization: Bearer {TOKEN}"]
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(impatient.url.rsplit(":", 1)[1])), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + sent)  # then nothing more
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 408
        assert json.loads(answer.read()) == {"detail": detail}
    assert time.monotonic() - started < 10


def test_a_trickled_body_is_answered_408_once_under_the_minimum_rate(impatient):
    """A byte every 0.3 s never stalls for the 1 s limit: the body held its connection for as long as it trickled. A
    fast start saves up no time for the trickle after it."""
    head = ["POST /v1/detect HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 100000", "Content-Type: image/jpeg",
            f"Authorization: Bearer {TOKEN}"]
    started = time.monotonic()
    with _connect(impatient) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + bytes(2000))  # 4 s at 500 bytes/s
        for _ in range(20):  # 6 s at most; the answer comes 1 s after the fast start (500 bytes in 1 s were due)
            if select.select([sock], [], [], 0.3)[0]:
                break
            sock.sendall(b"x")
        sock.settimeout(5)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 408
        assert json.loads(answer.read())["detail"] == "request body too slow: 3 bytes in 1 s, under 500 bytes/s"
    assert time.monotonic() - started < 3


def test_a_body_sent_in_time_is_still_scored(impatient, photo_bytes):
    answer = httpx.post(f"{impatient.url}/v1/detect", headers={"Authorization": f"Bearer {TOKEN}"},
                        files={"file": ("p.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 200 and answer.json()["path"] == "p.jpg"


def _connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=20)


def _get_healthz(sock: socket.socket) -> int:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    answer.read()
    return answer.status


def closed_after(sock: socket.socket) -> float:
    """Seconds until the server closed `sock` (it sends nothing first)."""
    started = time.monotonic()
    assert sock.recv(1) == b""
    return time.monotonic() - started


def test_a_half_sent_request_head_is_closed_and_others_are_still_served(impatient):
    """Slowloris: half a request line, then nothing, held the connection forever (uvicorn has no header timeout)."""
    with _connect(impatient) as stalled, _connect(impatient) as kept_alive:
        stalled.sendall(b"GET /healthz HT")
        assert _get_healthz(kept_alive) == 200  # served while the other stalls
        kept_alive.sendall(b"GET /heal")  # its next request stalls too: closed after 2 s, not kept-alive's 5 s
        assert closed_after(kept_alive) < 4.5 and closed_after(stalled) < 4.5
    assert httpx.get(f"{impatient.url}/healthz").status_code == 200


def _answered_before_its_body(sock: socket.socket, length: int) -> None:
    """Send the head of a POST the app answers without reading its body (no such route), and read the answer."""
    sock.sendall(f"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode())
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    answer.read()
    assert answer.status == 404


def test_a_half_sent_head_after_an_early_answer_is_closed(impatient):
    """The app answered before the body was in; the body's bytes cancelled uvicorn's keep-alive timer and the cycle
    it then started armed no head timer, so half a next head held the connection forever."""
    with _connect(impatient) as sock:
        _answered_before_its_body(sock, 5)
        sock.sendall(b"hello" + b"GET /heal")  # the rest of the body, then half the next head
        sock.settimeout(8)
        assert closed_after(sock) < 4.5


def test_the_body_of_an_answered_request_left_stalled_is_closed(impatient):
    """A byte of an answered request's body cancelled uvicorn's keep-alive timer, and nothing armed another: a client
    sending one byte and then nothing held the connection forever."""
    with _connect(impatient) as sock:
        _answered_before_its_body(sock, 10**6)
        sock.sendall(b"x" * 1000)
        time.sleep(0.5)
        resent = time.monotonic()  # before the bytes leave: the server's timer can only start later
        sock.sendall(b"x" * 1000)  # bytes still flowing: the 2 s timer starts again from here (else 1.5 s are left)
        sock.settimeout(8)
        assert sock.recv(1) == b""
        assert 1.9 < time.monotonic() - resent < 4.5


def test_a_head_sent_slowly_but_in_time_is_served(server):
    """A head in three parts over 1 s is answered: the shared server's 10 s head timeout leaves 9 s for a loaded
    machine's late wake-ups (the impatient server's 2 s left 1.4 s)."""
    assert server.app.state.config.header_timeout_s == 10
    with _connect(server) as sock:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n"):
            sock.sendall(part)
            time.sleep(0.5)
        sock.sendall(b"\r\n")
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == 200


def test_requests_beyond_the_connection_cap_answer_503(detector, tmp_path_factory):
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, max_connections=2, jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        with _connect(live), _connect(live):  # two idle connections fill the cap
            assert until(lambda: len(live.server.server_state.connections) == 2)
            busy = httpx.get(f"{live.url}/healthz")  # was uvicorn's plain text 'Service Unavailable', no Retry-After
            assert (busy.status_code, busy.headers["Retry-After"]) == (503, "1")
            assert busy.json() == {"detail": "the server is busy: too many connections and requests at once; try again shortly"}
            assert (busy.headers["X-Content-Type-Options"], busy.headers["Cache-Control"]) == ("nosniff", "no-store")
        assert until(lambda: not live.server.server_state.connections)
        assert httpx.get(f"{live.url}/healthz").status_code == 200
        documented = httpx.get(f"{live.url}/openapi.json").json()["paths"]["/healthz"]["get"]["responses"]["503"]
        assert "--max-connections" in documented["description"] and "Retry-After" in documented["headers"]


def test_idle_sockets_beyond_the_cap_are_held_until_the_head_timeout(detector, tmp_path_factory):
    """What docs/serving.md says: the cap answers 503 to requests, it does not refuse sockets; one beyond it that
    sends nothing is held (one file descriptor) until `header_timeout_s` closes it."""
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, max_connections=2, header_timeout_s=3, jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        socks = [_connect(live) for _ in range(5)]
        try:
            assert until(lambda: len(live.server.server_state.connections) == 5)  # all accepted, cap or not
            started = time.monotonic()
            assert all(sock.recv(1) == b"" for sock in socks)  # each closed by the head timeout, unanswered
            assert time.monotonic() - started < 7 and until(lambda: not live.server.server_state.connections)
        finally:
            for sock in socks:
                sock.close()
