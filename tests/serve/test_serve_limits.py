"""Backpressure on the model's queue."""

from __future__ import annotations

import pytest

from fakescope.errors import ConfigError
from fakescope.serve import MicroBatcher, ServeConfig
from fakescope.serve.batching import ServerBusy



def test_a_full_queue_refuses_without_waiting(detector, flat_png):
    batcher = MicroBatcher(detector, max_queue=2)  # not started: nothing leaves the queue
    batcher.submit(flat_png, wait=False)
    batcher.submit(flat_png, wait=False)
    with pytest.raises(ServerBusy, match="2 images are waiting for the model") as refused:
        batcher.submit(flat_png, wait=False)
    assert refused.value.retry_after >= 1 and batcher.room() == 0
    batcher.submit(flat_png)  # generation jobs wait for room instead of failing after paying
    assert batcher.pending == 3


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
    assert batch.json() == {"detail": "the server is busy: 1 images are waiting for the model (the limit is 2); "
                                      "try again shortly"}
    batcher.submit(flat_png)
    for path in ("/v1/detect", "/v1/explain"):
        answer = client.post(path, content=flat_png)
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) >= 1
        assert answer.json() == {"detail": "the server is busy: 2 images are waiting for the model; try again shortly"}
    assert client.get("/healthz").json()["queued"] == 2


def test_config_refuses_a_queue_smaller_than_a_batch():
    with pytest.raises(ConfigError, match=r"max_queue \(8\) must be at least max_files \(64\)"):
        ServeConfig(max_queue=8)
