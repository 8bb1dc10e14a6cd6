"""CORS in a real browser: a page on another loopback origin calls the API with a bearer token."""

from __future__ import annotations

import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serve_helpers import BATCH_NEEDS_FILES, TOKEN, LiveServer

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

CALL = """async ([api, token]) => {
  const body = await (await fetch(api + '/healthz')).blob();  // any bytes; the answer is what counts
  const answer = await fetch(api + '/v1/detect/batch', {method: 'POST', headers: {Authorization: 'Bearer ' + token},
                                                        body: new FormData()});
  const jobs = await fetch(api + '/v1/jobs/nope', {method: 'DELETE', headers: {Authorization: 'Bearer ' + token}});
  const bug = await fetch(api + '/v1/fails', {headers: {Authorization: 'Bearer ' + token}});  // was 'Failed to fetch'
  return [answer.status, (await answer.json()).detail, jobs.status, body.size > 0, bug.status, (await bug.json()).detail];
}"""


INTERNAL = "internal server error (the server's log has the details)"


def _fails():
    raise RuntimeError("a bug a route may still hold")


@pytest.fixture
def page_origin(tmp_path):
    """A static page served on its own loopback port: another origin than the API's."""
    (tmp_path / "index.html").write_text("<!doctype html><title>client</title>")
    handler = lambda *a: SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    site = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


@pytest.mark.skipif(not __import__("pathlib").Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing")
@pytest.mark.parametrize("allowed", [True, False])
def test_a_page_on_an_allowed_origin_can_call_the_api(detector, page_origin, tmp_path, allowed):
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, jobs_dir=tmp_path / "jobs", cors_origins=(page_origin,) if allowed else ())
    live = LiveServer(config, detector)
    live.app.get("/v1/fails")(_fails)
    with live as api, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(page_origin)
            if allowed:  # the token and the DELETE need a preflight; Chromium sends it and honours the grant
                assert page.evaluate(CALL, [api.url, TOKEN]) == [422, BATCH_NEEDS_FILES, 404, True, 500, INTERNAL]
            else:
                with pytest.raises(sync_api.Error, match="Failed to fetch"):
                    page.evaluate(CALL, [api.url, TOKEN])
        finally:
            browser.close()
