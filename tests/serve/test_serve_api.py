"""The REST API over HTTP on loopback, against the bundled model."""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from serve_helpers import BATCH_NEEDS_FILES, TOKEN, LiveServer, encode

CONNECTION_CAP = ("busy: more connections and requests at once than the server's --max-connections (`Retry-After` says "
                  "when to try again)")


def test_healthz_is_open_and_names_the_model(server):
    answer = httpx.get(f"{server.url}/healthz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "ok" and body["model"] == "fakescope-default"
    assert set(body["batching"]) == {"items", "calls", "largest_batch", "busy_s"}
    head = httpx.head(f"{server.url}/healthz")  # as uptime monitors ask: was 405
    assert (head.status_code, head.content, head.headers["content-type"]) == (200, b"", "application/json")


def test_healthz_shows_the_body_memory_held_only_with_the_token(server, auth):
    """Anyone saw the bytes held byte for byte: on a quiet server, the size of each upload of the token's holders as it
    came in, and how much more would fill the budget."""
    assert "body_memory" not in httpx.get(f"{server.url}/healthz").json()
    assert "body_memory" not in httpx.get(f"{server.url}/healthz", headers={"Authorization": "Bearer wrong"}).json()
    assert set(httpx.get(f"{server.url}/healthz", headers=auth).json()["body_memory"]) == {"held", "limit"}


def test_v1_needs_the_bearer_token(server, flat_png):
    missing = httpx.post(f"{server.url}/v1/detect", content=flat_png)
    wrong = httpx.post(f"{server.url}/v1/detect", content=flat_png, headers={"Authorization": "Bearer nope"})
    assert (missing.status_code, wrong.status_code) == (401, 401)
    assert missing.json()["detail"] == "missing or wrong bearer token"
    assert wrong.headers["www-authenticate"] == "Bearer"


def test_models_lists_the_loaded_model(server, auth):
    body = httpx.get(f"{server.url}/v1/models", headers=auth).json()
    assert body["loaded"]["name"] == "fakescope-default" and body["loaded"]["threshold"] == 0.5
    assert "fakescope-default" in body["bundled"] and body["architectures"]


def test_detect_multipart_matches_the_python_api(server, auth, detector, photo_bytes):
    answer = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("cat.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 200
    record = answer.json()
    direct = detector.predict(photo_bytes).to_dict()
    assert record["path"] == "cat.jpg"
    assert record["score"] == pytest.approx(direct["score"], abs=1e-5)
    assert (record["label"], record["width"], record["height"], record["format"]) == (direct["label"], 160, 120, "JPEG")
    assert [e["kind"] for e in record["evidence"]] == [e["kind"] for e in direct["evidence"]]
    assert record["decided_by"] == direct["decided_by"] and "error" not in record


def test_detect_raw_body(server, auth, flat_png):
    record = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Content-Type": "image/png"}, content=flat_png).json()
    assert record["path"] == "upload" and (record["width"], record["height"], record["format"]) == (96, 64, "PNG")
    assert 0.0 <= record["score"] <= 1.0 and record["label"] in ("ai", "real", "uncertain")
    spec = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    for path in ("/v1/detect", "/v1/explain"):  # the spec named image/* alone; a generated client sends octet-stream
        assert {"image/*", "application/octet-stream"} <= set(spec[path]["post"]["requestBody"]["content"])
    octets = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Content-Type": "application/octet-stream"},
                        content=flat_png)
    assert (octets.status_code, octets.json()["score"]) == (200, record["score"])
    text = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Content-Type": "text/plain"}, content=flat_png)
    assert (text.status_code, text.json()["score"]) == (200, record["score"])  # the bytes decide, as in a multipart part


def test_not_an_image_is_422_with_a_clear_message(server, auth):
    answer = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("notes.txt", b"hello, not pixels", "text/plain")})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("not an image: the file's signature matches no supported format")
    broken = httpx.post(f"{server.url}/v1/detect", headers=auth, content=b"\x89PNG\r\n\x1a\n" + bytes(40))  # a PNG signature only
    assert broken.status_code == 422
    assert broken.json()["detail"] == "corrupt or unsupported PNG image: cannot identify image file"  # no memory address


