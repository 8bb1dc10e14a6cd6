"""Every `fakescope.x.y` name the README and docs/ mention exists."""

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
