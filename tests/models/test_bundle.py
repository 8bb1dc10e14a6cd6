"""The model format: save/load round trips, single-file models, clean failures, hf:// offline, push and load through a loopback Hub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import fakescope
from fakescope.detector import Detector
from fakescope.errors import ConfigError, ModelLoadError, StorageError, UnknownModelError
from fakescope.models import (
    DEFAULT_MODEL,
    ModelConfig,
    bundled_models,
    create_model,
    load_model,
    push_model,
    resolve_model,
)
from fakescope.models.bundle import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from fakescope.models.config import FORMAT_VERSION

REVISION = "0123456789abcdef0123456789abcdef01234567"


def _outputs(location) -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        return load_model(location).network(x)


@pytest.fixture(scope="module")
def reference_logits(tiny_model_dir: Path) -> torch.Tensor:
    return _outputs(tiny_model_dir)


def test_folder_round_trip_gives_identical_outputs(tiny_model_dir, reference_logits):
    """The fixture saved `create_model("test_tiny")` right after seeding torch with 0."""
    loaded = load_model(tiny_model_dir)
    assert not loaded.network.training
    assert loaded.location == str(tiny_model_dir)
    config = loaded.config
    assert (config.name, config.architecture, config.input.crop_size) == ("test-tiny", "test_tiny", 64)
    assert loaded.config.calibration.temperature == 0.5
    torch.manual_seed(0)
    again = create_model("test_tiny").eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(again(x), reference_logits)
    assert (tiny_model_dir / CARD_FILE).read_text().startswith("# test-tiny")


def test_sha256_of_the_weights_is_recorded(tiny_model_dir):
    saved = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    actual = hashlib.sha256((tiny_model_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert saved["weights_sha256"] == actual
    assert load_model(tiny_model_dir).config.weights_sha256 == actual


def test_saved_weights_are_as_readable_as_the_config(tiny_model_dir):
    """safetensors writes its file 0600, so a model trained by one user could not be served by another."""
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {name: (tiny_model_dir / name).stat().st_mode & 0o777 for name in (WEIGHTS_FILE, CONFIG_FILE)}
    assert modes == {WEIGHTS_FILE: 0o666 & ~umask, CONFIG_FILE: 0o666 & ~umask}


def test_single_safetensors_file_loads_from_its_header(tiny_model_dir, reference_logits, tmp_path):
    lone = tmp_path / "my-detector.safetensors"
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, lone)
    loaded = load_model(lone)
    assert (loaded.config.name, loaded.config.architecture, loaded.location) == ("test-tiny", "test_tiny", str(lone))
    assert loaded.config.weights_sha256 is None  # the header cannot hold its own hash
    assert torch.equal(_outputs(lone), reference_logits)


def test_folder_without_config_falls_back_to_the_header(tiny_model_dir, reference_logits, tmp_path):
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    assert load_model(tmp_path).config.name == "test-tiny"
    assert torch.equal(_outputs(tmp_path), reference_logits)


def test_weights_of_another_architecture_are_refused(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    ModelConfig(name="liar", architecture="mobilenet_v2").save(tmp_path / CONFIG_FILE)
    with pytest.raises(ModelLoadError, match="weights do not fit mobilenet_v2"):
        load_model(tmp_path)


def test_a_lazy_model_refuses_such_weights_when_built_and_a_detector_at_load(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    ModelConfig(name="liar", architecture="mobilenet_v2").save(tmp_path / CONFIG_FILE)
    lazy = load_model(tmp_path, lazy=True)
    assert not lazy.built
    with pytest.raises(ModelLoadError, match="weights do not fit mobilenet_v2"):
        lazy.network  # noqa: B018
    with pytest.raises(ModelLoadError, match="weights do not fit mobilenet_v2"):
        Detector.load(tmp_path, device="cpu")


def test_broken_model_files_fail_cleanly(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"definitely not safetensors")
    with pytest.raises(ModelLoadError, match="not a safetensors file"):
        load_model(tmp_path / "junk.safetensors")
    (tmp_path / "detector.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")  # an export's first bytes: was "header too large"
    with pytest.raises(ModelLoadError, match=r"detector.onnx: an ONNX export, not a model: give the model folder or its "
                                             r"model.safetensors \(--runtime onnx exports"):
        load_model(tmp_path / "detector.onnx")
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ModelLoadError, match="no fakescope config"):
        load_model(tmp_path / "plain.safetensors")
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ModelLoadError, match=f"no {WEIGHTS_FILE} inside"):
        load_model(tmp_path / "empty-folder")


def test_invalid_config_is_a_config_error(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"name": "x", "architecture": "test_tiny", "colour": "red"}))
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path)
    assert str(caught.value) == (f"{tmp_path / CONFIG_FILE}: invalid model config: unknown key(s): 'colour' "
                                 "(written by a newer fakescope? upgrade it)")
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"name": "x", "architecture": "test_tiny", "input": {"gamma": 2}}))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in 'input': 'gamma' \(written by a newer fakescope"):
        load_model(tmp_path)
    with pytest.raises(ConfigError, match=r"^band must be a pair \[low, high\] with 0 <= low <= 0.8 \(the threshold\) <= "
                                          r"high <= 1, got \[0.3, 0.7\]$"):
        ModelConfig(name="x", architecture="test_tiny", threshold=0.8, band=(0.3, 0.7))



@pytest.mark.parametrize(("change", "message"), [
    (lambda c: "fakescope", "must be a JSON object of settings, not a str"),
    (lambda c: [c], "must be a JSON object of settings, not a list"),
    (lambda c: {**c, "input": [64, 2]}, "'input' must be a JSON object, not a list"),
    (lambda c: {**c, "calibration": "temperature"}, "'calibration' must be a JSON object, not a str"),
    (lambda c: {**c, "architecture_kwargs": ["width"]}, "'architecture_kwargs' must be a JSON object, not a list"),
    (lambda c: {**c, "band": [0.3]}, "band must be two numbers [low, high], got [0.3]"),
    (lambda c: {**c, "band": "0.3-0.7"}, "band must be two numbers [low, high], got '0.3-0.7'"),
])
def test_a_config_of_the_wrong_shape_is_one_line_naming_the_file_and_key(tiny_model_dir, tmp_path, change, message):
    """Not a bare ValueError or AttributeError from deep inside from_dict; in config.json or the weights' header alike."""
    config = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(change(config)))
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path, lazy=True)
    assert str(caught.value) == f"{tmp_path / CONFIG_FILE}: invalid model config: {message}"
    state = {k: v.contiguous() for k, v in create_model("test_tiny").state_dict().items()}
    save_file(state, tmp_path / "one.safetensors", metadata={"fakescope_config": json.dumps(change(config))})
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path / "one.safetensors", lazy=True)
    assert str(caught.value) == f"{tmp_path / 'one.safetensors'}: invalid model config: {message}"


