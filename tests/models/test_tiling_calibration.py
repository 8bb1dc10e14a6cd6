"""Native-resolution tiling and the probability calibrators."""

from __future__ import annotations

import pickle
import warnings
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from PIL import Image

from fakescope.errors import ConfigError, NotFittedError
from fakescope.models import Calibration, Calibrator, InputPolicy, apply_calibration
from fakescope.models.tiling import make_tiles, normalize, tile_heatmap, tile_positions, to_tensor


@pytest.mark.parametrize(("length", "crop", "grid", "expected"), [
    (100, 112, 3, [0]),
    (112, 112, 3, [0]),
    (113, 112, 3, [0, 1]),
    (224, 112, 3, [0, 112]),
    (300, 112, 3, [0, 94, 188]),
    (1000, 112, 3, [0, 444, 888]),
    (1000, 112, 1, [444]),  # one crop is centred
])
def test_tile_positions_spread_evenly_and_reach_both_edges_or_centre_one_crop(length, crop, grid, expected):
    positions = tile_positions(length, crop, grid)
    assert positions == expected
    if length > crop and grid > 1:
        assert positions[0] == 0
        assert positions[-1] + crop == length


def test_tiles_cover_the_whole_image_at_native_resolution():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (250, 300, 3), dtype=np.uint8)
    tiles = make_tiles(Image.fromarray(pixels), InputPolicy(crop_size=112, grid=3))
    assert tiles.pixels.shape == (9, 3, 112, 112)
    assert tiles.image_size == (250, 300)
    covered = np.zeros((250, 300), bool)
    for (top, left), tile in zip(tiles.boxes, tiles.pixels):
        covered[top:top + 112, left:left + 112] = True
        expected = pixels[top:top + 112, left:left + 112].transpose(2, 0, 1)
        assert tile.dtype == np.uint8 and np.array_equal(tile, expected)  # cropped, never resized
    assert covered.all()


@pytest.mark.parametrize("size", [(300, 250), (90, 70), (150, 60)])  # tiled; upscaled; upscaled strip
@pytest.mark.parametrize("upscale_small", [True, False])
def test_an_array_is_tiled_as_its_image(size, upscale_small):
    pixels = np.random.default_rng(1).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
    policy = InputPolicy(crop_size=112, grid=3, upscale_small=upscale_small)
    from_array, from_image = make_tiles(pixels, policy), make_tiles(Image.fromarray(pixels), policy)
    assert np.array_equal(from_array.pixels, from_image.pixels)
    assert (from_array.boxes, from_array.image_size, from_array.scale) == (
        from_image.boxes, from_image.image_size, from_image.scale)


def test_tiles_pickle_by_value():
    tiles = make_tiles(Image.new("RGB", (300, 250), (9, 8, 7)), InputPolicy(crop_size=112, grid=2))
    payload = ForkingPickler.dumps(tiles)  # what a decoding process sends back
    assert len(payload) > tiles.pixels.size  # the pixels themselves, not a handle to shared memory
    copy = pickle.loads(payload)
    assert np.array_equal(copy.pixels, tiles.pixels) and (copy.boxes, copy.image_size, copy.scale) == (
        tiles.boxes, tiles.image_size, tiles.scale)


@pytest.mark.parametrize(("size", "tiles_shape"), [((80, 300), (3, 3, 112, 112)), ((300, 80), (3, 3, 112, 112)),
                                                   ((64, 64), (1, 3, 112, 112))])
def test_images_smaller_than_a_tile_are_upscaled_to_fill_one(size, tiles_shape):
    w, h = size
    tiles = make_tiles(Image.new("RGB", (w, h), (255, 0, 0)), InputPolicy(crop_size=112, grid=3))
    assert tiles.pixels.shape == tiles_shape
    assert tiles.image_size == (h, w) and tiles.scale == pytest.approx(112 / min(w, h))
    heatmap = tile_heatmap(tiles, np.full(len(tiles.pixels), 0.75))
    assert heatmap.shape == (h, w) and np.allclose(heatmap, 0.75)


@pytest.mark.parametrize("size", [(80, 300), (300, 80), (64, 64)])
def test_images_smaller_than_a_tile_are_fed_whole_when_the_policy_says_so(size):
    w, h = size
    tiles = make_tiles(Image.new("RGB", (w, h), (255, 0, 0)), InputPolicy(crop_size=112, grid=3, upscale_small=False))
    assert tiles.pixels.shape == (1, 3, h, w)
    assert tiles.boxes == ((0, 0),)
    assert tiles.pixels[0, 0].min() == 255 and tiles.pixels[0, 1:].max() == 0


