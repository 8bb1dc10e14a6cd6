"""Click's help style for fakescope's own commands only: other Typer apps in the process keep Typer's.

Each command and group of the CLI is built with `cls=ClickCommand` / `cls=ClickGroup` (Typer's hooks); Typer makes
their parameters as plain TyperOption/TyperArgument, with no hook to choose another class, so these commands adopt
theirs (help option and completion options too) into subclasses that label and show them as Click does.
"""

from __future__ import annotations

import inspect
import re

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

CLICK_TYPES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "path": "PATH", "file": "FILE", "dir": "DIRECTORY"}
"""Typer's type labels as Click names them."""


def _click_label(label: str | None) -> str | None:
    """Typer's rich help labels each value with its Python type (`--model <str>`, `--grid <int range> [1<=x<=32]`,
    `inputs... <list[str]>`): this labels it as Click does (TEXT, INTEGER [1<=x<=32], PATH, [table|jsonl|csv]; a
    repeatable option by its element), in both helps; a metavar stays as given."""
    typed = re.fullmatch(r"<(?:list\[)?(.+?)(?: range)?\]?>(\.\.\.)?", label or "")  # not a metavar
    shown = typed and (f"[{typed[1]}]" if "|" in typed[1] else CLICK_TYPES.get(typed[1]))
    return shown + (typed[2] or "") if shown else label


class ClickOption(TyperOption):
    """An option labelled as Click does; a flag (Typer 0.29 wrote `--overwrite <bool>`) with nothing, as it takes no value."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:  # Typer >= 0.24; earlier ones show Click's types
        return None if self.is_flag else _click_label(super().display_type_rich(ctx))


class ClickArgument(TyperArgument):
    """An argument labelled as Click does, and in the usage line as Click shows it (`INPUTS...`, `[MODEL]`), not as
    Typer 0.29 does (`{inputs}...`)."""

    def display_type_rich(self, ctx: typer.Context) -> str | None:
        return _click_label(super().display_type_rich(ctx))

    def get_usage_pieces(self, ctx: typer.Context) -> list[str]:
        name = self.metavar or self.name.upper()
        return [(name if self.required else f"[{name}]") + ("..." if self.nargs != 1 else "")]


CLICK_STYLE = {TyperOption: ClickOption, TyperArgument: ClickArgument}


class _ClickStyle:
    """Hands out its parameters as ClickOption/ClickArgument: help, usage and parsing all take them from `get_params`,
    which holds those Typer adds after building the command (completion options) or on first use (the help option)."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)
        for param in params:
            param.__class__ = CLICK_STYLE.get(type(param), type(param))  # subclasses adding no state
        return params

    def format_help_text(self, ctx: typer.Context, formatter) -> None:
        """Plain help (`TYPER_USE_RICH=0`; rich help does not call this): a paragraph that kept its line breaks (an
        example block; `fakescope.cli._reflow_help` joins the others' lines) keeps them here too, behind Click's `\\b`,
        where Click rewrapped it into one run-on paragraph. Rich help prints it as written, and would show a `\\b` as
        a blank line, so the marker goes in here alone."""
        paragraphs = inspect.cleandoc(self.help or "").partition("\f")[0].split("\n\n")
        text = "\n\n".join(f"\b\n{p}" if "\n" in p else p for p in paragraphs if p)
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(text)


class ClickCommand(_ClickStyle, TyperCommand):
    """A fakescope verb (`app.command(cls=ClickCommand)`)."""


class ClickGroup(_ClickStyle, TyperGroup):
    """A fakescope group (`typer.Typer(cls=ClickGroup)`)."""