def test_a_header_config_that_is_not_json_names_the_file(tmp_path):
    save_file({"w": torch.zeros(2)}, tmp_path / "one.safetensors", metadata={"fakescope_config": "{name: x"})
    with pytest.raises(ConfigError, match=r"one\.safetensors: the fakescope config in its header is not valid JSON \("):
        load_model(tmp_path / "one.safetensors")

@pytest.mark.parametrize(("key", "value", "message"), [
    ("crop_size", [64, 96], "input crop_size must be a positive integer (tiles are square), got (64, 96)"),
    ("crop_size", 0, "input crop_size must be a positive integer (tiles are square), got 0"),
    ("crop_size", 64.5, "input crop_size must be a positive integer (tiles are square), got 64.5"),
    ("grid", "2", "input grid must be a positive integer, got '2'"),
    ("grid", 10000, "input grid must be a whole number from 1 to 32 (tiles per side), got 10000"),
    ("mean", [0.5], ("input mean must be 3 numbers, one per RGB channel (a network for one channel converts its RGB "
                     "input itself), got (0.5,)")),
    ("std", [0.2, 0.0, 0.2], "input std must be positive, got (0.2, 0.0, 0.2)"),
])
def test_an_input_policy_it_cannot_tile_by_fails_at_load_in_one_line(tiny_model_dir, tmp_path, image_factory, key, value,
                                                                     message):
    """Not a TypeError from the tiling code at the first image (a non-square crop, a greyscale mean)."""
    from fakescope.cli import app

    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    config = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    config["input"][key] = value
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["detect", "-m", str(tmp_path), str(image_factory.file(tmp_path / "a.png"))])
    assert (result.exit_code, result.stderr) == (2, f"error: {tmp_path / CONFIG_FILE}: {message}\n")


