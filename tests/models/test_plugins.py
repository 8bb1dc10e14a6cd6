"""Architectures of your own: registered from a module outside fakescope, found by the CLI through a plugin."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from plugin_helpers import PLUGIN
from torch import nn
from typer.testing import CliRunner

from fakescope.errors import ConfigError
from fakescope.models import InputPolicy, architecture_info, register_model, registry


def _fakescope(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fakescope", *args], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, check=False)


def test_a_model_whose_architecture_is_not_imported_fails_in_one_line_that_says_how(plugin, image_factory, tmp_path):
    _, model = plugin
    image = image_factory.file(tmp_path / "a.png")
    proc = _fakescope("detect", "-m", str(model), "--no-provenance", str(image))  # runtime auto: ONNX first
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Warning" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: unknown architecture 'qa_tiny_conv'")
    assert "import its module first, or name the module in FAKESCOPE_PLUGINS or a 'fakescope.models' entry point" in proc.stderr


def test_models_info_shows_the_config_without_the_architectures_module(plugin):
    """What a model needs (its architecture, kwargs, input policy) is readable before its plugin is installed."""
    import json

    _, model = plugin
    proc = _fakescope("models", "info", str(model))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["architecture"], info["input"]["crop_size"], info["location"]) == ("qa_tiny_conv", 48, str(model))


def test_fakescope_plugins_imports_the_architecture_for_the_cli(plugin, image_factory, tmp_path):
    folder, model = plugin
    image = image_factory.file(tmp_path / "a.png")
    env = {"FAKESCOPE_PLUGINS": "qa_plugin", "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    proc = _fakescope("detect", "-m", str(model), "--no-provenance", "-f", "jsonl", str(image), **env)
    assert proc.returncode == 0, proc.stderr
    assert '"model": "qa"' in proc.stdout
    broken = _fakescope("models", "list", **{**env, "FAKESCOPE_PLUGINS": "qa_plugin, qa_missing"})
    assert broken.returncode == 2
    assert broken.stderr == ("error: FAKESCOPE_PLUGINS: cannot import 'qa_missing' "
                             "(ModuleNotFoundError: No module named 'qa_missing')\n")


def test_an_entry_point_registers_the_architecture(plugin, tmp_path):
    """An installed package declaring `[project.entry-points."fakescope.models"]` (its dist-info, written here)."""
    folder, _ = plugin
    info = tmp_path / "qa_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qa-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fakescope.models]\nqa = qa_plugin\nbroken = qa_missing\n")
    proc = _fakescope("models", "list", PYTHONPATH=os.pathsep.join([str(tmp_path), str(folder), os.environ.get("PYTHONPATH", "")]))
    assert proc.returncode == 0, proc.stderr
    assert any(line.split() == ["qa_tiny_conv", "A", "one-layer", "conv", "net", "of", "a", "plugin."]
               for line in proc.stdout.splitlines())
    assert proc.stderr == ("warning: entry point broken (qa_missing): cannot load "
                           "(ModuleNotFoundError: No module named 'qa_missing')\n")


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations in a test stay in it."""
    architecture_info("test_tiny")  # the zoo registered first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


@pytest.mark.usefixtures("scratch_registry")
def test_a_builtin_name_is_refused_not_silently_replaced():
    def resnet50(pretrained=False, **kwargs):
        return nn.Identity()

    with pytest.raises(ConfigError, match=rf"^architecture 'resnet50' of {__name__} clashes with the one "
                                          r"fakescope\.models\.families registers; give your builder another name$"):
        register_model()(resnet50)
    assert architecture_info("resnet50").builder.__module__ == "fakescope.models.families"


def test_a_builtin_name_registered_before_the_zoo_is_refused_when_the_zoo_registers(tmp_path):
    """The zoo (and timm) is imported only when first needed: a plugin's 'resnet50' may come first."""
    (tmp_path / "qa_clash.py").write_text(PLUGIN.replace("def qa_tiny_conv(", "def resnet50("))
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import qa_clash\n"
              "assert 'timm' not in sys.modules\n"
              "from fakescope.models import create_model; create_model('resnet50')")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == ("fakescope.errors.ConfigError: architecture 'resnet50' of qa_clash clashes with "
                                            "the one fakescope.models.families registers; give your builder another name")


