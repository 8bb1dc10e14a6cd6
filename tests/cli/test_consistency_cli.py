"""What every verb shares: option names and short flags, `--progress/--no-progress`, progress only on stderr."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import DEVICES

SHARED_SHORT = {"--out": "-o", "--model": "-m", "--batch-size": "-b", "--workers": "-j"}
"""An option every verb that has it spells with this short flag."""


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group: `models`, `generate`, `dataset`
            yield from _commands(command, (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


COMMANDS = dict(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("verb", COMMANDS)
def test_a_shared_option_has_the_same_short_flag_in_every_verb(verb):
    for param in COMMANDS[verb].params:
        for long, short in SHARED_SHORT.items():
            if long in param.opts:
                assert short in param.opts, f"{verb} {long} lacks {short}"


@pytest.mark.parametrize("verb", COMMANDS)
def test_every_verbs_help_gives_its_exit_statuses(verb):
    """Scripts branch on them: each help (`--help` or `-h`) says `Exit status: 0 when ...`, usage errors always 2."""
    result = CliRunner().invoke(app, [*verb.split(), "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "Exit status: 0 " in text and "2 on usage errors" in text, text
    assert CliRunner().invoke(app, [*verb.split(), "-h"], env={"COLUMNS": "400"}).stdout == result.stdout  # -h as well
    assert "<bool>" not in result.stdout, result.stdout  # a flag takes no value: `--overwrite`, not `--overwrite <bool>`


@pytest.mark.parametrize("verb", COMMANDS)
def test_every_verbs_help_names_value_types_as_click_does(verb):
    """Typer 0.29 labelled values with Python's types (`--model <str>`, `--grid <int range>`, `inputs... <list[str]>`)
    and wrote required arguments `{inputs}...` in the usage line."""
    shown = CliRunner().invoke(app, [*verb.split(), "--help"], env={"COLUMNS": "400"}).stdout
    usage = next(line for line in shown.splitlines() if "Usage:" in line)
    names = [(p.metavar or p.name.upper(), p.required, p.nargs != 1) for p in COMMANDS[verb].params
             if p.param_type_name == "argument" and not p.hidden]
    assert usage.split("[OPTIONS]")[1].split() == [
        (name if required else f"[{name}]") + "..." * many for name, required, many in names], usage
    assert re.findall(r"<(?:str|int|float|path|list)\b", shown) == [], shown


def test_help_names_value_types_as_click_does():
    shown = CliRunner().invoke(app, ["detect", "--help"], env={"COLUMNS": "400"}).stdout
    rows = {words[0]: " ".join(words[1:]) for words in (line.strip("│ *").split() for line in shown.splitlines()) if words}
    assert shown.splitlines()[1].strip().endswith("detect [OPTIONS] INPUTS...")
    assert rows["inputs..."].startswith("TEXT Image files")
    assert rows["--model"].startswith("-m TEXT Bundled") and rows["--threshold"].startswith("FLOAT [0.0<=x<=1.0] Decision")
    assert rows["--grid"].startswith("INTEGER [1<=x<=32] At most") and rows["--format"].startswith("-f [table|jsonl|csv] table")
    served = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "400"}).stdout
    assert re.search(r"--jobs-dir +PATH ", served) and re.search(r"--cors-origin +TEXT ", served), served


@pytest.mark.parametrize("group", ["", "dataset", "generate", "models"])
def test_a_groups_flags_read_as_flags(group):
    """Typer's rich help gave every flag a `<bool>` type, --help and --version included."""
    result = CliRunner().invoke(app, [*group.split(), "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "--help" in result.stdout and "<bool>" not in result.stdout, result.stdout


SAME_HELP = ("--model", "--device", "--threshold", "--provenance", "--progress", "--grid", "--precision", "--runtime")
"""Options that mean the same in every verb that has them, so their help reads the same (verbs overriding a recipe's
setting, and `generate openai --model`, an OpenAI model, aside)."""


def test_a_shared_option_reads_the_same_in_every_verb():
    helps = {}
    for verb, command in COMMANDS.items():
        if verb in ("train", "evaluate-logo", "generate openai"):
            continue
        for param in command.params:
            if param.opts[0] in SAME_HELP:
                helps.setdefault(param.opts[0], {})[verb] = param.help
    assert {option: len(set(texts.values())) for option, texts in helps.items()} == dict.fromkeys(SAME_HELP, 1), helps


def test_every_device_option_lists_the_names_a_bad_one_is_told():
    """Recipe-overriding verbs too: each `--device` help names what `resolve_device`'s error lists, mps included."""
    helps = {verb: p.help for verb, command in COMMANDS.items() for p in command.params if "--device" in p.opts}
    assert {"detect", "scan", "serve", "train", "evaluate-logo", "generate taef2"} <= set(helps)
    assert DEVICES == "cpu, cuda, cuda:N, mps or auto"
    assert [verb for verb, text in helps.items() if DEVICES not in text] == [], helps


def test_workers_reads_alike_where_the_work_is_alike_and_each_help_says_its_work_and_default():
    """detect/scan decode beside the network (default 2); dataset verbs read images to describe or hash them (8)."""
    workers = {verb: (p.help, p.default, p.show_default) for verb, command in COMMANDS.items() for p in command.params
               if "--workers" in p.opts}
    decode = ("Threads (processes with --processes) decoding images and cutting tiles while the network scores the "
              "previous batch (0 = decode inline).")
    read = "Threads reading images to describe, measure or hash them (0 = one)."
    assert workers == {"detect": (decode, 2, True), "scan": (decode, 2, True)} | dict.fromkeys(
        ("dataset build", "dataset merge", "dataset split", "dataset audit"), (read, 8, True))
    shown = " ".join(CliRunner().invoke(app, ["dataset", "split", "--help"], env={"COLUMNS": "400"}).stdout.split())
    assert f"{read} [default: 8]" in shown


PROGRESS_VERBS = ("detect", "scan", "dataset build", "dataset split", "dataset audit", "train", "evaluate", "evaluate-logo")


@pytest.mark.parametrize("verb", PROGRESS_VERBS)
def test_verbs_that_show_progress_let_a_script_choose_it(verb):
    (param,) = [p for p in COMMANDS[verb].params if p.name == "progress"]
    assert (param.opts, param.secondary_opts, param.default) == (["--progress"], ["--no-progress"], None)


@pytest.fixture
def folder(image_factory, tmp_path) -> Path:
    for i, kind in enumerate(("real", "fake/gen")):
        for j in range(3):
            image_factory.file(tmp_path / "in" / kind / f"{j}.png", "PNG", (64, 48), seed=10 * i + j)
    return tmp_path / "in"


def test_detect_progress_goes_to_stderr_and_stdout_stays_jsonl(tiny_model_dir, folder):
    args = ["detect", str(folder), "--model", str(tiny_model_dir), "--no-provenance", "--format", "jsonl"]
    shown = CliRunner().invoke(app, [*args, "--progress"])
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["path"].endswith(".png") for line in shown.stdout.splitlines()] == [True] * 6
    assert "img/s]" in shown.stderr  # tqdm's bar, on stderr only
    hidden = CliRunner().invoke(app, [*args, "--no-progress"])
    assert hidden.exit_code == 0 and hidden.stderr == "" and hidden.stdout.count("\n") == 6


def test_scan_and_dataset_build_show_progress_when_asked(tiny_model_dir, folder, tmp_path):
    scan = ["scan", str(folder), "-o", str(tmp_path / "scan"), "-m", str(tiny_model_dir), "--no-provenance"]
    shown = CliRunner().invoke(app, [*scan, "--progress"])
    assert shown.exit_code == 0 and "img/s]" in shown.stderr, shown.output
    assert shown.stdout.startswith("scanned 6  failed 0")
    build = ["dataset", "build", str(folder), "-o", str(tmp_path / "m.csv"), "--no-csv"]
    assert CliRunner().invoke(app, [*build, "--no-progress"]).stderr == ""
    built = CliRunner().invoke(app, [*build, "--progress"])
    assert built.exit_code == 0 and built.stderr != "" and built.stdout.startswith("6 images"), built.output


def test_dataset_export_takes_out_as_every_verb_does_and_the_older_positional_out(folder, tmp_path):
    manifest = str(tmp_path / "m.csv")
    assert CliRunner().invoke(app, ["dataset", "build", str(folder), "-o", manifest, "--no-csv"]).exit_code == 0
    for args, written in ((["-o", str(tmp_path / "a.tar")], "a.tar"), ([str(tmp_path / "b.tar")], "b.tar")):
        done = CliRunner().invoke(app, ["dataset", "export", manifest, *args])
        assert done.exit_code == 0 and done.stdout == f"6 images exported to {tmp_path / written} (tar)\n", done.output
    for args, message in ((["-o", str(tmp_path / "c.tar"), str(tmp_path / "d.tar")], "two outputs"), ([], "missing --out/-o")):
        refused = CliRunner().invoke(app, ["dataset", "export", manifest, *args])
        assert refused.exit_code == 2 and refused.stderr.startswith(f"error: {message}") and refused.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["a.tar", "b.tar"]


def test_dataset_audit_chooses_json_with_format_as_detect_does(folder):
    audit = ["dataset", "audit", str(folder), "--max-per-class", "3"]
    table, as_json = (CliRunner().invoke(app, [*audit, *args]) for args in ([], ["-f", "json"]))
    assert table.exit_code == as_json.exit_code == 0, table.output + as_json.output
    assert table.stdout.startswith("images  ") and json.loads(as_json.stdout)["counts"] == {"ai": 3, "real": 3}
    assert CliRunner().invoke(app, [*audit, "--json"]).stdout == as_json.stdout  # the older spelling
    for both in (["--json", "--format", "table"], ["-f", "table", "--json"]):  # JSON won silently before
        refused = CliRunner().invoke(app, [*audit, *both])
        assert refused.exit_code == 2 and refused.stdout == "", refused.output
        assert refused.stderr == "error: --json (the older --format json) contradicts --format table: give one of them\n"
    assert CliRunner().invoke(app, [*audit, "--json", "-f", "json"]).stdout == as_json.stdout


def test_every_option_and_argument_says_what_it_does_and_an_unset_one_what_it_means():
    """`--split`, `--balance-by` and `--quality` left the default (every split, no balancing, the model's) unsaid."""
    params = [(verb, p) for verb, command in COMMANDS.items() for p in command.params if not getattr(p, "hidden", False)]
    assert [(verb, p.name) for verb, p in params if not p.help] == []
    unsaid = [(verb, p.opts[0]) for verb, p in params
              if p.opts[0] in ("--split", "--balance-by", "--quality") and p.default is None and "default" not in p.help.lower()]
    assert unsaid == []
