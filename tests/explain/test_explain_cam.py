"""Heatmaps point at the planted artefact that the model learned to detect."""

from __future__ import annotations

import functools
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from explain_helpers import planted_image, smooth_field
from PIL import Image
from plugin_helpers import FeatureHead
from torch import nn

from fakescope.detector import Detector
from fakescope.errors import ConfigError, ImageLoadError
from fakescope.explain import DEFAULT_METHODS, class_activation_map, explain_image, feature_layer, overlay_png
from fakescope.models import LoadedModel, create_model
from fakescope.models.config import ModelConfig

SIDE = 192
STRIDE = 32  # test_tiny's feature maps are 1/32 of the input


def peak_and_contrast(heat: np.ndarray, centre: tuple[int, int]) -> tuple[float, float]:
    """Distance from the heatmap's peak to the artefact, and mean heat near it over mean heat elsewhere."""
    peak = np.unravel_index(int(heat.argmax()), heat.shape)
    yy, xx = np.mgrid[0:heat.shape[0], 0:heat.shape[1]]
    near = np.hypot(yy - centre[0], xx - centre[1]) <= 24
    return float(np.hypot(peak[0] - centre[0], peak[1] - centre[1])), float(heat[near].mean() / heat[~near].mean())


@pytest.mark.parametrize("method, tiled", [("gradcam", False), ("gradcam++", False), ("cam", False), ("gradcam", True)])
def test_heatmap_peaks_at_the_planted_artefact(planted_model, method, tiled):
    distances, contrasts = [], []
    for seed in range(5000, 5012):
        image, centre = planted_image(seed, SIDE)
        heat = class_activation_map(planted_model, image, method, tiled=tiled)
        assert heat.shape == (SIDE, SIDE) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() == pytest.approx(1.0)
        distance, contrast = peak_and_contrast(heat, centre)
        distances.append(distance)
        contrasts.append(contrast)
    hits = sum(d <= STRIDE for d in distances)
    assert hits >= 9, f"{method}: peak within {STRIDE}px of the artefact in {hits}/12 images: {distances}"
    assert np.median(contrasts) > 3.0, f"{method}: heat near the artefact / elsewhere: {contrasts}"


def test_the_model_scores_the_artefact(planted_model):
    detector = Detector(planted_model, provenance=False)  # on one 64 px tile, the model's crop size
    planted = [detector.predict(planted_image(seed, 64)[0]).probability for seed in range(5000, 5008)]
    plain = [detector.predict(Image.fromarray(smooth_field(seed, 64))).probability for seed in range(7000, 7008)]
    assert min(planted) > max(plain), (planted, plain)


def test_detector_explain_dispatches_and_keeps_tiles_default(planted_model, tmp_path):
    image, _ = planted_image(5003, SIDE)
    path = tmp_path / "planted.png"
    image.save(path)
    detector = Detector(planted_model, provenance=False)
    tiles = detector.explain(str(path))
    np.testing.assert_array_equal(tiles, detector.predict(str(path), heatmap=True).heatmap)
    for method in ("gradcam", "gradcam++", "cam"):
        heat = detector.explain(str(path), method=method)
        np.testing.assert_allclose(heat, class_activation_map(planted_model, image, method), atol=1e-6)
    with pytest.raises(ConfigError, match="unknown explanation method 'saliency'; expected one of tiles, gradcam,"):
        detector.explain(image, method="saliency")
    for method in ("tiles", "gradcam"):  # one error type for an unreadable image, whatever the method
        with pytest.raises(ImageLoadError, match="not an image"):
            detector.explain(b"not an image at all", method=method)


