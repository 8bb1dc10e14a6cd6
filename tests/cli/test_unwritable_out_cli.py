"""An output the command may not write (a read-only folder, or a file where a folder goes) is refused in one line
before any work: found only when writing, it cost every image's work (explain: then failed each image, exit 1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fakescope.cli import app


@pytest.fixture
def read_only(tmp_path):
    """A read-only folder, and the command prefix under which a process may not write in it: none for a user; for root,
    who writes anywhere, capsh dropping the capabilities that let it."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    prefix = []
    if not os.geteuid():
        if not shutil.which("capsh"):
            pytest.skip("running as root without capsh: no way to make a folder refuse files")
        prefix = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", 'exec "$0" "$@"']
    yield folder, prefix
    folder.chmod(0o755)


def run(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "fakescope", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def manifest(tmp_path, image_factory):
    """A two-image manifest of real local files."""
    for label, seed in (("real", 1), ("ai", 2)):
        image_factory.file(tmp_path / "images" / label / f"{seed}.png", seed=seed)
    path = tmp_path / "manifest.csv"
    path.write_text(f"uri,label\n{tmp_path}/images/real/1.png,real\n{tmp_path}/images/ai/2.png,ai\n")
    return path


def test_explain_refuses_a_read_only_out_before_any_work(read_only, tmp_path, image_factory):
    """evaluate and embed make the same check (`require_out_folder`; evaluate's is tested below with a file)."""
    folder, prefix = read_only
    image_factory.file(tmp_path / "images" / "1.png")
    out = folder / "new" / "out"
    explained = run(prefix, "explain", str(tmp_path / "images"), "--out", str(out), "--method", "tiles")
    assert (explained.returncode, explained.stdout) == (2, "")
    assert explained.stderr == f"error: cannot write into {out}: no permission to write in {folder}\n"
    assert os.listdir(folder) == []


def test_dataset_verbs_refuse_a_read_only_out_before_any_work(read_only, manifest, tmp_path):
    folder, prefix = read_only
    built = run(prefix, "dataset", "build", str(tmp_path / "images"), "-o", str(folder / "m.parquet"))
    assert built.returncode == 2
    assert built.stderr == f"error: cannot write {folder / 'm.parquet'}: no permission to write in {folder}; choose another output\n"
    split = run(prefix, "dataset", "split", str(manifest), "-o", str(folder / "m.parquet"), "--no-csv")
    assert (split.returncode, split.stderr) == (2, built.stderr)
    assert os.listdir(folder) == []


def test_evaluate_refuses_an_out_that_is_a_file_before_scoring(manifest, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    result = CliRunner().invoke(app, ["evaluate", str(manifest), "--out", str(taken), "--split", "all", "--bootstrap", "0",
                                      "--model", str(tmp_path / "no-model")])
    assert (result.exit_code, result.stderr) == (2, f"error: {taken} is a file, not a folder to write into\n")
    assert taken.read_text() == "keep me"



def test_export_refuses_an_onnx_file_it_cannot_write_before_loading_the_model(read_only, tmp_path):
    """It was refused only once the model was loaded and exported (~8 s for the bundled one)."""
    folder, prefix = read_only
    target = folder / "new" / "d.onnx"
    exported = run(prefix, "export", "--onnx", str(target), "--model", str(tmp_path / "no-model"))
    assert (exported.returncode, exported.stdout) == (2, "")
    assert exported.stderr == f"error: cannot write {target}: no permission to write in {folder}\n"
    assert os.listdir(folder) == []


def test_export_refuses_an_onnx_file_under_a_file_before_loading_the_model(tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me")
    target = taken / "sub" / "d.onnx"
    result = CliRunner().invoke(app, ["export", "--onnx", str(target), "--model", str(tmp_path / "no-model")])
    assert (result.exit_code, result.stderr) == (2, f"error: cannot write {target}: {taken} is a file, not a folder\n")
    assert taken.read_text() == "keep me"