def test_too_many_pixels_is_422(server, auth):
    big = encode(Image.new("RGB", (1200, 1000), (1, 2, 3)))  # 1.2 Mpx > 1 Mpx, but a small PNG
    answer = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("big.png", big, "image/png")})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "image too large: 1200x1000 is 1,200,000 pixels; the limit is 1,000,000"
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)), (b"IDAT", zlib.compress(bytes(99)))]
    bomb = b"\x89PNG\r\n\x1a\n" + b"".join(  # a 900 Mpx PNG header: Pillow refuses to open it
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data)) for kind, data in chunks)
    answer = httpx.post(f"{server.url}/v1/detect", headers=auth, content=bomb)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "image too large: 900,000,000 pixels, over 400,000,000; the limit is 1,000,000"


def test_too_many_bytes_is_413_for_multipart_raw_and_chunked(server, auth):
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    heavy = encode(Image.fromarray(noise))  # ~1.4 MB, 0.49 Mpx
    assert len(heavy) > 1024 * 1024
    multipart = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("heavy.png", heavy, "image/png")})
    raw = httpx.post(f"{server.url}/v1/detect", headers=auth, content=heavy)
    chunked = httpx.post(f"{server.url}/v1/detect", headers=auth, content=iter([heavy[:500_000], heavy[500_000:]]))
    for answer in (multipart, raw, chunked):
        assert answer.status_code == 413
        assert answer.json()["detail"] == "upload too large: the limit is 1 MB per image"


def test_a_batch_file_over_the_upload_limit_is_its_records_error_and_the_others_are_scored(server, auth, photo_bytes):
    """The whole batch was a 413 for one big file: a client lost every other file's result."""
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    heavy = encode(Image.fromarray(noise))  # ~1.4 MB: over the 1 MB per image, within the batch's 8 MB
    files = [("files", (name, data, "image/png")) for name, data in
             (("a.jpg", photo_bytes), ("heavy.png", heavy), ("c.jpg", photo_bytes))]
    answer = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["path"] for r in results] == ["a.jpg", "heavy.png", "c.jpg"]
    assert (results[1]["score"], results[1]["error"]) == (None, "upload too large: the limit is 1 MB per image")
    assert results[0]["score"] == results[2]["score"] is not None and "error" not in results[0]


@pytest.mark.parametrize(("path", "token", "status", "detail"), [
    ("/v1/detect", True, 413, "upload too large: the limit is 1 MB per image"),
    ("/v1/detect/batch", True, 413, "upload too large: the limit is 1 MB per image, 8 images per request"),
    ("/v1/detect/batch", False, 401, "missing or wrong bearer token"),
])
def test_chunked_multipart_is_refused_before_it_ends(server, auth, path, token, status, detail):
    head = (b"--XX\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n\xff\xd8\xff\xe0")
    chunk = bytes(1024 * 1024)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked",
             "Content-Type: multipart/form-data; boundary=XX", *(f"{k}: {v}" for k, v in auth.items() if token)]
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"%x\r\n%s\r\n" % (len(head), head))
        with contextlib.suppress(ConnectionError):  # the server may close once it has answered
            for _ in range(10):  # 10 MB, over both limits (1 MB; 8 files x 1 MB), and never finished
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert answer.status == status and json.loads(answer.read()) == {"detail": detail}


def test_a_form_without_a_file_part_is_422_not_a_crash(server, auth, photo_bytes):
    misnamed = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"image": ("p.jpg", photo_bytes, "image/jpeg")})
    urlencoded = httpx.post(f"{server.url}/v1/explain", content=photo_bytes,
                            headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})  # curl --data-binary
    for answer in (misnamed, urlencoded):
        assert answer.status_code == 422
        assert answer.json()["detail"].startswith("no image: send multipart field 'file' or the raw image bytes")


def test_batch_scores_each_file_and_reports_bad_ones(server, auth, photo_bytes, flat_png):
    files = [("files", ("a.jpg", photo_bytes, "image/jpeg")), ("files", ("b.png", flat_png, "image/png")),
             ("files", ("c.txt", b"plain text", "text/plain"))]
    results = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files=files).json()["results"]
    assert [r["path"] for r in results] == ["a.jpg", "b.png", "c.txt"]
    assert results[0]["width"] == 160 and results[1]["format"] == "PNG"
    assert results[2]["score"] is None and results[2]["error"].startswith("not an image")
    assert [r.get("error_kind") for r in results] == [None, None, "permanent"]  # the same file fails again
    too_many = [("files", (f"{i}.png", flat_png, "image/png")) for i in range(9)]
    answer = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files=too_many)
    assert answer.status_code == 413 and answer.json()["detail"] == "too many files: more than 8 (the limit is 8 per request)"


