"""The HTML report is one self-contained, well-formed page; report.json holds every number."""

from __future__ import annotations

import itertools
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from evaluate_helpers import smooth

from fakescope.evaluate import evaluate, render_html, write_report


class _Collector(HTMLParser):
    """Collects every tag, every URL-bearing attribute and unclosed tags."""

    VOID = frozenset({"meta", "img", "br", "link", "input", "hr"})

    def __init__(self):
        super().__init__()
        self.urls, self.tags, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v for k, v in attrs if k in ("src", "href", "data", "poster")]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    extra = tmp_path_factory.mktemp("figs") / "cam.png"
    smooth(3).save(extra)
    out = tmp_path_factory.mktemp("report")
    return write_report(report, out, [("Grad-CAM of the hardest mistakes", extra)]), out


def test_html_is_self_contained_and_well_formed(written, report):
    paths, _ = written
    page = Path(paths["html"]).read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert parser.urls and all(u.startswith("data:image/") for u in parser.urls)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    figures = 5  # ROC, PR, reliability, histogram, robustness
    assert parser.tags.count("img") == figures + len(report.examples) + 1
    for heading in ("Overall", "Slices", "Robustness", "Examples", "Explanations", "Images left out (1)"):
        assert f"<h2>{heading}</h2>" in page
    assert "Per glasses" in page and "Grad-CAM of the hardest mistakes" in page


