"""Slice tables: counts and per-slice metrics on a hand-made scored frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from fakescope.evaluate.slices import attribute_columns, slice_report, unsliced_columns

BAND = (0.35, 0.65)


@pytest.fixture()
def scored() -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.DataFrame({
        "uri": [f"{i}.png" for i in range(8)],
        "label": ["real"] * 4 + ["ai"] * 4,
        "source": ["ffhq"] * 4 + ["tpdne", "tpdne", "", None],
        "generator": ["", "", None, "", "g1", "g1", "g2", "g2"],
        "split": "test",
        "glasses": [1.0, 0.0, 1.0, np.nan, np.nan, np.nan, np.nan, np.nan],
        "identity": [f"id{i}" for i in range(8)],
    })
    return frame, np.array([0.1, 0.2, 0.3, 0.6, 0.9, 0.7, 0.4, 0.8])


def test_generator_slices_compare_each_generator_with_all_reals(scored):
    frame, probs = scored
    rows = {r["slice"]: r for r in slice_report(frame, probs, 0.5, BAND, attributes=[])["generator"]}
    assert set(rows) == {"g1", "g2"}
    assert (rows["g1"]["n"], rows["g1"]["n_real"], rows["g1"]["auc"], rows["g1"]["recall"]) == (2, 4, 1.0, 1.0)
    assert rows["g2"]["auc"] == pytest.approx(7 / 8)  # 0.4 loses to the real 0.6 only
    assert rows["g2"]["recall"] == 0.5
    assert rows["g2"]["uncertain_rate"] == 0.5 and rows["g1"]["uncertain_rate"] == 0.0
    assert rows["g2"]["mean_probability"] == pytest.approx(0.6)


def test_source_slices_name_missing_sources_unknown(scored):
    frame, probs = scored
    rows = {r["slice"]: r for r in slice_report(frame, probs, 0.5, BAND, attributes=[])["source"]}
    assert {k: r["n"] for k, r in rows.items()} == {"ffhq": 4, "tpdne": 2, "unknown": 2}
    assert rows["ffhq"]["false_positive_rate"] == 0.25  # 0.6 called ai
    assert np.isnan(rows["ffhq"]["recall"]) and np.isnan(rows["ffhq"]["auc"])
    assert rows["unknown"]["accuracy"] == 0.5


def test_a_missing_value_marker_is_no_slice(scored):
    frame, probs = scored
    marked = frame.assign(glasses=["1", "0", "No face detected", "No face detected", "1", "0", "No face detected", "1"])
    rows = {r["slice"]: r["n"] for r in slice_report(marked, probs, 0.5, BAND, attributes=["glasses"])["attributes"]["glasses"]}
    assert rows == {"0": 2, "1": 3}
    assert attribute_columns(marked.assign(glasses=["1"] * 5 + ["No face detected"] * 3), max_values=5) == []


def test_attribute_slices_skip_missing_values_and_count(scored):
    frame, probs = scored
    report = slice_report(frame, probs, 0.5, BAND, attributes=["glasses"])
    rows = {r["slice"]: r for r in report["attributes"]["glasses"]}
    assert set(rows) == {"0", "1"}  # 1.0 / 0.0 read as whole numbers; NaN rows left out
    assert (rows["1"]["n"], rows["1"]["n_real"], rows["1"]["n_ai"]) == (2, 2, 0)
    assert rows["1"]["mean_probability"] == pytest.approx(0.2)
    assert rows["0"]["accuracy"] == 1.0


def test_attribute_columns_keep_low_cardinality_extras(scored):
    frame, _ = scored
    assert attribute_columns(frame, max_values=5) == ["glasses"]
    assert attribute_columns(frame, max_values=10) == ["glasses", "identity"]
    assert attribute_columns(frame.assign(dhash=[f"{i:016x}" for i in range(8)]), max_values=10) == ["glasses", "identity"]
    made = frame.assign(model=["dall-e-2", "taef2"] * 4, params=["{}", '{"n": 2}'] * 4, source_uri=["a.png", "b.png"] * 4)
    assert attribute_columns(made, max_values=10) == ["glasses", "identity"]  # how an image was made is no attribute


def test_columns_left_unsliced_by_default_are_named_with_why(scored):
    frame, probs = scored
    odd = frame.assign(hat=["no"] * 6 + [None, "No face detected"], notes="", tags=[["a"]] * 8)
    report = slice_report(odd, probs, 0.5, BAND)
    assert list(report["attributes"]) == ["glasses", "identity"]
    assert report["not_sliced"] == {"hat": "one value, no, in every row that has one", "notes": "empty in every row",
                                    "tags": "holds lists or mappings"}
    assert unsliced_columns(odd, max_values=5)["identity"] == "8 distinct values, more than 5"
    assert slice_report(odd, probs, 0.5, BAND, attributes=["hat"])["not_sliced"] == {}  # asked for: sliced, one row
    asked = slice_report(odd, probs, 0.5, BAND, attributes=["hat", "notes"])  # notes was an empty table, unexplained
    assert list(asked["attributes"]) == ["hat"] and asked["not_sliced"] == {"notes": "empty in every row"}


def test_a_report_weighs_which_columns_to_slice_once(scored, monkeypatch):
    """slice_report ran unsliced_columns twice (once for the columns it slices, once for those it names as not),
    each a pass over every extra column; it now runs it once and slices what that answer leaves."""
    from fakescope.evaluate import slices

    frame, probs = scored
    calls = []
    monkeypatch.setattr(slices, "unsliced_columns", lambda *a, **k: calls.append(a) or unsliced_columns(*a, **k))
    report = slice_report(frame.assign(notes=""), probs, 0.5, BAND)
    assert len(calls) == 1
    assert list(report["attributes"]) == ["glasses", "identity"] and report["not_sliced"] == {"notes": "empty in every row"}


def test_many_small_slices_match_scikit_learn_per_slice():
    rng = np.random.default_rng(3)
    n = 3000
    labels, probs = rng.integers(0, 2, n), np.round(rng.random(n), 1)  # rounded: many ties
    frame = pd.DataFrame({"label": np.where(labels, "ai", "real"), "generator": "", "source": [f"s{i % 1000}" for i in range(n)]})
    frame.loc[0, "source"] = "alone"  # a slice of one image, one class
    rows = slice_report(frame, probs, 0.5, BAND, attributes=[])["source"]
    assert len(rows) == 1001 and sum(r["n"] for r in rows) == n
    alone = next(r for r in rows if r["slice"] == "alone")
    assert alone["n"] == 1 and np.isnan(alone["auc"]) and alone["accuracy"] in (0.0, 1.0)
    for r in rows[:50]:
        mask = (frame["source"] == r["slice"]).to_numpy()
        y, p = labels[mask], probs[mask]
        expected = skm.roc_auc_score(y, p) if len(set(y)) == 2 else np.nan
        assert r["auc"] == pytest.approx(expected, nan_ok=True)
        assert (r["n_ai"], r["n_real"]) == (y.sum(), (y == 0).sum())
        assert r["uncertain_rate"] == pytest.approx(((p >= BAND[0]) & (p < BAND[1])).mean())


def test_many_generators_match_scikit_learn_against_all_reals():
    rng = np.random.default_rng(4)
    n = 3000
    labels, probs = rng.integers(0, 2, n), np.round(rng.random(n), 1)
    generators = np.where(labels == 1, [f"g{i % 300}" for i in range(n)], "")
    frame = pd.DataFrame({"label": np.where(labels, "ai", "real"), "generator": generators, "source": ""})
    rows = slice_report(frame, probs, 0.5, BAND, attributes=[])["generator"]
    assert len(rows) == 300
    for r in rows[:30]:
        pair = (generators == r["slice"]) | (labels == 0)
        assert r["auc"] == pytest.approx(skm.roc_auc_score(labels[pair], probs[pair]))
        assert r["ap"] == pytest.approx(skm.average_precision_score(labels[pair], probs[pair]))