def test_explain_png_and_json(server, auth, detector, photo_bytes):
    answer = httpx.post(f"{server.url}/v1/explain", headers=auth, files={"file": ("p.jpg", photo_bytes, "image/jpeg")})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    heatmap = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert heatmap.shape == (120, 160)
    expected = detector.explain(photo_bytes)
    assert abs(heatmap.mean() / 255.0 - expected.mean()) < 0.01
    assert answer.headers["x-fakescope-label"] in ("ai", "real", "uncertain")
    body = httpx.post(f"{server.url}/v1/explain?format=json&overlay=true", headers=auth, content=photo_bytes).json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert (overlay.mode, overlay.size, body["overlay"]) == ("RGB", (160, 120), True)
    assert body["detection"]["score"] == pytest.approx(float(answer.headers["x-fakescope-score"]), abs=1e-5)


def test_a_pixel_only_real_carries_the_caveat_and_a_declared_ai_does_not(server, auth):
    from PIL import PngImagePlugin

    from fakescope.forensics.fusion import PIXEL_ONLY

    reconstruction = (Path(__file__).parents[2] / "examples" / "coffee-taef2.jpg").read_bytes()  # AI, read as real
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a")
    declared = encode(Image.open(io.BytesIO(reconstruction)), pnginfo=info)
    missed = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("c.jpg", reconstruction, "image/jpeg")}).json()
    assert (missed["label"], missed["decided_by"], missed["caveat"]) == ("real", "pixel", PIXEL_ONLY)
    caught = httpx.post(f"{server.url}/v1/detect", headers=auth, content=declared).json()
    assert (caught["label"], caught["decided_by"], caught["caveat"]) == ("ai", "metadata", None)
    batch = httpx.post(f"{server.url}/v1/detect/batch", headers=auth,
                       files=[("files", ("c.jpg", reconstruction, "image/jpeg")), ("files", ("d.png", declared, "image/png"))])
    assert [r["caveat"] for r in batch.json()["results"]] == [PIXEL_ONLY, None]
    heatmap = httpx.post(f"{server.url}/v1/explain", headers=auth, content=reconstruction)
    assert heatmap.headers["x-fakescope-caveat"] == PIXEL_ONLY
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert "X-Fakescope-Caveat" in spec["paths"]["/v1/explain"]["post"]["responses"]["200"]["headers"]
    assert "x-fakescope-caveat" not in httpx.post(f"{server.url}/v1/explain", headers=auth, content=declared).headers


def test_explain_follows_exif_orientation_like_detect(server, auth, photo_bytes):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 160x120, shown rotated: 120x160
    rotated = encode(Image.open(io.BytesIO(photo_bytes)), "JPEG", quality=90, exif=exif)
    body = httpx.post(f"{server.url}/v1/explain?format=json&overlay=true", headers=auth, content=rotated).json()
    assert (body["detection"]["width"], body["detection"]["height"]) == (120, 160)
    assert Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"]))).size == (120, 160)
    plain = httpx.post(f"{server.url}/v1/explain", headers=auth, content=rotated)
    assert Image.open(io.BytesIO(plain.content)).size == (120, 160)


def test_concurrent_requests_share_model_calls(detector, auth, flat_png, tmp_path):
    """Twelve concurrent requests, one model call: the batch is full (max_batch = 12) when the last one is queued, so
    it ends the wait at once, however late it comes; the 60 s window only bounds a failure."""
    from fakescope.serve import ServeConfig

    config = ServeConfig(token=TOKEN, max_batch=12, max_wait_ms=60_000, jobs_dir=tmp_path)
    with LiveServer(config, detector) as server:
        def one(_):
            return httpx.post(f"{server.url}/v1/detect", headers=auth, content=flat_png, timeout=120).json()["score"]

        with ThreadPoolExecutor(12) as pool:
            scores = list(pool.map(one, range(12)))
        batching = httpx.get(f"{server.url}/healthz").json()["batching"]
    assert max(scores) - min(scores) < 1e-5  # batching changes float summation order only
    assert (batching["items"], batching["calls"], batching["largest_batch"]) == (12, 1, 12)


