"""The easy generated task every training test trains on, written once per session, and one finished run of it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from train_helpers import train_config, write_easy_manifest


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_easy_manifest(tmp_path_factory.mktemp("easy"))


@pytest.fixture(scope="session")
def _one_epoch_run(manifest: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fakescope.train import train

    out = tmp_path_factory.mktemp("one-epoch")
    train(train_config(manifest, out, epochs=1), progress=False)
    return out


@pytest.fixture
def one_epoch_run(_one_epoch_run: Path) -> Callable[[Path], Path]:
    """Copies into a folder the finished run of `train_config(manifest, out, epochs=1)`, trained once per session
    (the same files as training it there; its train_config.yaml names the first folder as `out`)."""

    def copy(folder: Path) -> Path:
        shutil.copytree(_one_epoch_run, folder, dirs_exist_ok=True)
        return folder

    return copy
