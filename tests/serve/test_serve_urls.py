"""`/v1/detect` and `/v1/explain` given JSON `{"url": ...}`, `/v1/detect/batch` `{"urls": [...]}`: the images fetched from a real loopback HTTP server (trusted
through FAKESCOPE_TRUSTED_ORIGINS, as an intranet image server would be), within the server's upload limit."""

from __future__ import annotations

import base64
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from forward_proxy import forward_proxy
from image_server import serving_images

from fakescope.io.fetch import TRUSTED_ENV, shown_source
from fakescope.serve.request_image import BATCH_FETCHES, FETCH_RETRY_AFTER, FETCH_WORKERS, URLFetcher


@pytest.fixture(scope="module")
def load() -> dict:
    return {"lock": threading.Lock(), "now": 0, "peak": 0}


@pytest.fixture(scope="module")
def images(flat_png, load):
    with serving_images(flat_png, big=2 << 20, load=load) as origin:  # /big.png: over the 1 MB upload limit
        yield origin


@pytest.fixture
def trusted(images, monkeypatch):
    monkeypatch.setenv(TRUSTED_ENV, images)
    return images


def _post(server, auth, path: str, body) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", headers=auth, json=body, timeout=60)


def test_detect_and_explain_score_the_image_at_a_url_named_without_its_secrets(server, auth, trusted, flat_png):
    signed = trusted.replace("http://", "http://user:hunter22pass@") + "/signed.png?X-Amz-Signature=SECRETSIG"
    record = _post(server, auth, "/v1/detect", {"url": signed})
    assert record.status_code == 200 and record.json()["path"] == f"{trusted}/signed.png"
    assert "hunter22pass" not in record.text and "SECRETSIG" not in record.text
    uploaded = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Content-Type": "image/png"}, content=flat_png)
    assert record.json()["score"] == uploaded.json()["score"]  # the same bytes, the same score
    explained = _post(server, auth, "/v1/explain?format=json", {"url": f"{trusted}/a.png"}).json()
    assert explained["detection"]["path"] == f"{trusted}/a.png" and base64.b64decode(explained["heatmap_png"])[:4] == b"\x89PNG"
    heatmap = _post(server, auth, "/v1/explain", {"url": f"{trusted}/a.png"})
    assert heatmap.headers["content-type"] == "image/png" and heatmap.headers["X-Fakescope-Score"]


def test_a_failed_fetch_is_502_naming_the_url_without_its_query(server, auth, trusted):
    cases = {"missing.png": "HTTP Error 404: Not Found",
             "page.html": "the URL answered text/html, not an image (a web page? use the image's own address)"}
    for name, reason in cases.items():
        answer = _post(server, auth, "/v1/detect", {"url": f"{trusted}/{name}?sv=2024-05-04&sig=SECRETSIG"})
        assert (answer.status_code, answer.json()) == (502, {"detail": f"could not fetch {trusted}/{name}: {reason}"})


def test_a_fetch_that_may_pass_is_503_with_retry_after_and_a_permanent_one_stays_502(server, auth, trusted, monkeypatch):
    """A timeout, a refused connection, a 429 or a 5xx from the image server answered 502 as a 404 does: a client had
    no way to tell that trying again may help. Now it is a 503 with `Retry-After`, as a full queue answers."""
    with socket.socket() as closed:  # a port nothing listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv(TRUSTED_ENV, f"{trusted},{refused}")
        urls = [f"{trusted}/busy.png", f"{trusted}/limited.png?sv=2024-05-04&sig=SECRETSIG", f"{refused}/a.png"]
        answers = [_post(server, auth, path, {"url": url}) for url in urls for path in ("/v1/detect", "/v1/explain")]
    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers] == [(503, str(FETCH_RETRY_AFTER))] * 6
    assert [a.json()["detail"] for a in answers[:4:2]] == [f"could not fetch {trusted}/busy.png: HTTP Error 503: Service "
                                                           "Unavailable", f"could not fetch {trusted}/limited.png: HTTP "
                                                           "Error 429: Too Many Requests"]
    assert answers[4].json()["detail"].startswith(f"could not fetch {refused}/a.png: ConnectError")
    assert "SECRETSIG" not in str([a.text for a in answers])
    missing = _post(server, auth, "/v1/detect", {"url": f"{trusted}/missing.png"})
    assert missing.status_code == 502 and "Retry-After" not in missing.headers
    spec = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/detect"]["post"]["responses"]
    assert "may pass" in spec["503"]["description"] and "Retry-After" in spec["503"]["headers"]