def test_a_strip_too_long_to_upscale_is_refused_before_upscaling():
    from fakescope.errors import ImageLoadError

    strip = np.zeros((32, 25_000, 3), np.uint8)  # 2.4 MB; filling a 512-px tile would make 400,000 x 512 (614 MB)
    with pytest.raises(ImageLoadError, match=r"^image too long and thin: upscaling 25000x32 to fill a 512-px tile gives "
                                             r"400000x512 \(204,800,000 pixels\), over 200,000,000$"):
        make_tiles(strip, InputPolicy(crop_size=512, grid=2))
    assert make_tiles(strip[:, :20_000], InputPolicy(crop_size=512, grid=2)).pixels.shape == (2, 3, 512, 512)


def test_heatmap_has_the_image_shape_and_averages_overlaps():
    tiles = make_tiles(Image.new("RGB", (150, 120)), InputPolicy(crop_size=100, grid=2))
    assert tiles.boxes == ((0, 0), (0, 50), (20, 0), (20, 50))
    heatmap = tile_heatmap(tiles, np.array([0.0, 1.0, 0.0, 1.0]))
    assert heatmap.shape == (120, 150) and heatmap.dtype == np.float32
    assert heatmap[0, 0] == 0.0 and heatmap[-1, -1] == 1.0
    assert heatmap[60, 75] == pytest.approx(0.5)  # every tile overlaps here
    whole = make_tiles(Image.new("RGB", (90, 70)), InputPolicy(crop_size=112, grid=3))
    assert np.all(tile_heatmap(whole, np.array([0.25])) == 0.25)


