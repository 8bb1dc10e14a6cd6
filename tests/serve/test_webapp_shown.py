"""What the web app's pages show a user, run in Streamlit's AppTest: the heatmap's colour key. The detector page
scores a pasted URL with the real detector (the machine has no internet, so the fetch returns a photo, as in
`test_webapp_downloads.py`)."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install streamlit)")


def detector_page() -> None:
    from fakescope.serve import webapp

    webapp.detector_page()


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