def test_openapi_docs_are_served(server):
    assert "swagger" in httpx.get(f"{server.url}/docs").text.lower()
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/detect", "/v1/detect/batch", "/v1/explain", "/v1/generate", "/v1/jobs/{job_id}", "/healthz", "/v1/models"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    detect = spec["paths"]["/v1/detect"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(detect["requestBody"]["content"])  # the raw body too
    assert {"200", "401", "413", "422", "503"} <= set(detect["responses"])
    assert detect["responses"]["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert {"200", "401", "404", "409"} <= set(spec["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"])
    errors = [answer for path in spec["paths"].values() for op in path.values()
              for code, answer in op["responses"].items() if int(code) >= 400]
    assert errors and all(e["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"} for e in errors)
    assert spec["components"]["schemas"]["Error"]["properties"]["detail"]["type"] == "string"


def test_openapi_gives_every_route_a_summary_what_it_answers_and_only_the_errors_it_gives(server, auth):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    for (method, path), op in operations.items():
        name = op["operationId"]  # a generated client's method name: `detect_batch`, not `detect_batch_v1_detect_batch_post`
        assert "_v1_" not in name and op["summary"] != name.replace("_", " ").title(), (method, path)  # written, not derived
        assert "500" in op["responses"] and ("401" in op["responses"]) == path.startswith("/v1/"), (method, path)
        for code, answer in op["responses"].items():
            assert answer["description"] != "Successful Response", (method, path, code)
            for media, content in answer.get("content", {}).items():  # images are described as binary, not as nothing
                assert content["schema"] if media == "application/json" else content["schema"]["format"] == "binary"
    assert "422" not in operations["get", "/v1/jobs/{job_id}"]["responses"]  # a string id is never invalid
    assert "422" not in operations["delete", "/v1/jobs/{job_id}"]["responses"]
    assert operations["post", "/v1/detect/batch"]["responses"]["413"]["description"].startswith("a body over the batch's limit")
    assert operations["get", "/v1/models"]["responses"]["401"]["headers"]["WWW-Authenticate"]
    no_output = httpx.get(f"{server.url}/v1/jobs/nope/outputs/first", headers=auth)  # the documented 422, as it answers
    assert (no_output.status_code, no_output.json()) == (422, {"detail": "index: Input should be a valid integer, unable to "
                                                                         "parse string as an integer"})
    assert operations["get", "/v1/jobs/{job_id}/outputs/{index}"]["responses"]["422"]["description"] == "index: not a whole number"
    for (method, path), op in operations.items():  # the 403s `Gate` answers before routing were in no route's spec
        assert op["responses"]["403"]["description"].startswith("host not allowed: "), (method, path)
        busy = op["responses"]["503"]  # the connection cap's, on every route: was on those with a 503 of their own only
        assert busy["description"].endswith(CONNECTION_CAP) and busy["headers"]["Retry-After"]["schema"] == {"type": "integer"}
        assert ("cross-origin" in op["responses"]["403"]["description"]) == (method != "get"), (method, path)
    rebound = httpx.get(f"{server.url}/healthz", headers={"Host": "rebound.example"})
    foreign = httpx.post(f"{server.url}/v1/detect", headers={**auth, "Origin": "http://evil.example"}, content=b"x")
    assert (rebound.status_code, foreign.status_code) == (403, 403)
    assert rebound.json()["detail"].startswith("host not allowed: ")
    assert foreign.json()["detail"].startswith("cross-origin request refused: ")


def test_every_answer_is_nosniff_and_kept_out_of_caches(server, auth, photo_bytes):
    """Results of a user's upload must not sit in shared caches: only /docs sent nosniff, and no answer a cache policy."""
    url = server.url
    answers = {
        "healthz": httpx.get(f"{url}/healthz"), "models": httpx.get(f"{url}/v1/models", headers=auth),
        "detect": httpx.post(f"{url}/v1/detect", headers=auth, content=photo_bytes),
        "batch": httpx.post(f"{url}/v1/detect/batch", headers=auth, files=[("files", ("a.jpg", photo_bytes, "image/jpeg"))]),
        "explain png": httpx.post(f"{url}/v1/explain", headers=auth, content=photo_bytes),
        "explain json": httpx.post(f"{url}/v1/explain?format=json", headers=auth, content=photo_bytes),
        "generate 422": httpx.post(f"{url}/v1/generate", headers=auth, files={"file": ("a.jpg", photo_bytes, "image/jpeg")},
                                   data={"size": "big"}),
        "job 404": httpx.get(f"{url}/v1/jobs/nope", headers=auth), "401": httpx.get(f"{url}/v1/models"),
        "403": httpx.get(f"{url}/healthz", headers={"Host": "rebound.example"}),
        "413": httpx.post(f"{url}/v1/detect", headers=auth, content=b"x" * 2_000_000),
        "405": httpx.put(f"{url}/v1/detect", headers=auth), "spec": httpx.get(f"{url}/openapi.json"),
    }
    for name, answer in answers.items():
        assert (answer.headers.get("x-content-type-options"), answer.headers.get("cache-control")) == ("nosniff", "no-store"), name
    assert [answers[name].status_code for name in ("explain png", "generate 422", "413")] == [200, 422, 413]


def test_a_request_with_both_content_length_and_transfer_encoding_is_400_and_its_connection_closed(server, auth,
                                                                                                 flat_png):
    """uvicorn read such a body as chunked: behind a proxy framing it by its length, the rest of it was a second
    request (smuggled: sent with the proxy's own checks skipped)."""
    smuggled = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    head = ["POST /v1/detect HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {TOKEN}", "Content-Type: image/png",
            f"Content-Length: {len(flat_png) + len(smuggled) + 20}", "Transfer-Encoding: chunked"]
    body = f"{len(flat_png):x}\r\n".encode() + flat_png + b"\r\n0\r\n\r\n" + smuggled
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        assert (answer.status, json.loads(answer.read()), answer.getheader("Cache-Control")) == (
            400, {"detail": "a request may not carry both Content-Length and Transfer-Encoding"}, "no-store")
        assert sock.recv(1000) == b""  # closed: the smuggled request is never read


def test_every_error_is_one_line_of_detail(server, auth, photo_bytes):
    bad_format = httpx.post(f"{server.url}/v1/explain?format=jpg", headers=auth, content=photo_bytes)
    no_files = httpx.post(f"{server.url}/v1/detect/batch", headers=auth)
    unknown_job = httpx.get(f"{server.url}/v1/jobs/nope", headers=auth)
    no_token = httpx.get(f"{server.url}/v1/models")
    answers = (bad_format, no_files, unknown_job, no_token)
    assert [a.status_code for a in answers] == [422, 422, 404, 401]
    assert all(set(a.json()) == {"detail"} and isinstance(a.json()["detail"], str) for a in answers)
    assert bad_format.json()["detail"] == "format: Input should be 'png' or 'json'"
    assert no_files.json()["detail"] == BATCH_NEEDS_FILES


def test_a_missing_or_misnamed_file_part_says_which_part_to_send(server, auth, flat_png):
    """A batch sent as /v1/detect takes it (a 'file' part) answered only 'files: Field required'."""
    misnamed = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files={"file": ("a.png", flat_png)})
    no_file = httpx.post(f"{server.url}/v1/generate", headers=auth, files={"image": ("a.png", flat_png)})
    assert (misnamed.status_code, misnamed.json()) == (422, {"detail": BATCH_NEEDS_FILES})
    assert (no_file.status_code, no_file.json()) == (422, {"detail": "file: Field required (send the image as a 'file' "
                                                                     "part, e.g. curl -F file=@photo.jpg)"})