_POSITIVE = "calibration temperature must be a positive number and bias a number, got {} and 0.0"
_STEPS = "isotonic calibration needs as many x as y values (at least one), x ascending and y in [0, 1]; got {} x and {} y"


@pytest.mark.parametrize(("calibration", "message"), [
    ({"method": "temperature", "temperature": 0}, _POSITIVE.format(0)),
    ({"method": "temperature", "temperature": -1.0}, _POSITIVE.format(-1.0)),
    ({"method": "isotonic"}, _STEPS.format(0, 0)),
    ({"method": "isotonic", "x": [0, 1], "y": [0.2]}, _STEPS.format(2, 1)),
    ({"method": "platt"}, "unknown calibration method 'platt' (use temperature, isotonic or none)"),
])
def test_a_calibration_it_cannot_apply_fails_at_load_in_one_line(tiny_model_dir, tmp_path, image_factory, calibration,
                                                                 message):
    """Not a silent P(ai) = 1 from a division by zero, nor a numpy traceback at the first image."""
    from fakescope.cli import app

    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    config = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    config["calibration"] = calibration
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["detect", "-m", str(tmp_path), str(image_factory.file(tmp_path / "a.png"))])
    assert (result.exit_code, result.stderr) == (2, f"error: {tmp_path / CONFIG_FILE}: {message}\n")


def test_architecture_kwargs_the_builder_does_not_take_fail_in_one_line(tiny_model_dir, tmp_path, image_factory):
    """A builder parameter renamed since the model was saved: not a TypeError traceback."""
    from fakescope.cli import app

    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    config = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    config["architecture_kwargs"] = {"drop_rates": 0.1}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    result = CliRunner().invoke(app, ["detect", "-m", str(tmp_path), str(image_factory.file(tmp_path / "a.png"))])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / WEIGHTS_FILE}: cannot build test_tiny with architecture_kwargs "
                                    "{'drop_rates': 0.1} (")
    assert "drop_rates" in result.stderr.partition("(")[2]


def test_config_dict_round_trip(tiny_model_dir):
    config = load_model(tiny_model_dir).config
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_saved_config_records_its_format_version_and_one_without_it_reads_as_layout_1(tiny_model_dir, tmp_path):
    from safetensors import safe_open

    assert json.loads((tiny_model_dir / CONFIG_FILE).read_text())["format_version"] == FORMAT_VERSION == 1
    with safe_open(tiny_model_dir / WEIGHTS_FILE, framework="numpy") as f:
        assert json.loads(f.metadata()["fakescope_config"])["format_version"] == 1
    shipped = json.loads((resolve_model(DEFAULT_MODEL) / CONFIG_FILE).read_text())
    assert "format_version" not in shipped and load_model(DEFAULT_MODEL, lazy=True).config.name == DEFAULT_MODEL
    config = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    del config["format_version"]
    assert ModelConfig.from_dict(config) == load_model(tiny_model_dir, lazy=True).config


