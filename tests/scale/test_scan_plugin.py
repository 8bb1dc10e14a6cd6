"""A model of an architecture of your own, found through FAKESCOPE_PLUGINS, scanned by both engines and runtimes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fakescope.scale.records import read_results


@pytest.fixture(scope="module")
def plugin_env(plugin: tuple[Path, Path]) -> tuple[dict[str, str], Path]:
    """(the environment that names module `qa_plugin` in FAKESCOPE_PLUGINS, a model folder of its architecture)."""
    folder, model = plugin
    env = {"FAKESCOPE_PLUGINS": "qa_plugin", "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    return env, model


def _scan(folder: Path, out: Path, model: Path, env: dict[str, str], *args: str) -> pd.DataFrame:
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"OMP_NUM_THREADS": "1"} | env
    done = subprocess.run([sys.executable, "-m", "fakescope", "scan", str(folder), "--out", str(out), "-m", str(model),
                           "--no-provenance", "--device", "cpu", *args],
                          capture_output=True, text=True, timeout=240, env=environ, check=False)
    assert done.returncode == 1, done.stderr[-2000:]  # broken.jpg
    assert "scanned 8  failed 1  skipped (done before) 0" in done.stdout
    return read_results(out).sort_values("path").reset_index(drop=True)


def _same_rows(ours: pd.DataFrame, theirs: pd.DataFrame) -> None:
    """Equal but for float noise: onnxruntime matches torch to 1e-4, and scores are stored to 6 decimals."""
    pd.testing.assert_frame_equal(ours.drop(columns="evidence"), theirs.drop(columns="evidence"), rtol=0, atol=1e-4)


@pytest.fixture(scope="module")
def torch_rows(plugin_env, module_image_folder, tmp_path_factory) -> pd.DataFrame:
    """The local engine's rows for `module_image_folder` on the torch runtime: what the other runs must equal."""
    env, model = plugin_env
    return _scan(module_image_folder, tmp_path_factory.mktemp("torch") / "out", model, env, "--runtime", "torch")


def test_the_local_engine_scans_a_plugin_architecture_on_both_runtimes(plugin_env, module_image_folder, torch_rows, tmp_path):
    env, model = plugin_env
    onnx_rows = _scan(module_image_folder, tmp_path / "onnx", model, env, "--runtime", "onnx")
    assert set(torch_rows["model"]) == {"qa"} and torch_rows["score"].notna().sum() == 7
    _same_rows(onnx_rows, torch_rows)


@pytest.mark.slow
def test_the_ray_engine_scans_a_plugin_architecture_in_its_actors(plugin_env, module_image_folder, torch_rows, tmp_path):
    pytest.importorskip("ray")
    env, model = plugin_env
    distributed = _scan(module_image_folder, tmp_path / "ray", model, env, "--runtime", "onnx", "--engine", "ray",
                        "--actors", "1")
    _same_rows(distributed, torch_rows)