def test_json_holds_every_number_strictly(written, report):
    paths, out = written
    data = json.loads(Path(paths["json"]).read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["overall"]["n"] == 12 and data["overall"]["confusion"] == report.overall["confusion"]
    assert data["intervals"]["auc"] == list(report.intervals["auc"])
    assert [r["perturbation"] for r in data["robustness"]] == ["clean", "jpeg_q70", "resize_0.5x"]
    assert len((out / "scores.csv").read_text().strip().splitlines()) == 13  # header + 12 images


def test_intervals_of_few_images_are_flagged_on_the_page(report, thousand):
    """A 95% interval of 6 ai and 6 real images read as if it were one of thousands."""
    from dataclasses import replace

    assert "<p class='warn'>Intervals: only 6 ai and 6 real image(s): with fewer than 10 of a label" in render_html(report)
    assert "Intervals: only" not in render_html(thousand)
    assert "Intervals: only" not in render_html(replace(report, intervals={}))  # --bootstrap 0: no interval to flag
    nan = {k: (float("nan"), float("nan")) for k in report.intervals}  # one label: every interval NaN
    assert "Intervals: only" not in render_html(replace(report, intervals=nan))


def test_names_are_escaped(report):
    from dataclasses import replace

    page = render_html(replace(report, model="<b>tiny</b>"))
    assert "&lt;b&gt;tiny&lt;/b&gt;" in page and "<b>tiny</b>" not in page


def test_long_slice_and_failure_tables_are_cut_on_the_page_not_in_json(report, tmp_path):
    from dataclasses import replace

    from fakescope.evaluate.report import ROWS_SHOWN

    sources = [{**report.slices["source"][0], "slice": f"s{i:05d}", "n": 1 + (i == 4321) * 50} for i in range(5000)]
    failures = [{"uri": f"/gone/{i}.png", "error": "no such file"} for i in range(3000)]
    big = replace(report, slices={**report.slices, "source": sources}, failures=failures)
    paths = write_report(big, tmp_path)
    page = Path(paths["html"]).read_text(encoding="utf-8")
    assert "<h2>Images left out (3000)</h2>" in page
    assert f"Showing the first {ROWS_SHOWN} of 3000" in page and "/gone/0.png" in page and "/gone/2999.png" not in page
    assert f"Showing the largest {ROWS_SHOWN} of 5000" in page and "s04321" in page
    assert page.count("<tr>") < 3 * ROWS_SHOWN + 100
    data = json.loads(Path(paths["json"]).read_text())
    assert len(data["failures"]) == 3000 and len(data["slices"]["source"]) == 5000


@pytest.mark.slow  # UMAP's first fit compiles with numba
def test_explanation_figures_score_the_images_as_the_report_does(model_dir, with_broken, report, tmp_path):
    import pandas as pd

    from fakescope.explain import report_figures

    figures = report_figures(model_dir, with_broken[with_broken["split"] == "test"].reset_index(drop=True), tmp_path)
    assert [t for t, _ in figures][:3] == ["UMAP by label", "UMAP by source", "UMAP by generator"]  # source: camera, render
    shown = {t.split(" image ")[1].split(",")[0]: t for t, _ in figures if t.startswith("Grad-CAM")}
    assert shown
    for s in report.scores:
        if os.path.basename(s["uri"]) in shown:  # as the HTML's example cards, to 3 places
            assert shown[os.path.basename(s["uri"])].endswith(f"pixel P(ai) = {s['pixel_probability']:.3f}")
    table = pd.read_parquet(tmp_path / "embeddings.parquet").dropna(subset=["probability"])
    embedded = dict(zip(table["uri"], table["probability"]))
    scored = {s["uri"]: s["pixel_probability"] for s in report.scores}
    assert embedded.keys() == scored.keys()  # model_dir's recipe crops and re-encodes: the raw images scored otherwise
    assert [embedded[u] for u in scored] == pytest.approx(list(scored.values()), abs=1e-5)


def test_a_split_of_one_label_gets_no_auc_figures_but_intervals_of_its_own_metrics(model_dir, dataset, tmp_path):
    """Reals alone (to count false positives) had every interval NaN: accuracy's, 1 - the false-positive rate, too."""
    reals = dataset[dataset["label"] == "real"]
    one = evaluate(model_dir, reals, "test", perturbations=["jpeg_q70"], bootstrap=1000, provenance=False, device="cpu")
    assert [row["auc"] for row in one.to_dict()["robustness"]] == [None, None]
    data = json.loads(Path(write_report(one, tmp_path)["json"]).read_text())
    for name in ("accuracy", "ece"):
        low, high = data["intervals"][name]
        assert low <= data["overall"][name] <= high, name
    assert all(data["intervals"][k] == [None, None] for k in ("auc", "ap", "balanced_accuracy", "eer", "recall"))
    html = render_html(one)
    low, high = data["intervals"]["accuracy"]
    assert f"<tr><td>accuracy</td><td>{data['overall']['accuracy']:.4f}</td><td>[{low:.4f}, {high:.4f}]</td>" in html
    assert "<p class='warn'>Intervals: only 6 real image(s): with fewer than 10 the bootstrap intervals" in html
    assert "alt='Score distribution'" in html and "alt='Reliability diagram'" in html
    assert "<tr><td>ROC AUC</td><td>n/a</td>" in html  # undefined, not a number nor a bare dash
    fp = data["rates"]["false_positive_rate"]  # exact, not a bootstrap's point interval at 0 or 1
    assert (fp["count"], fp["of"]) == (data["overall"]["confusion"][0][1], 6) and fp["ci"][0] < fp["ci"][1]
    assert data["rates"]["miss_rate"] == {"count": 0, "of": 0, "value": None, "ci": [None, None]}
    assert (f"<tr><td>false-positive rate (reals called ai)</td><td>{fp['count']}</td><td>6</td><td>{fp['value']:.4f}</td>"
            f"<td>[{fp['ci'][0]:.4f}, {fp['ci'][1]:.4f}]</td></tr>") in html
    assert "<tr><td>miss rate (ai called real)</td><td>0</td><td>0</td><td>n/a</td><td>[n/a, n/a]</td></tr>" in html
    for title in ("ROC curve", "Precision-recall curve", "Robustness"):  # Robustness drew every AUC as an empty bar of 0
        assert f"alt='{title}'" not in html



@pytest.fixture(scope="module")
def thousand(report):
    """`report` with the numbers of 1,000 images of spread scores: metrics, intervals, bins, slices and scores."""
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from fakescope.evaluate.metrics import (
        binary_metrics,
        bootstrap_intervals,
        rate_intervals,
        reliability_curve,
        roc_pr_curves,
    )
    from fakescope.evaluate.slices import slice_report

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 1000)
    probs, pixel = (np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1) for _ in range(2))
    frame = pd.DataFrame({"uri": [f"/set/{i}.png" for i in range(1000)], "label": np.where(labels, "ai", "real"),
                          "generator": np.where(labels, [f"g{i % 7}" for i in range(1000)], ""),
                          "source": [f"s{i % 13}" for i in range(1000)], "glasses": rng.integers(0, 2, 1000)})
    scores = [{**report.scores[0], "uri": u, "label": y, "probability": float(p), "pixel_probability": float(q)}
              for u, y, p, q in zip(frame["uri"], frame["label"], probs, pixel)]
    return replace(report, overall={**binary_metrics(labels, probs), "uncertain_rate": 0.3125},
                   pixel_overall={**binary_metrics(labels, pixel), "uncertain_rate": 0.2875},
                   intervals=bootstrap_intervals(labels, probs, n=1000), reliability=reliability_curve(labels, probs),
                   curves=roc_pr_curves(labels, probs), slices=slice_report(frame, probs, 0.5, (0.3, 0.7)), scores=scores,
                   rates=rate_intervals(labels, probs, 0.5, (0.3, 0.7)))