def test_a_text_field_where_a_file_belongs_says_how_to_send_the_file(server, auth):
    named = {"file": (None, "photo.jpg")}  # curl -F file=photo.jpg: the name, not the file (no @)
    several = [("files", (None, "a.jpg")), ("files", (None, "b.jpg"))]
    for path, parts, field in (("/v1/detect", named, "file"), ("/v1/explain", named, "file"),
                               ("/v1/detect/batch", several, "files")):
        answer = httpx.post(f"{server.url}{path}", headers=auth, files=parts)
        assert answer.status_code == 422
        assert answer.json() == {"detail": f"{field}: a text field, not a file (send the file itself, "
                                           f"e.g. curl -F {field}=@photo.jpg)"}


def test_several_file_parts_are_refused_not_scored_one_of(server, auth, photo_bytes, flat_png):
    parts = [("file", ("a.jpg", photo_bytes, "image/jpeg")), ("file", ("b.png", flat_png, "image/png"))]
    for path in ("/v1/detect", "/v1/explain", "/v1/generate"):  # each took the last part and dropped the others
        answer = httpx.post(f"{server.url}{path}", headers=auth, files=parts)
        assert answer.status_code == 422
        assert answer.json() == {"detail": "2 'file' parts: send one image (/v1/detect/batch takes several, as 'files' parts)"}
    many = [("file", (f"{i}.png", b"x", "image/png")) for i in range(1001)]  # past the parser's own limit: 1,000
    for path in ("/v1/detect", "/v1/explain", "/v1/generate"):  # said 'more than 8 (the limit is 8 per request)', 413
        answer = httpx.post(f"{server.url}{path}", headers=auth, files=many)
        assert answer.status_code == 422
        assert answer.json() == {"detail": "more than 1,000 file parts: send one image (/v1/detect/batch takes several, "
                                           "as 'files' parts)"}


