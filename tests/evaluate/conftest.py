"""Fixtures of the evaluation tests: one generated dataset and one tiny model per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluate_helpers import tiny_model, write_dataset

from fakescope.evaluate import EvaluationReport, evaluate


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return write_dataset(tmp_path_factory.mktemp("evalset"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = {"augment": {"bottom_crop": 0.25, "base_jpeg_quality": 60, "jpeg_quality": [60, 98]}}
    return tiny_model(tmp_path_factory.mktemp("tiny") / "model", recipe)


@pytest.fixture(scope="session")
def with_broken(dataset: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    broken = tmp_path_factory.mktemp("broken") / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    row = {"uri": str(broken), "label": "real", "source": "camera", "generator": "", "split": "test", "glasses": np.nan}
    return pd.concat([dataset, pd.DataFrame([row])], ignore_index=True)


@pytest.fixture(scope="session")
def report(model_dir: Path, with_broken: pd.DataFrame) -> EvaluationReport:
    """The test split plus one unreadable file, two perturbations, provenance on."""
    return evaluate(model_dir, with_broken, "test", perturbations=["jpeg_q70", "resize_0.5x"],
                    bootstrap=1000, examples=5, device="cpu")
