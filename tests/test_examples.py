"""The docstring examples (`>>>`) and the README's and docs' Python snippets run as written from the repository root."""

from __future__ import annotations

import doctest
import importlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SRC = ROOT / "src"


def _runs_an_example(path: Path) -> bool:
    """Whether a module holds a `>>>` line not skipped (an example whose continuation skips it still counts)."""
    return any(line.lstrip().startswith(">>>") and "+SKIP" not in line for line in path.read_text().splitlines())


MODULES = sorted(".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
                 for p in (SRC / "fakescope").rglob("*.py") if _runs_an_example(p))
SNIPPETS = [(page, block) for page in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
            for block in re.findall(r"^```python\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)]
NEEDS = {"data/default/manifest.csv": "recipes/default/prepare.py's manifest (and a full evaluation: slow)"}


def test_the_examples_are_found():
    assert {"fakescope", "fakescope.detector", "fakescope.models.calibration"} <= set(MODULES) and len(SNIPPETS) >= 3


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples read examples/*.jpg
    module = importlib.import_module(name)
    runner, out = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE), io.StringIO()
    for test in doctest.DocTestFinder().find(module, globs=vars(module).copy()):
        runner.run(test, out=out.write)
    assert runner.summarize(verbose=False).failed == 0, out.getvalue()


@pytest.mark.parametrize(("page", "code"), SNIPPETS, ids=[f"{p.name}:{i}" for i, (p, _) in enumerate(SNIPPETS)])
def test_docs_python_snippets_run(page, code, monkeypatch, tmp_path):
    for needed, why in NEEDS.items():
        if needed in code:
            pytest.skip(f"needs {needed}: {why}")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # what they read; what they write goes to tmp_path
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{page.name} snippet", "exec"), {"__name__": "__snippet__"})  # noqa: S102 - the docs' own example
