"""Turn known errors into one clean line on stderr and a usage exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from fakescope.errors import FakescopeError

USAGE_EXIT = 2


@contextlib.contextmanager
def clean_errors(exit_code: int = USAGE_EXIT, *, source: str | None = None) -> Iterator[None]:
    """Print `error: <message>` for a FakescopeError (or a missing optional package) and exit.

    With `source` (the input being worked on), the message starts with it.
    """
    try:
        yield
    except FakescopeError as exc:
        message = str(exc)
        typer.echo(f"error: {message if source is None or message.startswith(source) else f'{source}: {message}'}", err=True)
        raise typer.Exit(exit_code) from None
    except ModuleNotFoundError as exc:
        typer.echo(f"error: missing optional package {exc.name!r}; install it with pip", err=True)
        raise typer.Exit(exit_code) from None
