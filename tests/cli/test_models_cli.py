"""`fakescope models list` and `fakescope models info`."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.models import DEFAULT_MODEL, list_models


def test_models_list_shows_bundled_models_and_every_architecture():
    result = CliRunner().invoke(app, ["models", "list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "bundled models:" and lines[1].strip() == DEFAULT_MODEL
    listed = lines[lines.index("architectures:") + 1:]
    assert [line.split()[0] for line in listed] == list_models()
    assert any(line.split()[0] == "efficientnet_lite0" and "EfficientNet-Lite0" in line for line in listed)


def test_models_info_prints_the_bundled_config_by_default():
    result = CliRunner().invoke(app, ["models", "info"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["name"] == DEFAULT_MODEL and info["architecture"] == "efficientnet_lite0"
    assert info["location"].endswith(DEFAULT_MODEL)
    assert {"input", "calibration", "threshold", "band", "weights_sha256", "training", "metrics"} <= set(info)


def test_models_info_on_a_path(tiny_model_dir):
    result = CliRunner().invoke(app, ["models", "info", str(tiny_model_dir)])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert (info["name"], info["location"], info["input"]["crop_size"]) == ("test-tiny", str(tiny_model_dir), 64)


def test_models_info_unknown_model_is_one_clean_line():
    result = CliRunner().invoke(app, ["models", "info", "fakescope-defualt"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown model 'fakescope-defualt'; did you mean fakescope-default?"
    assert "Traceback" not in result.output


@pytest.mark.parametrize("verb", [["models", "info"], ["detect", "x.jpg"]])
def test_an_architecture_name_given_as_a_model_says_it_is_untrained(verb):
    """`models list` names architectures beside models; one given as a model was only 'unknown model'."""
    result = CliRunner().invoke(app, [*verb, "--model", "mobilenet_v2"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: unknown model 'mobilenet_v2'; known: fakescope-default (mobilenet_v2 is an "
                                     "architecture, not a trained model: train one with fakescope train and give the "
                                     "model folder it saves)")


def test_the_model_option_names_what_it_takes_as_models_info_does():
    """It said 'Registered model name', which `models list` uses for architectures, not models."""
    params = {p.name: p for p in typer.main.get_command(app).commands["models"].commands["info"].params}
    assert params["model_option"].help.startswith(params["model"].help.split(" (default")[0])


def test_models_info_also_takes_the_model_as_the_other_verbs_do(tiny_model_dir):
    for args in (["--model", str(tiny_model_dir)], ["-m", str(tiny_model_dir)]):
        result = CliRunner().invoke(app, ["models", "info", *args])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["location"] == str(tiny_model_dir)
    twice = CliRunner().invoke(app, ["models", "info", DEFAULT_MODEL, "--model", str(tiny_model_dir)])
    assert twice.exit_code == 2 and twice.stdout == ""
    assert twice.stderr == (f"error: the model is given twice, as {DEFAULT_MODEL!r} and --model {str(tiny_model_dir)!r}; "
                            "give it one way\n")
