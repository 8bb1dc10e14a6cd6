"""The easy generated task every training test trains on, written once per session."""

from __future__ import annotations

import pytest
from train_helpers import write_easy_manifest


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_easy_manifest(tmp_path_factory.mktemp("easy"))
