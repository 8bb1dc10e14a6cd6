"""Heatmaps and embeddings of an architecture of your own (no timm backbone), trained by fakescope's trainer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from explain_helpers import planted_image
from plugin_helpers import FeatureHead
from torch import nn

from fakescope.errors import ConfigError
from fakescope.explain import METHODS, class_activation_map, embed_images, report_figures, unsupported
from fakescope.models import InputPolicy, load_model, register_model, registry

SIDE = 192
STRIDE = 8  # the network's feature maps are 1/8 of the input


class PlainConv(FeatureHead):
    """Three convolutions with max pooling, global average pooling and one linear layer: the registry's contract, no timm."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(width, 1)


def qa_plain_conv(pretrained: bool | str = False, **kwargs) -> PlainConv:
    """A plain three-layer conv net."""
    return PlainConv(**kwargs)


@pytest.fixture(scope="module")
def custom_model(planted_manifest: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """`qa_plain_conv` registered from this module and trained on the planted set like any zoo entry."""
    from fakescope.train import AugmentConfig, TrainConfig, train

    register_model(input=InputPolicy(crop_size=64, grid=2))(qa_plain_conv)
    off = AugmentConfig(bottom_crop=0, base_jpeg_quality=None, resize_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0)
    out = tmp_path_factory.mktemp("custom-run")
    cfg = TrainConfig(manifest="planted", out=str(out), name="plain-conv", architecture="qa_plain_conv", pretrained=False,
                      epochs=5, samples_per_epoch=320, batch_size=32, lr=3e-3, num_workers=0, device="cpu", amp=False,
                      patience=10, augment=off)
    saved = train(cfg, planted_manifest, progress=False)
    assert saved.metrics["val"]["auc"] > 0.95, saved.metrics["val"]
    yield load_model(out / "model")
    del registry._REGISTRY["qa_plain_conv"]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "cam"])
def test_a_custom_network_is_explained_at_the_artefact(custom_model, method):
    hits = 0
    for seed in range(5000, 5012):
        image, centre = planted_image(seed, SIDE)
        heat = class_activation_map(custom_model, image, method)
        assert heat.shape == (SIDE, SIDE) and heat.max() == pytest.approx(1.0)
        peak = np.unravel_index(int(heat.argmax()), heat.shape)
        hits += np.hypot(peak[0] - centre[0], peak[1] - centre[1]) <= 2 * STRIDE
    assert hits >= 9, f"{method}: peak near the artefact in {hits}/12 images"


def test_a_custom_network_is_embedded_and_gets_report_figures(custom_model, planted_manifest, tmp_path):
    rows = planted_manifest[planted_manifest["split"] == "val"]
    table = embed_images(custom_model, rows)
    assert np.stack(table["embedding"]).shape == (24, 16)
    probabilities = table["probability"].to_numpy()
    assert probabilities[table["label"] == "ai"].min() > probabilities[table["label"] == "real"].max()
    titles = [title for title, _ in report_figures(custom_model, rows, tmp_path / "figures", examples=2)]
    assert sum(t.startswith("Grad-CAM") for t in titles) == 2 and any(t.startswith("UMAP") for t in titles)


def test_features_no_module_produces_are_named_as_the_reason(tmp_path):
    class FunctionalFeatures(PlainConv):
        def forward_features(self, x):
            return nn.functional.avg_pool2d(x, 4)

    from fakescope.models import LoadedModel, ModelConfig

    model = LoadedModel(FunctionalFeatures().eval(), ModelConfig(name="functional", architecture="qa_functional"), "memory")
    image, _ = planted_image(1, 96)
    with pytest.raises(ConfigError, match=r"^FunctionalFeatures: no module produces the forward_features output to explain "
                                          r"\(per-tile heatmaps, --method tiles, work for every model\)$"):
        class_activation_map(model, image, "gradcam")


def test_a_network_without_embed_gets_no_report_figures_and_a_warning(tmp_path, caplog):
    """ReportFigures kept its embedding run when the embedder was refused: draw() raised AttributeError, not the warning."""
    class NoEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.features, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 1)

        def forward_features(self, x):
            return self.features(x)

        def forward(self, x):
            return self.head(self.forward_features(x).mean((2, 3))).squeeze(-1)

    from fakescope.models import LoadedModel, ModelConfig

    model = LoadedModel(NoEmbed().eval(), ModelConfig(name="no-embed", architecture="qa_no_embed"), "memory")
    rows = []
    for seed in range(6):
        planted_image(seed, 64)[0].save(tmp_path / f"{seed}.png")
        rows.append({"uri": str(tmp_path / f"{seed}.png"), "label": ("real", "ai")[seed % 2]})
    assert report_figures(model, pd.DataFrame(rows), tmp_path / "figures") == []
    assert "no explanation figures: no-embed: embeddings need the network's embed" in caplog.text


