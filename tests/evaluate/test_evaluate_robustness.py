"""Perturbations do what their names say; the sweep measures a real detector's drop under them."""

from __future__ import annotations

import numpy as np
import pytest
from evaluate_helpers import noise_scorer, noisy, smooth
from PIL import Image

from fakescope.evaluate.robustness import CLEAN, PERTURBATIONS, perturbed_scores, robustness_table

SIZES = {
    "resize_0.5x": (32, 24), "resize_0.75x": (48, 36), "resize_1.5x": (96, 72),
    "center_crop_50": (32, 24), "screenshot": (51, 38), "shift_3px": (61, 45),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_each_perturbation_returns_rgb_of_the_expected_size(name):
    image = noisy(1)
    out = PERTURBATIONS[name](image)
    assert out.mode == "RGB"
    assert out.size == SIZES.get(name, (64, 48))
    assert PERTURBATIONS[name](image).tobytes() == out.tobytes()  # deterministic


def test_lossy_perturbations_change_pixels_by_their_strength():
    image = noisy(2)
    ref = np.asarray(image, np.float64)
    error = {n: np.abs(np.asarray(PERTURBATIONS[n](image), np.float64) - ref).mean() for n in ("jpeg_q95", "jpeg_q50")}
    assert 0 < error["jpeg_q95"] < error["jpeg_q50"]


def test_center_crop_keeps_the_centre():
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[10:30, 10:30] = 255
    assert np.asarray(PERTURBATIONS["center_crop_50"](Image.fromarray(arr))).min() == 255


def test_shift_drops_the_top_left_pixels():
    arr = np.arange(48 * 64 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8)
    shifted = np.asarray(PERTURBATIONS["shift_3px"](Image.fromarray(arr)))
    assert np.array_equal(shifted, arr[3:, 3:])


def test_sweep_finds_that_blur_defeats_a_noise_detector():
    images = [noisy(i) for i in range(6)] + [smooth(i) for i in range(6)]
    labels = np.array([0] * 6 + [1] * 6)
    scores = {CLEAN: noise_scorer(images), **perturbed_scores(images, noise_scorer, ["blur_sigma1", "jpeg_q95"])}
    rows = {r["perturbation"]: r for r in robustness_table(labels, scores, threshold=0.5)}
    assert list(rows) == [CLEAN, "blur_sigma1", "jpeg_q95"]
    assert rows[CLEAN]["auc"] == 1.0 and rows[CLEAN]["auc_drop"] == 0.0
    assert rows["jpeg_q95"]["auc"] == 1.0
    assert rows["blur_sigma1"]["false_positive_rate"] > 0.5  # blurred reals lose their grain: called ai
    assert rows["blur_sigma1"]["recall_drop"] == 0.0
    assert rows[CLEAN]["n"] == 12


def test_one_label_sweep_leaves_the_rate_it_cannot_measure_nan():
    images = [smooth(i) for i in range(4)]
    scores = {CLEAN: noise_scorer(images), **perturbed_scores(images, noise_scorer, ["jpeg_q95"])}
    ai_only = robustness_table(np.ones(4, int), scores)
    assert all(np.isnan(r["false_positive_rate"]) and r["recall"] == 1.0 for r in ai_only)
    real_only = robustness_table(np.zeros(4, int), scores)
    assert all(np.isnan(r["recall"]) and r["false_positive_rate"] == 1.0 for r in real_only)


def test_an_image_a_perturbation_cannot_take_is_left_out_of_every_row():
    images = [noisy(0), smooth(0), noisy(1, (16_400, 40)), smooth(1)]  # too wide for WebP
    errors = []
    scores = {CLEAN: noise_scorer(images), **perturbed_scores(images, noise_scorer, ["webp_q80", "jpeg_q95"], errors)}
    assert [(i, name) for i, name, _ in errors] == [(2, "webp_q80")] and "16383" in errors[0][2]
    assert np.isnan(scores["webp_q80"][2]) and np.isfinite(scores["jpeg_q95"]).all()
    rows = robustness_table(np.array([0, 1, 0, 1]), scores)
    assert [r["n"] for r in rows] == [3, 3, 3]
    lone = robustness_table(np.array([0]), {CLEAN: scores[CLEAN][2:3], "webp_q80": scores["webp_q80"][2:3]})
    assert [r["n"] for r in lone] == [0, 0] and np.isnan(lone[0]["auc"])


def test_unknown_perturbation_is_a_key_error():
    with pytest.raises(KeyError):
        perturbed_scores([smooth(0)], noise_scorer, ["sepia"])
