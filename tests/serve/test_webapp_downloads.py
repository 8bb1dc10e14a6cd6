"""What the detector page shows and downloads for a pasted URL, run in Streamlit's AppTest with the real detector.

The machine has no internet, so the page's fetch returns a photo for the URL (the fetch policy is tested in
`tests/io/test_fetch.py` and `test_webapp_browser.py`); the CSV and JSON are those handed to the download buttons.
"""

from __future__ import annotations

import io
import json
import tempfile

import pandas as pd
import pytest

from fakescope.io.fetch import shown_source

pytest.importorskip("streamlit", reason="streamlit is not installed (pip install streamlit)")

SECRETS = ("pa55word", "S1GNATURE", "s1g", "t0ken")
SIGNED = ("https://me:pa55word@bucket.example.com/cats/a%20cat.jpg"
          "?X-Amz-Signature=S1GNATURE&sv=2024-05-04&sig=s1g&token=t0ken&version=7")
SHOWN = shown_source(SIGNED)
"""Named as detect and scan name it: without its password and signature, with a hash of the rest of its query."""


def page() -> None:
    from fakescope.serve import webapp

    webapp.detector_page()


@pytest.fixture
def app(detector, photo_bytes, tmp_path, monkeypatch):
    """The detector page with `SIGNED` pasted; `app.downloads` maps each download's file name to its text."""
    from streamlit.delta_generator import DeltaGenerator
    from streamlit.testing.v1 import AppTest

    from fakescope.serve import webapp

    fetched, downloads = [], {}
    original = DeltaGenerator.download_button

    def download_button(self, label, data, file_name, *args, **kwargs):
        downloads[file_name] = data
        return original(self, label, data, file_name, *args, **kwargs)

    monkeypatch.setattr(webapp, "detector", lambda: detector)
    monkeypatch.setattr(webapp, "fetch_url", lambda url: fetched.append(url) or photo_bytes)
    monkeypatch.setattr(DeltaGenerator, "download_button", download_button)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the script AppTest writes
    app = AppTest.from_function(page, default_timeout=120).run()
    app.text_input[0].input(SIGNED).run()
    assert not app.exception, app.exception
    assert fetched == [SIGNED]  # the page fetches the URL as pasted, signature and all
    app.downloads, app.fetched = downloads, fetched
    return app


def _page_text(app) -> str:
    return "\n".join(str(e.value) for kind in ("markdown", "text", "caption", "error", "warning", "info") for e in getattr(app, kind))


def test_a_signed_urls_secrets_stay_off_the_page_and_out_of_the_downloads(app):
    """The page's heading and both downloads named the URL in full: its password and signature with it."""
    text = _page_text(app)
    assert SHOWN.startswith("https://bucket.example.com/cats/a%20cat.jpg#query=")
    assert f"#### ` {SHOWN} `" in [m.value for m in app.markdown]  # still told apart
    csv = pd.read_csv(io.StringIO(app.downloads["fakescope-results.csv"]))
    records = json.loads(app.downloads["fakescope-results.json"])
    assert list(csv["path"]) == [r["path"] for r in records] == [SHOWN]
    for secret in SECRETS:
        assert secret not in text and secret not in app.downloads["fakescope-results.csv"]
        assert secret not in app.downloads["fakescope-results.json"]


def test_scores_show_rounded_and_download_in_full(app, detector, photo_bytes):
    """The evidence table showed every digit (0.15427801863825272); it shows 3 decimals, as the CLI table does."""
    expected = detector.predict(photo_bytes)
    shown = app.dataframe[0].value
    assert list(shown["kind"]) == [e.kind for e in expected.evidence]
    assert list(shown["score"]) == ["" if e.score is None else f"{e.score:.3f}" for e in expected.evidence]
    records = json.loads(app.downloads["fakescope-results.json"])
    csv = pd.read_csv(io.StringIO(app.downloads["fakescope-results.csv"]))
    # the record's precision (6 places), not the table's; the page's detector may run another runtime (within 1e-4)
    assert records[0]["score"] == csv["score"][0] == pytest.approx(expected.probability, abs=1e-4)
    assert len(str(records[0]["score"]).partition(".")[2]) > 3
    assert [{**e, "score": None} for e in records[0]["evidence"]] == [{**e.to_dict(), "score": None} for e in expected.evidence]
    assert [e["score"] for e in records[0]["evidence"]] == pytest.approx([e.score for e in expected.evidence], abs=1e-4)


def test_the_csv_is_that_of_detect_format_csv(app, detector, photo_bytes):
    """The CSV had the record's own column order and evidence as 'kind: detail', without scores: `detect --format csv`
    has `CSV_FIELDS` and 'kind 0.154: detail'."""
    from fakescope.detection import CSV_FIELDS, csv_row

    text = app.downloads["fakescope-results.csv"]
    assert text.splitlines()[0] == ",".join(CSV_FIELDS)
    expected = csv_row({**detector.predict(photo_bytes).to_dict(), "path": SHOWN})
    row = pd.read_csv(io.StringIO(text), keep_default_na=False, dtype=str).iloc[0]
    assert row["evidence"] == expected["evidence"] and row["evidence"].startswith(f"pixel {expected['score']:.3f}: ")
    assert (row["path"], row["label"], row["width"]) == (SHOWN, expected["label"], str(expected["width"]))


def test_a_pasted_url_is_fetched_once_and_a_download_reruns_nothing(app, photo_bytes):
    """Every rerun fetched the URL again (each download click made one: three fetches for one paste and two downloads),
    so the page could show another image under the same name; another URL pasted is fetched."""
    app.run()  # a rerun, as another upload or a click makes
    assert app.fetched == [SIGNED] and not app.exception
    assert [b.proto.ignore_rerun for b in app.get("download_button")] == [True, True]
    app.text_input[0].input("https://example.com/b.jpg").run()
    assert app.fetched == [SIGNED, "https://example.com/b.jpg"]
    assert [m.value for m in app.markdown if m.value.startswith("####")] == ["#### ` https://example.com/b.jpg `"]
