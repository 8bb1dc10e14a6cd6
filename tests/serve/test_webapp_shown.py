"""What the web app's pages show a user, run in Streamlit's AppTest: the heatmap's colour key, the report's numbers
rounded and its metric names whole. The detector page scores a pasted URL with the real detector (the machine has no
internet, so the fetch returns a photo, as in `test_webapp_downloads.py`)."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install streamlit)")


def detector_page() -> None:
    from fakescope.serve import webapp

    webapp.detector_page()


def report_page() -> None:
    from fakescope.serve import webapp

    webapp.report_page()


def _app(page, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the script AppTest writes
    return AppTest.from_function(page, default_timeout=120).run()


def test_the_heatmap_says_which_colour_means_ai(detector, photo_bytes, tmp_path, monkeypatch):
    """The overlay was captioned 'per-tile P(ai)' only: nothing told black from yellow, real from ai."""
    from fakescope.serve import webapp

    monkeypatch.setattr(webapp, "detector", lambda: detector)
    monkeypatch.setattr(webapp, "fetch_url", lambda url: photo_bytes)
    app = _app(detector_page, tmp_path, monkeypatch)
    app.text_input[0].input("https://example.com/a.jpg").run()
    assert not app.exception, app.exception
    captions = [caption for image in app.get("image") for caption in image.captions]
    assert captions == ["image", "heatmap: per-tile P(ai)", "colour key: P(ai) 0 (real, black) to 1 (ai, yellow)"]


def test_the_colour_key_runs_from_the_overlays_colour_for_0_to_that_for_1():
    from fakescope.serve.overlay import colour_scale, heatmap_overlay

    key = np.asarray(colour_scale())
    black = Image.new("RGB", (4, 4))
    for value, end in ((0.0, key[0, 0]), (1.0, key[0, -1])):
        overlay = np.asarray(heatmap_overlay(black, np.full((2, 2), value), alpha=1.0))
        assert (overlay == end).all()
    assert key[0, 0].tolist() == [0, 0, 4] and key[0, -1].tolist() == [252, 255, 164]  # black to yellow, as the caption says


def test_report_metrics_show_rounded_under_whole_names(tmp_path, monkeypatch):
    """Metrics showed every digit (0.47222222222222215), short lists too, and the grid's index column cut the longer
    names short (preprocessing.base_jpeg_qu...); they show to 4 decimals, as report.html has them, names in a column."""
    report = {"overall": {"auc": 0.47222222222222215, "ece": 0.02555604218229468, "n": 12, "recall": 1.0},
              "preprocessing": {"base_jpeg_quality": 60, "resize_scale": [0.5, 1.0]}, "seconds": 10.28, "tiny": 1.2345e-05,
              "reliability": {"confidence": [0.5255560421822947]}}
    (tmp_path / "report.json").write_text(json.dumps(report))
    monkeypatch.setenv("FAKESCOPE_APP_ROOT", str(tmp_path))
    app = _app(report_page, tmp_path, monkeypatch)
    app.text_input[0].input("report.json").run()
    assert not app.exception, app.exception
    shown = app.dataframe[0].value
    assert list(shown.columns) == ["metric", "value"]
    assert dict(zip(shown["metric"], shown["value"])) == {
        "overall.auc": "0.4722", "overall.ece": "0.0256", "overall.n": "12", "overall.recall": "1",
        "preprocessing.base_jpeg_quality": "60", "preprocessing.resize_scale": "0.5, 1", "seconds": "10.28",
        "tiny": "1.2e-05", "reliability.confidence": "0.5256"}