@pytest.mark.parametrize(("version", "message"), [
    (2, f"model format_version 2 is newer than fakescope {fakescope.__version__} reads (1): upgrade fakescope"),
    ("1", "invalid model config: format_version must be a whole number from 1, got '1'"),
    (0, "invalid model config: format_version must be a whole number from 1, got 0"),
    (True, "invalid model config: format_version must be a whole number from 1, got True"),
])
def test_a_config_of_a_format_version_it_does_not_know_is_refused_in_one_line(tiny_model_dir, tmp_path, image_factory,
                                                                               version, message):
    """A newer layout (renamed or re-meant keys) would be misread: config.json, the weights' header and the CLI refuse it."""
    from fakescope.cli import app

    config = {**json.loads((tiny_model_dir / CONFIG_FILE).read_text()), "format_version": version}
    shutil.copy(tiny_model_dir / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path, lazy=True)
    assert str(caught.value) == f"{tmp_path / CONFIG_FILE}: {message}"
    state = {k: v.contiguous() for k, v in create_model("test_tiny").state_dict().items()}
    save_file(state, tmp_path / "one.safetensors", metadata={"fakescope_config": json.dumps(config)})
    with pytest.raises(ConfigError) as caught:
        load_model(tmp_path / "one.safetensors", lazy=True)
    assert str(caught.value) == f"{tmp_path / 'one.safetensors'}: {message}"
    result = CliRunner().invoke(app, ["detect", "-m", str(tmp_path), str(image_factory.file(tmp_path / "a.png"))])
    assert result.exit_code == 2 and result.stderr == f"error: {tmp_path / CONFIG_FILE}: {message}\n"


def test_the_shipped_network_gives_its_recorded_logits_with_the_installed_timm():
    """The bundled weights are only a state dict: timm builds the network (TF "same" padding, batch-norm-activation
    layers, head). A timm release that changes any of that moves these logits (the MODEL_CARD's figures with them);
    pyproject's timm range is the one they were checked in (MODEL_CARD, Reproduce)."""
    network = load_model(DEFAULT_MODEL).network
    square = torch.arange(2 * 3 * 112 * 112, dtype=torch.float32).reshape(2, 3, 112, 112).mul(0.001).sin()
    odd = torch.arange(3 * 150 * 130, dtype=torch.float32).reshape(1, 3, 150, 130).mul(0.0007).cos()  # uneven padding
    with torch.inference_mode():
        logits = torch.cat([network(square), network(odd)])
    torch.testing.assert_close(logits, torch.tensor([0.817720, 0.876215, 6.766688]), rtol=0, atol=1e-4)


def test_names_and_missing_paths(tmp_path):
    assert DEFAULT_MODEL in bundled_models()
    assert resolve_model(None) == resolve_model(DEFAULT_MODEL)
    assert (resolve_model(None) / WEIGHTS_FILE).is_file()
    with pytest.raises(UnknownModelError, match="did you mean fakescope-default"):
        resolve_model("fakescope-defualt")
    with pytest.raises(ModelLoadError, match="model path not found"):
        load_model(str(tmp_path / "nowhere" / "model"))
    with pytest.raises(ModelLoadError, match="model path not found"):
        load_model("missing.safetensors")


