"""What the README, docs/ and the model card show exists: API names, links, CLI and script options."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCUMENTED = sorted({m for p in (ROOT / "README.md", *(ROOT / "docs").glob("*.md"))
                     for m in re.findall(r"`(fakescope(?:\.[A-Za-z_]\w*)+)", p.read_text())})


def test_the_docs_name_api_objects():
    assert "fakescope.scale.read_results" in DOCUMENTED and len(DOCUMENTED) > 10


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_name_resolves(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ModuleNotFoundError as exc:
            if not exc.name.startswith("fakescope"):
                pytest.skip(f"needs the optional package {exc.name}")
    for attribute in parts[i:]:
        assert hasattr(obj, attribute), f"{name}: {'.'.join(parts[:i])} has no {attribute!r}"
        obj = getattr(obj, attribute)


PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "MODEL_CARD.md")


def _prose_and_code(page: Path) -> tuple[str, list[str]]:
    """A page's text outside fenced blocks, and the fenced lines with continuations joined."""
    prose, code, fenced = [], [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            prose.append(line)
        elif code and (code[-1].endswith("\\") or line.startswith(" ")):
            code[-1] = code[-1].rstrip("\\") + " " + line.strip()
        else:
            code.append(line)
    return "\n".join(prose), code


def _table_rows(page: Path) -> list[str]:
    return [line for line in _prose_and_code(page)[0].splitlines() if line.startswith("|")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_table_cells_escape_their_pipes(page):
    """GitHub splits a table row at every unescaped `|`, inside code spans too, and drops the extra cells."""
    bare = [s for row in _table_rows(page) for s in re.findall(r"`([^`]*)`", row) if re.search(r"(?<!\\)\|", s)]
    assert not bare, f"write \\| in table cells: {bare}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", _prose_and_code(page)[0], re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


LINKS = [(page, target) for page in PAGES for target in re.findall(r"\]\(([^)\s]+)\)", _prose_and_code(page)[0])
         if "://" not in target]


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{p.name}->{t}" for p, t in LINKS])
def test_relative_links_and_anchors_resolve(page, target):
    path, _, anchor = target.partition("#")
    linked = (page.parent / path).resolve() if path else page
    assert linked.exists(), f"{page.name}: {path} does not exist"
    if anchor:
        assert anchor in _anchors(linked), f"{page.name}: {linked.name} has no heading #{anchor}"


def _snippets() -> list[str]:
    """Every inline code span and fenced code line; a table row naming a command gives it the row's options."""
    found = []
    for page in PAGES:
        prose, code = _prose_and_code(page)
        found += code + [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose)]
        for row in _table_rows(page):
            spans = re.findall(r"`([^`]+)`", row)
            if spans and spans[0].startswith("fakescope "):
                found.append(" ".join([spans[0], *(s.replace("\\|", "|") for s in spans[1:] if s.startswith("--"))]))
    return found


def _cli_uses() -> list[tuple[str, str, str | None]]:
    """(command, option, value written after it) for each `fakescope <command> ... --option` in the docs."""
    import typer.main

    from fakescope.cli import app

    uses = set()
    for snippet in _snippets():
        for match in re.finditer(r"(?:^|[\s|(;&])fakescope ([^#]*)", snippet):
            words, command = match.group(1).split(), typer.main.get_command(app)
            path = []
            while words and words[0] in getattr(command, "commands", {}):
                command = command.commands[words[0]]
                path.append(words.pop(0))
            for i, word in enumerate(words):
                option = re.fullmatch(r"\[?(--[a-z][\w-]*)\]?(?:=(\S+))?", word)
                if path and option:
                    value = option.group(2) or (words[i + 1].strip("[]") if i + 1 < len(words) else None)
                    uses.add((" ".join(path), option.group(1), value if value and not value.startswith("-") else None))
    return sorted(uses, key=str)


CLI_USES = _cli_uses()


def test_the_documented_request_cap_of_generate_openai_is_the_codes():
    from fakescope.cli.generate import UNCAPPED_REQUESTS

    named = re.findall(r"(\d+)\s+#?\s*\(`fakescope\.cli\.generate\.UNCAPPED_REQUESTS`\)", "\n".join(p.read_text() for p in PAGES))
    assert named == [str(UNCAPPED_REQUESTS)]  # written once, next to the constant's name


def test_the_docs_quote_the_pixel_only_caveat_as_the_code_gives_it():
    from fakescope.forensics.fusion import PIXEL_ONLY

    quoted = {" ".join(q.split()) for q in re.findall(r"`(pixel model only,[^`]*)`", "\n".join(p.read_text() for p in PAGES))}
    assert quoted == {PIXEL_ONLY}  # docs/serving.md said `no provenance` after the code had `no signed provenance`


def test_the_docs_table_of_url_signing_parameters_is_the_codes():
    from fakescope.io.fetch import SIGNING_PARAMETERS

    rows = re.findall(r"^\| ([^|`]+) \| (`[^|]*`) \| ([^|]*) \| (any|as written) \|$", (ROOT / "docs" / "scale.md").read_text(),
                      re.MULTILINE)
    assert {name: (set(re.findall(r"`([^`]+)`", names)), set(re.findall(r"`([^`]+)`", when)), case == "any")
            for name, names, when, case in rows} == \
        {name: (set(rule.names), set(rule.when), rule.any_case) for name, rule in SIGNING_PARAMETERS.items()}


def test_the_detect_and_serving_docs_list_a_records_fields_as_to_dict_gives_them():
    from fakescope.detection import Detection, Evidence

    detect = " ".join((ROOT / "docs" / "detect.md").read_text().split())
    listed = re.search(r"Each JSONL record: `([^`]*)` and `error` for an input that failed .*?`error_kind`", detect)[1]
    evidence = re.search(r"evidence \[\{([^}]*)\}\]", listed)[1]
    flat = re.sub(r"\[[^\]]*\]", "", listed)  # the fields' own words, not their explanations
    while "(" in flat:
        flat = re.sub(r"\([^()]*\)", "", flat)
    scored = Detection("a.png", 0.2, "real", 0.5, "m", (Evidence("c2pa", 0.9, "d", True, {"k": 1}, "e"),)).to_dict()
    failed = Detection.failed("b.png", "no such file", "m", 0.5).to_dict()
    assert [f.strip() for f in flat.split(",")] == list(scored) and set(failed) - set(scored) == {"error", "error_kind"}
    assert re.sub(r"and where set |: true", "", evidence).replace(" ", "").split(",") == \
        ["kind", "score", "detail", "decisive", "data", "error"] == list(scored["evidence"][0])
    serving = " ".join((ROOT / "docs" / "serving.md").read_text().split())
    assert f"record: `{', '.join(k if k != 'evidence' else 'evidence[]' for k in scored)}`" in serving
    assert "a record with `error`, `error_kind`" in serving


def test_the_docs_and_the_rest_schema_name_every_decided_by_value():
    """`decided_by` was listed as a field only: `conflict` and `none` were told in docs/forensics.md alone."""
    from fakescope.forensics import content_credentials, metadata, watermark
    from fakescope.forensics.fusion import CONFLICT, NONE, PIXEL
    from fakescope.serve.schemas import DetectionRecord

    values = {PIXEL, content_credentials.KIND, watermark.KIND, metadata.KIND, CONFLICT, NONE}
    detect = " ".join((ROOT / "docs" / "detect.md").read_text().split())
    told = {"detect.md record": re.search(r"Each JSONL record: `([^`]*)`", detect)[1],
            "schema": DetectionRecord.model_fields["decided_by"].description}
    for page, start in (("serving.md", "`decided_by`: "), ("scale.md", "`decided_by` is ")):
        text = " ".join((ROOT / "docs" / page).read_text().split())
        told[page] = text.partition(start)[2][:300]
    missing = {where: sorted(values - set(re.findall(r"\w+", text))) for where, text in told.items()}
    assert not any(missing.values()), missing


def test_the_docs_show_cli_options():
    assert ("detect", "--runtime", "torch|onnx|auto") in CLI_USES and len(CLI_USES) > 50


@pytest.mark.parametrize(("command", "option", "value"), CLI_USES, ids=[f"{c} {o} {v or ''}" for c, o, v in CLI_USES])
def test_documented_cli_option_exists(command, option, value):
    """An option the docs show is one the command takes; a value shown for a choice is one of its choices."""
    import typer.main

    from fakescope.cli import app

    cli = typer.main.get_command(app)
    for word in command.split():
        cli = cli.commands[word]
    params = {name: p for p in cli.params for name in (*p.opts, *p.secondary_opts)}
    assert option in params, f"fakescope {command} has no {option}"
    choices = _choices(params[option])
    if choices and value:
        assert set(value.split("|")) <= choices, f"fakescope {command} {option}: {value} not in {sorted(choices)}"


def _choices(param) -> set[str]:
    """A choice option's values (typer's own parameters, or click's); empty for any other option."""
    descriptor = getattr(param, "type_descriptor", None)
    choices = descriptor.choices if descriptor is not None else getattr(param.type, "choices", None)
    return {getattr(c, "value", c) for c in choices or ()}


SCRIPTS = {p.name: p for folder in ("benchmarks", "recipes/default") for p in (ROOT / folder).glob("*.py")}
SCRIPT_USES = sorted({(name, option) for snippet in _snippets()
                      for name, rest in re.findall(r"(\w+\.py)\b([^`]*)", snippet) if name in SCRIPTS
                      for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest.split("&&")[0])})


