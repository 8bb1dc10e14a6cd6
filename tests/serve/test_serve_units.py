"""The micro-batcher, the report reader and the overlay, with the real bundled detector."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import tracemalloc
import warnings

import numpy as np
import pytest
from PIL import Image
from serve_helpers import encode

from fakescope.errors import ConfigError
from fakescope.serve import MicroBatcher, ServeConfig, heatmap_image, heatmap_overlay
from fakescope.serve.report_view import report_contents


def test_batcher_gathers_concurrent_submits_into_one_call(detector, flat_png, photo_bytes):
    # the sixth item fills the batch and ends the wait: a 200 ms window split the six where threads started late
    with MicroBatcher(detector, max_batch=6, max_wait_ms=10_000) as batcher:
        start = threading.Barrier(6)
        futures = []

        def submit(data):
            start.wait()
            futures.append(batcher.submit(data))

        threads = [threading.Thread(target=submit, args=(d,)) for d in [flat_png, photo_bytes] * 3]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [f.result(timeout=60) for f in futures]
    assert batcher.stats.items == 6 and batcher.stats.calls == 1 and batcher.stats.largest == 6
    assert sorted({(r.width, r.height) for r in results}) == [(96, 64), (160, 120)]


def test_batcher_splits_heatmap_requests_and_keeps_errors_per_item(detector, flat_png):
    with MicroBatcher(detector, max_batch=3, max_wait_ms=10_000) as batcher:  # the third ends the wait, however late
        plain, bad, mapped = batcher.submit(flat_png), batcher.submit(b"nope"), batcher.submit(flat_png, heatmap=True)
        results = plain.result(60), bad.result(60), mapped.result(60)
    assert results[0].heatmap is None and results[2].heatmap.shape == (64, 96)
    assert results[1].error == "not an image (unrecognised file signature)"
    assert results[0].probability == pytest.approx(results[2].probability)
    assert batcher.stats.calls == 2


def test_report_contents_finds_metrics_and_tables():
    report = {
        "model": "m", "n": 120, "metrics": {"auc": 0.9, "ece": 0.03, "curve": [0.1, 0.2]},
        "slices": {"format": [{"value": "JPEG", "auc": 0.8, "ci": {"lo": 0.7, "hi": 0.9}}],
                   "generator": {"sd15": {"auc": 0.95, "n": 10}, "dalle2": {"auc": 0.7, "n": 12}}},
        "examples": [{"path": "a.png", "score": 0.99}, {"path": "b.png", "score": 0.01}],
    }
    metrics, tables = report_contents(report)
    assert metrics == {"model": "m", "n": 120, "metrics.auc": 0.9, "metrics.ece": 0.03, "metrics.curve": "0.1, 0.2"}
    assert list(tables) == ["slices.format", "slices.generator", "examples"]
    assert list(tables["slices.format"].columns) == ["value", "auc", "ci.lo", "ci.hi"]
    assert tables["slices.generator"].loc["dalle2", "n"] == 12
    assert tables["examples"]["score"].tolist() == [0.99, 0.01]


def test_report_contents_makes_long_lists_tables_not_metrics():
    points = [i / 100 for i in range(100)]
    report = {"curves": {"roc": {"fpr": points, "tpr": points}}, "scores": points, "band": [0.3, 0.7],
              "reliability": {"confidence": [0.2, 0.9], "count": [3, 4]}, "slices": [{"slice": "g1", "auc": 0.8}]}
    metrics, tables = report_contents(report)
    assert metrics == {"band": "0.3, 0.7", "reliability.confidence": "0.2, 0.9", "reliability.count": "3, 4"}
    assert list(tables) == ["slices", "curves.roc", "scores"] and tables["curves.roc"].shape == (100, 2)
    assert list(tables["scores"].columns) == ["scores"] and tables["scores"]["scores"].iloc[-1] == 0.99


def test_display_copy_fits_the_longer_side_and_leaves_small_images_alone():
    from fakescope.serve.overlay import display_copy

    large, small = Image.new("RGB", (4000, 3000)), Image.new("RGB", (40, 20))
    assert display_copy(large).size == (1600, 1200) and large.size == (4000, 3000)
    assert display_copy(small).size == (40, 20)


def test_overlay_colours_hot_tiles_and_keeps_size():
    image = Image.new("RGB", (40, 20), (128, 128, 128))
    heat = np.zeros((2, 4), dtype=np.float32)
    heat[:, 2:] = 1.0
    overlay = np.asarray(heatmap_overlay(image, heat, alpha=1.0))
    assert overlay.shape == (20, 40, 3)
    assert overlay[10, 2].tolist() == [0, 0, 4] and overlay[10, 37].tolist() == [252, 255, 164]  # inferno ends
    assert np.asarray(heatmap_image(heat)).tolist()[0] == [0, 0, 255, 255]


def test_overlay_of_a_large_image_takes_a_few_bytes_per_pixel():
    image = Image.new("RGB", (2000, 1000), (90, 120, 30))  # /v1/explain?overlay=true draws at the image's size
    heat = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    heatmap_overlay(Image.new("RGB", (8, 8)), heat)  # matplotlib's import and colour tables are not the overlay's
    tracemalloc.start()
    try:
        overlay = heatmap_overlay(image, heat)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert overlay.size == (2000, 1000) and overlay.mode == "RGB"
    assert peak < 8 * 2000 * 1000  # float arrays took 116 bytes per pixel: 5.7 GB for a 49 Mpx photo


def test_image_bytes_encodes_png_as_it_is_and_jpeg_as_rgb():
    from fakescope.serve.overlay import image_bytes

    grey = heatmap_image(np.array([[0.0, 1.0]], dtype=np.float32))
    png = Image.open(io.BytesIO(image_bytes(grey)))
    assert (png.format, png.mode, np.asarray(png).tolist()) == ("PNG", "L", [[0, 255]])
    jpeg = Image.open(io.BytesIO(image_bytes(Image.new("RGBA", (16, 8), (200, 10, 10, 0)), "JPEG")))
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (16, 8))  # the alpha dropped, not an encoder error


def test_config_validates_limits():
    with pytest.raises(ConfigError, match="max_upload_mb must be positive"):
        ServeConfig(max_upload_mb=0)
    with pytest.raises(ConfigError, match="body_timeout_s must be positive"):
        ServeConfig(body_timeout_s=0)
    with pytest.raises(ConfigError, match="body_min_rate must be positive"):
        ServeConfig(body_min_rate=0)  # a division by zero in every body's deadline
    with pytest.raises(ConfigError, match="max_body_seconds must be positive"):
        ServeConfig(max_body_seconds=0)  # a division by zero in every upload's pace
    with pytest.raises(ConfigError, match="header_timeout_s must be positive"):
        ServeConfig(header_timeout_s=0)
    with pytest.raises(ConfigError, match="max_jobs and max_connections must be at least 1"):
        ServeConfig(max_connections=0)
    with pytest.raises(ConfigError, match="max_pixels must be in"):
        ServeConfig(max_pixels=10**12)
    with pytest.raises(ConfigError, match=r"^max_files \(1001\) must be at most 1000: the multipart parser refuses more "):
        ServeConfig(max_files=1001, max_queue=2000)  # was taken, and a batch of 1001 answered 400 'Too many files'
    with pytest.raises(ConfigError, match=r"^unknown runtime 'tf'; use torch, onnx or auto$"):  # was refused only when
        ServeConfig(runtime="tf")  # the server started (its lifespan loads the detector)
    with pytest.raises(ConfigError, match=r"^unknown precision 'fp8'; use fp32, bf16 or int8$"):
        ServeConfig(precision="fp8")
    assert ServeConfig(max_upload_mb=1.5).max_upload_bytes == 1_572_864


def test_a_jobs_dir_that_is_a_file_is_refused_before_serving(tmp_path):
    """The server started anyway and only /v1/generate answered, 503, with the job store's error."""
    (tmp_path / "jobs").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^jobs_dir .*jobs is a file, not a folder \(--jobs-dir\)$"):
        ServeConfig(jobs_dir=tmp_path / "jobs")
    assert ServeConfig(jobs_dir=tmp_path / "new" / "jobs").jobs_dir == tmp_path / "new" / "jobs"  # made when needed


