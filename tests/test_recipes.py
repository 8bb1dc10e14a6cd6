"""The recipe scripts of recipes/default: clear one-line errors where their inputs are missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).parents[1] / "recipes" / "default"


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(RECIPES / script), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd, check=False)


def _fails_cleanly(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr, done.stderr


@pytest.mark.parametrize(("script", "args"), [("prepare.py", ["--out", "out"]), ("independent_style.py", [])])
def test_a_missing_shared_folder_is_named(script, args, tmp_path):
    done = _run(script, "--shared", str(tmp_path / "nowhere"), *args, cwd=tmp_path)
    _fails_cleanly(done, f"error: {tmp_path / 'nowhere'} lacks faces-ffhq128-vs-stylegan2, real-lfw")


def test_prepare_refuses_to_do_nothing_or_step_2_without_step_1(tmp_path):
    _fails_cleanly(_run("prepare.py", "--out", str(tmp_path)), "nothing to do")
    _fails_cleanly(_run("prepare.py", "--out", str(tmp_path), "--taef2", str(tmp_path)), "run step 1 (--shared) first")


@pytest.mark.parametrize("script", ["linear_probe.py", "select_recipe.py"])
def test_a_missing_prepared_manifest_is_one_line(script, tmp_path):
    args = ["--out", str(tmp_path / "out")] if script == "select_recipe.py" else []
    _fails_cleanly(_run(script, *args, cwd=tmp_path), "error: no such file or folder: data/default/manifest.csv")


def test_gpu_sweep_names_an_unknown_variant(tmp_path):
    _fails_cleanly(_run("gpu_sweep.py", "--out", str(tmp_path), "--variants", "shipped,nope"), "unknown variant(s) nope")
