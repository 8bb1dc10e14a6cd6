"""The `fakescope` command line: each verb is one call into the Python API.

Every verb lives in its own module of this package with a `register(app)` function;
heavy imports happen inside the commands so `fakescope --help` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="fakescope",
    help="Tell whether an image was made by a generative model, show why, and build your own detectors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

COMMAND_MODULES: tuple[str, ...] = (
    "detect",
    "models",
    "train",
    "generate",
    "dataset",
    "explain",
    "serve",
    "scan",
    "evaluate",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Console entry point."""
    app()