def test_config_reads_the_token_from_a_dotenv_file(tmp_path):
    (tmp_path / ".env").write_text("FAKESCOPE_API_TOKEN=from-dotenv\n")
    env = {k: v for k, v in os.environ.items() if k != "FAKESCOPE_API_TOKEN"}
    check = "from fakescope.serve import ServeConfig; print(ServeConfig().token == 'from-dotenv')"
    run = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.stdout.strip() == "True", run.stderr  # a fresh process: .env is read once per process


def test_the_server_loads_its_detector_at_the_configured_precision(tmp_path, flat_png):
    from fastapi.testclient import TestClient

    from fakescope.serve import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU without bf16 instructions only warns that it is slow
        with TestClient(create_app(ServeConfig(device="cpu", precision="bf16", jobs_dir=tmp_path, token=None))) as client:
            assert client.app.state.detector.precision == "bf16"
            record = client.post("/v1/detect", content=flat_png).json()
    assert record["width"] == 96 and 0.0 < record["score"] < 1.0


def test_a_client_that_leaves_mid_upload_is_a_400_not_a_server_error(tmp_path):
    import asyncio

    from fakescope.serve import MicroBatcher, create_app

    app = create_app(ServeConfig(token=None, jobs_dir=tmp_path), detector=object())  # the body is read before scoring
    app.state.batcher = MicroBatcher(object(), max_queue=1)  # no lifespan here: the queue, checked first, has room
    messages = [{"type": "http.request", "body": b"\x89PNG\r\n\x1a\n", "more_body": True}, {"type": "http.disconnect"}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/detect", "raw_path": b"/v1/detect", "root_path": "", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png"), (b"content-length", b"100000")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}
    asyncio.run(app(scope, receive, send))  # raised ClientDisconnect: uvicorn logged a 50-line traceback at ERROR
    assert sent[0]["status"] == 400