def test_openapi_describes_every_json_answer_exactly(server, auth, photo_bytes):
    from fakescope.serve import schemas

    spec = httpx.get(f"{server.url}/openapi.json").json()

    def described(path: str, method: str = "post", status: str = "200") -> type:
        reference = spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        return getattr(schemas, reference.rsplit("/", 1)[1])

    files = [("files", ("a.jpg", photo_bytes, "image/jpeg")), ("files", ("c.txt", b"plain text", "text/plain"))]
    answers = [
        (described("/healthz", "get"), httpx.get(f"{server.url}/healthz")),
        (described("/v1/models", "get"), httpx.get(f"{server.url}/v1/models", headers=auth)),
        (described("/v1/detect"), httpx.post(f"{server.url}/v1/detect", headers=auth, content=photo_bytes)),
        (described("/v1/detect/batch"), httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files=files)),
        (described("/v1/explain"), httpx.post(f"{server.url}/v1/explain?format=json", headers=auth, content=photo_bytes)),
    ]
    for model, answer in answers:  # the models forbid keys they do not name: the spec lists every key sent
        assert answer.status_code == 200
        model.model_validate(answer.json())
    assert "error" in answers[3][1].json()["results"][1]  # an error record is described too
    assert described("/v1/generate", status="202") is described("/v1/jobs/{job_id}", "get") is schemas.Job
    assert described("/v1/jobs/{job_id}", "delete") is schemas.Job
    assert {"400", "401", "413", "422"} <= set(spec["paths"]["/v1/detect/batch"]["post"]["responses"])


def test_an_empty_file_is_called_empty(server, auth, photo_bytes):
    empty = ("blank.jpg", b"", "image/jpeg")  # a failed download or a file still being written
    single = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": empty})
    assert single.status_code == 422 and single.json() == {"detail": "empty file: the upload has no bytes"}
    batch = httpx.post(f"{server.url}/v1/detect/batch", headers=auth,
                       files=[("files", ("a.jpg", photo_bytes, "image/jpeg")), ("files", empty)]).json()["results"]
    assert batch[1]["error"] == "empty file: the upload has no bytes" and batch[0]["score"] is not None


def test_a_batch_of_small_images_over_the_request_limit_is_not_blamed_on_one_image(server, auth):
    noise = np.random.default_rng(1).integers(0, 256, (550, 550, 3), dtype=np.uint8)
    image = encode(Image.fromarray(noise))  # ~0.9 MB: under the 1 MB per image
    assert len(image) < 1024 * 1024
    files = [("files", (f"{i}.png", image, "image/png")) for i in range(10)]  # 9 MB, over 8 images x 1 MB
    answer = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, files=files)
    assert answer.status_code == 413  # said "the limit is 1 MB per image", which each of them is under
    assert answer.json() == {"detail": "upload too large: the limit is 1 MB per image, 8 images per request"}


def test_a_png_with_a_huge_compressed_workflow_is_scored_and_its_metadata_read(server, auth):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a, " + "x" * 2_000_000, zip=True)  # inflates past 1 MB
    buffer = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buffer, "PNG", pnginfo=info)
    answer = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": ("ui.png", buffer.getvalue(), "image/png")})
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert record["width"] == 256 and (record["label"], record["decided_by"]) == ("ai", "metadata")