@pytest.mark.usefixtures("scratch_registry")
def test_the_same_builder_registered_again_replaces_itself():
    """A module reloaded (a notebook cell run twice) registers the same builder again."""
    def qa_again(pretrained=False, **kwargs):
        """First."""
        return nn.Conv2d(3, 1, 1)

    register_model()(qa_again)
    qa_again.__doc__ = "Second."
    register_model(input=InputPolicy(crop_size=40))(qa_again)
    assert (architecture_info("qa_again").description, architecture_info("qa_again").input.crop_size) == ("Second.", 40)


@pytest.mark.usefixtures("scratch_registry")
def test_a_builder_without_a_name_or_one_building_no_module_is_refused_in_one_line():
    """A lambda would register as '<lambda>', which no saved model could name; None would fail as an AttributeError."""
    import functools

    from fakescope.models import create_model

    def qa_nothing(pretrained=False):
        return None

    for builder in (lambda pretrained=False: nn.Identity(), functools.partial(qa_nothing)):
        with pytest.raises(ConfigError, match=r"^register_model: an architecture is named after its builder, so register "
                                              r"a function defined with def, not "):
            register_model(builder)
    assert "<lambda>" not in registry._REGISTRY
    register_model(qa_nothing)
    with pytest.raises(ConfigError, match=r"^architecture 'qa_nothing' must build a torch\.nn\.Module, not a NoneType$"):
        create_model("qa_nothing")


def test_register_model_refuses_an_input_that_is_no_input_policy():
    with pytest.raises(ConfigError, match="^register_model: input must be an InputPolicy, not dict$"):
        register_model(input={"crop_size": 40})