def test_to_tensor_and_normalize():
    x = to_tensor(np.full((2, 3, 3), 255, np.uint8))
    assert x.shape == (3, 2, 3) and x.max() == 1.0
    policy = InputPolicy(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    out = normalize(x.unsqueeze(0), policy)
    assert out[0, :, 0, 0].tolist() == [2.0, 1.0, 0.5]
    as_uint8 = normalize(torch.full((1, 3, 2, 3), 255, dtype=torch.uint8), policy)  # tiles stay uint8 until here
    assert as_uint8.dtype == torch.float32 and torch.allclose(as_uint8, out, atol=1e-6, rtol=0)


def _separable(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits drawn from N(+-1.5, 3^2): their true log-odds are logit / 3, an overconfident model."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    logits = 3.0 * rng.normal(0, 1, n) + np.where(labels == 1, 1.5, -1.5)
    return logits, labels


def test_temperature_calibration_softens_an_overconfident_model():
    logits, labels = _separable()
    calibrator = Calibrator("temperature").fit(logits, labels)
    cal = calibrator.calibration_
    assert cal.method == "temperature"
    assert cal.temperature == pytest.approx(3.0, rel=0.3)  # the true scale of the logits
    assert abs(cal.bias) < 0.5
    p = calibrator.predict(np.linspace(-20, 20, 81))
    assert np.all(np.diff(p) > 0) and p[0] < 0.01 and p[-1] > 0.99
    assert np.allclose(p, apply_calibration(cal, np.linspace(-20, 20, 81)))
    nll_raw = _nll(1 / (1 + np.exp(-logits)), labels)
    assert _nll(calibrator.predict(logits), labels) < nll_raw


@pytest.mark.parametrize("method", ["temperature", "none"])
def test_calibration_of_an_extreme_logit_is_exact_and_silent(method):
    """A logit of -1e4 (a network sure an image is real) once overflowed exp() and printed a RuntimeWarning."""
    cal = Calibration(method=method, temperature=0.5, bias=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = apply_calibration(cal, np.array([-1e4, 0.0, 1e4]))
    assert p.tolist() == [0.0, 0.5, 1.0]


def test_isotonic_calibration_is_monotone_and_bounded():
    logits, labels = _separable(seed=1)
    calibrator = Calibrator("isotonic").fit(logits, labels)
    cal = calibrator.calibration_
    assert cal.method == "isotonic" and len(cal.x) == len(cal.y) >= 2
    p = calibrator.predict(np.linspace(-30, 30, 301))
    assert np.all(np.diff(p) >= 0)
    assert 1e-4 <= p.min() < 0.05 and 0.95 < p.max() <= 1 - 1e-4
    restored = Calibration(**{k: getattr(cal, k) for k in ("method", "temperature", "bias", "x", "y")})
    assert np.array_equal(apply_calibration(restored, logits), calibrator.predict(logits))


def test_a_model_worse_than_chance_keeps_its_order():
    logits, labels = _separable()
    p = Calibrator("temperature").fit(logits, 1 - labels).predict(np.array([-5.0, 0.0, 5.0]))
    assert p[0] <= p[1] <= p[2]


def test_unfitted_and_unknown_calibrators_fail_clearly():
    with pytest.raises(NotFittedError, match="not fitted"):
        Calibrator().predict(np.zeros(3))
    assert issubclass(NotFittedError, (ValueError, AttributeError))
    with pytest.raises(ConfigError, match="unknown calibration method 'platt'"):
        Calibrator("platt").fit(np.zeros(4), np.array([0, 0, 1, 1]))
    with pytest.raises(ConfigError, match="unknown calibration method"):
        apply_calibration(Calibration("magic"), np.zeros(2))
    assert apply_calibration(Calibration("none"), np.array([0.0]))[0] == 0.5


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
@pytest.mark.parametrize(("logits", "labels", "message"), [
    ([-2.0, -1, 1], [0, 0, 1, 1], "3 logit\\(s\\) but 4 label\\(s\\)"),
    ([-2.0, np.nan, 1, 2], [0, 0, 1, 1], "1 logit\\(s\\) are NaN or infinite"),
    ([-2.0, -1, 1, 2], ["real", "real", "ai", "ai"], "labels must be 0 \\(real\\) or 1 \\(ai\\), got ai, real"),
    ([-2.0, -1, 1, 2], [0, 0, 0, 0], "needs both real \\(0\\) and ai \\(1\\) labels"),
])
def test_calibration_data_it_cannot_fit_is_one_clear_error(method, logits, labels, message):
    with pytest.raises(ConfigError, match=message) as caught:  # not scikit-learn's own, many lines long
        Calibrator(method).fit(np.array(logits), np.array(labels))
    assert "\n" not in str(caught.value)


def test_boolean_labels_fit_as_zero_and_one():
    logits = np.array([-2.0, -1, 1, 2])
    fitted = Calibrator().fit(logits, np.array([False, False, True, True])).predict(logits)
    assert fitted == pytest.approx(Calibrator().fit(logits, np.array([0, 0, 1, 1])).predict(logits))


def _nll(p: np.ndarray, labels: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_one_image_scores_alike_through_predict_scan_and_explain_at_any_size(tmp_path, runtime):
    """Smaller than a tile, an odd size, a strip and a 6-megapixel photo (tiles capped at grid x grid): the score of
    an image alone, in a scanned batch of all of them (tiles of several images in one forward pass) and in explain's
    caption is one number, and the tiles map is drawn from the same tiles."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    from fakescope.detector import Detector
    from fakescope.explain.report import explain_image
    from fakescope.models.tiling import tile_boxes
    from fakescope.scale.records import read_results
    from fakescope.scale.scan import scan

    detector = Detector.load(device="cpu", provenance=False, runtime=runtime, batch_size=8, workers=2)
    policy = detector.model.config.input
    rng = np.random.default_rng(5)
    paths = []
    for w, h in [(50, 41), (333, 217), (1201, 61), (3000, 2000)]:
        paths.append(str(tmp_path / f"{w}x{h}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], compress_level=1)
    assert len(tile_boxes(2000, 3000, policy)) == policy.grid ** 2
    alone = {p: detector.predict(p) for p in paths}
    assert all(d.ok for d in alone.values())
    scan(paths, tmp_path / "scan", detector)
    scanned = read_results(tmp_path / "scan").set_index("path")["score"]  # rounded to 6 decimals
    for path in paths:
        explained = explain_image(detector, path, str(tmp_path / "explain"), methods=("tiles",))
        assert explained.probability == alone[path].probability and explained.files["tiles"]
        assert scanned[path] == pytest.approx(alone[path].probability, abs=1e-6)
        heat = detector.explain(path)
        assert heat.shape == Image.open(path).size[::-1] and 0 <= heat.min() <= heat.max() <= 1
