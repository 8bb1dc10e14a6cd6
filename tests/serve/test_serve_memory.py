"""The server-wide budget for request bodies held in memory (`ServeConfig.max_body_memory_mb`), on a real server."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import select
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from image_server import serving_images
from openai_server import ImagesAPIServer
from serve_helpers import LiveServer
from starlette.requests import Request

from fakescope.errors import ConfigError
from fakescope.io.fetch import TRUSTED_ENV
from fakescope.serve import ServeConfig
from fakescope.serve.limits import BodyBudget, Held
from fakescope.serve.request_image import URLFetcher, read_body
from fakescope.serve.schemas import Health

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
    assert (status, detail) == (408, {"detail": "request body too slow: 1,000 bytes in 1 s, under 2,622 bytes/s, the pace "
                                                "that brings the 1,572,864 bytes it holds in memory in 600 s"})
    assert _held_drops_to(live, 0) == 0
    with httpx.Client(base_url=live.url, timeout=30) as client:
        for _ in range(2):  # fits again, and gives its bytes back each time
            assert client.post("/v1/detect", content=image).status_code == 200
            assert _held_drops_to(live, 0) == 0  # once the answer is sent: the client may read it first
        too_big = client.post("/v1/detect/batch", files=[("files", (f"{i}.jpg", image, "image/jpeg")) for i in range(2)])
    assert too_big.status_code == 413 and _held_drops_to(live, 0) == 0
    assert too_big.json() == {"detail": "upload too large: over the 3 MB this server holds for all request bodies at once"}


@pytest.fixture(scope="module")
def paced(detector, tmp_path_factory):
    """Bodies must bring what they hold of the budget in 8 s (a 1 MB one: 128 KB in each 1 s window)."""
    config = ServeConfig(token=None, max_upload_mb=2, max_body_memory_mb=3, body_timeout_s=1, max_body_seconds=8,
                         jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


@pytest.mark.parametrize(("head", "first", "drip", "holds"), [
    ([f"Content-Length: {MB}"], bytes(100), bytes(100), MB),  # held whole before a byte is read
    (["Transfer-Encoding: chunked"], b"80000\r\n" + bytes(MB // 2) + b"\r\n", b"64\r\n" + bytes(100) + b"\r\n", MB // 2)],
    ids=["length", "chunked"])  # a chunked body holds its bytes so far (its drips too)
def test_a_body_holding_the_budget_must_bring_it_at_a_pace_that_scales_with_it(paced, head, first, drip, holds):
    """A body had only to bring 500 bytes/s whatever it held: 103 bodies of 20 MB dripping 51 KB/s in all held the whole
    2048 MB for 11 h, and every other upload answered 503. Dripped at twice that, it is now cut off after a window."""
    sock = _open(paced, "/v1/detect", [*head, "Content-Type: image/jpeg"], first)
    started = time.monotonic()
    with sock:
        assert _held_drops_to(paced, holds) == holds
        while time.monotonic() - started < 4 and not select.select([sock], [], [], 0.1)[0]:
            sock.sendall(drip)  # 1,000 bytes/s: the old rule's 500 twice over, kept up for 35 min at 1 MB
        status, _, detail = _answer(sock)
    assert status == 408 and time.monotonic() - started < 3
    told = re.fullmatch(r"request body too slow: [\d,]+ bytes in 1 s, under ([\d,]+) bytes/s, the pace that brings "
                        r"the ([\d,]+) bytes it holds in memory in 8 s", detail["detail"])
    assert told, detail
    rate, held = (int(number.replace(",", "")) for number in told.groups())
    assert holds <= held < holds + 4000 and rate == -(-held // 8), detail
    assert _held_drops_to(paced, 0) == 0


def test_a_body_brought_at_a_fair_pace_is_scored(paced, photo_bytes):
    """1 MB over about 1.6 s, 2 windows: five times the 128 KB/s it must keep up."""
    image = photo_bytes + bytes(MB - len(photo_bytes))

    def paced_body():
        for start in range(0, MB, 64 * 1024):
            yield image[start:start + 64 * 1024]
            time.sleep(0.1)

    answer = httpx.post(f"{paced.url}/v1/detect", content=paced_body(), headers={"Content-Length": str(MB)}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert _held_drops_to(paced, 0) == 0


def test_the_budget_must_hold_one_upload():
    with pytest.raises(ConfigError, match=r"max_body_memory_mb \(20\) must be at least max_upload_mb \(20\) plus 64 KB"):
        ServeConfig(max_body_memory_mb=20)
    assert ServeConfig().max_body_memory_bytes == 2048 * MB


def test_healthz_says_the_body_memory_held_and_its_limit(small_budget, photo_bytes):
    live = small_budget
    stalled = _open(live, "/v1/detect", [f"Content-Length: {MB}", "Content-Type: image/jpeg"], photo_bytes[:100])
    assert _held_drops_to(live, MB) == MB
    health = httpx.get(f"{live.url}/healthz").json()
    stalled.close()  # its client leaves: the bytes come back
    assert Health.model_validate(health).body_memory.model_dump() == {"held": MB, "limit": 3 * MB}
    assert _held_drops_to(live, 0) == 0


@pytest.fixture
def images(flat_png, monkeypatch):
    with serving_images(flat_png, big=3 * MB, load={"lock": threading.Lock(), "now": 0, "peak": 0}) as origin:
        monkeypatch.setenv(TRUSTED_ENV, origin)
        yield origin


def test_a_fetched_url_holds_the_upload_limit_of_the_budget_until_it_is_answered(small_budget, images):
    """A URL's download (up to the upload limit, 8 at once) was not counted: a server full of uploads still fetched."""
    live, url = small_budget, f"{small_budget.url}/v1/detect"
    with httpx.Client(timeout=30) as client:
        for path, status in (("a.png", 200), ("missing.png", 502), ("big.png", 413)):
            assert client.post(url, json={"url": f"{images}/{path}"}).status_code == status
            assert _held_drops_to(live, 0) == 0  # success and failure alike
        slow = threading.Thread(target=client.post, args=(url,), kwargs={"json": {"url": f"{images}/slow.png"}})
        slow.start()
        deadline = time.monotonic() + 4
        while live.app.state.bodies.held < 2 * MB and time.monotonic() < deadline:  # 2 MB: the upload limit
            time.sleep(0.02)
        busy = client.post(url, json={"url": f"{images}/a.png"})  # 2 MB more do not fit in 3
        batch = client.post(f"{url}/batch", json={"urls": [f"{images}/a.png"]}).json()["results"][0]
        slow.join()
    assert (busy.status_code, busy.headers["Retry-After"], busy.json()["detail"]) == (
        503, "1", f"could not fetch {images}/a.png: {BUSY['detail']}")
    assert (batch["error"], batch["error_kind"]) == (f"could not fetch {images}/a.png: {BUSY['detail']}", "transient")
    assert _held_drops_to(live, 0) == 0
    left = _open(live, "/v1/detect", ["Content-Type: application/json", "Content-Length: 100"],
                 json.dumps({"url": f"{images}/slow.png"}).ljust(100).encode())
    assert _held_drops_to(live, 2 * MB + 100) == 2 * MB + 100
    left.close()  # its client leaves mid-fetch
    assert _held_drops_to(live, 0) == 0