def test_an_unexpected_failure_answers_json_with_cors_headers_and_logs_the_traceback(tmp_path, detector, caplog):
    import httpx
    from serve_helpers import LiveServer

    origin = "http://page.example"
    live = LiveServer(ServeConfig(token=None, jobs_dir=tmp_path, cors_origins=(origin,)), detector)

    @live.app.get("/v1/fails")
    def fails():  # any bug the routes may still hold
        raise RuntimeError("secret path /srv/models/x")

    with live, caplog.at_level("ERROR", logger="fakescope.serve.app"):
        answer = httpx.get(f"{live.url}/v1/fails", headers={"Origin": origin})
    assert answer.status_code == 500  # was text/plain "Internal Server Error", and without CORS headers
    assert answer.json() == {"detail": "internal server error (the server's log has the details)"}
    assert answer.headers["access-control-allow-origin"] == origin  # a browser page can read the error
    assert "GET /v1/fails failed" in caplog.text and "RuntimeError: secret path /srv/models/x" in caplog.text


def test_a_decoded_image_scores_as_its_bytes(detector, photo_bytes):
    from fakescope.io.image import decode_image

    loaded = decode_image(photo_bytes)  # the web app decodes once, for the detector and its display copy
    from_bytes, from_loaded = detector.predict(photo_bytes, heatmap=True), detector.predict(loaded, heatmap=True)
    assert from_loaded.probability == pytest.approx(from_bytes.probability, abs=1e-6)
    assert [e.to_dict() for e in from_loaded.evidence] == [e.to_dict() for e in from_bytes.evidence]
    assert np.allclose(from_loaded.heatmap, from_bytes.heatmap, atol=1e-6)


def test_the_web_app_pixel_limit_comes_from_its_environment(monkeypatch):
    from fakescope.serve.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, env_max_pixels

    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert env_max_pixels() == DEFAULT_MAX_PIXELS == ServeConfig(token=None).max_pixels  # one setting for both
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(ConfigError, match=r"^FAKESCOPE_MAX_PIXELS='lots': expected a whole number of pixels$"):
        env_max_pixels()


