"""`evaluate` on generated images with a tiny model: recipe preprocessing, counts, slices, failures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from evaluate_helpers import noisy

from fakescope.detector import Detector
from fakescope.errors import ConfigError
from fakescope.evaluate import evaluate, recipe_preprocessing, render_html
from fakescope.models import apply_calibration, load_model
from fakescope.train.augment import neutralize
from fakescope.train.dataset import read_source


def test_recipe_preprocessing_is_read_from_the_model_config(model_dir):
    recipe = recipe_preprocessing(load_model(model_dir).config)
    assert (recipe.bottom_crop, recipe.base_jpeg_quality, recipe.jpeg_quality) == (0.25, 60, (60, 98))


def test_scores_follow_the_models_recipe(model_dir, dataset):
    rows = dataset[dataset["split"] == "test"].head(4)
    got = evaluate(model_dir, rows, robustness=False, bootstrap=0, provenance=False, device="cpu")
    model = load_model(model_dir)
    detector = Detector(model, provenance=False)
    images = [read_source(u) for u in rows["uri"]]
    recipe = recipe_preprocessing(model.config)
    expected = apply_calibration(model.config.calibration, detector.predict_logits([neutralize(im, recipe) for im in images]))
    raw = apply_calibration(model.config.calibration, detector.predict_logits(images))
    probs = np.array([s["probability"] for s in got.scores])
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert not np.allclose(probs, raw)  # the crop and JPEG of the recipe changed the input
    assert got.intervals == {} and got.robustness == [] and got.decided_by == {"pixel": 4}


def test_counts_slices_and_failures(report):
    assert report.overall["n"] == 12 and report.overall["n_ai"] == 6
    assert [f["uri"].endswith("broken.png") for f in report.failures] == [True]
    gens = {r["slice"]: (r["n"], r["n_real"]) for r in report.slices["generator"]}
    assert gens == {"g1": (3, 6), "g2": (3, 6)}
    assert {r["slice"]: r["n"] for r in report.slices["source"]} == {"camera": 6, "render": 6}
    assert {r["slice"]: r["n"] for r in report.slices["attributes"]["glasses"]} == {"0": 3, "1": 3}
    assert sum(report.verdicts.values()) == 12 and sum(report.decided_by.values()) == 12


def test_metrics_intervals_and_robustness_rows(report):
    lo, hi = report.intervals["auc"]
    assert lo <= report.overall["auc"] <= hi
    assert [r["perturbation"] for r in report.robustness] == ["clean", "jpeg_q70", "resize_0.5x"]
    assert report.robustness[0]["auc"] == pytest.approx(report.pixel_overall["auc"])
    assert sum(report.reliability["count"]) == 12
    assert 0.0 <= report.overall["uncertain_rate"] <= 1.0


def test_examples_come_with_thumbnails_and_json_is_strict(report):
    assert len(report.examples) == 5
    assert {e["kind"] for e in report.examples} <= {"mistake", "correct"}
    assert all(report.thumbnails[e["uri"]].startswith("data:image/jpeg;base64,") for e in report.examples)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert "thumbnails" not in data and len(data["scores"]) == 12 and data["band"] == [0.3, 0.7]


def test_split_all_and_errors(model_dir, dataset):
    every = evaluate(model_dir, dataset, "all", robustness=False, bootstrap=0, provenance=False, examples=0, device="cpu")
    assert every.overall["n"] == 16 and every.examples == []
    with pytest.raises(ConfigError, match="^split 'test' of the manifest is empty$"):
        evaluate(model_dir, dataset[dataset["split"] != "test"], "test", device="cpu")
    with pytest.raises(ConfigError, match="^unknown split 'holdout': use train, val, test or all$"):
        evaluate(model_dir, dataset, "holdout", device="cpu")
    with pytest.raises(ConfigError, match="sepia"):
        evaluate(model_dir, dataset, perturbations=["sepia"], device="cpu")
    with pytest.raises(ConfigError, match="no attribute column.s. glases in the manifest"):
        evaluate(model_dir, dataset, attributes=["glasses", "glases"], device="cpu")
    with pytest.raises(ConfigError, match="^unknown perturbation.s. sepia; known"):  # one name, not its letters
        evaluate(model_dir, dataset, perturbations="sepia", device="cpu")
    with pytest.raises(ConfigError, match="^no attribute column.s. glases in the manifest"):
        evaluate(model_dir, dataset, attributes="glases", device="cpu")


def test_a_perturbation_named_twice_is_applied_once(model_dir, dataset, monkeypatch):
    """`--perturbations jpeg_q70,jpeg_q70` perturbed and scored every image twice for one robustness row."""
    from fakescope.evaluate import robustness

    applied = []

    def counted(image):
        applied.append(image)
        return jpeg_q70(image)

    jpeg_q70 = robustness.PERTURBATIONS["jpeg_q70"]
    monkeypatch.setitem(robustness.PERTURBATIONS, "jpeg_q70", counted)
    report = evaluate(model_dir, dataset, perturbations=["jpeg_q70", "jpeg_q70"], bootstrap=0, provenance=False,
                      audit=False, device="cpu")
    assert [row["perturbation"] for row in report.robustness] == ["clean", "jpeg_q70"]
    assert len(applied) == report.overall["n"]


def test_bad_options_are_refused_before_the_model_loads(dataset, tmp_path):
    """A perturbation or attribute typo was named only after the model loaded (seconds; a download for hf://):
    with no model at the path given, the typo is still what is refused."""
    for options, error in [({"perturbations": "sepia"}, "^unknown perturbation.s. sepia"),
                           ({"perturbations": []}, "^perturbations is empty"),
                           ({"attributes": "glases"}, "^no attribute column.s. glases")]:
        with pytest.raises(ConfigError, match=error):
            evaluate(tmp_path / "no-model", dataset, device="cpu", **options)


def test_rows_given_as_a_frame_are_checked_as_a_manifest_file_is(model_dir, dataset):
    spelt = dataset.assign(label=dataset["label"].map({"real": "Real", "ai": "fake"}))
    report = evaluate(model_dir, spelt, "test", robustness=False, bootstrap=0, provenance=False, examples=0, device="cpu")
    plain = evaluate(model_dir, dataset, "test", robustness=False, bootstrap=0, provenance=False, examples=0, device="cpu")
    assert report.overall == plain.overall
    with pytest.raises(ConfigError, match=r"^the manifest rows: unknown split\(s\) 'Test'; expected train, val, test"):
        evaluate(model_dir, dataset.replace({"split": {"test": "Test"}}), "all", device="cpu")


@pytest.mark.parametrize("count", [-1, 1, 999])
def test_a_bootstrap_too_small_for_an_interval_is_refused(model_dir, dataset, count):
    with pytest.raises(ConfigError, match=rf"^bootstrap of {count} resample\(s\) gives no meaningful 95% interval"):
        evaluate(model_dir, dataset, robustness=False, bootstrap=count, device="cpu")


def test_an_empty_perturbation_list_is_refused_not_read_as_all(model_dir, dataset):
    with pytest.raises(ConfigError, match="^perturbations is empty: name some, or pass None for all of them$"):
        evaluate(model_dir, dataset, perturbations=[], bootstrap=0, device="cpu")


def test_unreadable_trust_list_fails_before_any_work(model_dir, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="missing.pem"):
        evaluate(model_dir, dataset, robustness=False, bootstrap=0, device="cpu")


def test_a_panorama_too_wide_for_webp_is_left_out_of_the_sweep_only(model_dir, dataset, tmp_path, caplog):
    wide = tmp_path / "panorama.png"
    noisy(3, (16_400, 40)).save(wide)
    rows = pd.concat([dataset, pd.DataFrame([{"uri": str(wide), "label": "real", "split": "test"}])], ignore_index=True)
    got = evaluate(model_dir, rows, perturbations=["webp_q80", "jpeg_q70"], bootstrap=0, examples=0, device="cpu")
    assert got.overall["n"] == 13 and [r["n"] for r in got.robustness] == [12, 12, 12]
    assert [(s["uri"], s["perturbation"]) for s in got.robustness_skipped] == [(str(wide), "webp_q80")]
    assert "1 image(s) left out of the robustness sweep" in caplog.text
    assert "panorama.png" in render_html(got)


def test_repeated_uris_are_counted_with_a_warning(model_dir, dataset, caplog):
    rows = dataset[dataset["split"] == "test"].head(4)
    got = evaluate(model_dir, pd.concat([rows, rows.head(1)]), robustness=False, bootstrap=0, provenance=False,
                   examples=0, device="cpu")
    assert got.overall["n"] == 5
    assert f"1 row(s) of split 'test' repeat a uri already in it (first: {rows['uri'].iloc[0]})" in caplog.text


def test_progress_counts_images_on_stderr(model_dir, with_broken, capsys):
    evaluate(model_dir, with_broken, "all", robustness=False, bootstrap=0, provenance=False, examples=0,
             device="cpu", batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert f"/{len(with_broken)} [" in err and "img/s" in err  # images, not chunks
    evaluate(model_dir, with_broken, "all", robustness=False, bootstrap=0, provenance=False, examples=0, device="cpu")
    assert "evaluate" not in capsys.readouterr().err


def test_report_json_of_two_labels_only_gains_the_rates(report):
    """The exact rates were added beside the keys report.json had; those keep their names and order."""
    data = report.to_dict()
    assert list(data) == ["model", "location", "split", "threshold", "band", "provenance", "preprocessing", "overall",
                          "pixel_overall", "intervals", "reliability", "curves", "verdicts", "decided_by", "slices",
                          "robustness", "scores", "examples", "failures", "seconds", "robustness_skipped", "shortcuts",
                          "rates"]
    assert list(data["overall"]) == ["n", "n_ai", "auc", "ap", "accuracy", "balanced_accuracy", "precision", "recall",
                                     "eer", "ece", "confusion", "uncertain_rate"]
    rates, ((_, fp), (fn, _)) = data["rates"], report.overall["confusion"]
    assert [(r["count"], r["of"]) for r in rates.values()][:2] == [(fp, 6), (fn, 6)]
    unsure = rates["uncertain_rate_real"]["count"] + rates["uncertain_rate_ai"]["count"]
    assert unsure / 12 == pytest.approx(report.overall["uncertain_rate"])


def test_to_dict_is_a_copy(report):
    data = report.to_dict()
    data["scores"][0]["probability"] = -1.0
    data["slices"]["source"].clear()
    assert report.scores[0]["probability"] >= 0.0 and report.slices["source"]
    assert "thumbnails" not in data and data["band"] == list(report.band)


class _Overflowing(torch.nn.Module):
    """A real network that gives NaN, as an overflowing model does: for tiles whose first pixel is bright, or all."""

    def __init__(self, network: torch.nn.Module, everywhere: bool = False):
        super().__init__()
        self.network, self.everywhere = network, everywhere

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where((x[:, 0, 0, 0] > 0) | self.everywhere, torch.nan, self.network(x))


def test_images_the_model_gives_no_finite_score_are_failures_not_nan_metrics(model_dir, dataset):
    model = load_model(model_dir)
    detector = Detector(model.with_network(_Overflowing(model.network)), provenance=False)
    got = evaluate(detector, dataset, perturbations=["jpeg_q70"], bootstrap=1000, provenance=False)
    unscored = [f for f in got.failures if f["error"] == "the model gave no finite score (nan)"]
    assert 0 < len(unscored) < 12 and len(unscored) == len(got.failures)
    assert got.overall["n"] == len(got.scores) == 12 - len(unscored)
    assert all(np.isfinite(s["probability"]) for s in got.scores)
    assert got.robustness[0]["n"] == got.overall["n"]
    assert {f["uri"] for f in unscored}.isdisjoint(s["uri"] for s in got.scores)


def test_a_model_that_scores_nothing_is_refused_in_one_line(model_dir, dataset):
    model = load_model(model_dir)
    network = _Overflowing(model.network, everywhere=True)
    with pytest.raises(ConfigError, match=r"none of the 12 image\(s\) of split 'test' could be read and scored"):
        evaluate(Detector(model.with_network(network), provenance=False), dataset, robustness=False, bootstrap=0,
                 provenance=False)


def test_each_perturbation_comes_before_the_recipe_preprocessing_for_both_labels(model_dir, report):
    """As documented: the decoded image is perturbed (as in the wild), then the model's own neutralization
    (bottom crop, base JPEG) runs, the same for real and ai images; the other order would score other pixels."""
    from fakescope.evaluate.metrics import binary_metrics
    from fakescope.evaluate.robustness import PERTURBATIONS

    model = load_model(model_dir)
    detector, recipe = Detector(model, provenance=False), recipe_preprocessing(model.config)
    images = [read_source(s["uri"]) for s in report.scores]
    labels = np.array([s["label"] == "ai" for s in report.scores], int)
    assert set(labels) == {0, 1}
    rows = {r["perturbation"]: r for r in report.robustness}
    aucs_the_other_way = {}
    for name in ("jpeg_q70", "resize_0.5x"):
        perturb = PERTURBATIONS[name]
        probs = apply_calibration(model.config.calibration,
                                  detector.predict_logits([neutralize(perturb(im), recipe) for im in images]))
        other = apply_calibration(model.config.calibration,
                                  detector.predict_logits([perturb(neutralize(im, recipe)) for im in images]))
        assert not np.allclose(probs, other, rtol=1e-4), name  # the order matters, so the check can tell
        expected = binary_metrics(labels, probs, report.threshold)
        for key in ("auc", "ap", "accuracy", "recall", "eer"):
            assert rows[name][key] == pytest.approx(expected[key], rel=1e-5), (name, key)
        aucs_the_other_way[name] = binary_metrics(labels, other, report.threshold)["auc"]
    assert aucs_the_other_way["resize_0.5x"] != pytest.approx(rows["resize_0.5x"]["auc"])  # the rows can tell the order


class _ByBrightness(torch.nn.Module):
    """A real network that gives a bright image the logit +100 and a dark one -100."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x.mean(dim=(1, 2, 3)) > 0, 100.0, -100.0)


def test_an_example_whose_error_ties_across_the_threshold_is_not_read_again(model_dir, tmp_path, monkeypatch):
    """The example thumbnails were kept by a copy of pick_examples' ranking, by error alone: an ai image scored just under
    the threshold (a mistake) whose error |1 - p| rounds to that of hits scored at it ranked after them, so its
    thumbnail was read again. One rule now picks the examples as they are scored: each image is read once."""
    import collections
    from dataclasses import replace

    from PIL import Image

    import fakescope.io.image as image_io
    from fakescope.models.config import Calibration

    under = float(np.nextafter(0.5, 0))  # 1 - under rounds to 0.5, as 1 - 0.5
    rows = []
    for i, (label, colour) in enumerate([("ai", "white"), ("ai", "white"), ("ai", "black"), ("real", "black")]):
        Image.new("RGB", (64, 48), colour).save(tmp_path / f"{i}.png")
        rows.append({"uri": str(tmp_path / f"{i}.png"), "label": label, "split": "test"})
    model = load_model(model_dir)
    model = replace(model.with_network(_ByBrightness()),
                    config=replace(model.config, calibration=Calibration("isotonic", x=(-100.0, 100.0), y=(under, 0.5))))
    reads, read = collections.Counter(), image_io._read_path
    monkeypatch.setattr(image_io, "_read_path", lambda source: reads.update([str(source)]) or read(source))
    got = evaluate(Detector(model, provenance=False), pd.DataFrame(rows), robustness=False, bootstrap=0, examples=2,
                   provenance=False, audit=False, device="cpu")
    assert [s["probability"] for s in got.scores] == [0.5, 0.5, under, under]
    assert [(e["uri"], e["kind"]) for e in got.examples] == [(rows[2]["uri"], "mistake"), (rows[0]["uri"], "correct")]
    assert set(got.thumbnails) == {rows[2]["uri"], rows[0]["uri"]} and reads == collections.Counter(r["uri"] for r in rows)


def test_the_examples_picked_as_scored_are_those_a_ranking_of_every_record_gives():
    """Mistakes by largest error, then hits of ai and real in turn by smallest, ties to the earlier record, as a sort
    of all the records says; kept as offered, at most k of each kind and label."""
    from PIL import Image

    from fakescope.evaluate.evaluator import _Examples

    rng, image = np.random.default_rng(0), Image.new("RGB", (4, 4))
    for k in (0, 1, 2, 7, 12):
        labels, probs = rng.integers(0, 2, 60), rng.choice([0.1, 0.3, 0.5, 0.7, 0.9], 60)  # many ties
        examples = _Examples(k, 0.5)
        for i, (label, p) in enumerate(zip(labels, probs)):
            examples.offer(i, int(label), float(p), image)
        error, wrong = np.abs(labels - probs), (probs >= 0.5) != labels.astype(bool)
        mistakes = sorted(np.flatnonzero(wrong), key=lambda i: (-error[i], i))[: k // 2]
        ai, real = (sorted(np.flatnonzero(~wrong & (labels == y)), key=lambda i: (error[i], i)) for y in (1, 0))
        hits = [i for pair in zip(ai, real) for i in pair] + ai[len(real):] + real[len(ai):]
        expected = [(i, "mistake") for i in mistakes] + [(i, "correct") for i in hits[: k - len(mistakes)]]
        assert [(i, kind) for i, kind, _ in examples.picked()] == expected
        assert sum(map(len, examples._heaps.values())) <= k // 2 + 2 * k


@pytest.mark.slow
def test_explanation_figures_reuse_the_scored_images_and_change_no_number(model_dir, dataset, tmp_path, monkeypatch):
    """--explain embedded the split in a second pass (a second read and decode of each image) and the example
    thumbnails were read a third time: now each image is read once, and the report, its thumbnails and the figures'
    table are what a plain evaluate, a fresh read and report_figures give."""
    import collections

    import fakescope.io.image as image_io
    from fakescope.evaluate.evaluator import _data_uri, _small
    from fakescope.explain import report_figures
    from fakescope.io.image import load_source

    reads, read = collections.Counter(), image_io._read_path
    monkeypatch.setattr(image_io, "_read_path", lambda source: reads.update([str(source)]) or read(source))
    options = {"robustness": False, "bootstrap": 0, "provenance": False, "audit": False, "device": "cpu"}
    got = evaluate(model_dir, dataset, "all", explain_to=tmp_path / "new", **options)
    assert sorted(reads.values()) == [1] * len(dataset)
    assert len(got.thumbnails) == 12 and got.thumbnails == {uri: _data_uri(_small(load_source(uri).image))
                                                  for uri in got.thumbnails}
    plain = evaluate(model_dir, dataset, "all", **options)
    assert {**got.to_dict(), "seconds": 0} == {**plain.to_dict(), "seconds": 0} and plain.figures == []
    drawn = report_figures(model_dir, dataset, tmp_path / "old")  # reads every image again
    assert [title for title, _ in got.figures] == [title for title, _ in drawn] and len(drawn) > 4
    new, old = (pd.read_parquet(tmp_path / d / "embeddings.parquet") for d in ("new", "old"))
    pd.testing.assert_frame_equal(new, old)
