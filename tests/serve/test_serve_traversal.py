"""Upload names, job ids and output indices never reach outside the jobs folder, nor `/docs/assets` names outside the
page's own files."""

from __future__ import annotations

import http.client
import time

import httpx
import pytest
from openai_server import ImagesAPIServer
from serve_helpers import TOKEN

API_KEY = "sk-serve-test-key"


@pytest.fixture
def images_api(monkeypatch):
    api = ImagesAPIServer(api_key=API_KEY).start()
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    yield api
    api.stop()


def test_a_hostile_upload_name_stays_in_its_job_folder(server, auth, images_api, photo_bytes):
    jobs_dir = server.app.state.config.jobs_dir
    before = {p for p in jobs_dir.parent.rglob("*")}
    answer = httpx.post(f"{server.url}/v1/generate", headers={**auth, "X-OpenAI-Key": API_KEY},
                        files={"file": ("../../..\\..\\escape.jpg", photo_bytes, "image/jpeg")},
                        data={"model": "dall-e-2", "size": "256x256"})
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth).json())["state"] != "done":
        assert time.monotonic() < deadline and job["state"] != "failed", job
        time.sleep(0.1)
    new = {p for p in jobs_dir.parent.rglob("*")} - before
    assert new and all(p.is_relative_to(jobs_dir / job_id) for p in new)
    name = job["outputs"][0]["detection"]["path"]
    assert name.startswith("______escape-") and "/" not in name and "\\" not in name  # ..\..\ made ______


@pytest.mark.parametrize("path", [
    "/v1/jobs/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/%2e%2e", "/v1/jobs/..%2Fjob.json/outputs/0",
    "/v1/jobs/x/outputs/..%2F..%2Fjob.json", "/v1/jobs/x/outputs/-1", "/v1/jobs/x/outputs/99999999999999999999999",
])
def test_traversal_paths_find_nothing(server, auth, path):
    answer = httpx.get(server.url + path, headers=auth)
    assert answer.status_code in (404, 422) and set(answer.json()) == {"detail"}
    assert httpx.delete(server.url + path, headers=auth).status_code in (404, 405, 422)


@pytest.mark.parametrize("path", ["//v1/models", "/v1//models", "/./v1/models", "/v1/../v1/models", "/%761/models",
                                  "/v1%2Fmodels", "/V1/models", "/v1/models/", "/healthz/../v1/models"])
def test_no_spelling_of_a_path_gets_past_the_token(server, path):
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=20)
    connection.request("GET", path)  # sent as written: no client-side normalisation
    answer = connection.getresponse()
    assert answer.status in (401, 404), (path, answer.status)
    assert b"architectures" not in answer.read()
    connection.close()


@pytest.mark.parametrize("path", [
    "/docs/assets/index.html", "/docs/assets/swagger-initializer.js", "/docs/assets/../../__init__.py",
    "/docs/assets/%2e%2e/%2e%2e/__init__.py", "/docs/assets/%252e%252e/%252e%252e/__init__.py",
    "/docs/assets/..%2f..%2f__init__.py", "/docs/assets/..%5c..%5c__init__.py", "/docs/assets/..\\..\\__init__.py",
    "/docs/assets//etc/passwd", "/docs/assets/%2fetc%2fpasswd", "/docs/assets/swagger-ui.css%00",
])
def test_the_docs_assets_are_the_pages_three_files_alone(server, path):
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=20)
    connection.request("GET", path)  # sent as written: no client-side normalisation
    assert connection.getresponse().status == 404, path  # index.html fetched the petstore spec from the internet
    connection.close()


def test_the_docs_page_cannot_be_framed_sniffed_or_show_the_token(server):
    for path in ["/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/docs/oauth2-redirect"]:
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200 and TOKEN.encode() not in answer.content, path
        assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["content-security-policy"] == "frame-ancestors 'none'"
        assert answer.headers["cache-control"] == ("no-store" if path in ("/docs", "/docs/oauth2-redirect")
                                                   else "public, max-age=86400"), path  # Swagger UI's files are cached
    assert httpx.get(f"{server.url}/docs", headers={"Host": "rebound.example"}).status_code == 403  # DNS rebinding