def test_the_docs_show_script_options():
    assert ("train_speed.py", "--contiguous") in SCRIPT_USES and len(SCRIPT_USES) > 20


@pytest.mark.parametrize(("script", "option"), SCRIPT_USES, ids=[" ".join(u) for u in SCRIPT_USES])
def test_documented_script_option_exists(script, option):
    assert f'"{option}"' in SCRIPTS[script].read_text(), f"{script} takes no {option}"


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\bFAKESCOPE_[A-Z0-9_]*[A-Z0-9]\b", text))


def test_environment_variables_match_the_code():
    """Each FAKESCOPE_* variable the docs name is one the code reads, and each one it reads is documented."""
    documented = _variables("\n".join(page.read_text() for page in PAGES))
    read = _variables("\n".join(path.read_text() for path in (ROOT / "src" / "fakescope").rglob("*.py")))
    assert "FAKESCOPE_API_TOKEN" in read
    assert documented == read, f"only in the docs: {sorted(documented - read)}; undocumented: {sorted(read - documented)}"


def test_the_docs_list_the_keys_of_logo_json_as_save_generalization_writes_them(tmp_path):
    """docs/evaluate.md listed `matrix` and `counts` alone."""
    import json

    import pandas as pd

    from fakescope.evaluate.generalization import save_generalization

    fold = {"held_out": "g1", "n_unseen": 4, "auc_all": 0.5, "auc_vs_g1": 0.5, "n_vs_g1": 4, "auc_real_cam": 0.5,
            "shortcuts": None}
    written = json.loads(Path(save_generalization(pd.DataFrame([fold]), tmp_path)["json"]).read_text())
    text = " ".join((ROOT / "docs" / "evaluate.md").read_text().split())
    listed = re.search(r"`save_generalization` writes `logo\.csv` [^`]*and `logo\.json` \(([^)]*)\)", text)[1]
    assert set(re.findall(r"`(\w+)`", listed)) == set(written)


def test_the_docs_list_the_rates_of_report_json_as_evaluate_writes_them():
    """docs/evaluate.md names each rate of `report.rates` and the fields of each."""
    import numpy as np

    from fakescope.evaluate.metrics import rate_intervals

    written = rate_intervals(np.array([0, 1]), np.array([0.2, 0.8]), 0.5, (0.3, 0.7))
    text = " ".join((ROOT / "docs" / "evaluate.md").read_text().split())
    listed = re.search(r"`report\.rates` \(`[\w.]+`\) holds (.*?), each as (.*?), an exact binomial", text)

    def named(part: str) -> set[str]:  # the code spans outside parentheses (and the band's [lower, upper))
        return set(re.findall(r"`(\w+)`", re.sub(r"\([^()]*\)", "", re.sub(r"\[[^]]*\)", "", part))))

    assert named(listed[1]) == set(written) and named(listed[2]) == set(written["miss_rate"])