def test_a_queued_generation_jobs_upload_is_held_until_the_job_has_run(detector, photo_bytes, tmp_path, monkeypatch):
    """The job queue held each job's upload after its 202, uncounted: 16 jobs of 20 MB each beside the budget."""
    api = ImagesAPIServer(api_key="sk-budget").start()
    api.hold_after, api.answer_held = 0, True  # the API holds every request until `release`
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    config = ServeConfig(token=None, max_upload_mb=2, max_body_memory_mb=3, jobs_dir=tmp_path)
    try:
        with LiveServer(config, detector) as live, httpx.Client(base_url=live.url, timeout=30) as client:
            jobs = [client.post("/v1/generate", headers={"X-OpenAI-Key": "sk-budget"},
                                data={"model": "dall-e-2", "size": "256x256"},
                                files={"file": ("cat.jpg", photo_bytes, "image/jpeg")}).json()["id"] for _ in range(3)]
            assert _held_drops_to(live, 3 * len(photo_bytes)) == 3 * len(photo_bytes)  # 2 running, 1 queued
            assert client.delete(f"/v1/jobs/{jobs[2]}").json()["state"] == "cancelled"
            assert _held_drops_to(live, 2 * len(photo_bytes)) == 2 * len(photo_bytes)
            api.release.set()
            assert _held_drops_to(live, 0) == 0
    finally:
        api.stop()


