"""The server never shows a secret: not the API token, not a client's OpenAI key, in answers, logs, job files or the spec."""

from __future__ import annotations

import logging
import tempfile
import time

import httpx
import pytest
from openai_server import ImagesAPIServer
from serve_helpers import TOKEN

CLIENT_KEY = "sk-proj-SECRETclientKEY0123456789"


@pytest.fixture
def refusing_api(monkeypatch):
    api = ImagesAPIServer(api_key="sk-another-key").start()  # answers 401 to CLIENT_KEY
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield api
    api.stop()


@pytest.fixture
def images_api_for_client(monkeypatch):
    api = ImagesAPIServer(api_key=CLIENT_KEY).start()  # takes CLIENT_KEY, which is in no environment variable
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield api
    api.stop()


def test_a_refused_client_key_shows_nowhere(server, auth, refusing_api, photo_bytes, caplog):
    caplog.set_level(logging.DEBUG)  # openai, httpx and fakescope debug logs included
    answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": CLIENT_KEY},
                        files={"file": ("photo.jpg", photo_bytes, "image/jpeg")},
                        data={"model": "dall-e-2", "size": "256x256"})
    assert answer.status_code == 202
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{server.url}/v1/jobs/{answer.json()['id']}", headers=auth).json())["state"] != "failed":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    assert "the API key was refused" in job["error"] and refusing_api.counts[("variations", 401)] == 1
    jobs_dir = server.app.state.config.jobs_dir
    written = [p.read_bytes() for p in jobs_dir.rglob("*") if p.is_file()]
    assert written and not any(CLIENT_KEY.encode() in data for data in written)
    assert "/v1/images/variations" in caplog.text  # the client's request was logged (httpx), without the key
    assert CLIENT_KEY not in answer.text + str(job) + caplog.text


def test_an_unexpected_job_failure_quoting_the_client_key_shows_it_nowhere(images_api_for_client, photo_bytes, tmp_path, caplog):
    """An error that was no fakescope one went into the job's error and its logged traceback as it came: the visitor's
    key, in no environment variable, was not hidden. Here the scoring step fails quoting it, as a library's error may."""
    from fakescope.generate import OpenAIImagesConfig
    from fakescope.serve.generation import openai_client
    from fakescope.serve.jobs import JobStore

    def crash(data: bytes):
        raise RuntimeError(f"cannot score the answer to Authorization: Bearer {CLIENT_KEY}")

    caplog.set_level(logging.DEBUG)
    store = JobStore(tmp_path, crash)
    try:
        job = store.submit(photo_bytes, OpenAIImagesConfig(model="dall-e-2", size="256x256"), openai_client(CLIENT_KEY))
        deadline = time.monotonic() + 30
        while job.state != "failed":
            assert time.monotonic() < deadline, job.to_dict()
            time.sleep(0.05)
    finally:
        store.close()
    assert images_api_for_client.billable == 1
    assert job.error == "RuntimeError: cannot score the answer to Authorization: Bearer ***"
    assert "Traceback" in caplog.text and "Bearer ***" in caplog.text  # the log keeps the detail, not the key
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"Bearer ***" in written and CLIENT_KEY.encode() not in written  # job.json
    assert CLIENT_KEY not in str(job.to_dict()) + caplog.text


def test_the_api_token_is_never_echoed(server):
    wrong = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "missing or wrong bearer token"}
    for path in ("/openapi.json", "/docs", "/healthz"):
        assert TOKEN not in httpx.get(server.url + path).text
    assert TOKEN not in repr(server.app.state.config)


def test_an_unexpected_failure_on_the_generator_page_shows_and_logs_no_key(images_api_for_client, photo_bytes, tmp_path,
                                                                           monkeypatch, caplog):
    """The web app's run_generation let an error that was no fakescope one reach Streamlit, which showed its text (the
    visitor's key in it) on the page; an expected one was shown and logged without hide_secrets. The page runs in
    Streamlit's AppTest; the scoring step fails quoting the key typed on the page."""
    from streamlit.testing.v1 import AppTest

    from fakescope.serve import webapp

    class Crashing:
        def predict(self, data: bytes, heatmap: bool = False):
            raise RuntimeError(f"cannot score the answer to Authorization: Bearer {CLIENT_KEY}")

    def page(data: bytes, key: str) -> None:
        from fakescope.serve import webapp

        webapp.run_generation("photo.jpg", data, {"mode": "variation", "model": "dall-e-2", "size": "256x256"}, key)

    monkeypatch.setattr(webapp, "detector", Crashing)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the script AppTest writes and the page's workspace
    caplog.set_level(logging.DEBUG)
    app = AppTest.from_function(page, args=(photo_bytes, CLIENT_KEY), default_timeout=60).run()
    assert not app.exception, app.exception
    assert [e.value for e in app.error] == ["Generation failed: ` RuntimeError: cannot score the answer to "
                                            "Authorization: Bearer *** `"]  # a code span: shown as it is
    assert images_api_for_client.billable == 1
    assert "Traceback" in caplog.text and "Bearer ***" in caplog.text and CLIENT_KEY not in caplog.text
