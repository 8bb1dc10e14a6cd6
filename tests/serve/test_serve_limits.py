"""Backpressure on the model's queue, and CORS: off by default, opt-in per origin."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from image_server import serving_images
from serve_helpers import TOKEN, LiveServer

from fakescope.errors import ConfigError
from fakescope.io.fetch import TRUSTED_ENV
from fakescope.serve import MicroBatcher, ServeConfig
from fakescope.serve.batching import ServerBusy

ORIGIN = "http://127.0.0.1:5173"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_full_queue_refuses_without_waiting(detector, flat_png):
    batcher = MicroBatcher(detector, max_queue=2)  # not started: nothing leaves the queue
    batcher.submit(flat_png, wait=False)
    batcher.submit(flat_png, wait=False)
    with pytest.raises(ServerBusy, match="2 images are waiting for the model") as refused:
        batcher.submit(flat_png, wait=False)
    assert refused.value.retry_after >= 1 and batcher.room() == 0
    batcher.submit(flat_png)  # generation jobs wait for room instead of failing after paying
    assert batcher.pending == 3


def test_retry_after_is_the_queues_wait_at_the_recent_time_per_image_within_a_minute(detector, flat_png):
    """It was the mean since start, unbounded: a long queue told clients to come back in minutes (or hours)."""
    with MicroBatcher(detector, max_queue=1) as batcher:
        for _ in range(3):
            batcher.submit(flat_png).result()
    per_image = batcher.stats.busy_s / batcher.stats.items
    for _ in range(round(30 / per_image)):  # about 30 s of work: the worker has stopped, so they stay queued
        batcher.submit(flat_png)
    assert 25 <= batcher.retry_after() <= 35
    for _ in range(round(60 / per_image)):
        batcher.submit(flat_png)
    with pytest.raises(ServerBusy) as refused:
        batcher.check_room()
    assert refused.value.retry_after == batcher.retry_after() == 60


@pytest.fixture
def stalled_client(tmp_path, detector):
    """An app whose model worker has stopped with its queue (2 places) full."""
    from fastapi.testclient import TestClient

    from fakescope.serve import create_app

    config = ServeConfig(token=None, jobs_dir=tmp_path, max_files=2, max_queue=2)
    with TestClient(create_app(config, detector=detector)) as client:
        batcher = client.app.state.batcher
        batcher.close()
        yield client, batcher


def test_requests_past_max_queue_are_503_with_retry_after(stalled_client, flat_png):
    client, batcher = stalled_client
    batcher.submit(flat_png)
    files = [("files", ("a.png", flat_png, "image/png")), ("files", ("b.png", flat_png, "image/png"))]
    batch = client.post("/v1/detect/batch", files=files)  # one place left for two images: none is queued
    assert batch.status_code == 503 and batch.headers["Retry-After"].isdigit() and batcher.pending == 1
    assert batch.json() == {"detail": "the server is busy: no room for 2 image(s) in the model's queue (1 of 2 places "
                                      "free); try again shortly"}  # said '1 images are waiting (the limit is 2)'
    batcher.submit(flat_png)
    for path in ("/v1/detect", "/v1/explain"):
        answer = client.post(path, content=flat_png)
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert answer.json() == {"detail": "the server is busy: 2 images are waiting for the model; try again shortly"}
    assert client.get("/healthz").json()["queued"] == 2


def test_a_full_server_fetches_no_image_url(stalled_client, flat_png, monkeypatch):
    """The URL was downloaded (up to the upload limit) and only then refused for want of room."""
    client, batcher = stalled_client
    batcher.submit(flat_png)
    batcher.submit(flat_png)
    load = {"lock": threading.Lock(), "now": 0, "peak": 0}  # counts the fetches of /slow.png
    with serving_images(flat_png, big=0, load=load) as images:
        monkeypatch.setenv(TRUSTED_ENV, images)
        answers = [client.post(path, json=body) for path, body in (
            ("/v1/detect", {"url": f"{images}/slow.png"}), ("/v1/explain", {"url": f"{images}/slow.png"}),
            ("/v1/detect/batch", {"urls": [f"{images}/slow.png"]}))]
    assert [a.status_code for a in answers] == [503] * 3 and load["peak"] == 0


def test_config_refuses_a_queue_smaller_than_a_batch_and_origins_a_browser_never_sends():
    with pytest.raises(ConfigError, match=r"max_queue \(8\) must be at least max_files \(64\)"):
        ServeConfig(max_queue=8)
    for origin in ("http://localhost:3000/", "localhost:3000", "https://app.example.com/page", "ftp://x"):
        with pytest.raises(ConfigError, match="expected scheme://host\\[:port\\] with no path or trailing slash"):
            ServeConfig(cors_origins=(origin,))
    assert ServeConfig(cors_origins=("*", "https://app.example.com:8443")).cors_origins[0] == "*"


@pytest.fixture(scope="module")
def cors_server(detector, tmp_path_factory):
    config = ServeConfig(token=TOKEN, cors_origins=(ORIGIN,), jobs_dir=tmp_path_factory.mktemp("jobs"))
    with LiveServer(config, detector) as live:
        yield live


def _preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "authorization,x-openai-key"})


def test_a_preflight_from_an_allowed_origin_passes_without_a_token(cors_server):
    answer = _preflight(f"{cors_server.url}/v1/generate", ORIGIN)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "x-openai-key" in allowed
    assert "DELETE" in answer.headers["access-control-allow-methods"]


def test_other_origins_get_no_cors_grant(cors_server, server, photo_bytes):
    refused = _preflight(f"{cors_server.url}/v1/detect", "http://evil.example")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    allowed = ("(origins: fakescope serve --cors-origin; methods: GET, POST, DELETE; headers: Authorization, "
               "Content-Type, X-OpenAI-Key)")  # a refused preflight answered plain text 'Disallowed CORS origin'
    assert refused.json() == {"detail": f"CORS preflight refused: origin not allowed {allowed}"}
    put = httpx.options(f"{cors_server.url}/v1/detect", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT",
                                                               "Access-Control-Request-Headers": "x-custom"})
    assert (put.status_code, put.json()) == (400, {"detail": f"CORS preflight refused: method, headers not allowed {allowed}"})
    off = _preflight(f"{server.url}/v1/detect", ORIGIN)  # the default: no CORS at all
    assert "access-control-allow-origin" not in off.headers
    simple = httpx.post(f"{server.url}/v1/detect", headers={**AUTH, "Origin": ORIGIN}, content=photo_bytes)
    assert simple.status_code == 403 and "access-control-allow-origin" not in simple.headers  # was scored (200)
    assert simple.json()["detail"].startswith(f"cross-origin request refused: a page on {ORIGIN} may not call this API")


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_too(cors_server, photo_bytes):
    headers = {"Origin": ORIGIN, **AUTH}
    scored = httpx.post(f"{cors_server.url}/v1/explain", headers=headers, content=photo_bytes)
    assert scored.status_code == 200 and scored.headers["access-control-allow-origin"] == ORIGIN
    exposed = scored.headers["access-control-expose-headers"].lower()
    assert "x-fakescope-score" in exposed and "x-fakescope-caveat" in exposed
    no_token = httpx.get(f"{cors_server.url}/v1/models", headers={"Origin": ORIGIN})
    assert no_token.status_code == 401 and no_token.headers["access-control-allow-origin"] == ORIGIN  # readable by the page


def test_a_batch_of_many_small_parts_is_refused_as_they_come_not_held(detector, tmp_path):
    """Parts under 1 MB stay in memory while the form is parsed: 40 of them were all held before the route counted
    them (the body limit, 2 x 20 MB, allowed it); the parser now stops at the third."""
    config = ServeConfig(max_upload_mb=20, max_files=2, jobs_dir=tmp_path)
    part = b"\xff\xd8" + bytes(999_998)
    with LiveServer(config, detector) as live:
        tracemalloc.start()
        try:
            answer = httpx.post(f"{live.url}/v1/detect/batch", files=[("files", (f"{i}.jpg", part, "image/jpeg"))
                                                                      for i in range(40)], timeout=60)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        fields = httpx.post(f"{live.url}/v1/detect/batch", files=[("files", (None, part)) for _ in range(40)], timeout=60)
    assert answer.status_code == 413 and answer.json() == {"detail": "too many files: more than 2 (the limit is 2 per request)"}
    assert peak < 15e6  # was over 40 MB
    assert fields.status_code == 400 and fields.json() == {"detail": "Too many fields. Maximum number of fields is 2."}


def test_explain_renders_at_most_render_workers_heatmaps_at_once(server, auth, photo_bytes, monkeypatch):
    """Each render decodes the image again and builds its overlay (about 650 MB at 50 Mpx): they ran on the default
    executor, one per core plus 4 at once, so a few requests of small but large plain PNGs took gigabytes."""
    from fakescope.serve import detect_routes

    load = {"lock": threading.Lock(), "now": 0, "peak": 0}
    render = detect_routes._render_heatmap

    def counted(*args):
        with load["lock"]:
            load["now"] += 1
            load["peak"] = max(load["peak"], load["now"])
        try:
            time.sleep(0.3)  # long enough for the other requests' renders to overlap this one
            return render(*args)
        finally:
            with load["lock"]:
                load["now"] -= 1

    monkeypatch.setattr(detect_routes, "_render_heatmap", counted)
    with ThreadPoolExecutor(6) as clients:
        answers = list(clients.map(lambda _: httpx.post(f"{server.url}/v1/explain?overlay=true", headers=auth,
                                                        content=photo_bytes, timeout=30), range(6)))
    assert [a.status_code for a in answers] == [200] * 6
    assert load["peak"] == detect_routes.RENDER_WORKERS  # was 6


def test_a_full_queue_refuses_an_upload_before_its_body_is_sent(detector, flat_png, tmp_path):
    """FastAPI reads a whole form (spooling its files) before the route runs: a full server took every multipart upload,
    up to 64 x 20 MB for a batch, before answering 503."""
    config = ServeConfig(token=None, jobs_dir=tmp_path, max_files=2, max_queue=2)
    with LiveServer(config, detector) as live:
        batcher = live.app.state.batcher
        batcher.close()  # the worker stops: the two images below stay queued
        batcher.submit(flat_png)
        batcher.submit(flat_png)
        for path in ("/v1/detect", "/v1/explain", "/v1/detect/batch"):
            head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 100000",
                    "Content-Type: multipart/form-data; boundary=XX", "Connection: close"]
            with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=5) as sock:
                sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())  # and none of the body
                answer = http.client.HTTPResponse(sock)
                answer.begin()  # waited for the body: 408 after 30 s
                assert answer.status == 503 and 1 <= int(answer.getheader("Retry-After")) <= 60
                assert json.loads(answer.read()) == {"detail": "the server is busy: 2 images are waiting for the model; "
                                                               "try again shortly"}