def test_explain_image_draws_every_method_on_the_onnx_runtime(planted_model, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "planted.png"
    planted_image(5002, SIDE)[0].save(path)
    detector = Detector(planted_model, provenance=False, runtime="onnx")
    assert detector.runtime == "onnx"
    result = explain_image(detector, str(path), str(tmp_path / "out"))
    assert result.skipped == {}  # the CAMs were skipped: 'needs a PyTorch network with forward_features, not OnnxNetwork'
    assert sorted(result.files) == sorted(DEFAULT_METHODS)


def test_an_exif_rotated_photo_is_explained_upright(planted_model, tmp_path):
    upright = Image.fromarray(np.concatenate([planted_image(5004, SIDE)[0], smooth_field(1, SIDE)], axis=1))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned left; viewers turn it 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "turned.png", exif=exif)
    upright.save(tmp_path / "upright.png")
    detector = Detector(planted_model, provenance=False)
    for method in ("tiles", "gradcam"):
        maps = [detector.explain(str(tmp_path / name), method=method) for name in ("turned.png", "upright.png")]
        assert maps[0].shape == (SIDE, 2 * SIDE)
        np.testing.assert_allclose(*maps, atol=1e-5)
    result = explain_image(detector, str(tmp_path / "turned.png"), str(tmp_path / "out"), methods=("tiles", "gradcam"))
    assert sorted(result.files) == ["gradcam", "tiles"] and result.skipped == {}


def test_explain_image_reads_its_source_once_and_scores_what_it_draws(planted_model, tmp_path, monkeypatch):
    """The image was read once to draw and once more to score: two fetches of a URL or bucket object, which could
    return two different images (the map of one under the other's score)."""
    import fakescope._preparation
    import fakescope.io.image

    path = tmp_path / "planted.png"
    planted_image(5003, SIDE)[0].save(path)
    detector = Detector(planted_model, provenance=True)
    expected = detector.predict(str(path))
    reads = []
    for module in (fakescope.io.image, fakescope._preparation):
        original = module.read_source
        monkeypatch.setattr(module, "read_source", lambda source, original=original: reads.append(source) or original(source))
    result = explain_image(detector, str(path), str(tmp_path / "out"), methods=("tiles", "cam"))
    assert reads == [str(path)]
    assert (result.probability, result.verdict) == (expected.probability, expected.verdict)
    assert sorted(result.files) == ["cam", "tiles"]


@pytest.mark.parametrize("orientation", [3, 6])
def test_an_overlay_of_an_exif_rotated_image_is_drawn_as_its_map_upright(planted_model, orientation):
    """overlay_png drew a PIL image as stored while Detector.explain maps it upright: turned half way (3) the map lay
    over the wrong corner, a quarter (6) it was refused as the wrong size. Both now draw as the upright image does."""
    upright = Image.fromarray(np.concatenate([planted_image(5004, SIDE)[0], smooth_field(1, SIDE)], axis=1))
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    turn = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}[orientation]
    upright.transpose(turn).save(buffer, "PNG", exif=exif)
    detector = Detector(planted_model, provenance=False)

    def drawn(image: Image.Image) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(overlay_png(image, detector.explain(image, method="gradcam"), "c"))))

    np.testing.assert_array_equal(drawn(Image.open(buffer)), drawn(upright))


def test_an_overlay_draws_a_16_bit_or_alpha_image_as_the_model_saw_it(planted_model):
    """matplotlib drew a 16-bit greyscale image through its own colour map (viridis), not as grey."""
    from fakescope.io.image import to_rgb

    grey = np.asarray(planted_image(5005, 96)[0].convert("L"), np.uint16) * 257
    rgba = np.dstack([np.asarray(planted_image(5006, 96)[0]), np.full((96, 96), 128, np.uint8)])
    for image in (Image.fromarray(grey), Image.fromarray(rgba)):
        heat = class_activation_map(planted_model, to_rgb(image), "cam")
        shown = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat, "c", alpha=0.0))))
        np.testing.assert_array_equal(shown, np.asarray(Image.open(io.BytesIO(overlay_png(to_rgb(image), heat, "c",
                                                                                             alpha=0.0)))))