def test_jobs_folder_defaults_to_the_cache_folder_the_ledgers_and_onnx_exports_use(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    assert ServeConfig().jobs_dir == tmp_path / "cache" / "serve-jobs"
    monkeypatch.delenv("FAKESCOPE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ServeConfig().jobs_dir == tmp_path / "xdg" / "fakescope" / "serve-jobs"


def test_pixel_batches_keep_order_and_stay_within_the_budget():
    from fakescope.serve.uploads import pixel_batches

    sized = [("a", 40), ("b", 50), ("c", 20), ("d", 100), ("e", 150), ("f", 1)]
    assert list(pixel_batches(sized, 100)) == [["a", "b"], ["c"], ["d"], ["e"], ["f"]]


def test_uploads_are_scored_a_batch_at_a_time_with_errors_per_file(detector, flat_png, photo_bytes, monkeypatch):
    from fakescope.serve.uploads import score_uploads

    calls = []
    predict = detector.predict
    monkeypatch.setattr(detector, "predict", lambda inputs, **kw: calls.append(len(inputs)) or predict(inputs, **kw))
    big = encode(Image.new("RGB", (200, 200), "white"))  # 40,000 pixels: over the limit below
    broken = photo_bytes[: len(photo_bytes) // 2]  # a good header, a truncated body
    uploads = [("flat.png", flat_png), ("photo.jpg", photo_bytes), ("notes.txt", b"text"), ("big.png", big),
               ("cut.jpg", broken), ("again.png", flat_png)]
    results = {index: (detection, image) for index, detection, image in score_uploads(detector, uploads, 30_000)}
    assert calls == [2, 1]  # 6,144 + 19,200 pixels, then 19,200 (cut.jpg) + 6,144 (decoding cut.jpg fails)
    assert [results[i][0].source for i in range(6)] == [name for name, _ in uploads]
    assert [results[i][0].probability for i in (0, 1, 5)] == pytest.approx(
        [d.probability for d in predict([flat_png, photo_bytes, flat_png])], abs=1e-6)  # batch-size float noise
    assert results[2][0].error.startswith("not an image") and results[3][0].error.startswith("image too large: 200x200")
    assert "truncated" in results[4][0].error or "corrupt" in results[4][0].error, results[4][0].error
    assert [results[i][1] is None for i in range(6)] == [False, False, True, True, True, False]


def test_web_app_paths_are_confined_to_its_root(tmp_path, monkeypatch):
    """What the browser tests check through the pages, without chromium: inside is resolved, outside refused."""
    from fakescope.serve.paths import app_root, confined

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "out").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("HOME", str(root))
    assert app_root(root / ".." / "root") == root
    assert confined("data/generated", root) == root / "data" / "generated" == confined("~/data/generated", root)
    assert confined(str(root / "a" / ".." / "b"), root) == root / "b"
    for typed, says in ((str(outside), "is outside the app's folder"), ("out/report.json", "is outside the app's folder"),
                        ("../root-sibling", "is outside the app's folder"), ("~/..", "is outside the app's folder"),
                        ("s3://bucket/faces", "reads and writes local folders under")):
        with pytest.raises(ConfigError, match=says):
            confined(typed, root)
    with pytest.raises(ConfigError, match="is not a folder"):
        app_root(tmp_path / "missing")


def test_failure_says_whether_an_error_was_unexpected_even_without_a_traceback():
    """Jobs told an unexpected error by its detail differing from its line; one never raised (no traceback) has the two
    equal and was taken for an expected one, its log line dropped. `failure` now says which it was."""
    from fakescope.errors import FakescopeError
    from fakescope.serve.generation import failure

    expected = failure(FakescopeError("refused with key sk-12345678"), "sk-12345678")
    assert (expected.line, expected.detail, expected.unexpected) == ("refused with key ***", "refused with key ***", False)
    bare = failure(RuntimeError("boom"), None)
    assert (bare.line, bare.detail, bare.unexpected) == ("RuntimeError: boom", "RuntimeError: boom", True)
