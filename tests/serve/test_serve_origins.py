"""A tokenless loopback server against web pages: cross-origin writes and DNS rebinding are refused (403), while
curl, httpx, the server's own pages and allowed origins keep working. Real servers, a real curl, a real Chromium."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from openai_server import ImagesAPIServer
from serve_helpers import LiveServer

from fakescope.errors import ConfigError
from fakescope.serve import ServeConfig
from fakescope.serve.origins import APP_ALLOWED_HOSTS_ENV, app_host_refusal, host_refusal, origin_refusal

API_KEY = "sk-origins-test-key"
EVIL = "http://evil.example"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


@pytest.fixture
def images_api(monkeypatch):
    api = ImagesAPIServer(api_key=API_KEY).start()
    monkeypatch.setenv("OPENAI_BASE_URL", api.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)  # the server's own key: what a forged request would spend
    yield api
    api.stop()


@pytest.fixture
def open_server(detector, tmp_path, images_api):
    """A loopback server without FAKESCOPE_API_TOKEN, as `fakescope serve` runs by default."""
    with LiveServer(ServeConfig(token=None, jobs_dir=tmp_path / "jobs"), detector) as live:
        yield live


def _jobs(live) -> list[Path]:
    return list(live.app.state.config.jobs_dir.glob("*/job.json"))


def test_a_post_or_delete_from_another_origin_is_403_and_starts_nothing(open_server, images_api, photo_bytes):
    form = {"files": {"file": ("cat.jpg", photo_bytes, "image/jpeg")}, "data": {"model": "dall-e-2", "size": "256x256"}}
    forged = httpx.post(f"{open_server.url}/v1/generate", headers={"Origin": EVIL}, **form)
    assert forged.status_code == 403 and forged.json() == {"detail": (
        f"cross-origin request refused: a page on {EVIL} may not call this API "
        "(allow its origin with fakescope serve --cors-origin)")}
    assert httpx.post(f"{open_server.url}/v1/generate", headers={"Origin": "null"}, **form).status_code == 403
    assert not _jobs(open_server) and images_api.billable == 0
    own = httpx.post(f"{open_server.url}/v1/generate", headers={"Origin": open_server.url}, **form)
    assert own.status_code == 202  # the server's own pages (its /docs) may
    job = own.json()["id"]
    assert httpx.delete(f"{open_server.url}/v1/jobs/{job}", headers={"Origin": EVIL}).status_code == 403
    assert httpx.get(f"{open_server.url}/v1/jobs/{job}", headers={"Origin": EVIL}).status_code == 200  # unreadable to it


def test_an_allowed_origin_may_write_and_any_origin_with_a_star(detector, tmp_path, photo_bytes):
    for origins in (("http://app.example",), ("*",)):
        config = ServeConfig(token=None, jobs_dir=tmp_path / "jobs", cors_origins=origins)
        with LiveServer(config, detector) as live:
            answer = httpx.post(f"{live.url}/v1/detect", headers={"Origin": "http://app.example"}, content=photo_bytes)
            assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] in origins


@pytest.mark.parametrize("host, status", [("evil.example", 403), ("evil.example:8000", 403), ("10.0.0.1:80", 403),
                                          ("localhost", 200), ("LOCALHOST:1", 200), ("127.0.0.2:9", 200),
                                          ("[::1]:8000", 200), ("api.example.com", 403)])
def test_on_loopback_a_host_that_is_not_a_loopback_name_is_403(open_server, host, status):
    answer = httpx.get(f"{open_server.url}/healthz", headers={"Host": host})
    assert answer.status_code == status
    if status == 403:
        assert answer.json()["detail"] == (f"host not allowed: {host!r} is not a loopback name (localhost, 127.0.0.1, "
                                           "[::1]); a proxy's name can be allowed with fakescope serve --allowed-host")


def test_an_allowed_host_passes_as_a_local_proxy_sends_it(detector, tmp_path, photo_bytes):
    config = ServeConfig(token=None, jobs_dir=tmp_path, allowed_hosts=("API.example.com",))
    with LiveServer(config, detector) as live:
        proxied = {"Host": "api.example.com", "Origin": "https://api.example.com"}  # its own origin, behind TLS
        assert httpx.post(f"{live.url}/v1/detect", headers=proxied, content=photo_bytes).status_code == 200
        assert httpx.get(f"{live.url}/healthz", headers={"Host": "other.example.com"}).status_code == 403


def test_beyond_loopback_the_host_is_not_checked():
    """A request that reached a LAN address needs the token there; any name may lead to it."""
    assert host_refusal(httpx.Headers({"host": "nas.lan:8000"}), ("192.168.1.5", 8000), ()) is None
    assert host_refusal(httpx.Headers({"host": "nas.lan:8000"}), ("127.0.0.1", 8000), ()) is not None
    assert origin_refusal("OPTIONS", httpx.Headers({"origin": EVIL}), ()) is None  # preflights are CORS's to answer
    assert origin_refusal("POST", httpx.Headers({"origin": "http://[", "host": "localhost"}), ()).startswith("cross-origin")


def test_the_web_app_admits_the_names_its_environment_allows(monkeypatch):
    """`fakescope app` refused a local proxy's own Host (nginx `Host $host`): it had no --allowed-host."""
    monkeypatch.delenv(APP_ALLOWED_HOSTS_ENV, raising=False)
    refused = app_host_refusal("proxy.example:443", "127.0.0.1")
    assert refused == ("host not allowed: 'proxy.example:443' is not a loopback name (localhost, 127.0.0.1, [::1]); "
                       "open the app as http://127.0.0.1 or http://localhost, or allow a proxy's name with "
                       "fakescope app --allowed-host")
    monkeypatch.setenv(APP_ALLOWED_HOSTS_ENV, "Proxy.Example,::2")
    assert app_host_refusal("proxy.example:443", "127.0.0.1") is None
    assert app_host_refusal("[::2]:8501", "::1") is None and app_host_refusal("localhost:8501", "127.0.0.1") is None
    assert app_host_refusal("rebound.example", "127.0.0.1").startswith("host not allowed: 'rebound.example'")
    assert app_host_refusal("rebound.example", "0.0.0.0") is None  # beyond loopback (--allow-anonymous): not checked
    monkeypatch.setenv(APP_ALLOWED_HOSTS_ENV, "proxy.example,http://x:1")
    with pytest.raises(ConfigError, match=r"^allowed host 'http://x:1': expected a host name or IP address"):
        app_host_refusal("proxy.example", "127.0.0.1")


