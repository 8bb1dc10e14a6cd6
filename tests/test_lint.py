"""The project's own lint configuration (pyproject.toml's [tool.ruff]) passes on src/ and tests/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PENDING = ("src/fakescope/evaluate", "tests/evaluate")
"""Folders whose findings are being fixed on another branch: only the xfail test checks them until then."""

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ruff") is None,
                                reason="ruff is not installed: pip install -e '.[test]' brings the pinned one")


def _ruff_check(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *options, "src", "tests"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_src_and_tests_pass_ruff_outside_the_pending_folders():
    done = _ruff_check(*(f"--extend-exclude={folder}" for folder in PENDING))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.xfail(strict=False, reason="src/fakescope/evaluate/ and tests/evaluate/ still have ruff findings")
def test_src_and_tests_pass_ruff():
    done = _ruff_check()
    assert done.returncode == 0, done.stdout + done.stderr