def test_cam_needs_a_pooling_linear_head_but_gradcam_does_not():
    torch_config = ModelConfig(name="max-pool", architecture="test_tiny")
    network = create_model("test_tiny", global_pool="max").eval()
    model = LoadedModel(network, torch_config, "memory")
    image = Image.fromarray(smooth_field(1, 96))
    with pytest.raises(ConfigError, match="global average pooling"):
        class_activation_map(model, image, "cam")
    heat = class_activation_map(model, image, "gradcam")
    assert heat.shape == (96, 96) and 0.0 <= heat.min() <= heat.max() <= 1.0


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++"])
def test_the_classifier_bias_moves_no_map(method):
    """CAM took the bias into each cell's logit: a bias of +3 all but flattened the map, one of -6 cut it to a spot.
    Grad-CAM's target, the logit, gets the bias too, but its gradient does not, so its maps never moved."""
    torch.manual_seed(0)
    network = create_model("test_tiny").eval()
    model = LoadedModel(network, ModelConfig(name="tiny", architecture="test_tiny"), "memory")
    image = Image.fromarray(smooth_field(2, 96))
    heat = class_activation_map(model, image, method)
    for shift in (3.0, -6.0):
        with torch.no_grad():
            network.backbone.get_classifier().bias.fill_(shift)
        np.testing.assert_allclose(class_activation_map(model, image, method), heat, atol=1e-4)


@pytest.mark.parametrize("architecture, expected", [("test_tiny", "backbone.bn2"), ("npr_resnet18", "backbone.layer4"),
                                                    ("mobilenet_v2", "backbone.bn2")])
def test_feature_layer_is_the_last_block_of_any_timm_backbone(architecture, expected):
    import torch

    network = create_model(architecture).eval()
    layer = feature_layer(network, torch.zeros(1, 3, 64, 64))
    assert dict(network.named_modules())[expected] is layer


def test_overlay_is_a_png_of_the_image_with_its_caption(planted_model):
    image, _ = planted_image(5001, SIDE)
    png = overlay_png(image, class_activation_map(planted_model, image), "P(ai) = 0.99 (ai)")
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG" and picture.width >= 600 and picture.height >= 500
    colours = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 1000  # an image under a colour map, not a blank figure
    with pytest.raises(ConfigError, match=r"heatmap \(10, 10\) does not match"):  # fakescope's own error
        overlay_png(image, np.zeros((10, 10), np.float32), "wrong size")


def test_overlay_of_a_large_image_draws_it_at_the_figure_size():
    import tracemalloc

    def hot_corner(width: int, height: int) -> tuple[Image.Image, np.ndarray]:
        heat = np.zeros((height, width), np.float32)
        heat[: height // 2, : width // 2] = 1.0
        return Image.new("RGB", (width, height), (120, 80, 40)), heat

    tracemalloc.start()  # matplotlib resampled a 12 MP image as float64 arrays: 680 MB (and 14 s) for an 800 px PNG
    try:
        large = Image.open(io.BytesIO(overlay_png(*hot_corner(4000, 3000), "large")))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 250 * 2**20, f"{peak / 2**20:.0f} MiB"
    small = Image.open(io.BytesIO(overlay_png(*hot_corner(400, 300), "large")))
    assert large.size == small.size
    difference = np.abs(np.asarray(large.convert("L"), float) - np.asarray(small.convert("L"), float))
    assert difference.mean() < 2  # the same picture: the hot quarter still where it was


@pytest.mark.parametrize("size", [(1200, 64), (64, 1200)])
def test_overlay_of_a_very_wide_or_tall_image_keeps_caption_and_colour_bar_whole(size):
    """The figure followed the image's shape: 1.2 in high for 1200 x 64 cut the colour bar's label, and 1.8 in
    wide for 64 x 1200 cut the caption's file name."""
    image, heat = Image.new("RGB", size, (120, 80, 40)), np.ones(size[::-1], np.float32)
    caption = "a_rather_long_file_name.png: P(ai) = 0.001 (real)\nGrad-CAM, model fakescope-default"
    pixels = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat, caption))).convert("L"))
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    assert (border == 255).all()  # nothing drawn to the edge: nothing cut off


