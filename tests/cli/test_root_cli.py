"""The `fakescope` root command's own options."""

from __future__ import annotations

import importlib.metadata

from typer.testing import CliRunner

from fakescope.cli import app


def test_version_prints_the_installed_version_and_exits_0():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"fakescope {importlib.metadata.version('fakescope')}\n"