@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_token_features_are_named_as_the_reason_not_a_traceback(method):
    """A ViT-style forward_features of (N, L, C) tokens: pytorch-grad-cam raised 'Invalid grads shape'."""
    class TokenFeatures(PlainConv):
        def forward_features(self, x):
            return self.features(x).flatten(2).transpose(1, 2)

        def forward_head(self, features):
            return self.head(features.mean(1)).squeeze(-1)

    from fakescope.models import LoadedModel, ModelConfig

    model = LoadedModel(TokenFeatures().eval(), ModelConfig(name="tokens", architecture="qa_tokens"), "memory")
    image, _ = planted_image(1, 96)
    with pytest.raises(ConfigError, match=r"^TokenFeatures: forward_features gives shape \(1, 144, 16\), not \(N, C, h, w\) "
                                          r"feature maps to explain \(per-tile heatmaps, --method tiles, work for every model\)$"):
        class_activation_map(model, image, method)


def test_a_network_that_takes_only_its_crop_size_is_explained_tile_by_tile():
    """A flatten + linear head fails on the whole image (a matmul RuntimeError): its crop-size tiles are explained."""
    class FlattenHead(PlainConv):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16 * 8 * 8, 1)

        def forward_head(self, features):
            return self.head(features.flatten(1)).squeeze(-1)

    from fakescope.models import LoadedModel, ModelConfig

    torch.manual_seed(0)
    model = LoadedModel(FlattenHead().eval(), ModelConfig(name="flat", architecture="qa_flat",
                                                          input=InputPolicy(crop_size=64, grid=2)), "memory")
    image, _ = planted_image(2, 160)
    for method in ("gradcam", "gradcam++"):
        heat = class_activation_map(model, image, method)
        assert heat.shape == (160, 160) and heat.max() == pytest.approx(1.0)
        np.testing.assert_array_equal(heat, class_activation_map(model, image, method, tiled=True))


class NanForBright(PlainConv):
    """Gives NaN features for bright images, as a network that overflows on some inputs does."""

    def embed(self, x):
        pooled = super().embed(x)
        return torch.where((x.mean((1, 2, 3)) > 1.0)[:, None], torch.full_like(pooled, float("nan")), pooled)


def test_images_with_nan_features_are_left_out_with_the_reason(planted_manifest, tmp_path):
    """k-means raised sklearn's 'Input X contains NaN' (a traceback) for the whole set."""
    from PIL import Image

    from fakescope.explain import embedding_report
    from fakescope.models import LoadedModel, ModelConfig

    torch.manual_seed(0)
    model = LoadedModel(NanForBright().eval(), ModelConfig(name="nanny", architecture="qa_nan",
                                                           input=InputPolicy(crop_size=64, grid=2)), "memory")
    rows = planted_manifest[planted_manifest["split"] == "val"].head(6)
    white = tmp_path / "white.png"
    Image.new("RGB", (64, 64), "white").save(white)
    rows = pd.concat([rows, rows.head(1).assign(uri=str(white))], ignore_index=True)
    report = embedding_report(model, rows, str(tmp_path / "out"), color_by=("label",))
    table = report.table
    reason = "nanny gave non-finite (NaN or infinite) features or logits for this image"
    assert table["error"].fillna("").tolist() == [""] * 6 + [reason]
    assert table["umap_x"].notna().tolist() == [True] * 6 + [False] and len(report.clusters.assignments) == 6


def test_a_nan_map_is_skipped_with_a_note_not_drawn_blank(planted_manifest, tmp_path):
    """A NaN map was drawn transparent: the overlay looked like an image with no evidence anywhere."""
    from fakescope.detector import Detector
    from fakescope.explain import explain_image
    from fakescope.models import LoadedModel, ModelConfig

    network = PlainConv().eval()
    with torch.no_grad():
        network.features[0].weight[0, 0, 0, 0] = float("nan")
    model = LoadedModel(network, ModelConfig(name="nanny", architecture="qa_nan", input=InputPolicy(crop_size=64, grid=2)),
                        "memory")
    image, _ = planted_image(3, 96)
    for method in ("gradcam", "cam"):  # cam said 'CAM needs global average pooling + a linear head'
        with pytest.raises(ConfigError, match=rf"^nanny: the {method} map is not finite \(the network gave NaN or infinite"):
            class_activation_map(model, image, method)
    assert [unsupported(model, m) for m in METHODS] == [None] * 3  # the architecture allows them: no refusal up front
    image.save(tmp_path / "a.png")
    result = explain_image(Detector(model), str(tmp_path / "a.png"), str(tmp_path / "out"), methods=("tiles", "gradcam++"))
    assert result.files == {} and not (tmp_path / "out").exists()
    assert result.skipped == {m: f"nanny: the {m} map is not finite (the network gave NaN or infinite values)"
                              for m in ("tiles", "gradcam++")}
