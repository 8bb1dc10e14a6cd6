"""One image that is read but cannot be scored (too long and thin to upscale to a tile, too large for the recipe's JPEG
re-encoding) is a failure of its own: every batch path records it and scores the rest as without it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.detector import Detector
from fakescope.errors import UnscorableImages
from fakescope.evaluate import evaluate
from fakescope.evaluate.generalization import ReadOnce, _probabilities
from fakescope.models import ModelConfig, create_model, load_model, save_model
from fakescope.models.config import Calibration, InputPolicy
from fakescope.train.augment import AugmentConfig
from fakescope.train.dataset import TrainTiles

THIN = (64_000, 32)  # upscaled to fill a 320-px tile: 640,000 x 320, over MAX_PIXELS; a few KB as a grey PNG


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `test_tiny` model on 320-px tiles, which a 32-px high strip must be upscaled 10x to fill."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("wide") / "model"
    config = ModelConfig(name="wide", architecture="test_tiny", input=InputPolicy(crop_size=320, grid=2),
                         calibration=Calibration("temperature", temperature=2.0, bias=0.1), band=(0.3, 0.7))
    save_model(create_model("test_tiny").eval(), config, folder)
    return folder


def _grey(path: Path, size: tuple[int, int]) -> str:
    Image.new("RGB", size, (128, 128, 128)).save(path)
    return str(path)


def _with(dataset: pd.DataFrame, *uris: str) -> pd.DataFrame:
    rows = [{"uri": u, "label": "real", "source": "camera", "generator": "", "split": "test"} for u in uris]
    return pd.concat([dataset, pd.DataFrame(rows)], ignore_index=True)


def _same_scores(alone, mixed) -> None:
    assert mixed.scores == alone.scores and mixed.robustness == alone.robustness
    assert mixed.overall == alone.overall and mixed.pixel_overall == alone.pixel_overall


def test_evaluate_fails_a_strip_too_thin_to_tile_and_scores_the_rest(wide_model, dataset, tmp_path):
    """Upscaling it to a tile refused it inside the scorer, after it was read: the whole run stopped. Now it is a
    failure row, the perturbations score the rest, the audit inspects it."""
    thin = _grey(tmp_path / "thin.png", THIN)
    options = dict(perturbations=["resize_0.5x"], bootstrap=0, device="cpu")
    alone = evaluate(wide_model, dataset, "test", **options)
    mixed = evaluate(wide_model, _with(dataset, thin), "test", **options)
    _same_scores(alone, mixed)
    assert [f["uri"] for f in mixed.failures] == [thin] and mixed.robustness_skipped == []
    assert mixed.failures[0]["error"].startswith("image too long and thin: upscaling 64000x32 to fill a 320-px tile")
    assert mixed.shortcuts["inspected"] == {"ai": 6, "real": 7}  # read fine: the audit, as dataset audit, counts it


def test_evaluate_fails_an_image_too_wide_for_the_recipe_jpeg_and_skips_an_edit_made_so(model_dir, dataset, tmp_path,
                                                                                        caplog):
    """The recipe re-encodes every image as JPEG (at most 65,500 px a side): a wider one raised a bare OSError ('broken
    data stream') that stopped the run, and so did one that `resize_1.5x` made that wide."""
    wide = _grey(tmp_path / "wide.png", (70_000, 32))
    grows = _grey(tmp_path / "grows.png", (44_000, 64))  # 66,000 px wide after resize_1.5x
    options = dict(perturbations=["resize_1.5x"], bootstrap=0, device="cpu", audit=False)
    alone = evaluate(model_dir, _with(dataset, grows), "test", **options)
    with caplog.at_level(logging.WARNING, "fakescope.evaluate.evaluator"):
        mixed = evaluate(model_dir, _with(dataset, wide, grows), "test", **options)
    assert mixed.scores == alone.scores and mixed.robustness == alone.robustness
    assert mixed.failures == [{"uri": wide, "error": "cannot re-encode a 70000x24 image as JPEG: a side is over its "
                                                     "65,500 px"}]
    assert mixed.robustness_skipped == alone.robustness_skipped == [
        {"uri": grows, "perturbation": "resize_1.5x",
         "error": "cannot re-encode a 66000x72 image as JPEG: a side is over its 65,500 px"}]
    assert "1 image(s) left out of the robustness sweep" in caplog.text


def test_detector_predict_gives_a_thin_strip_an_error_row(wide_model, dataset, tmp_path):
    thin = _grey(tmp_path / "thin.png", THIN)
    detector = Detector.load(wide_model, device="cpu", provenance=False)
    good = dataset["uri"].tolist()[:4]
    mixed, alone = detector.predict([good[0], thin, *good[1:]]), detector.predict(good)
    assert mixed[1].error.startswith("image too long and thin") and mixed[1].probability is None
    assert [d.probability for d in mixed[:1] + mixed[2:]] == [d.probability for d in alone]


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_predict_logits_raises_for_a_thin_strip_with_every_images_logit(wide_model, runtime):
    """It returns no partial array: it raises, and the exception holds one logit per image in order, NaN at the strip."""
    detector = Detector.load(wide_model, device="cpu", provenance=False, runtime=runtime)
    thin, photo = Image.new("RGB", THIN, (128, 128, 128)), Image.new("RGB", (400, 300), (10, 200, 30))
    with pytest.raises(UnscorableImages, match=r"^1 image\(s\) cannot be scored \(image 1: image too long and thin") as raised:
        detector.predict_logits(iter([photo, thin, photo]))  # any iterable: a generator's places too
    assert list(raised.value.reasons) == [1] and raised.value.scores.shape == (3,)
    alone = detector.predict_logits([photo])
    np.testing.assert_allclose(raised.value.scores, [alone[0], np.nan, alone[0]], rtol=1e-6)  # batched: float32 sums
    with pytest.raises(UnscorableImages) as only_thin:
        detector.predict_logits([thin])
    assert np.isnan(only_thin.value.scores).all() and only_thin.value.scores.shape == (1,)


def test_logo_probabilities_leave_out_a_thin_strip_with_a_warning(wide_model, dataset, tmp_path, caplog):
    """evaluate-logo's scoring of a fold's test images raised for the whole chunk."""
    thin = _grey(tmp_path / "thin.png", THIN)
    rows, model = _with(dataset, thin), load_model(wide_model)
    with caplog.at_level(logging.WARNING, "fakescope.train.dataset"):
        probs = _probabilities(model, rows, batch_size=8)
    assert np.isnan(probs[-1]) and np.isfinite(probs[:-1]).all()
    np.testing.assert_array_equal(probs[:-1], _probabilities(model, dataset, batch_size=8))
    assert f"skipping unreadable image {thin}: image too long and thin" in caplog.text


def test_logo_reads_leave_out_an_image_too_wide_for_the_recipe_jpeg(tmp_path, caplog):
    wide, fine = _grey(tmp_path / "wide.png", (70_000, 32)), _grey(tmp_path / "fine.png", (64, 48))
    with caplog.at_level(logging.WARNING, "fakescope.train.dataset"):
        images = ReadOnce(()).images([wide, fine], AugmentConfig(bottom_crop=0.0, base_jpeg_quality=60))
    assert images[0] is None and images[1].size == (64, 48)
    assert f"skipping unreadable image {wide}: cannot re-encode a 70000x32 image as JPEG" in caplog.text


def test_training_passes_over_an_image_too_wide_for_the_recipe_jpeg(tmp_path):
    wide, fine = _grey(tmp_path / "wide.png", (70_000, 32)), _grey(tmp_path / "fine.png", (96, 80))
    tiles = TrainTiles(pd.DataFrame({"uri": [wide, fine], "label": ["real", "real"]}), 64, AugmentConfig(), seed=0)
    tile, label, skipped = tiles[0]
    assert tile.shape == (3, 64, 64) and label.item() == 0.0
    assert skipped == f"{wide}\x1fcannot re-encode a 70000x30 image as JPEG: a side is over its 65,500 px"


def test_validation_scoring_leaves_out_a_thin_strip(wide_model, dataset, tmp_path, caplog):
    """Training's validation and test scoring (and so calibration) raised for the whole chunk."""
    from fakescope.train.config import TrainConfig
    from fakescope.train.scoring import _score

    thin = _grey(tmp_path / "thin.png", THIN)
    model, uris = load_model(wide_model), dataset["uri"].tolist()[:5]
    cfg = TrainConfig(manifest="unused", augment=AugmentConfig(bottom_crop=0.0, base_jpeg_quality=None), batch_size=4)
    with caplog.at_level(logging.WARNING, "fakescope.train.dataset"):
        logits = _score(model.network, model.config, "cpu", [*uris[:2], thin, *uris[2:]], cfg)
    assert np.isnan(logits[2]) and np.isfinite(np.delete(logits, 2)).all()
    np.testing.assert_array_equal(np.delete(logits, 2), _score(model.network, model.config, "cpu", uris, cfg))
    assert f"skipping unreadable image {thin}: image too long and thin" in caplog.text


