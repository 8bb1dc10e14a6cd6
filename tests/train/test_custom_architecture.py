"""A registered architecture of one's own: configured by `architecture_kwargs`, checked once when it is built."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
import yaml
from plugin_helpers import FeatureHead
from torch import nn
from train_helpers import train_config
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.detector import Detector
from fakescope.errors import ConfigError
from fakescope.models import InputPolicy, architecture_info, register_model, registry
from fakescope.train import TrainConfig, train


class WidthConv(FeatureHead):
    """One conv layer of `width` filters on `channels` input channels, and a head of `outputs` logits."""

    def __init__(self, width: int = 4, channels: int = 3, outputs: int = 1):
        super().__init__()
        self.features = nn.Conv2d(channels, width, 3, stride=4)
        self.head = nn.Linear(width, outputs)


def qa_width_conv(pretrained: bool | str = False, **kwargs) -> WidthConv:
    """A one-layer conv net whose width is a builder option."""
    return WidthConv(**kwargs)


@pytest.fixture(autouse=True)
def _registered(monkeypatch):
    architecture_info("test_tiny")  # the zoo registered first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model(input=InputPolicy(crop_size=32, grid=1))(qa_width_conv)


def _cfg(manifest, out, **kwargs) -> TrainConfig:
    return train_config(manifest, out, architecture="qa_width_conv", architecture_kwargs=kwargs, crop_size=None,
                        epochs=1, samples_per_epoch=32)


def test_architecture_kwargs_from_yaml_build_the_network_and_travel_with_the_model(manifest, tmp_path, image_factory):
    _cfg(manifest, tmp_path / "run").to_yaml(tmp_path / "train.yaml")
    recipe = yaml.safe_load((tmp_path / "train.yaml").read_text())
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**recipe, "architecture_kwargs": {"width": 6}}))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 0, result.output
    detector = Detector.load(tmp_path / "run" / "model", device="cpu", runtime="torch", provenance=False)
    assert detector.model.config.architecture_kwargs == {"width": 6}
    assert detector.torch_model.network.features.out_channels == 6
    assert 0.0 <= detector.predict(image_factory.pil()).probability <= 1.0


def test_resuming_with_other_architecture_kwargs_is_refused(manifest, tmp_path):
    train(_cfg(manifest, tmp_path, width=6), progress=False)
    with pytest.raises(ConfigError, match=re.escape("this run changes architecture_kwargs {'width': 6} -> {'width': 8}")):
        train(TrainConfig(**{**_cfg(manifest, tmp_path, width=8).__dict__, "resume": True}), progress=False)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"widht": 6}, "cannot build architecture 'qa_width_conv' with architecture_kwargs {'widht': 6}: "
                   "WidthConv.__init__() got an unexpected keyword argument 'widht'"),
    ({"channels": 1}, "architecture 'qa_width_conv' must take a batch of RGB tiles, shape (2, 3, 32, 32), but fails on it "
                      "(Given groups=1, weight of size [4, 1, 3, 3], expected input[2, 3, 32, 32] to have 1 channels, but "
                      "got 3 channels instead); a network for other channels converts its RGB input itself"),
    ({"outputs": 2}, "architecture 'qa_width_conv' must return one logit of P(ai) per input, shape (2,), not shape (2, 2) "
                     "(for a two-class head return logits[:, 1] - logits[:, 0])"),
])
def test_a_network_that_breaks_the_contract_is_refused_in_one_line_before_training(manifest, tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train(_cfg(manifest, tmp_path, **kwargs), progress=False)
    assert not (tmp_path / "train_config.yaml").exists()


@pytest.mark.parametrize(("value", "message"), [
    ("5", "training config key 'architecture_kwargs' must be a mapping of keyword names to values, got 5"),
    ("{1: 2}", "training config key 'architecture_kwargs' must be a mapping of keyword names to values, got {1: 2}"),
    ("{when: 2020-01-01}", "training config key 'architecture_kwargs' must hold JSON values"),
])
def test_cli_refuses_architecture_kwargs_that_are_no_mapping_of_json_values(tmp_path, value, message):
    (tmp_path / "train.yaml").write_text(f"manifest: m.csv\narchitecture_kwargs: {value}\n")
    result = CliRunner().invoke(app, ["train", str(tmp_path / "train.yaml"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1


def test_the_build_check_leaves_the_network_in_training_mode_and_its_batch_norm_untouched():
    network = registry.create_checked("test_tiny", 32)
    norms = [m for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    assert network.training and norms
    assert all(m.num_batches_tracked.item() == 0 and torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)


def qa_no_weights(width: int = 4) -> WidthConv:
    """A builder that takes no `pretrained` argument: it has no weights to load."""
    return WidthConv(width)


def test_pretrained_is_recorded_false_for_an_architecture_without_a_pretrained_source(manifest, tmp_path, caplog):
    register_model(input=InputPolicy(crop_size=32, grid=1))(qa_no_weights)
    cfg = replace(_cfg(manifest, tmp_path / "run"), architecture="qa_no_weights", pretrained=True)  # the default
    with pytest.raises(ConfigError, match=r"^architecture 'qa_no_weights' registers no pretrained_source, so it cannot "
                                          r"load the weights file w\.pt; train it with --scratch \(pretrained: false\)$"):
        train(replace(cfg, pretrained="w.pt"), progress=False)
    assert not (tmp_path / "run").exists()
    with caplog.at_level("WARNING", logger="fakescope"):
        saved = train(cfg, progress=False)
    assert ("architecture 'qa_no_weights' registers no pretrained_source, so it has no pretrained weights to load: "
            "trained from random weights, recorded as pretrained: false") in caplog.text
    assert saved.training["recipe"]["pretrained"] is False
    assert yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())["pretrained"] is False
    detector = Detector.load(tmp_path / "run" / "model", device="cpu", runtime="torch", provenance=False)  # built again
    assert detector.torch_model.network.features.out_channels == 4