def test_the_repository_model_card_is_the_bundled_one():
    """The root MODEL_CARD.md is a link to the card inside the bundled model, so the two never drift."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / "pyproject.toml").is_file():
        pytest.skip("not running from a source checkout")
    bundled = repo / "src" / "fakescope" / "weights" / DEFAULT_MODEL / CARD_FILE
    assert (repo / CARD_FILE).is_symlink() and (repo / CARD_FILE).resolve() == bundled.resolve()


def test_the_bundled_model_card_states_its_configs_figures():
    """Size, hash, input policy, calibration and decision rule in the card's table are the shipped config's."""
    folder = resolve_model(DEFAULT_MODEL)
    config = load_model(DEFAULT_MODEL, lazy=True).config
    card = (folder / CARD_FILE).read_text()
    weights = folder / WEIGHTS_FILE
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == config.weights_sha256
    cal, policy = config.calibration, config.input
    lo, hi = config.band
    for stated in (f"`{config.architecture}`", f"{weights.stat().st_size / 1e6:.1f} MB", f"sha256 `{config.weights_sha256[:8]}...`",
                   f"{policy.crop_size} px tiles", f"at most {policy.grid} x {policy.grid} per image",
                   f"side under {policy.crop_size} px are upscaled" if policy.upscale_small else "scored whole",
                   f"{cal.method} scaling",
                   f"T = {cal.temperature:.3f}, bias = {cal.bias:.3f}", f"threshold {config.threshold:g}",
                   f"uncertain band [{lo:g}, {hi:g})", f"`ai` at P >= {hi:g}, `real` below {lo:g}"):
        assert stated in card, f"MODEL_CARD.md does not say {stated!r}"
    test = config.metrics["test"]["overall"]
    measured = {"AUC": f"{test['auc']:.3f}", "average precision": f"{test['ap']:.3f}", "equal error rate": f"{test['eer']:.3f}",
                "balanced accuracy": f"{test['balanced_accuracy']:.3f}", "ECE (15 bins)": f"{test['ece']:.3f}",
                "confusion [[TN, FP], [FN, TP]]": str(test["confusion"])}
    for metric, value in measured.items():
        assert f"| {metric} | {value} |" in card, f"MODEL_CARD.md's {metric} is not the config's {value}"
    assert f"On the test split it never trained on ({test['n']:,} images" in card


def _populate_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """Lay out a downloaded hub snapshot the way huggingface_hub stores it (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_hf_reference_loads_offline_from_the_cache(tiny_model_dir, reference_logits, hf_offline_cache):
    snapshot = _populate_hub_cache(hf_offline_cache, "fakescope-test/tiny", tiny_model_dir)
    loaded = load_model("hf://fakescope-test/tiny")
    assert Path(loaded.location) == snapshot
    assert loaded.config.name == "test-tiny"
    assert torch.equal(_outputs("hf://fakescope-test/tiny"), reference_logits)
    assert Path(load_model(f"hf://fakescope-test/tiny@{REVISION}").location) == snapshot


def test_missing_hf_repo_offline_is_a_model_load_error(hf_offline_cache):
    with pytest.raises(ModelLoadError, match="^hf://nobody/nothing: not in the local cache, and HF_HUB_OFFLINE is set "):
        load_model("hf://nobody/nothing")


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch) -> Iterator[str]:
    """HF_ENDPOINT on a loopback port held bound but not listening (refused, and no one else takes it while the test
    runs), a throwaway HF_HOME and a dummy token."""
    from huggingface_hub import constants

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_TOKEN", "hf_fakescope_test_dummy")
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))  # read at import, as ENDPOINT
        yield endpoint


def test_push_to_unreachable_hub_raises_storage_error(tiny_model_dir, unreachable_hub):
    with pytest.raises(StorageError, match="could not push to hf://owner/name: "):
        push_model(tiny_model_dir, "owner/name")


def test_hf_load_from_an_unreachable_hub_says_so(unreachable_hub):
    with pytest.raises(ModelLoadError, match=rf"^hf://owner/name: not in the local cache, and the Hub \({unreachable_hub}\) "
                                             r"could not be reached: no network\?$"):
        load_model("hf://owner/name")


