"""Each stage package's public names: `__all__` resolves, `dir()` shows it, and nothing else public leaks."""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["fakescope", "fakescope.data", "fakescope.generate", "fakescope.models", "fakescope.train",
            "fakescope.evaluate", "fakescope.explain", "fakescope.forensics", "fakescope.serve", "fakescope.scale",
            "fakescope.io"]
INTERNAL = {"fakescope.data": ["check_rows", "resolve_uris"],  # helpers the library and CLI call; no doc names them
            "fakescope.explain": ["require_classifier", "require_out_folder"]}


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_the_public_names_and_dir_shows_them(name):
    package = importlib.import_module(name)
    listed = set(package.__all__)
    assert listed <= set(dir(package)), f"{name}: dir() lacks {sorted(listed - set(dir(package)))}"  # tab completion
    leaked = {k for k, v in vars(package).items() if not k.startswith("_") and not inspect.ismodule(v)} - listed
    assert not leaked, f"{name}: public but not in __all__: {sorted(leaked)}"
    for attribute in sorted(listed):
        try:
            getattr(package, attribute)
        except ModuleNotFoundError as exc:
            pytest.skip(f"{name}.{attribute} needs the optional package {exc.name}")


@pytest.mark.parametrize("name", sorted(INTERNAL))
def test_internal_helpers_stay_in_their_modules(name):
    package = importlib.import_module(name)
    assert not set(INTERNAL[name]) & (set(package.__all__) | set(dir(package)))