class TwoClass(nn.Module):
    """A softmax-style head: two logits per input, against the registry's one."""

    def __init__(self, tuple_output: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.head = nn.Linear(4, 2)
        self.tuple_output = tuple_output

    def forward(self, x):
        features = self.conv(x)
        logits = self.head(features.mean((2, 3)))
        return (logits[:, 1], features) if self.tuple_output else logits


@pytest.mark.usefixtures("scratch_registry")
@pytest.mark.parametrize(("tuple_output", "runtime", "got"), [
    (False, "torch", "shape (4, 2)"), (False, "onnx", "shape (4, 2)"), (True, "torch", "a tuple")])
def test_a_network_without_one_logit_per_input_is_named_not_a_traceback(tmp_path, image_factory, tuple_output, runtime, got):
    from fakescope.cli import app
    from fakescope.models import ModelConfig, save_model

    if runtime == "onnx":
        pytest.importorskip("onnxruntime")

    def qa_two_class(pretrained=False, **kwargs):
        return TwoClass(**kwargs)

    register_model(input=InputPolicy(crop_size=32, grid=2))(qa_two_class)
    config = ModelConfig(name="two", architecture="qa_two_class", architecture_kwargs={"tuple_output": tuple_output},
                         input=InputPolicy(crop_size=32, grid=2))
    save_model(TwoClass(tuple_output), config, tmp_path / "m")
    image = image_factory.file(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["detect", "-m", str(tmp_path / "m"), "--runtime", runtime, "--no-provenance", str(image)])
    assert (result.exit_code, result.stderr) == (2, (
        f"error: architecture 'qa_two_class' must return one logit of P(ai) per input, shape (4,), not {got} "
        "(for a two-class head return logits[:, 1] - logits[:, 0])\n"))


@pytest.mark.usefixtures("scratch_registry")
def test_training_a_two_logit_network_stops_in_one_line(tmp_path, image_factory):
    import pandas as pd

    from fakescope.train import TrainConfig, train

    def qa_two_class(pretrained=False, **kwargs):
        return TwoClass(**kwargs)

    register_model(input=InputPolicy(crop_size=32, grid=2))(qa_two_class)
    rows = pd.DataFrame([{"uri": str(image_factory.file(tmp_path / f"{i}.png", seed=i)), "label": ("real", "ai")[i % 2],
                          "split": ("train", "val")[i // 4], "source": "synthetic", "generator": None} for i in range(8)])
    cfg = TrainConfig(manifest="memory", out=str(tmp_path / "run"), architecture="qa_two_class", pretrained=False, epochs=1,
                      batch_size=4, num_workers=0, device="cpu")
    with pytest.raises(ConfigError, match=r"^architecture 'qa_two_class' must return one logit of P\(ai\) per input, "
                                          r"shape \(2,\), not shape \(2, 2\)"):  # the two-tile check as it is built
        train(cfg, rows, progress=False)


@pytest.mark.usefixtures("scratch_registry")
def test_editing_a_custom_architecture_exports_it_again(tmp_path, monkeypatch, image_factory):
    """The ONNX cache key covers the registering module's source, not only the weights: no stale export runs."""
    import importlib

    from fakescope.detector import Detector
    from fakescope.models import ModelConfig, create_model, save_model

    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "qa_edited.py").write_text(PLUGIN.replace("qa_tiny_conv", "qa_edited"))
    module = importlib.import_module("qa_edited")
    save_model(create_model("qa_edited"), ModelConfig(name="edited", architecture="qa_edited",
                                                      input=InputPolicy(crop_size=48, grid=2)), tmp_path / "m")
    image = image_factory.pil(seed=3)
    before = Detector.load(tmp_path / "m", device="cpu", runtime="onnx", provenance=False).predict_logits([image])
    (tmp_path / "qa_edited.py").write_text(PLUGIN.replace("qa_tiny_conv", "qa_edited").replace(
        "return self.head(features.mean((2, 3))).squeeze(-1)", "return -self.head(features.mean((2, 3))).squeeze(-1)"))
    importlib.reload(module)
    after = Detector.load(tmp_path / "m", device="cpu", runtime="onnx", provenance=False).predict_logits([image])
    torch_logits = Detector.load(tmp_path / "m", device="cpu", runtime="torch", provenance=False).predict_logits([image])
    assert after == pytest.approx(-before, abs=1e-5) and after == pytest.approx(torch_logits, abs=1e-5)
    assert len(list((tmp_path / "cache" / "onnx").glob("qa_edited-*.onnx"))) == 2


@pytest.mark.usefixtures("scratch_registry")
def test_a_builder_whose_pretrained_argument_has_no_default_builds_trains_and_loads(tmp_path):
    """Loading passes no weights choice; `pretrained=False` must still reach a builder that requires the argument."""
    from plugin_helpers import FeatureHead

    from fakescope.models import ModelConfig, create_model, load_model, save_model
    from fakescope.models.registry import create_checked

    class Conv(FeatureHead):
        def __init__(self, width=4):
            super().__init__()
            self.features, self.head = nn.Conv2d(3, width, 3, stride=4), nn.Linear(width, 1)

    seen = []

    @register_model(input=InputPolicy(crop_size=32, grid=1))
    def qa_required(pretrained, width=4):
        seen.append(pretrained)
        return Conv(width)

    assert create_checked("qa_required", 32, width=3).features.out_channels == 3  # how training builds it
    save_model(create_model("qa_required", width=5), ModelConfig(name="req", architecture="qa_required",
               architecture_kwargs={"width": 5}, input=InputPolicy(crop_size=32, grid=1)), tmp_path / "m")
    assert load_model(tmp_path / "m").network.features.out_channels == 5
    assert seen == [False, False, False]


@pytest.mark.usefixtures("scratch_registry")
def test_register_model_also_decorates_bare_as_timms_does():
    @register_model
    def qa_bare(pretrained=False, **kwargs):
        """Registered without parentheses."""
        return nn.Conv2d(3, 1, 1)

    assert isinstance(qa_bare(), nn.Conv2d)
    info = architecture_info("qa_bare")
    assert (info.description, info.input) == ("Registered without parentheses.", InputPolicy())