def test_a_busy_proxy_is_503_with_retry_after_and_one_wanting_credentials_502_saying_so(server, auth, monkeypatch):
    """A proxy's 503 to the CONNECT was a permanent `ProxyError`: a 502, so a client did not try again."""
    url = "https://127.0.0.1:1/a.png"  # never reached: the proxy refuses the CONNECT
    monkeypatch.setenv(TRUSTED_ENV, "https://127.0.0.1:1")
    answers = []
    with forward_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("://", "://user:hunter22pass@"))
        for proxy.refuse in ("503 Service Unavailable", "407 Proxy Authentication Required"):
            answers.append(_post(server, auth, "/v1/detect", {"url": url}))
    assert [(a.status_code, a.headers.get("Retry-After")) for a in answers] == [(503, str(FETCH_RETRY_AFTER)), (502, None)]
    named = proxy.url.removeprefix("http://")
    assert answers[1].json()["detail"] == (f"could not fetch {url}: the proxy for https:// URLs ({named}, from HTTPS_PROXY "
                                           "or ALL_PROXY) answered 407 Proxy Authentication Required")
    assert "hunter22pass" not in str([a.text for a in answers])


def test_an_image_url_over_the_upload_limit_is_413_as_an_upload_is(server, auth, trusted):
    """It was a 502, as if the image server had failed."""
    for path in ("/v1/detect", "/v1/explain"):
        answer = _post(server, auth, path, {"url": f"{trusted}/big.png?sv=2024-05-04&sig=SECRETSIG"})
        assert (answer.status_code, answer.json()) == (413, {"detail": f"could not fetch {trusted}/big.png: the file at "
                                                                       "that URL is over 1,048,576 bytes"})  # 1 MB
    spec = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/v1/detect"]["post"]["responses"]
    assert "upload limit" in spec["413"]["description"] and "upload limit" not in spec["502"]["description"]


def test_a_loopback_url_is_refused_unless_its_origin_is_trusted(server, auth, images, monkeypatch):
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    for path in ("/v1/detect", "/v1/explain"):
        answer = _post(server, auth, path, {"url": f"{images}/a.png"})
        assert (answer.status_code, answer.json()) == (422, {"detail": f"could not fetch {images}/a.png: refused to fetch "
                                                                       "from '127.0.0.1': it resolves to 127.0.0.1, a "
                                                                       "non-public address"})
    ftp = _post(server, auth, "/v1/detect", {"url": "ftp://example.com/a.png"})
    assert (ftp.status_code, ftp.json()["detail"]) == (422, "could not fetch ftp://example.com/a.png: only http:// and "
                                                            "https:// URLs can be fetched, not ftp: ones")