@pytest.mark.parametrize("size", [(300, 50), (40, 500), (161, 97), (48, 40), (1100, 1000)])
def test_stitched_tiles_cover_every_pixel(size):
    """The tile count came from the image's own sides, not the upscaled ones: a 300 x 50 image upscaled to 384 x 64
    got 5 tiles of 64 px with 16 px gaps, where the stitched map was 0 (no evidence) whatever was there."""
    from fakescope.explain.cam import covering_tiles
    from fakescope.models import InputPolicy

    tiles = covering_tiles(Image.new("RGB", size), InputPolicy(crop_size=64, grid=2))
    height, width = (round(side * tiles.scale) for side in size[::-1])
    covered = np.zeros((height, width), bool)
    for top, left in tiles.boxes:
        covered[top:top + 64, left:left + 64] = True
    assert covered.all()


def test_images_over_a_megapixel_are_explained_tile_by_tile(planted_model):
    image = Image.fromarray(smooth_field(3, 1100)[:1000])  # Grad-CAM through a whole 4 MP image peaked at 8 GB
    tiled = class_activation_map(planted_model, image, "cam", tiled=True)
    np.testing.assert_array_equal(class_activation_map(planted_model, image, "cam"), tiled)
    small = image.crop((0, 0, 1000, 1000))
    assert not np.array_equal(class_activation_map(planted_model, small, "cam"),
                              class_activation_map(planted_model, small, "cam", tiled=True))


class Brightness(torch.nn.Module):
    """Evidence = brightness: one 1x1 convolution summing the channels, average pooling, one linear layer."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(3, 1, 1)
        self.head = torch.nn.Linear(1, 1)
        for layer in (self.features, self.head):
            torch.nn.init.ones_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward_features(self, x):
        return self.features(x)

    def forward_head(self, features):
        return self.head(features.mean((2, 3))).squeeze(-1)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_a_strip_thinner_than_a_tile_is_explained_tile_by_tile(method):
    """48 x 960, upscaled to 64 px tiles: stitching failed; then the tiles, too few for the upscaled width, left
    16 px gaps of no evidence. A network whose evidence is brightness must light up the one bright spot."""
    from fakescope.models import InputPolicy

    model = LoadedModel(Brightness().eval(), ModelConfig(name="bright", architecture="qa_bright",
                                                         input=InputPolicy(crop_size=64, grid=2)), "memory")
    pixels = np.zeros((48, 960, 3), np.uint8)
    pixels[20:28, 52:60] = 255  # upscaled: x 69-80, where the old tiles (at 0, 87, ...) left a gap
    heat = class_activation_map(model, Image.fromarray(pixels), method, tiled=True)
    assert heat.shape == (48, 960) and heat.max() == pytest.approx(1.0)
    assert (heat[21:27, 53:59] > 0.5).all()  # the spot, in the image's own pixels
    outside = np.ones(heat.shape, bool)
    outside[16:32, 48:64] = False
    assert heat[outside].max() < 0.5


class StridedBrightness(Brightness):
    """Brightness over 32 x 32 cells (average pooling, stride 32; the last cell partial, or dropped with `ceil=False`)."""

    def __init__(self, ceil: bool = True):
        super().__init__()
        self.features = torch.nn.Sequential(self.features, torch.nn.AvgPool2d(STRIDE, ceil_mode=ceil))


def test_a_networks_feature_stride_is_measured_once():
    """Two probing passes (256 and 512 px) per call added up over a folder of images; the stride is kept per network."""
    from fakescope.explain.cam import feature_stride

    network = StridedBrightness().eval()
    sides = []
    probe = network.forward_features
    network.forward_features = lambda x: sides.append(x.shape[-1]) or probe(x)
    assert feature_stride(network) == feature_stride(network) == (STRIDE, STRIDE)
    assert sides == [256, 512]


def test_features_that_do_not_grow_with_the_image_are_refused_in_one_line():
    from fakescope.errors import ConfigError
    from fakescope.explain.cam import feature_stride

    network = StridedBrightness().eval()
    network.forward_features = lambda x: torch.zeros(len(x), 1, 4, 4)  # a fixed grid (an adaptive pool)
    with pytest.raises(ConfigError, match="features that grow with the image: .* gave \\(1, 1, 4, 4\\) at 256 px"):
        feature_stride(network)


CROP = 112


def bright_spot_map(size: tuple[int, int], spot: tuple[int, int], method: str, tiled: bool, ceil: bool = True):
    """The map of a StridedBrightness network with the bundled model's 112 px crop (3.5 cells, so its size over its
    feature maps', 28, is not the stride) for an ImageNet-mean image (0 once normalised) with an 8 px spot."""
    from fakescope.models import InputPolicy

    model = LoadedModel(StridedBrightness(ceil).eval(), ModelConfig(name="bright", architecture="qa_bright",
                                                                    input=InputPolicy(crop_size=CROP, grid=2)), "memory")
    pixels = np.full((*size, 3), (124, 116, 104), np.uint8)
    pixels[spot[0]:spot[0] + 8, spot[1]:spot[1] + 8] = 255
    heat = class_activation_map(model, Image.fromarray(pixels), method, tiled=tiled)
    assert heat.shape == size
    return heat


