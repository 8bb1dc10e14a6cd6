"""`/docs` renders offline in a real browser: Swagger UI's files come from the server, never a CDN."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from serve_helpers import TOKEN

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing")
def test_docs_page_renders_offline_and_its_assets_stay_in_the_bundle(server):
    offsite = []

    def loopback_only(route):  # the network as offline: anything not on 127.0.0.1 is refused and recorded
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            return route.continue_()
        offsite.append(route.request.url)
        return route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", loopback_only)
            page.goto(f"{server.url}/docs")  # no token: the page and the spec are open, the `/v1/*` calls are not
            sync_api.expect(page.get_by_text("/v1/detect/batch", exact=True)).to_be_visible(timeout=20_000)
        finally:
            browser.close()
    assert offsite == []
    host = urlsplit(server.url)
    for path, status in [("/docs/assets/swagger-ui.css", 200), ("/docs/assets/../../__init__.py", 404),
                         ("/docs/assets/%2e%2e/%2e%2e/__init__.py", 404)]:  # the bundle package's own module
        connection = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        connection.request("GET", path)  # sent as written: http.client leaves `..` in place
        assert connection.getresponse().status == status, path
        connection.close()
    assert httpx.get(f"{server.url}/redoc").status_code == 404  # dropped: it loaded ReDoc from a CDN


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"{CHROMIUM} is missing")
def test_docs_page_authorizes_with_the_bearer_token_and_calls_an_endpoint(server):
    """The spec's `HTTPBearer` scheme gives the page its Authorize button; the token it takes reaches `/v1/*` (200, not
    401) through the page's headers (CSP, origin check)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/docs")
            page.get_by_role("button", name="Authorize").first.click()
            page.locator("#auth-bearer-value").fill(TOKEN)
            page.get_by_role("button", name="Apply credentials").click()
            page.get_by_role("button", name="Close").click()
            page.locator("#operations-service-models").click()
            page.get_by_role("button", name="Try it out").click()
            page.get_by_role("button", name="Execute").click()
            status = page.locator(".live-responses-table tbody .response-col_status").first
            sync_api.expect(status).to_have_text("200", timeout=20_000)
            assert f"Authorization: Bearer {TOKEN}" in page.locator(".curl-command").inner_text()
        finally:
            browser.close()
