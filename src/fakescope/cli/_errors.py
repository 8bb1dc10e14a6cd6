"""Turn known errors into one clean line on stderr and a usage exit code."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import typer

from fakescope.errors import FakescopeError

USAGE_EXIT = 2
INTERRUPTED_EXIT, TERMINATED_EXIT = 130, 143
"""Exit statuses after Ctrl-C (SIGINT) and SIGTERM: 128 + the signal, as a shell reports a process they killed."""
EXTRAS = {
    **dict.fromkeys(("boto3", "botocore", "google", "googleapiclient"), "storage"),
    **dict.fromkeys(("openai", "diffusers", "transformers"), "generate"),
    **dict.fromkeys(("umap", "ttach", "cv2"), "explain"),
    **dict.fromkeys(("fastapi", "uvicorn", "multipart", "python_multipart", "httpx", "streamlit", "swagger_ui_bundle"), "serve"),
    **dict.fromkeys(("ray", "onnx", "onnxruntime", "onnxscript"), "scale"),
    "matplotlib": "evaluate",
}
"""Top-level module -> the extra of pyproject.toml that installs it."""
ALSO_IN = {"matplotlib": ("explain", "serve")}
"""Modules that other extras install too: a verb of one of them names its own (`clean_errors(extra=...)`)."""
UsageError = typer.BadParameter.__base__
"""Click's UsageError, which Typer raises for bad command lines (recent Typer vendors Click and exports only this child)."""


@contextlib.contextmanager
def clean_errors(exit_code: int = USAGE_EXIT, *, source: str | None = None, extra: str | None = None) -> Iterator[None]:
    """Print `error: <message>` for a FakescopeError (or a missing optional package) and exit.

    With `source` (the input being worked on), the message starts with it; with `extra` (the verb's), a missing
    package that extra installs is said to come with it (`install_hint`).
    """
    try:
        yield
    except FakescopeError as exc:
        message = str(exc)
        if source is not None and not message.startswith(source):
            message = f"{source}: {message}"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(exit_code) from None
    except ModuleNotFoundError as exc:
        package = (exc.name or "").split(".")[0]
        typer.echo(f"error: missing optional package {package!r}; {install_hint(package, extra)}", err=True)
        raise typer.Exit(exit_code) from None


@contextlib.contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """Print Click's usage errors (unknown option or verb, missing argument, bad value) as `error: <message> See
    '<command> -h'.` and exit 2, as `clean_errors` does, instead of Typer's framed panel; a bad value's message is
    the CLI's (`_in_cli_words`), not pydantic's. No arguments still shows help.
    """
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # help is shown already (Typer tests the name too)
            raise
        if isinstance(exc, typer.BadParameter) and hasattr(exc.__cause__, "errors"):  # Typer validates with pydantic
            exc.message = _in_cli_words(exc.__cause__.errors()[0], exc.param, exc.message)
        message = exc.format_message().rstrip()
        message += "" if message.endswith((".", "?", "!")) else "."
        ctx = exc.ctx
        if ctx is not None and ctx.command.get_help_option(ctx) is not None:
            message += f" See '{ctx.command_path} {ctx.help_option_names[0]}'."
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(exc.exit_code) from None


def _in_cli_words(error: dict, param: object, message: str) -> str:
    """What a bad value (pydantic's first `error`, Typer validating with it) says: `'x' is not a valid integer`, `0
    is not in the range x>=1` (the range as the help gives it) rather than "Input should be ..."; a validator's own
    error (`'xml' is not one of ...`) as it is, without pydantic's "Value error, " prefix; `message` otherwise."""
    value, kind = error.get("input"), error["type"]
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind in ("int_parsing", "float_parsing"):
        return f"{value!r} is not a valid {'integer' if kind == 'int_parsing' else 'number'}"
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and (low, high) != (None, None):
        bounds = f"{low}<=x<={high}" if None not in (low, high) else f"x>={low}" if high is None else f"x<={high}"
        return f"{value} is not in the range {bounds}"
    return message.replace("Input should", f"{value!r} should", 1) if isinstance(value, str) else message


@contextlib.contextmanager
def output_errors() -> Iterator[None]:
    """A write to stdout that fails (a full disk, a file too large) is `error: cannot write the results: <why>`, exit 2,
    not a traceback with exit 1; a pipe closed by its reader (`| head`) is left to Click, which ends quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - what the failed write left buffered is not written at exit
        typer.echo(f"error: cannot write the results: {exc.strerror or exc}", err=True)
        raise typer.Exit(USAGE_EXIT) from None


class Terminated(KeyboardInterrupt):
    """SIGTERM inside `sigterm_as_interrupt`: a KeyboardInterrupt, so what handles Ctrl-C handles it too."""


class Stop:
    """What `sigterm_as_interrupt` saw: `exit_code` is 143 once a SIGTERM arrived, else 130 (Ctrl-C)."""

    terminated = False
    signals = 0
    """Ctrl-Cs and SIGTERMs seen."""

    @property
    def exit_code(self) -> int:
        return TERMINATED_EXIT if self.terminated else INTERRUPTED_EXIT


@contextlib.contextmanager
def sigterm_as_interrupt(*, once: bool = False) -> Iterator[Stop]:
    """Inside the block SIGTERM (`kill`, a scheduler's stop) raises `Terminated`; the previous handler is restored after.

    The `Stop` it yields gives the exit status for an interrupted command, even where the interrupt was caught below;
    a `Terminated` that leaves the block exits 143 (Typer exits 130 for a Ctrl-C that leaves a command). With `once`,
    only the first Ctrl-C or SIGTERM interrupts: a second one in the block is ignored, so that what handles the first
    (saying how to resume) is not cut short, and the exit status stays the first one's; a third ends the process at
    once with that status (a stop that hangs, such as a read from a dead server, can still be left). A Ctrl-C that the
    process ignores (a background job) stays ignored.
    """
    stop = Stop()

    def interrupt(signum: int, frame: object) -> None:
        stop.signals += 1
        if once and stop.signals > 2:
            os._exit(stop.exit_code)  # nothing more is written: the write of the resume line may be what hangs
        if once and stop.signals > 1:
            return
        if signum != signal.SIGTERM:
            raise KeyboardInterrupt
        stop.terminated = True
        raise Terminated

    caught = [signal.SIGTERM]
    if once and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        caught.append(signal.SIGINT)
    previous = {signum: signal.signal(signum, interrupt) for signum in caught}
    try:
        yield stop
    except Terminated:
        raise typer.Exit(TERMINATED_EXIT) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def install_hint(package: str, extra: str | None = None) -> str:
    """How to install a missing top-level package: the fakescope extra that holds it (`extra` where that is one of
    those in ALSO_IN), where there is one."""
    if package == "pytorch_grad_cam":  # installed without its declared dependencies (docs/explain.md)
        return 'install it with: pip install "fakescope[explain]" && pip install --no-deps grad-cam'
    if package in EXTRAS:
        chosen = extra if extra in ALSO_IN.get(package, ()) else EXTRAS[package]
        return f'install it with: pip install "fakescope[{chosen}]"'
    return "install it with pip"


def no_images() -> typer.Exit:
    """Print why no input gave an image and what to do; the exit (2) to raise."""
    from fakescope.io.inputs import IMAGE_SUFFIXES

    typer.echo(f"error: no input images found: a folder, prefix or quoted glob gives only files ending "
               f"{', '.join(IMAGE_SUFFIXES)} (hidden names skipped); name a file to take it whatever its suffix", err=True)
    return typer.Exit(USAGE_EXIT)