def _shown(value) -> str:
    """A number as the page prints it: 4 places for a fraction, a whole number as a table cell of its own."""
    return f"{value:.4f}" if isinstance(value, float) else f"<td>{value}</td>"


def test_every_summary_number_of_report_json_is_on_the_page(thousand):
    """The page's tables carry each number report.json holds, except the per-image scores and the curves' points,
    which it draws."""
    data, page = thousand.to_dict(), render_html(thousand)
    counted = {"n", "n_ai", "confusion"}  # image counts in the summary line, the confusion matrices as cells
    overall = data["overall"]
    assert f"<td>{overall['n']} ({overall['n_ai']} ai, {overall['n'] - overall['n_ai']} real)," in page
    assert data["pixel_overall"]["n"] == overall["n"] and data["pixel_overall"]["n_ai"] == overall["n_ai"]
    numbers = [("overall", k, v) for k, v in overall.items() if k not in counted]
    numbers += [("pixel_overall", k, v) for k, v in data["pixel_overall"].items() if k not in counted]
    numbers += [("confusion", i, v) for i, v in enumerate(itertools.chain.from_iterable(data["overall"]["confusion"] + data["pixel_overall"]["confusion"]))]
    numbers += [("interval", k, v) for k, pair in data["intervals"].items() for v in pair]
    numbers += [("reliability", k, v) for k, values in data["reliability"].items() for v in values]
    numbers += [(f"robustness {r['perturbation']}", k, v) for r in data["robustness"] for k, v in r.items() if k != "perturbation"]
    numbers += [(f"slice {r['slice']}", k, v) for rows in [data["slices"]["generator"], data["slices"]["source"],
                                                           *data["slices"]["attributes"].values()]
                for r in rows for k, v in r.items() if k != "slice"]
    numbers += [("counts", k, v) for k, v in {**data["verdicts"], **data["decided_by"]}.items()]
    numbers += [(f"rate {name}", k, v) for name, rate in data["rates"].items() for k, v in rate.items() if k != "ci"]
    numbers += [(f"rate {name}", "ci", v) for name, rate in data["rates"].items() for v in rate["ci"]]
    missing = [(where, key, value) for where, key, value in numbers
               if value is not None and not isinstance(value, bool) and _shown(value) not in page]
    assert not missing, sorted({(where, key) for where, key, _ in missing})


def test_the_page_of_1000_images_opens_offline_and_stays_small(thousand, tmp_path):
    paths = write_report(thousand, tmp_path)
    page = Path(paths["html"]).read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.open == [] and "<script" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page and "https://" not in page and "url(" not in page  # no font, style or image fetched
    assert all(u.startswith("data:image/") for u in parser.urls)
    assert parser.tags.count("img") == 5 + len(thousand.examples)  # figures and thumbnails, all embedded
    assert os.path.getsize(paths["html"]) < 400_000, os.path.getsize(paths["html"])


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium (and playwright)")
def test_a_very_long_slice_name_wraps_instead_of_widening_the_page(report, tmp_path):
    """A 400-character generator name made the page 4842 px wide in a 1280 px window."""
    from dataclasses import replace

    sync_api = pytest.importorskip("playwright.sync_api")
    long_name = "g" * 400 + "/x"
    slices = {**report.slices, "generator": [{**row, "slice": long_name} for row in report.slices["generator"][:1]]}
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(replace(report, slices=slices)), encoding="utf-8")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(page_file.as_uri())
            width, window = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            assert page.get_by_text(long_name[:40], exact=False).count() == 1
        finally:
            browser.close()
    assert width <= window, (width, window)
