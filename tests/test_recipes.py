"""The recipe scripts of recipes/default: prepare.py on a miniature shared folder, and clear errors."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

RECIPES = Path(__file__).parents[1] / "recipes" / "default"


def _run(script: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(RECIPES / script), *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd, check=False)


@pytest.fixture
def fails_cleanly(monkeypatch, capsys):
    """Run a script in this process as `python script.py ARGS` would (its folder first on sys.path; no new
    interpreter to import torch again) and check it exits non-zero with `message` on stderr, no traceback."""

    def check(script: str, *args: str, message: str, cwd: Path | None = None) -> None:
        monkeypatch.syspath_prepend(str(RECIPES))
        monkeypatch.setattr(sys, "argv", [str(RECIPES / script), *args])
        if cwd:
            monkeypatch.chdir(cwd)
        with pytest.raises(SystemExit) as stop:  # any other exception would have ended in a traceback
            runpy.run_path(str(RECIPES / script), run_name="__main__")
        code = stop.value.code
        stderr = capsys.readouterr().err + (f"{code}\n" if isinstance(code, str) else "")  # as Python prints it
        assert code not in (0, None) and "Traceback" not in stderr, stderr
        assert message in stderr, stderr

    return check


@pytest.mark.parametrize(("script", "args"), [("prepare.py", ["--out", "out"]), ("independent_style.py", [])])
def test_a_missing_shared_folder_is_named(script, args, tmp_path, fails_cleanly):
    fails_cleanly(script, "--shared", str(tmp_path / "nowhere"), *args, cwd=tmp_path,
                  message=f"error: {tmp_path / 'nowhere'} lacks faces-ffhq128-vs-stylegan2, real-lfw")


def test_prepare_refuses_to_do_nothing_or_step_2_without_step_1(tmp_path, fails_cleanly):
    fails_cleanly("prepare.py", "--out", str(tmp_path), message="nothing to do")
    fails_cleanly("prepare.py", "--out", str(tmp_path), "--taef2", str(tmp_path), message="run step 1 (--shared) first")


@pytest.mark.parametrize(("script", "message"), [
    ("linear_probe.py", "error: data/default/manifest.csv: no such file or folder"),
    ("select_recipe.py", "train.yaml: manifest data/default/manifest.csv is found neither from the current folder"),
])
def test_a_missing_prepared_manifest_is_one_line(script, message, tmp_path, fails_cleanly):
    args = ["--out", str(tmp_path / "out")] if script == "select_recipe.py" else []
    fails_cleanly(script, *args, cwd=tmp_path, message=message)


def test_gpu_sweep_names_an_unknown_variant(tmp_path, fails_cleanly):
    fails_cleanly("gpu_sweep.py", "--out", str(tmp_path), "--variants", "shipped,nope", message="unknown variant(s) nope")


@pytest.mark.parametrize(("script", "run"), [("gpu_sweep.py", "crop160"), ("select_recipe.py", "without-stylegan2")])
def test_a_rerun_into_an_out_holding_runs_is_refused_before_any_trains(script, run, tmp_path, fails_cleanly):
    (tmp_path / "out" / run).mkdir(parents=True)
    (tmp_path / "out" / run / "checkpoint.pt").write_bytes(b"an earlier run")
    (tmp_path / "data" / "default").mkdir(parents=True)
    (tmp_path / "data" / "default" / "manifest.csv").write_text("uri,label,split\na.png,real,train\n")
    fails_cleanly(script, "--out", str(tmp_path / "out"), cwd=tmp_path,
                  message=f"error: {tmp_path / 'out' / run} already holds a training run (checkpoint.pt); continue it "
                          "with --resume or replace it with --overwrite")


def _mini_shared(root: Path) -> Path:
    """The layout of ../shared/data with three images per folder and attributes for one FFHQ id."""
    faces = root / "faces-ffhq128-vs-stylegan2"
    folders = {faces / "data" / "real": "r{}.png", faces / "data" / "fake": "f{}.jpg",
               faces / "data_crossval" / "real": "6900{}.png", faces / "data_crossval" / "fake": "f{}.jpg",
               root / "real-lfw": "lfw{}.jpg", root / "real-imagenet-sample": "n{}.JPEG",
               root / "fake-text2image-2022" / "dalle-mini": "render-{}.png"}
    for folder, pattern in folders.items():
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (64, 100), (40 * i, 90, 160)).save(folder / pattern.format(i), "PNG")
    (faces / "ffhq_attributes.csv").write_text("ffhq_file,expression,glasses,gender,race\n69000.png,happy,1,Woman,asian\n")
    return root


def test_prepare_neutralizes_and_attaches_attributes_to_the_crossval_reals_only(tmp_path):
    done = _run("prepare.py", "--shared", str(_mini_shared(tmp_path / "shared")), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert len(manifest) == 21 and "ffhq_id" not in manifest  # an id column would become a one-image attribute slice
    assert (manifest.loc[manifest["pair_id"].str.startswith("faces/data_crossval/"), "split"] == "test").all()
    tagged = manifest[manifest["glasses"].notna()]
    assert tagged["pair_id"].tolist() == ["faces/data_crossval/69000"] and tagged["expression"].tolist() == ["happy"]
    first = Image.open(tmp_path / "out" / manifest["uri"][0])
    assert first.format == "JPEG" and first.size == (64, 94)  # bottom 6% cropped, JPEG q75


def test_independent_style_takes_the_same_number_of_faces_of_each_class(tmp_path):
    done = _run("independent_style.py", "--shared", str(_mini_shared(tmp_path / "shared")), "--faces", "1")
    assert done.returncode == 0, done.stderr
    assert "ffhq 1," in done.stdout and "thispersondoesnotexist 1" in done.stdout, done.stdout


def test_small_inputs_names_a_missing_manifest(tmp_path, fails_cleanly):
    fails_cleanly("small_inputs.py", "data/default/manifest.csv", cwd=tmp_path,
                  message="error: data/default/manifest.csv: no such file or folder")


def test_small_inputs_prints_one_row_per_manifest_with_both_policies(tmp_path):
    rows = []
    for i in range(4):
        Image.new("RGB", (128, 120), (60 * i, 90, 160)).save(tmp_path / f"{i}.jpg", "JPEG")
        rows.append({"uri": f"{i}.jpg", "label": ("real", "ai")[i % 2], "split": "test"})
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    pd.DataFrame(rows[:2] + [{**rows[2], "split": "train"}]).to_csv(tmp_path / "part.csv", index=False)
    done = _run("small_inputs.py", str(tmp_path / "all.csv"), str(tmp_path / "part.csv"))
    assert done.returncode == 0, done.stderr
    header, *table = done.stdout.splitlines()[1:]
    assert header.split() == ["images", "clean", "0.5x_whole", "0.5x_upscaled"], done.stdout
    assert [line.split()[:2] for line in table] == [[str(tmp_path / "all.csv"), "4"], [str(tmp_path / "part.csv"), "2"]]
