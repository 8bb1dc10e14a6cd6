"""Metric values on cases small enough to compute by hand, and the bootstrap against them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fakescope.errors import ConfigError
from fakescope.evaluate.metrics import (
    INTERVAL_METRICS,
    auc_score,
    binary_metrics,
    bootstrap_ci,
    bootstrap_intervals,
    equal_error_rate,
    expected_calibration_error,
    few_images_note,
    rate_intervals,
    reliability_curve,
    roc_pr_curves,
    uncertain_rate,
    weighted_metrics,
)

LABELS = np.array([0, 0, 1, 1])
PROBS = np.array([0.1, 0.6, 0.4, 0.9])


def test_auc_on_logits_keeps_the_order_a_saturated_sigmoid_ties():
    logits = np.array([40.0, 50.0, 60.0, 45.0])  # sigmoid rounds every one to exactly 1.0
    assert auc_score(LABELS, logits) == pytest.approx(0.75)
    assert auc_score(LABELS, 1 / (1 + np.exp(-logits))) == pytest.approx(0.5)
    assert np.isnan(auc_score([1, 1], [0.2, 0.3]))


def test_binary_metrics_by_hand():
    m = binary_metrics(LABELS, PROBS, threshold=0.5)
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (ai, real) pairs ordered right
    assert m["ap"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)
    assert m["confusion"] == [[1, 1], [1, 1]]
    assert (m["accuracy"], m["precision"], m["recall"], m["balanced_accuracy"]) == (0.5, 0.5, 0.5, 0.5)
    assert m["eer"] == pytest.approx(0.5)
    assert m["ece"] == pytest.approx((0.1 + 0.6 + 0.6 + 0.1) / 4)


def test_eer_is_where_the_rates_are_closest_on_the_full_roc_curve():
    # ranked: ai ai real real ai ai real real real real. Calling the top six ai gives FPR 2/6, FNR 1/4, the
    # closest pair, so EER 7/24; scikit-learn's reduced curve keeps only the corner (2/6, 2/4): 5/12
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0, 0, 0])
    probs = np.linspace(0.95, 0.05, 10)
    assert binary_metrics(labels, probs)["eer"] == pytest.approx(7 / 24)
    scores, pos, neg = probs, labels.astype(float), 1.0 - labels
    assert weighted_metrics(scores, pos, neg)["eer"] == pytest.approx(7 / 24)


def test_recall_without_ai_images_is_nan_not_zero():
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.9]))
    assert np.isnan(m["recall"]) and m["confusion"] == [[2, 1], [0, 0]]
    assert binary_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["recall"] == 0.5


def test_precision_when_no_image_is_called_ai_is_nan_not_zero():
    """Precision was 0 when nothing was called ai, which scikit-learn calls ill-defined: it read as every call wrong."""
    labels, probs = np.array([0, 1, 1]), np.array([0.1, 0.2, 0.4])
    m = binary_metrics(labels, probs)
    assert np.isnan(m["precision"]) and m["confusion"] == [[1, 0], [2, 0]] and m["recall"] == 0.0
    scores, inverse = np.unique(-probs, return_inverse=True)
    fast = weighted_metrics(-scores, np.bincount(inverse, weights=labels), np.bincount(inverse, weights=1 - labels))
    assert np.isnan(fast["precision"])
    # resamples that call nothing ai have no precision: the interval is drawn from the others, the rest from all
    labels, probs = np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.45, 0.9])
    ci = bootstrap_intervals(labels, probs, n=200, seed=1)
    assert ci["precision"] == (1.0, 1.0) and all(np.isfinite(ci[k]).all() for k in INTERVAL_METRICS)
    assert all(np.isnan(bootstrap_intervals(labels, probs, threshold=0.95, n=50)["precision"]))


def test_reliability_curve_bins():
    curve = reliability_curve(LABELS, PROBS, bins=2)
    assert curve == {"confidence": [0.25, 0.75], "frequency": [0.5, 0.5], "count": [2, 2]}


def test_uncertain_rate_counts_the_half_open_band():
    assert uncertain_rate(np.array([0.2, 0.35, 0.5, 0.65, 0.9]), (0.35, 0.65)) == pytest.approx(0.4)
    assert np.isnan(uncertain_rate(np.array([]), (0.3, 0.7)))


def test_weighted_metrics_equal_binary_metrics():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1).round(2)  # many ties
    scores, inverse = np.unique(-probs, return_inverse=True)
    pos = np.bincount(inverse, weights=labels)
    neg = np.bincount(inverse, weights=1 - labels)
    fast = weighted_metrics(-scores, pos, neg, threshold=0.5)
    slow = binary_metrics(labels, probs, 0.5)
    for name in INTERVAL_METRICS:
        assert fast[name] == pytest.approx(slow[name], abs=1e-12), name
    for one in (0, 1):  # one label: the metrics that need both are NaN in both
        fast = weighted_metrics(-scores, (pos + neg) * one, (pos + neg) * (1 - one), threshold=0.5)
        slow = binary_metrics(np.full(500, one), probs, 0.5)
        for name in INTERVAL_METRICS:
            assert fast[name] == pytest.approx(slow[name], abs=1e-12, nan_ok=True), (one, name)


def test_bootstrap_intervals_bracket_the_estimate_and_repeat():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1)
    ci = bootstrap_intervals(labels, probs, n=300, seed=1)
    point = binary_metrics(labels, probs)
    for name in INTERVAL_METRICS:
        lo, hi = ci[name]
        assert lo <= point[name] <= hi, name
    assert 0.02 < ci["auc"][1] - ci["auc"][0] < 0.2
    assert bootstrap_intervals(labels, probs, n=300, seed=1) == ci


def test_bootstrap_of_a_perfect_ranking_is_certain_so_few_images_are_flagged():
    ci = bootstrap_intervals(np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]), n=200)
    assert ci["auc"] == (1.0, 1.0)
    assert ci["eer"] == (0.0, 0.0)
    assert few_images_note(6, 3).startswith("only 3 ai and 3 real image(s): with fewer than 10 of a label")
    assert few_images_note(20, 10) is None and few_images_note(20, 11).startswith("only 11 ai and 9 real")
    assert few_images_note(500, 0) is None and few_images_note(9, 9).startswith("only 9 ai image(s): with fewer than 10")


def test_one_class_gives_no_ranking_intervals_or_curves():
    ci = bootstrap_intervals(np.array([1, 1]), np.array([0.2, 0.9]), n=50)
    assert all(np.isnan(ci[k]).all() for k in ("auc", "ap", "balanced_accuracy", "eer"))
    assert ci["recall"] == ci["accuracy"] == (0.0, 1.0) and ci["precision"] == (1.0, 1.0)
    assert roc_pr_curves(np.array([1, 1]), np.array([0.2, 0.9]))["roc"] == {"fpr": [], "tpr": []}


def test_reals_alone_get_an_interval_of_their_false_positive_rate():
    """Counting false positives on reals alone (docs/evaluate.md) got NaN for every interval: resamples needed both labels."""
    rng = np.random.default_rng(5)
    probs, labels = rng.beta(1, 7, 500), np.zeros(500, int)  # 5 of 500 called ai at 0.5
    flagged = probs >= 0.5
    point = binary_metrics(labels, probs)
    ci = bootstrap_intervals(labels, probs, n=1000, seed=7)
    draws = np.random.default_rng(7)  # the direct percentile bootstrap of the rate, on the same resamples
    rates = [flagged[draws.integers(0, 500, 500)].mean() for _ in range(1000)]
    low, high = np.quantile(rates, [0.025, 0.975])
    assert 0 < flagged.sum() < 10 and low < flagged.mean() < high
    assert (1.0 - ci["accuracy"][1], 1.0 - ci["accuracy"][0]) == pytest.approx((low, high), abs=1e-12)
    assert ci["accuracy"][0] < point["accuracy"] < ci["accuracy"][1]
    assert ci["ece"][0] <= point["ece"] <= ci["ece"][1] and ci["precision"] == (0.0, 0.0)
    assert all(np.isnan(ci[k]).all() for k in ("auc", "ap", "balanced_accuracy", "eer", "recall"))


@pytest.mark.parametrize("flagged", [0, 3])
def test_rates_of_reals_alone_have_exact_binomial_intervals(flagged):
    """No real flagged gave FP rate [0, 0] (a percentile bootstrap cannot leave 0) however many reals there were."""
    from scipy.stats import binomtest

    probs, labels = np.linspace(0.0, 0.2, 500), np.zeros(500, int)
    probs[:flagged] = 0.9  # called ai at 0.5
    probs[100:110] = 0.4  # uncertain in [0.3, 0.7)
    rates = rate_intervals(labels, probs, 0.5, (0.3, 0.7))
    exact = binomtest(flagged, 500).proportion_ci(method="exact")
    assert rates["false_positive_rate"] == {"count": flagged, "of": 500, "value": flagged / 500,
                                            "ci": (exact.low, exact.high)}
    assert rates["false_positive_rate"]["ci"] == ((0.0, pytest.approx(0.00735, abs=1e-5)) if not flagged else
                                                  (pytest.approx(0.00124, abs=1e-5), pytest.approx(0.01743, abs=1e-5)))
    assert rates["uncertain_rate_real"]["count"] == 10 and rates["uncertain_rate_real"]["of"] == 500
    assert rates["miss_rate"]["of"] == rates["uncertain_rate_ai"]["of"] == 0
    assert all(np.isnan(rates[k]["value"]) and np.isnan(rates[k]["ci"]).all() for k in ("miss_rate", "uncertain_rate_ai"))
    if not flagged:  # the bootstrap interval of the same rate, 1 - accuracy
        assert bootstrap_intervals(labels, probs, n=1000)["accuracy"] == (1.0, 1.0)


def test_rates_of_two_labels_count_as_the_confusion_matrix_and_the_uncertain_rate():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    (_, fp), (fn, _) = binary_metrics(labels, probs, 0.6)["confusion"]
    rates = rate_intervals(labels, probs, 0.6, (0.4, 0.8))
    assert (rates["false_positive_rate"]["count"], rates["miss_rate"]["count"]) == (fp, fn)
    assert (rates["false_positive_rate"]["of"], rates["miss_rate"]["of"]) == (300 - labels.sum(), labels.sum())
    unsure = rates["uncertain_rate_real"]["count"] + rates["uncertain_rate_ai"]["count"]
    assert unsure / 300 == pytest.approx(uncertain_rate(probs, (0.4, 0.8)))
    for rate in rates.values():
        assert rate["ci"][0] < rate["value"] < rate["ci"][1]


def test_no_resample_with_both_classes_gives_nan_intervals():
    # one real and one ai image: each of these 3 seeded resamples draws one of them twice
    labels, probs = np.array([0, 1]), np.array([0.2, 0.8])
    ci = bootstrap_intervals(labels, probs, n=3, seed=4)
    assert all(np.isnan(lo) and np.isnan(hi) for lo, hi in ci.values())
    assert all(np.isnan(v) for v in bootstrap_ci(labels, probs, n=3, seed=4))


def test_roc_pr_curves_end_points():
    curves = roc_pr_curves(LABELS, PROBS)
    assert (curves["roc"]["fpr"][0], curves["roc"]["tpr"][0]) == (0.0, 0.0)
    assert (curves["roc"]["fpr"][-1], curves["roc"]["tpr"][-1]) == (1.0, 1.0)
    assert curves["pr"]["recall"][-1] == 0.0 and curves["pr"]["precision"][-1] == 1.0


@pytest.mark.parametrize("scores", [[0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.7, 0.7], [0.9, 0.1, 0.9, 0.1]])
def test_ties_and_all_equal_scores_match_scikit_learn(scores):
    labels, probs = np.array([0, 1, 0, 1]), np.array(scores)
    m = binary_metrics(labels, probs)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, probs))
    assert m["ap"] == pytest.approx(average_precision_score(labels, probs))
    unique, inverse = np.unique(-probs, return_inverse=True)
    fast = weighted_metrics(-unique, np.bincount(inverse, labels), np.bincount(inverse, 1 - labels))
    assert all(fast[k] == pytest.approx(m[k], abs=1e-12) for k in INTERVAL_METRICS)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_are_refused_in_one_line_by_every_metric(bad):
    probs = np.array([0.1, bad, 0.4, 0.9])
    calls = [binary_metrics, bootstrap_intervals, bootstrap_ci, reliability_curve, expected_calibration_error,
             roc_pr_curves, auc_score, equal_error_rate]
    for call in calls:
        with pytest.raises(ConfigError, match=r"^1 of 4 score\(s\) are NaN or infinite \(first at index 1"):
            call(LABELS, probs)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        uncertain_rate(probs, (0.3, 0.7))


def test_mismatched_lengths_and_unknown_labels_are_refused():
    with pytest.raises(ConfigError, match=r"one length, got shapes \(4,\) and \(3,\)"):
        binary_metrics(LABELS, PROBS[:3])
    with pytest.raises(ConfigError, match=r"0 \(real\) or 1 \(ai\), got \[2\]"):
        binary_metrics(np.array([0, 1, 2, 1]), PROBS)
    with pytest.raises(ConfigError, match="no bootstrap interval for n_ai"):
        bootstrap_ci(LABELS, PROBS, "n_ai")


def test_bootstrap_ci_is_bootstrap_intervals_for_one_metric():
    # one ai image in four: resamples without it have no recall, and are skipped, not counted as NaN
    labels, probs = np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.6, 0.9])
    assert bootstrap_ci(labels, probs, "recall", n=50) == (1.0, 1.0)
    both = bootstrap_intervals(labels, probs, n=50, seed=2)
    assert bootstrap_ci(labels, probs, "precision", n=50, seed=2) == both["precision"]


def test_no_images_give_nan_metrics_not_a_scikit_learn_error():
    m = binary_metrics(np.array([]), np.array([]))
    assert (m["n"], m["n_ai"], m["confusion"]) == (0, 0, [[0, 0], [0, 0]])
    assert all(np.isnan(m[k]) for k in INTERVAL_METRICS)
    assert np.isnan(equal_error_rate(np.array([1, 1]), np.array([0.2, 0.9])))


def _eer_by_brute_force(labels: np.ndarray, probs: np.ndarray) -> float:
    """Every threshold (each distinct score, and above them all): the one where FPR and FNR are closest."""
    best = None
    for t in [np.inf, *np.unique(probs)[::-1]]:
        fpr, fnr = (probs[labels == 0] >= t).mean(), (probs[labels == 1] < t).mean()
        if best is None or abs(fpr - fnr) < best[0]:
            best = (abs(fpr - fnr), (fpr + fnr) / 2)
    return best[1]


def _calibration_by_loop(labels: np.ndarray, probs: np.ndarray, bins: int) -> tuple[float, dict]:
    """ECE and the reliability bins, equal width, the last one closed, by a plain loop."""
    members: dict[int, list[int]] = {}
    for i, p in enumerate(probs):
        members.setdefault(min(int(p * bins), bins - 1), []).append(i)
    curve = {"confidence": [], "frequency": [], "count": []}
    ece = 0.0
    for b in sorted(members):
        y, p = labels[members[b]], probs[members[b]]
        ece += len(y) / len(labels) * abs(y.mean() - p.mean())
        curve["confidence"].append(p.mean())
        curve["frequency"].append(y.mean())
        curve["count"].append(len(y))
    return ece, curve


def _independent(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    from sklearn import metrics as skm

    pred = (probs >= threshold).astype(int)
    return {
        "auc": skm.roc_auc_score(labels, probs), "ap": skm.average_precision_score(labels, probs),
        "accuracy": skm.accuracy_score(labels, pred), "balanced_accuracy": skm.balanced_accuracy_score(labels, pred),
        "precision": skm.precision_score(labels, pred, zero_division=np.nan), "recall": skm.recall_score(labels, pred),
        "eer": _eer_by_brute_force(labels, probs), "ece": _calibration_by_loop(labels, probs, 15)[0],
        "confusion": skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist(),
    }


# ties within and across labels, a score at the threshold, scores at 0 and 1, none on a bin edge but 0 and 1
TRUTH_LABELS = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1])
TRUTH_PROBS = np.array([0.0, 0.12, 0.12, 0.31, 0.5, 0.77, 0.93, 0.12, 0.44, 0.5, 0.5, 0.62, 0.81, 0.97, 1.0, 0.62, 0.31])


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.95])
def test_every_reported_number_equals_an_independent_computation(threshold):
    m = binary_metrics(TRUTH_LABELS, TRUTH_PROBS, threshold)
    expected = _independent(TRUTH_LABELS, TRUTH_PROBS, threshold)
    assert (m["n"], m["n_ai"], m["confusion"]) == (17, 9, expected.pop("confusion"))
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name
    _, curve = _calibration_by_loop(TRUTH_LABELS, TRUTH_PROBS, 10)
    got = reliability_curve(TRUTH_LABELS, TRUTH_PROBS)
    assert got["count"] == curve["count"] and sum(got["count"]) == 17
    assert got["confidence"] == pytest.approx(curve["confidence"]) and got["frequency"] == pytest.approx(curve["frequency"])


def test_bootstrap_intervals_equal_percentiles_of_scikit_learn_on_the_same_resamples():
    """The count-weighted fast path against scikit-learn on each resample's images themselves."""
    n, seed = 200, 7
    draws = np.random.default_rng(seed)
    values: dict[str, list[float]] = {k: [] for k in INTERVAL_METRICS}
    for _ in range(n):
        pick = draws.integers(0, len(TRUTH_LABELS), len(TRUTH_LABELS))
        y, p = TRUTH_LABELS[pick], TRUTH_PROBS[pick]
        if len(set(y)) < 2:
            continue
        for name, value in _independent(y, p, 0.5).items():
            if name != "confusion":
                values[name].append(value)
    got = bootstrap_intervals(TRUTH_LABELS, TRUTH_PROBS, 0.5, n=n, seed=seed)
    for name in INTERVAL_METRICS:
        assert got[name] == pytest.approx((np.nanquantile(values[name], 0.025), np.nanquantile(values[name], 0.975)),
                                          abs=1e-12), name
