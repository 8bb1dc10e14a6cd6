"""The `fakescope` command line: each verb is one call into the Python API.

Every verb lives in its own module of this package with a `register(app)` function;
heavy imports happen inside the commands so `fakescope --help` stays fast.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import os
import re
import sys
from typing import Annotated, Any

import typer

from fakescope.cli._errors import one_line_usage_errors
from fakescope.cli._style import ClickGroup

HELP_ORDER: tuple[str, ...] = (
    "detect", "explain", "embed", "dataset", "generate", "train", "evaluate", "evaluate-logo",
    "serve", "app", "scan", "export", "models",
)
"""The verbs in `fakescope -h`, as README's table lists them: the main job first, then building, deploying, sharing."""


class _Root(ClickGroup):
    """The `fakescope` group: parsing its options and running a verb (whose own parsing happens inside) print usage
    errors on one line (`one_line_usage_errors`); help keeps Typer's panels, its verbs in HELP_ORDER."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(HELP_ORDER))

    def make_context(self, *args: Any, **kwargs: Any) -> typer.Context:
        with one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: typer.Context) -> Any:
        with one_line_usage_errors():
            return super().invoke(ctx)


app = typer.Typer(
    name="fakescope",
    cls=_Root,
    help="Tell whether an image was made by a generative model, show why, and build your own detectors.",
    epilog="Start with: fakescope detect photo.jpg photos/ (bundled model, offline). Each verb's -h has the rest.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every verb
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


class _StderrWarnings(logging.Handler):
    """Prints the package's warnings as `warning: <message>` on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"fakescope {importlib.metadata.version('fakescope')}")
        raise typer.Exit()


@app.callback()
def _configure(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the installed version and exit.")] = False,
) -> None:
    """Warnings from fakescope's modules go to stderr in the CLI's own `warning: ...` form."""
    package = logging.getLogger("fakescope")
    if not any(isinstance(h, _StderrWarnings) for h in package.handlers):
        package.addHandler(_StderrWarnings(logging.WARNING))


def _reflow_help(typer_app: typer.Typer) -> None:
    """Each verb's docstring with its paragraphs' line breaks made spaces, for the terminal to wrap: Typer's rich
    help keeps every break, so lines broken at 113 columns in the source came out ragged at 80 (`record with an`,
    then `` `error`), ``). Indented lines (an example block), bullets and blank lines keep their breaks."""
    for command in typer_app.registered_commands:
        text = command.help or inspect.getdoc(command.callback) or ""
        command.help = re.sub(r"(?<!\n)\n(?!\s|[-*] )", " ", text)
    for group in typer_app.registered_groups:
        _reflow_help(group.typer_instance)


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)
_reflow_help(app)


def main() -> None:
    """Console entry point. OpenMP threads (torch's) sleep when idle rather than spin, unless
    `OMP_WAIT_POLICY` says otherwise: spinning threads starved inference on a busy CPU (a warm one-image
    predict took 1.5 s with 2 threads instead of 0.06 s; docs/scale.md)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads: no command has imported it yet
    app()