def test_a_raw_body_is_held_once_while_it_is_read():
    """`read_body` gathered the body in a bytearray and copied it to bytes: twice the body at its peak."""
    size, chunk = 8 * MB, bytes(64 * 1024)
    messages = [{"type": "http.request", "body": chunk, "more_body": True}] * (size // len(chunk))
    messages.append({"type": "http.request", "body": b"", "more_body": False})

    async def receive():
        return messages.pop(0)

    async def traced(request: Request, config: ServeConfig) -> tuple[bytes, int]:
        tracemalloc.start()
        try:
            return await read_body(request, config), tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    request = Request({"type": "http", "method": "POST", "path": "/v1/detect", "headers": []}, receive)
    body, peak = asyncio.run(traced(request, ServeConfig(max_upload_mb=10)))
    assert len(body) == size and peak < 1.2 * size  # was 2.06 x the body; now 1.06 x


class _Paused:
    """The session's detector, its `predict` held until `go` is set (the model busy with other clients' images)."""

    def __init__(self, detector):
        self.detector, self.go = detector, threading.Event()

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def predict(self, *args, **kwargs):
        self.go.wait(10)
        return self.detector.predict(*args, **kwargs)


def test_a_batch_answered_503_mid_fetch_leaves_no_url_fetching_for_it(detector, images, photo_bytes, tmp_path):
    """A batch URL whose image found the model's queue full answered 503 while its other URLs went on: a fetch that
    ended after the answer kept its bytes of the budget for good (and the image was scored for nobody)."""
    config = ServeConfig(token=None, max_upload_mb=2, max_body_memory_mb=8, max_files=3, max_queue=3, jobs_dir=tmp_path)
    with LiveServer(config, detector) as live:
        batcher = live.app.state.batcher
        batcher.detector = paused = _Paused(detector)
        try:
            batcher.submit(photo_bytes)  # the model works on it until `go`
            while batcher.pending:
                time.sleep(0.01)
            urls = [f"{images}/slow.png?{i}" for i in range(3)]  # 2 fetched at once: the third starts at 1 s, ends at 2
            with ThreadPoolExecutor(1) as pool:
                batch = pool.submit(httpx.post, f"{live.url}/v1/detect/batch", json={"urls": urls}, timeout=30)
                time.sleep(0.3)
                for _ in range(3):  # the queue fills while the first two URLs download
                    batcher.submit(photo_bytes)
                assert batch.result().status_code == 503
        finally:
            paused.go.set()
        assert _held_drops_to(live, 0) == 0  # the third URL's download (1 to 2 s) was stopped with the answer


def test_a_url_waiting_for_a_fetch_thread_takes_none_of_the_budget(images, flat_png):
    """A URL took `--max-upload-mb` of the budget while it waited for one of the 8 fetch threads: 103 small JSON requests
    naming slow URLs held all 2048 MB for their 20 s, 160 MB of it fetching, and every upload meanwhile answered 503."""
    budget, fetcher = BodyBudget(3 * MB), URLFetcher(workers=1)

    async def fetch_two() -> tuple[bytes, bytes, int]:
        running = asyncio.create_task(fetcher.fetch(f"{images}/slow.png", 2 * MB, Held(budget)))  # the thread's, 1 s
        await asyncio.sleep(0.3)
        waiting = asyncio.create_task(fetcher.fetch(f"{images}/a.png", 2 * MB, Held(budget)))  # 2 MB more do not fit
        await asyncio.sleep(0.2)
        held_meanwhile = budget.held
        return await running, await waiting, held_meanwhile

    try:
        slow, quick, held_meanwhile = asyncio.run(fetch_two())
    finally:
        fetcher.close()
    assert slow == quick == flat_png and held_meanwhile == 2 * MB
    assert budget.held == 2 * len(flat_png)  # the bytes fetched, each request's until it is answered