def test_a_batch_of_urls_scores_each_and_gives_each_failed_fetch_its_error(server, auth, trusted):
    """Each failed item says whether sending it again may help (`error_kind`, as scan's rows): a batch record of a
    fetch that may pass read as a 404's did, where `/v1/detect` answers them 503 and 502."""
    urls = [f"{trusted}/a.png?sv=2024-05-04&sig=SECRETSIG", f"{trusted}/missing.png", "http://10.0.0.1/a.png", f"{trusted}/b.png",
            f"{trusted}/busy.png"]
    answer = _post(server, auth, "/v1/detect/batch", {"urls": urls})
    records = answer.json()["results"]
    assert answer.status_code == 200 and "SECRETSIG" not in answer.text
    assert [r["path"] for r in records] == [f"{trusted}/a.png", f"{trusted}/missing.png", "http://10.0.0.1/a.png",
                                            f"{trusted}/b.png", f"{trusted}/busy.png"]
    assert [r.get("error") for r in records] == [
        None, f"could not fetch {trusted}/missing.png: HTTP Error 404: Not Found",
        "could not fetch http://10.0.0.1/a.png: refused to fetch from '10.0.0.1': it resolves to 10.0.0.1, a non-public "
        "address", None, f"could not fetch {trusted}/busy.png: HTTP Error 503: Service Unavailable"]
    assert [r.get("error_kind") for r in records] == [None, "permanent", "permanent", None, "transient"]
    assert records[0]["score"] == records[3]["score"] is not None and records[1]["score"] is None
    too_many = _post(server, auth, "/v1/detect/batch", {"urls": [f"{trusted}/a.png"] * 9})  # the server takes 8
    assert (too_many.status_code, too_many.json()) == (413, {"detail": "too many URLs: 9 (the limit is 8 per request)"})
    bad = _post(server, auth, "/v1/detect/batch", {"url": f"{trusted}/a.png"})
    assert (bad.status_code, bad.json()) == (422, {"detail": 'a JSON body is {"urls": ["https://...", ...]}; urls: '
                                                             "Field required"})
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operation = spec["paths"]["/v1/detect/batch"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["example"]["urls"]
    kind = spec["components"]["schemas"]["DetectionRecord"]["properties"]["error_kind"]
    assert {"enum": ["transient", "permanent"], "type": "string"} in kind["anyOf"] and "may pass" in kind["description"]


def test_urls_with_a_query_are_named_as_detect_and_scan_name_them(server, auth, trusted):
    """The API named `?id=1` and `?id=2` alike (no `#query=` hash), unlike the records of detect and scan."""
    urls = [f"{trusted}/a.png?id={i}&X-Amz-Signature=SECRETSIG" for i in (1, 2)]
    one = _post(server, auth, "/v1/detect", {"url": urls[0]}).json()
    batch = _post(server, auth, "/v1/detect/batch", {"urls": urls}).json()["results"]
    assert [one["path"]] + [r["path"] for r in batch] == [shown_source(urls[0]), *map(shown_source, urls)]
    assert batch[0]["path"] != batch[1]["path"] and one["path"].startswith(f"{trusted}/a.png#query=")
    assert "SECRETSIG" not in str((one, batch))


def test_slow_image_servers_hold_at_most_the_fetch_pool(server, auth, trusted, load):
    with ThreadPoolExecutor(FETCH_WORKERS + 4) as pool:
        answers = list(pool.map(lambda i: _post(server, auth, "/v1/detect", {"url": f"{trusted}/slow.png?{i}"}),
                                range(FETCH_WORKERS + 4)))
    assert [a.status_code for a in answers] == [200] * (FETCH_WORKERS + 4)
    assert load["peak"] == FETCH_WORKERS  # the others waited for a fetch thread


def test_a_url_waiting_for_a_fetch_thread_counts_the_wait_in_its_time_limit(server, auth, trusted):
    """A URL's 20 s began when a thread took it: behind 8 slow fetches it waited up to 20 s more (and a queue of them
    without end). Here 1 thread and a 1.5 s limit: 3 slow URLs (1 s each) were all fetched, the last after 3 s. Now the
    second times out at 1.5 s, as does the third, refused unfetched if no time is left when its turn comes."""
    app = server.app
    kept = app.state.fetcher

    def timed(i: int) -> tuple[float, httpx.Response]:
        start = time.monotonic()
        answer = _post(server, auth, "/v1/detect", {"url": f"{trusted}/slow.png?limit{i}"})
        return time.monotonic() - start, answer

    try:
        app.state.fetcher = URLFetcher(workers=1, timeout=1.5)
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(timed, range(3)))
        app.state.fetcher.close()
        app.state.fetcher = URLFetcher(workers=1, timeout=0)  # every URL's time is up before a thread takes it
        refused = _post(server, auth, "/v1/detect", {"url": f"{trusted}/a.png"})
    finally:
        app.state.fetcher.close()
        app.state.fetcher = kept
    assert max(seconds for seconds, _ in answers) < 2.5
    assert sorted(a.status_code for _, a in answers) == [200, 503, 503]
    assert all(1 <= int(a.headers["Retry-After"]) <= 60 for _, a in answers if a.status_code == 503)
    assert (refused.status_code, refused.headers["Retry-After"], refused.json()["detail"]) == (
        503, "1", f"could not fetch {trusted}/a.png: the server is busy: every URL fetch thread was taken for 0 s; "
                  "try again shortly")


