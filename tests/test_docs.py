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
