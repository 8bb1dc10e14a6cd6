"""The `fakescope` root command's own options."""

from __future__ import annotations

import importlib.metadata
import os
import sys

import pytest
from typer.testing import CliRunner

from fakescope.cli import app, main


def test_version_prints_the_installed_version_and_exits_0():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"fakescope {importlib.metadata.version('fakescope')}\n"


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_lets_openmp_threads_sleep_unless_told_otherwise(monkeypatch, capsys, preset, expected):
    if preset is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    monkeypatch.setattr(sys, "argv", ["fakescope", "--version"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 0 and os.environ["OMP_WAIT_POLICY"] == expected