def test_the_documented_curl_calls_still_work(open_server, images_api, photo_bytes, tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(photo_bytes)
    url = open_server.url

    def curl(*args: str) -> str:
        return subprocess.run(["curl", "-s", "-f", *args], check=True, capture_output=True, text=True, timeout=60).stdout

    assert '"width":160' in curl("-F", f"file=@{photo}", f"{url}/v1/detect")
    assert '"width":160' in curl("--data-binary", f"@{photo}", "-H", "Content-Type: image/jpeg", f"{url}/v1/detect")
    assert curl("-F", f"files=@{photo}", "-F", f"files=@{photo}", f"{url}/v1/detect/batch").count('"width":160') == 2
    curl("-F", f"file=@{photo}", f"{url}/v1/explain?overlay=true", "-o", str(tmp_path / "heatmap.png"))
    assert (tmp_path / "heatmap.png").read_bytes().startswith(b"\x89PNG")
    job = json.loads(curl("-F", f"file=@{photo}", "-F", "mode=variation", "-F", "size=1024x1024",
                          "-H", f"X-OpenAI-Key: {API_KEY}", f"{url}/v1/generate"))
    assert job["state"] in ("queued", "running")
    assert json.loads(curl(f"{url}/v1/jobs/{job['id']}"))["id"] == job["id"]
    assert json.loads(curl("-X", "DELETE", f"{url}/v1/jobs/{job['id']}"))["id"] == job["id"]
    assert json.loads(curl(f"http://localhost:{url.rsplit(':', 1)[1]}/healthz"))["status"] == "ok"


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing")

FORGE = """async ([api, image]) => {  // what any page could do: a simple request, no preflight, answer unread
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(image)], {type: 'image/jpeg'}), 'cat.jpg');
  form.append('model', 'dall-e-2');
  form.append('size', '256x256');
  await fetch(api + '/v1/generate', {method: 'POST', mode: 'no-cors', body: form});
}"""
SAME_ORIGIN = """async (image) => {  // a page the server itself serves (its /docs) calling its API
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(image)], {type: 'image/jpeg'}), 'cat.jpg');
  const answer = await fetch('/v1/detect', {method: 'POST', body: form});
  return [answer.status, (await answer.json()).width];
}"""


@pytest.fixture
def other_site(tmp_path):
    """A static page on another loopback port: another origin than the API's, as any site the user visits."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<!doctype html><title>some site</title>")
    handler = lambda *a: SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "site"))  # noqa: E731
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


@pytest.mark.browser
@needs_chromium
def test_in_a_browser_no_other_page_can_generate_or_rebind_but_the_servers_own_pages_work(open_server, images_api,
                                                                                          other_site, photo_bytes):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    port = open_server.url.rsplit(":", 1)[1]
    rebinding = [*FLAGS, "--host-resolver-rules=MAP rebound.test 127.0.0.1"]  # as DNS rebinding ends
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=rebinding, headless=True)
        try:
            page = browser.new_page()
            page.goto(other_site)
            page.evaluate(FORGE, [open_server.url, list(photo_bytes)])  # was a paid job on the server's key
            assert not _jobs(open_server) and images_api.billable == 0
            assert page.goto(f"http://rebound.test:{port}/healthz").status == 403
            assert "host not allowed: 'rebound.test:" in page.content()
            for own in (open_server.url, f"http://localhost:{port}"):
                assert page.goto(f"{own}/healthz").status == 200
                assert page.evaluate(SAME_ORIGIN, list(photo_bytes)) == [200, 160]
        finally:
            browser.close()
