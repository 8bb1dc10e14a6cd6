"""The `fakescope` root command's own options."""

from __future__ import annotations

import importlib.metadata
import inspect
import itertools
import os
import subprocess
import sys
import typing

import pytest
import typer.main
from typer.testing import CliRunner

from fakescope.cli import HELP_ORDER, app, main


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


@pytest.mark.parametrize("argv", [["--version"], ["detect", "no-such-file.jpg"]])
def test_python_m_exits_with_the_commands_status_after_a_caught_interrupt(tmp_path, argv):
    """A Ctrl-C caught inside `exec` of a string (dataclasses do that at import) made `python -m fakescope` end by
    SIGINT (-2) instead of the status the command chose; CI saw -2 for evaluate-logo's 130. CPython keeps the mark
    of the last such `exec` only, so here one runs just before the command exits."""
    (tmp_path / "interrupted_then_m.py").write_text(
        "import runpy, sys\n"
        "def exit_after_a_caught_interrupt(code=None, exit=sys.exit):\n"
        "    try:\n"
        "        exec('raise KeyboardInterrupt')\n"
        "    except KeyboardInterrupt:\n"
        "        exit(code)\n"
        "sys.exit = exit_after_a_caught_interrupt\n"
        "runpy.run_module('fakescope', run_name='__main__', alter_sys=True)\n")
    done = subprocess.run([sys.executable, "-m", "interrupted_then_m", *argv], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    expected = subprocess.run([sys.executable, "-m", "fakescope", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == expected.returncode >= 0, done.stderr


@pytest.mark.parametrize(("words", "expected"), [
    ("fakescope det", "detect"),
    ("fakescope dataset b", "build"),
    ("fakescope detect --form", "--format"),
    ("fakescope detect --format ", "table\njsonl\ncsv"),
])
def test_bash_completion_offers_verbs_options_and_choices(words, expected):
    env = {"_FAKESCOPE_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner().invoke(app, [], env=env, prog_name="fakescope")
    assert result.exit_code == 0 and result.stdout == f"{expected}\n", result.output


def test_show_completion_prints_the_script_to_source(monkeypatch):
    """The shell is named here: detecting it (the parent process's) is Typer's and varies with what runs the test."""
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # read as the command is built
    result = CliRunner().invoke(app, ["--show-completion", "bash"], prog_name="fakescope")
    assert result.exit_code == 0 and "_FAKESCOPE_COMPLETE=complete_bash" in result.stdout, result.output


@pytest.mark.parametrize(("argv", "expected"), [
    (["detect", "--formt", "table", "x.jpg"],
     "No such option: --formt (Possible options: --format). See 'fakescope detect -h'."),
    (["detect"], "Missing argument 'inputs'. See 'fakescope detect -h'."),
    (["detect", "--format", "tabel", "x.jpg"],
     "Invalid value for '--format' / '-f': 'tabel' is not one of 'table', 'jsonl', 'csv'. See 'fakescope detect -h'."),
    (["scan", "x", "-o", "out", "--decode", "gpu"],
     "Invalid value for '--decode': 'gpu' is not one of 'host', 'device'. See 'fakescope scan -h'."),
    (["detect", "-b", "0", "x.jpg"],
     "Invalid value for '--batch-size' / '-b': 0 is not in the range x>=1. See 'fakescope detect -h'."),
    (["detect", "-b", "x", "x.jpg"], "Invalid value for '--batch-size' / '-b': 'x' is not a valid integer. See 'fakescope detect -h'."),
    (["detect", "--threshold", "nan", "x.jpg"],
     "Invalid value for '--threshold': nan is not in the range 0.0<=x<=1.0. See 'fakescope detect -h'."),
    (["detect", "--grid", "33", "x.jpg"],
     "Invalid value for '--grid': 33 is not in the range 1<=x<=32. See 'fakescope detect -h'."),
    (["serve", "--port", "70000"], "Invalid value for '--port' / '-p': 70000 is not in the range 1<=x<=65535. See 'fakescope serve -h'."),
    (["train", "--lr", "fast"], "Invalid value for '--lr': 'fast' is not a valid number. See 'fakescope train -h'."),
    (["detecd", "x.jpg"], "No such command 'detecd'. Did you mean 'detect'? See 'fakescope -h'."),
    (["--bogus"], "No such option: --bogus. See 'fakescope -h'."),
    (["dataset", "audti", "x"], "No such command 'audti'. Did you mean 'audit'? See 'fakescope dataset -h'."),
])
def test_usage_errors_are_one_line_naming_the_help(argv, expected):
    """Typer framed them in a five-line panel under the usage line, unlike the verbs' own `error: ...` lines."""
    result = CliRunner().invoke(app, argv, prog_name="fakescope")
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr == f"error: {expected}\n"


def _number_options():
    """(verb words, a required argument per argument and required option, option, int or float, its minimum)."""
    def commands(group, prefix=()):
        for name, command in group.commands.items():
            yield from commands(command, (*prefix, name)) if hasattr(command, "commands") else [((*prefix, name), command)]

    for words, command in commands(typer.main.get_command(app)):
        hints = typing.get_type_hints(inspect.unwrap(command.callback), include_extras=True)
        required = [w for p in command.params if p.required for w in (["x"] if p.param_type_name == "argument" else [p.opts[0], "x"])]
        for param in command.params:
            hint = hints[param.name]
            annotation = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            kinds = [t for t in (annotation, *typing.get_args(annotation)) if t in (int, float)]  # int, int | None
            if kinds and param.param_type_name == "option":
                yield pytest.param(words, required, param, kinds[0], id=f"{' '.join(words)} {param.opts[0]}")


@pytest.mark.parametrize(("words", "required", "param", "kind"), list(_number_options()))
def test_a_bad_number_is_told_in_the_clis_words(words, required, param, kind):
    """Typer validates with pydantic, whose "Input should be a valid integer, unable to parse string as an integer"
    reached users; a number is told as help gives it: a type, a range (above its maximum too, where it has one)."""
    option = param.opts[0]
    bad = [("x", f"'x' is not a valid {'integer' if kind is int else 'number'}")]
    for edge in (param.min - 1 if param.min is not None else None, param.max + 1 if param.max is not None else None):
        if edge is not None:
            bad.append((str(edge), f"{edge} is not in the range "))
    for value, expected in bad:
        result = CliRunner().invoke(app, [*words, option, value, *required], prog_name="fakescope")
        assert result.exit_code == 2 and result.stdout == "" and result.stderr.count("\n") == 1, result.output
        assert expected in result.stderr and "Input should" not in result.stderr, result.stderr


def test_the_ranges_help_gives_are_those_the_library_checks():
    """The CLI repeats these limits (it starts without numpy and Pillow); help gave `--grid [x>=1]` while 33 was
    refused later, and no maximum for --seed, --max-distance and --max-pixels."""
    from fakescope.data.splits import HASH_BITS
    from fakescope.io.image import MAX_PIXELS
    from fakescope.models.config import MAX_GRID
    from fakescope.train.config import MAX_SEED

    ranges = {(" ".join(words), param.opts[0]): (param.min, param.max) for words, _, param, _ in
              (p.values for p in _number_options())}
    assert ranges["detect", "--grid"] == ranges["serve", "--grid"] == ranges["scan", "--grid"] == (1, MAX_GRID)
    assert ranges["train", "--seed"] == ranges["embed", "--seed"] == ranges["dataset split", "--seed"] == (0, MAX_SEED)
    assert ranges["dataset merge", "--max-distance"] == ranges["dataset audit", "--max-distance"] == (-1, HASH_BITS)
    assert ranges["serve", "--max-pixels"] == ranges["app", "--max-pixels"] == (1, MAX_PIXELS)


def test_bootstrap_help_gives_its_rule_not_a_range_and_a_value_outside_it_is_one_line():
    """--bootstrap takes 0 or at least 1000: help showed the range x>=0, which 5 is in."""
    shown = CliRunner().invoke(app, ["evaluate", "-h"], env={"COLUMNS": "400"}).stdout
    (row,) = [line for line in shown.splitlines() if "--bootstrap" in line]
    assert "at least 1000, or 0 for none" in row and "x>=" not in row, row
    for value in ("5", "-1"):
        refused = CliRunner().invoke(app, ["evaluate", "m.csv", "-o", "out", "--bootstrap", value])
        assert refused.exit_code == 2 and refused.stdout == "", refused.output
        assert refused.stderr == (f"error: bootstrap of {value} resample(s) gives no meaningful 95% interval: use at least "
                                  "1000, or 0 for no intervals\n")


@pytest.mark.parametrize("argv", [["detect", "-h"], [], ["dataset"]])
def test_help_stays_rich(argv):
    """The hook touches errors only: asked for or shown for no arguments, help keeps Typer's panels."""
    result = CliRunner().invoke(app, argv, prog_name="fakescope")
    assert "╭─ Options" in result.stdout and "error:" not in result.output, result.output


def test_help_lists_the_verbs_in_the_readmes_order_each_with_a_one_line_summary():
    """The main job first, as README's table orders them; a summary that wrapped in its docstring wrapped here too."""
    result = CliRunner().invoke(app, ["-h"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    panel = [line for line in result.stdout.split("Commands")[1].splitlines() if line.startswith("│")]
    assert [line.strip("│ ").split()[0] for line in panel] == list(HELP_ORDER), result.stdout  # each row a verb's
    assert "Start with: fakescope detect" in result.stdout


ANOTHER_APP = """
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.testing import CliRunner

if sys.argv[1] == "after-fakescope":
    import fakescope.cli  # noqa: F401

app = typer.Typer()


@app.command()
def run(inputs: list[str], count: Annotated[int, typer.Option(min=1, max=9)] = 1, name: str = "n",
        force: bool = False, out: Path | None = None, ratio: float | None = None) -> None:
    pass


@app.command()
def other(model: str | None = typer.Argument(None)) -> None:
    pass


for args in (["--help"], ["run", "--help"], ["other", "--help"], ["run", "--count", "0", "a"],
             ["run", "--count", "x", "a"], ["run", "--ratio", "x", "a"], ["run"], ["--bogus"]):
    result = CliRunner().invoke(app, args, prog_name="another", env={"COLUMNS": "100"})
    print(args, result.exit_code, result.output)
"""


def test_another_typer_app_in_the_process_renders_and_errors_as_plain_typer_does(tmp_path):
    """fakescope's Click-style help (`TEXT`, `INPUTS...`, no `<bool>`) was had by patching Typer's classes, so any
    other Typer app in a process that imported fakescope.cli (a user's own, beside the library) rendered that way too."""
    (tmp_path / "another.py").write_text(ANOTHER_APP)
    plain, after = (subprocess.run([sys.executable, "another.py", order], cwd=tmp_path, capture_output=True, text=True,
                                   timeout=60) for order in ("plain", "after-fakescope"))
    assert plain.returncode == after.returncode == 0 and plain.stderr == after.stderr == "", (plain.stderr, after.stderr)
    assert plain.stdout.count("Usage:") == 8 and after.stdout == plain.stdout


def _verbs(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    verbs = [(*prefix, c.name or c.callback.__name__.replace("_", "-")) for c in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        verbs += _verbs(group.typer_instance, (*prefix, group.name))
    return verbs


@pytest.mark.parametrize("verb", _verbs(app), ids=" ".join)
def test_each_verbs_description_wraps_to_the_terminal(verb):
    """Typer's rich help kept the docstrings' line breaks, made at 113 columns: at 80 a sentence broke after
    `record with an`, a line short of the width. Now a line ends early only where its paragraph does, or before an
    indented example line or a bullet."""
    shown = CliRunner().invoke(app, [*verb, "-h"], env={"COLUMNS": "80"}).stdout
    lines = [line.rstrip() for line in shown.split("╭")[0].splitlines()]
    for line, after in itertools.pairwise(lines):
        if line and after and after[1] != " " and not after.startswith(" - "):
            assert len(line) + 1 + len(after.split()[0]) > 79, f"{line!r} ends before the width:\n{shown}"


EXAMPLES = ["Examples: fakescope detect photo.jpg photos/", "          fakescope detect photos/ -f jsonl > results.jsonl",
            "          find photos -name '*.jpg' | fakescope detect - -f csv"]


@pytest.mark.parametrize("rich", [True, False], ids=["rich", "plain"])
def test_detects_examples_are_a_line_each_in_rich_and_plain_help(monkeypatch, rich):
    """With TYPER_USE_RICH=0 Click rewrapped the example block into one run-on paragraph (`photos/           fakescope
    detect`); Click's `\\b` marker keeps it as written there, and rich help, which would show the marker as a blank
    line, prints it as before: the line above, the block, the line below."""
    monkeypatch.setattr(typer.core, "HAS_RICH", rich)
    shown = CliRunner().invoke(app, ["detect", "-h"], env={"COLUMNS": "80"}).stdout
    lines = [line.strip("│").rstrip() for line in shown.splitlines()]
    start = next(i for i, line in enumerate(lines) if "Examples:" in line)
    indent = lines[start].index("Examples:")
    assert [line[indent:] for line in lines[start - 2:start + 4]] == [
        "Say whether each image was made by a generative model.", "", *EXAMPLES, ""], shown
    assert lines[start + 4][indent:].startswith("Exit status: 0 when every input was scored"), shown