def test_a_dripping_image_server_frees_its_fetch_thread_at_the_url_deadline(server, auth, trusted):
    """Each read of a URL's body waited up to the time left when its request was sent, so a server dripping a byte
    just within it held the thread up to twice the limit (here 1.6 s of 1 s). Now each read waits the time left: the
    fetch stops at the deadline with the transient 503, and the one thread fetches the next URL."""
    app = server.app
    kept = app.state.fetcher
    try:
        app.state.fetcher = URLFetcher(workers=1, timeout=1)
        start = time.monotonic()
        dripped = _post(server, auth, "/v1/detect", {"url": f"{trusted}/drip.png"})
        held = time.monotonic() - start
        after = _post(server, auth, "/v1/detect", {"url": f"{trusted}/a.png"})
    finally:
        app.state.fetcher.close()
        app.state.fetcher = kept
    assert (dripped.status_code, dripped.headers["Retry-After"], dripped.json()["detail"]) == (
        503, str(FETCH_RETRY_AFTER), f"could not fetch {trusted}/drip.png: the file at that URL took over 1 s to download")
    assert held < 1.4 and after.status_code == 200


def test_batches_of_slow_urls_leave_fetch_workers_for_another_client(server, auth, trusted, load):
    """One batch's URLs took every fetch worker (8 slow URLs held all 8), and each further URL of anyone waited behind
    all of them. Now a batch fetches `BATCH_FETCHES` at once: 3 batches hold 6 workers, and a lone URL starts at once
    (it waited about 3 s behind their 24 slow URLs)."""
    batches, slow = 3, [f"{trusted}/slow.png?fair"] * 8
    assert batches * BATCH_FETCHES < FETCH_WORKERS
    deadline = time.monotonic() + 10
    while load["now"] and time.monotonic() < deadline:  # an earlier test's slow fetch, past its request's time, ends
        time.sleep(0.05)
    load["peak"] = 0
    with ThreadPoolExecutor(batches) as pool:
        running = [pool.submit(_post, server, auth, "/v1/detect/batch", {"urls": slow}) for _ in range(batches)]
        while load["now"] < batches * BATCH_FETCHES:  # every batch is fetching
            time.sleep(0.05)
        start = time.monotonic()
        alone = _post(server, auth, "/v1/detect", {"url": f"{trusted}/a.png"})
        waited, behind = time.monotonic() - start, not any(r.done() for r in running)
        assert all(r.result().status_code == 200 for r in running)
    assert alone.status_code == 200 and waited < 2 and behind  # the batches had 3 s of slow URLs left
    assert load["peak"] == batches * BATCH_FETCHES  # each batch held at most its share


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"link": "https://example.com/a.png"}', 'a JSON body is {"url": "https://..."}; url: Field required'),
    (b'{"url": 5}', 'a JSON body is {"url": "https://..."}; url: Input should be a valid string'),
    (b"not json", 'a JSON body is {"url": "https://..."}; Invalid JSON: expected ident at line 1 column 2'),
])
def test_a_bad_json_body_is_422_saying_what_to_send(server, auth, body, detail):
    answer = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Content-Type": "application/json"}, content=body)
    assert (answer.status_code, answer.json()) == (422, {"detail": detail})


def test_the_spec_documents_the_url_body_with_an_example(server):
    operations = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in ("/v1/detect", "/v1/explain"):
        operation = operations[path]["post"]
        body = operation["requestBody"]["content"]["application/json"]
        assert body["schema"]["required"] == ["url"] and body["example"] == {"url": "https://example.com/photo.jpg"}
        assert operation["responses"]["502"]["description"].startswith("the image URL could not be fetched")