SIZES = [(128, 320), (320, 128), (300, 500), (500, 300)]


def spots(height: int, width: int) -> list[tuple[int, int]]:
    """8 px spots at the corners, near the far sides and inside, each within one 32 px cell of the image."""
    places = [(4, 4), (4, width - 12), (height - 12, 4), (height - 12, width - 12), (100, 40), (40, 100),
              (height - 40, width - 40), (height // 2, width // 2)]
    return [(t - t % STRIDE + 12 if t % STRIDE > STRIDE - 8 else t, l - l % STRIDE + 12 if l % STRIDE > STRIDE - 8 else l)
            for t, l in places]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_a_non_square_map_peaks_in_the_feature_cell_of_the_evidence(size, method):
    """Each feature cell covers STRIDE pixels from the image's origin. The map was resized to the image, so on a
    300 px side (10 cells, the last partial) cell 8 peaked at 255 px, not 271.5: in the cell before its own."""
    for spot in spots(*size):
        peak = np.array(np.unravel_index(int(bright_spot_map(size, spot, method, tiled=False).argmax()), size))
        cell = np.array(spot) // STRIDE
        centre = np.minimum(cell * STRIDE + (STRIDE - 1) / 2, np.array(size) - 1)  # a partial cell's peak: the edge
        assert (peak // STRIDE == cell).all(), f"{size} spot at {spot}: peak {peak}, not in cell {cell}"
        assert np.abs(peak - centre).max() <= STRIDE / 2 + 1, f"{size} spot at {spot}: peak {peak}"


@pytest.mark.parametrize("size", SIZES)
def test_a_tiled_map_peaks_in_a_cell_of_a_tile_holding_the_evidence(size):
    """Tiles start where `tile_positions` puts them, not on the image's 32 px grid (a 300 px side's last tile starts
    at 188), so the cells are each tile's own: the peak lies in a cell, of a tile, that holds the spot."""
    from fakescope.explain.cam import covering_tiles
    from fakescope.models import InputPolicy

    boxes = covering_tiles(Image.new("RGB", size[::-1]), InputPolicy(crop_size=CROP, grid=2)).boxes
    for spot in spots(*size):
        peak = np.array(np.unravel_index(int(bright_spot_map(size, spot, "gradcam", tiled=True).argmax()), size))
        holding = [box for box in np.array(boxes) if ((np.array(spot) - box >= 0) & (np.array(spot) + 7 - box < CROP)).all()]
        assert any((((peak - box) // STRIDE) == (np.array(spot) - box) // STRIDE).all() for box in holding), \
            f"{size} spot at {spot}: peak {peak}, tiles {holding}"


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_features_that_floor_the_size_still_cover_the_image(method):
    """A network whose features drop the last partial cell (300 px: 9 cells, 288 px) gives a map of the whole image."""
    heat = bright_spot_map((300, 500), (260, 460), method, tiled=False, ceil=False)
    peak = np.unravel_index(int(heat.argmax()), heat.shape)
    assert tuple(np.array(peak) // STRIDE) == (8, 14)
    np.testing.assert_array_equal(heat[288:], np.broadcast_to(heat[287], heat[288:].shape))  # its edge, continued


@pytest.mark.parametrize("size", [(128, 320), (320, 128)])
def test_non_square_heatmaps_of_a_trained_model_peak_at_the_artefact(planted_model, size):
    """The trained model's evidence can peak in the cell beside the artefact's (its receptive field spans cells):
    up to one cell diagonal, STRIDE * sqrt(2) = 45 px, the tolerance docs/explain.md states."""
    distances = []
    for seed in range(5000, 5012):
        image, centre = planted_image(seed, size)
        heat = class_activation_map(planted_model, image, "gradcam")
        assert heat.shape == size
        distances.append(peak_and_contrast(heat, centre)[0])
    hits = sum(d <= STRIDE * np.sqrt(2) for d in distances)
    assert hits >= 10, f"{size}: peak within {STRIDE * np.sqrt(2):.0f}px of the artefact in {hits}/12 images: {distances}"


ZOO = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2", "npr_resnet18", "resnet50",
       "spectral_lr", "test_tiny")


@pytest.mark.parametrize("architecture", ZOO)
def test_every_zoo_family_gives_each_cam_map_of_an_image_under_one_tile_or_says_why_not(architecture):
    """A 40 x 36 image, smaller than any zoo crop: a finite map of its own size, or the one-line reason `unsupported`
    gives before any image. spectral_lr's features come from no module, so Grad-CAM has no layer to hook; its CAM is
    each patch's logit through its batch norm and linear layer, which was refused ("use gradcam") once the batch norm
    had trained statistics, and drawn without the batch norm before."""
    from fakescope.explain import METHODS, unsupported
    from fakescope.models import architecture_info, list_models

    assert set(ZOO) <= set(list_models())
    torch.manual_seed(0)
    network = create_model(architecture).eval()
    if architecture == "spectral_lr":  # as training leaves it
        with torch.no_grad():
            network.norm.running_mean.uniform_(-3.0, 3.0), network.norm.running_var.uniform_(0.5, 4.0)
            network.norm.weight.uniform_(0.5, 2.0), network.norm.bias.uniform_(-1.0, 1.0)
    model = LoadedModel(network, ModelConfig(name=architecture, architecture=architecture,
                                             input=architecture_info(architecture).input), "memory")
    image = Image.fromarray(smooth_field(7, 96)).resize((40, 36))
    assert max(image.size) < model.config.input.crop_size
    for method in METHODS:
        why = unsupported(model, method)
        if architecture == "spectral_lr" and method != "cam":
            assert why == "SpectralLR: no module produces the forward_features output to explain (per-tile heatmaps, " \
                          "--method tiles, work for every model)", method
            with pytest.raises(ConfigError, match="^SpectralLR: no module produces"):
                class_activation_map(model, image, method)
            continue
        assert why is None, (method, why)
        heat = class_activation_map(model, image, method)
        assert heat.shape == (36, 40) and np.isfinite(heat).all() and 0.0 <= heat.min() <= heat.max() <= 1.0, method


def test_a_spectral_cam_cell_is_the_logit_of_its_patch_through_the_whole_head():
    """spectral_lr's CAM weighed the raw spectra by the linear layer alone, skipping the batch norm between them. A cell
    is its patch's logit through the whole head, less the head's constant (batch norm shift and bias)."""
    from fakescope.explain.cam import raw_maps
    from fakescope.models import architecture_info

    torch.manual_seed(1)
    network = create_model("spectral_lr").eval()
    with torch.no_grad():
        network.norm.running_mean.uniform_(-3.0, 3.0), network.norm.running_var.uniform_(0.5, 4.0)
    x = torch.randn(2, 3, 64, 96)
    maps = raw_maps(network, x, "cam")
    features = network.forward_features(x)
    assert maps.shape == (2, 2, 3) and architecture_info("spectral_lr").input.crop_size == 128
    with torch.no_grad():
        constant = network.forward_head(torch.zeros_like(features[:1, :, :1, :1]))  # no cell's evidence: left out
        one = network.forward_head(features[:1, :, 1:2, 2:3]) - constant  # the patch at row 1, column 2 of the first image
        assert maps[0, 1, 2] == pytest.approx(max(float(one), 0.0), abs=1e-5)
        assert maps.mean() >= 0 and torch.allclose(
            network.forward_head(features.permute(0, 2, 3, 1).reshape(-1, 72, 1, 1)).reshape(2, 2, 3).mean((1, 2)),
            network(x), atol=1e-4)


def _tiny_detector() -> tuple[Detector, torch.nn.Module]:
    torch.manual_seed(0)
    network = create_model("test_tiny").eval()
    return Detector(LoadedModel(network, ModelConfig(name="tiny", architecture="test_tiny"), "memory"), provenance=False), \
        feature_layer(network, torch.zeros(1, 3, 64, 64))


def _in_threads(*calls):
    """Each call's result, the calls run in threads of their own at once; a call's error is raised here."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result() for future in [pool.submit(call) for call in calls]]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_two_threads_explaining_at_once_take_turns_and_each_get_their_own_map(method):
    """pytorch-grad-cam zeroes the network's parameter gradients and runs backward through them: two threads' gradient
    passes at once raced on the shared `.grad` (a process abort in `zero_grad`, seen in CI). They now take turns: a
    pass waits in the feature layer up to 1 s for the other to arrive, which it never does."""
    detector, layer = _tiny_detector()
    images = [Image.fromarray(smooth_field(seed, side)) for seed, side in ((3, 96), (4, 128))]
    alone = [detector.explain(image, method) for image in images]
    inside, most, both = [0], [0], threading.Event()
    count = threading.Lock()

    def arrive(*_):
        if torch.is_grad_enabled():  # the gradient passes
            with count:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                if inside[0] == 2:
                    both.set()
            both.wait(1)

    def leave(*_):
        if torch.is_grad_enabled():
            with count:
                inside[0] -= 1

    layer.register_forward_pre_hook(arrive)
    layer.register_forward_hook(leave)
    together = _in_threads(*[functools.partial(detector.explain, image, method) for image in images])
    assert most[0] == 1
    for heat, single in zip(together, alone):
        np.testing.assert_allclose(heat, single, atol=1e-5)



class _NoNorm(FeatureHead):
    """Convolutions, global average pooling and one linear layer, no batch norm."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4))
        self.head = nn.Linear(8, 1)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_a_detection_through_the_network_during_a_gradient_pass_changes_neither(method):
    """With no batch norm to fold, detection runs through the very network whose Grad-CAM hooks see every thread's
    passes; it needs no gradients, so no turn: run while a gradient pass waits in the feature layer, it would be
    recorded as that pass's activations. Only the explaining thread's passes are recorded (`_own_thread`): the map and
    the scores are what each gives alone."""
    torch.manual_seed(0)
    network = _NoNorm().eval()
    detector = Detector(LoadedModel(network, ModelConfig(name="no-norm", architecture="no_norm"), "memory"), provenance=False)
    layer = feature_layer(network, torch.zeros(1, 3, 64, 64))
    image, photo = (Image.fromarray(smooth_field(seed, side)) for seed, side in ((3, 96), (5, 160)))
    alone, solo = detector.explain(image, method), _scores(detector.predict([photo]))
    inside, detected, met, crossed = threading.Event(), threading.Event(), [], []

    def wait_for_detection(*_):
        if not torch.is_grad_enabled():  # the detection's pass, once the gradient pass waits (before: its layer search)
            crossed.extend([not detected.is_set()] * inside.is_set())
        elif not inside.is_set():  # the gradient pass, before it reaches the feature layer
            inside.set()
            met.append(detected.wait(10))

    def detect():
        assert inside.wait(10), "the gradient pass never reached the feature layer"
        try:
            return _scores(detector.predict([photo]))
        finally:
            detected.set()

    layer.register_forward_pre_hook(wait_for_detection)
    heat, scores = _in_threads(functools.partial(detector.explain, image, method), detect)
    assert met == [True] and crossed == [True]  # the detection went through the network while the gradient pass waited
    np.testing.assert_allclose(heat, alone, atol=1e-5)
    np.testing.assert_allclose(scores, solo, rtol=0, atol=1e-6)


def _scores(detections) -> list[float]:
    """Each detection's P(ai) and its evidence scores, in order."""
    return [score for d in detections for score in (d.probability, *(e.score for e in d.evidence))]