def test_models_push_cli_fails_with_one_clean_line(tiny_model_dir, unreachable_hub):
    from fakescope.cli import app

    result = CliRunner().invoke(app, ["models", "push", str(tiny_model_dir), "hf://owner/name"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not push to hf://owner/name")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("repo", ["owner/name/extra", "owner/my model", "-owner/name", ""])
def test_models_push_refuses_a_repo_id_the_hub_would_in_one_line_of_its_own(tiny_model_dir, unreachable_hub, repo):
    """The Hub library's own message pointed at an argument the command line has not (`repo_type`)."""
    from fakescope.cli import app

    result = CliRunner().invoke(app, ["models", "push", str(tiny_model_dir), f"hf://{repo}"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"error: {repo!r} is not a Hub repo: give owner/name (letters, digits, '-', '_' and '.', "
                             "neither starting nor ending with '-' or '.')\n")


def test_push_without_a_token_says_so_before_sending_anything(tiny_model_dir, unreachable_hub, monkeypatch, tmp_path):
    """It went to the Hub, which refused it (or, offline, named the connection error)."""
    from huggingface_hub import constants

    from fakescope.cli import app

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no `hf auth login` token (read at import)
    monkeypatch.chdir(tmp_path)  # no .env above it either
    result = CliRunner().invoke(app, ["models", "push", str(tiny_model_dir), "owner/name"])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == ("error: no Hugging Face token: set HF_TOKEN (a token with write access) in the environment "
                             "or a .env file, or run `hf auth login`\n")


def test_push_refuses_a_folder_without_a_model(tmp_path, unreachable_hub):
    with pytest.raises(ModelLoadError, match=f"no {WEIGHTS_FILE} inside"):
        push_model(tmp_path, "owner/name")
    with pytest.raises(ModelLoadError, match=f"model path not found: {tmp_path / 'gone'}$"):
        push_model(tmp_path / "gone", "owner/name")
    with pytest.raises(StorageError, match="could not push"):  # a bundled name is found, then the hub is tried
        push_model("fakescope-default", "owner/name")


def test_a_truncated_weights_file_is_named_unreadable_not_a_misfit(tiny_model_dir, tmp_path):
    shutil.copy(tiny_model_dir / CONFIG_FILE, tmp_path / CONFIG_FILE)
    data = (tiny_model_dir / WEIGHTS_FILE).read_bytes()
    (tmp_path / WEIGHTS_FILE).write_bytes(data[: len(data) - 100])
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["weights_sha256"] = None  # no recorded hash: safetensors itself notices the damage
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="not a readable safetensors file") as info:
        load_model(tmp_path)
    assert "do not fit" not in str(info.value) and "\n" not in str(info.value)


def test_weights_that_differ_from_the_recorded_sha256_are_refused(tiny_model_dir, tmp_path):
    """A flipped byte in a tensor still parses; only the recorded hash catches it."""
    shutil.copy(tiny_model_dir / CONFIG_FILE, tmp_path / CONFIG_FILE)
    data = bytearray((tiny_model_dir / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 differs from the weights_sha256"):
        load_model(tmp_path)
    lazy = load_model(tmp_path, lazy=True)  # the config alone is still readable
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        lazy.network  # noqa: B018
    if importlib.util.find_spec("onnxruntime"):  # runtime auto: said once, not first a warning that onnx fell back
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ModelLoadError, match="sha256 differs"):
                Detector.load(tmp_path, device="cpu", runtime="auto")
    lone = tmp_path / "lone.safetensors"  # a lone file carries no hash of itself, so it loads
    lone.write_bytes(bytes(data))
    assert load_model(lone).config.weights_sha256 is None


@pytest.fixture
def private_hub(tiny_model_dir, tmp_path, monkeypatch):
    """A loopback Hub serving `tiny_model_dir` as the private repo owner/private to one bearer token."""
    from huggingface_hub import constants

    files = {n: (tiny_model_dir / n).read_bytes() for n in (WEIGHTS_FILE, CONFIG_FILE)}
    token = "hf_fakescope_private_token"

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, send_body: bool = True):
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if send_body:
                self.wfile.write(body)

        def _serve(self, send_body: bool):
            given = self.headers.get("Authorization")
            if given and given != f"Bearer {token}":  # the Hub's answer to a token it does not know
                return self._reply(401, headers={"X-Error-Message": "Invalid credentials in Authorization header"})
            if given is None:
                return self._reply(401, headers={"X-Error-Code": "RepoNotFound"})
            path = self.path.partition("?")[0]
            if path.startswith("/api/models/owner/private/tree/"):
                tree = [{"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()} for n, d in files.items()]
                return self._reply(200, json.dumps(tree).encode(), {"Content-Type": "application/json"})
            if path.startswith("/api/models/owner/private"):
                info = {"id": "owner/private", "sha": REVISION, "siblings": [{"rfilename": n} for n in files]}
                return self._reply(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
            name = path.rpartition("/")[2]
            if not path.startswith("/owner/private/resolve/") or name not in files:
                return self._reply(404)
            etag = f'"{hashlib.sha256(files[name]).hexdigest()}"'
            self._reply(200, files[name], {"X-Repo-Commit": REVISION, "ETag": etag}, send_body)

        def do_HEAD(self):
            self._serve(send_body=False)

        def do_GET(self):
            self._serve(send_body=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)  # huggingface_hub reads these at import
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    yield token
    server.shutdown()
    server.server_close()


def test_hf_reference_downloads_a_private_repo_with_the_token_from_dotenv(private_hub, tmp_path, monkeypatch,
                                                                         reference_logits):
    from fakescope.io import storage

    with pytest.raises(ModelLoadError, match=r"^hf://owner/private: no such repo on the Hub, or a private one: check "
                                             r"the name, or set HF_TOKEN$"):
        load_model("hf://owner/private")  # no token anywhere: the hub answers 401
    monkeypatch.setenv("HF_TOKEN", "hf_fakescope_wrong_token")
    with pytest.raises(ModelLoadError, match=r"^hf://owner/private: the Hub refused the token \(401\)") as info:
        load_model("hf://owner/private")
    assert "wrong_token" not in str(info.value)
    monkeypatch.delenv("HF_TOKEN")
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"HF_TOKEN={private_hub}\n")
    monkeypatch.chdir(project)
    monkeypatch.setattr(storage, "_dotenv_loaded", False)
    loaded = load_model("hf://owner/private")
    assert Path(loaded.location).name == REVISION and loaded.config.name == "test-tiny"
    assert torch.equal(_outputs("hf://owner/private"), reference_logits)


@pytest.fixture
def loopback_hub(unreachable_hub, monkeypatch):
    """A Hub speaking its HTTP API on loopback, in place of the unreachable endpoint."""
    from hub_server import start_hub
    from huggingface_hub import constants

    server, state, endpoint = start_hub()
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    yield state
    server.shutdown()


def test_hf_load_failures_say_why_in_one_line(tiny_model_dir, loopback_hub):
    """Each failure named its exception class only ('(LocalEntryNotFoundError)'), not what to fix."""
    from fakescope.cli import app

    push_model(tiny_model_dir, "owner/tiny")
    loopback_hub.repos["owner/bare"], loopback_hub.commits["owner/bare"] = {"README.md": b"# bare"}, ["0" * 40]
    why = {"owner/nothing": "no such repo on the Hub, or a private one: check the name, or set a token with access",
           "owner/tiny@v9": "owner/tiny has no revision 'v9' (a branch, tag or commit)",
           "owner/bare": f"the repo holds no {WEIGHTS_FILE}, so it is no fakescope model",
           "owner/a/b": "not a Hub repo: give hf://owner/name or hf://owner/name@revision"}
    for ref, reason in why.items():
        result = CliRunner().invoke(app, ["models", "info", f"hf://{ref}"])
        assert (result.exit_code, result.stdout) == (2, "")
        assert result.stderr == f"error: hf://{ref}: {reason}\n"  # no progress bar before it: stderr is no terminal


def test_push_then_load_round_trips_through_the_hub_in_one_commit(tiny_model_dir, loopback_hub, reference_logits):
    url = push_model(tiny_model_dir, "owner/tiny")
    assert url.endswith("/owner/tiny") and len(loopback_hub.commits["owner/tiny"]) == 1  # weights, config, card together
    assert set(loopback_hub.repos["owner/tiny"]) == {WEIGHTS_FILE, CONFIG_FILE, "README.md"}
    assert loopback_hub.repos["owner/tiny"]["README.md"].startswith(b"---\nlicense: ")
    assert set(loopback_hub.tokens) == {"Bearer hf_fakescope_test_dummy"}
    assert torch.equal(_outputs("hf://owner/tiny"), reference_logits)


def test_a_hub_download_shows_its_progress_bars_only_as_progress_says(tiny_model_dir, loopback_hub, image_factory, tmp_path):
    """`detect --no-progress` (and a stderr that is no terminal) printed huggingface_hub's 'Fetching 3 files' bar."""
    from fakescope.cli import app

    push_model(tiny_model_dir, "owner/tiny")
    image = str(image_factory.file(tmp_path / "a.png"))
    for flags, shown in (["--no-progress"], False), ([], False), (["--progress"], True):
        shutil.rmtree(tmp_path / "hf-home", ignore_errors=True)  # downloaded afresh each time
        result = CliRunner().invoke(app, ["detect", "-m", "hf://owner/tiny", "-f", "jsonl", *flags, image])
        assert result.exit_code == 0, result.output
        assert "Fetching 3 files" in result.stderr if shown else result.stderr == ""
    from huggingface_hub.utils import are_progress_bars_disabled

    assert not are_progress_bars_disabled()  # the bars were this call's, not turned off for the process


def test_a_failed_push_leaves_the_hub_repo_as_it_was(tiny_model_dir, loopback_hub, tmp_path):
    from fakescope.models import create_model, save_model

    push_model(tiny_model_dir, "owner/tiny")
    before = dict(loopback_hub.repos["owner/tiny"])
    torch.manual_seed(7)
    retrained = tmp_path / "retrained"
    save_model(create_model("test_tiny"), load_model(tiny_model_dir).config, retrained)
    loopback_hub.reject = CONFIG_FILE  # the hub refuses any commit that writes a config (a server-side rule, say)
    with pytest.raises(StorageError, match="could not push to hf://owner/tiny: "):
        push_model(retrained, "owner/tiny")
    assert loopback_hub.repos["owner/tiny"] == before  # not the new weights beside the old config


@pytest.mark.parametrize("token", ["hf_fakescope_secret_987 \n", "hf_fakescope_secret_987\r"])
def test_a_malformed_hf_token_is_never_echoed_by_a_failed_push(tiny_model_dir, loopback_hub, monkeypatch, caplog, token):
    """A token pasted with a trailing newline cannot be sent; the HTTP library's error quotes the header."""
    from fakescope.cli import app

    monkeypatch.setenv("HF_TOKEN", token)
    result = CliRunner().invoke(app, ["models", "push", str(tiny_model_dir), "hf://owner/tiny"])
    assert result.exit_code != 0 and result.output.startswith("error: could not push to hf://owner/tiny: ")
    assert "fakescope_secret_987" not in result.output + caplog.text and loopback_hub.repos.get("owner/tiny") is None


def test_imagenet_weights_without_a_wheel_download_from_the_hub_for_users_online(loopback_hub):
    """`pretrained=True` for the zoo's timm-hub architectures fetches timm's ImageNet weights through the Hub API
    (here from the loopback Hub, as from huggingface.co), keeping the one-logit head fresh."""
    import timm
    from safetensors.torch import save

    torch.manual_seed(3)
    imagenet = timm.create_model("test_efficientnet")  # the architecture test_tiny builds, with its 1000 classes
    repo = imagenet.pretrained_cfg["hf_hub_id"]
    loopback_hub.repos[repo] = {"model.safetensors": save({k: v.contiguous() for k, v in imagenet.state_dict().items()})}
    loopback_hub.commits[repo] = ["fedcba9876543210fedcba9876543210fedcba98"]
    network = create_model("test_tiny", pretrained=True).backbone
    assert torch.equal(network.conv_stem.weight, imagenet.conv_stem.weight)
    assert torch.equal(network.bn2.running_mean, imagenet.bn2.running_mean)
    assert network.get_classifier().out_features == 1
    del loopback_hub.repos[repo]["model.safetensors"]  # a hub that does not have them: the one line that says what to do
    with pytest.raises(ModelLoadError, match=r"could not download ImageNet weights for test_efficientnet: .*--scratch") as info:
        create_model("test_tiny", pretrained=True)
    assert "\n" not in str(info.value)


def test_a_model_keys_its_onnx_cache_alike_built_or_not(tiny_model_dir):
    """One key per weights: an export cached after building (export --int8 does) is found by a lazy load, and back."""
    from fakescope.models.onnx import weights_key

    lazy, built = load_model(str(tiny_model_dir), lazy=True), load_model(str(tiny_model_dir))
    assert not lazy.built and built.built and weights_key(lazy) == weights_key(built)
