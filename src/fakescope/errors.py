"""One error hierarchy: every leaf also inherits the builtin it resembles."""

from __future__ import annotations

import difflib


class FakescopeError(Exception):
    """Base of every error fakescope raises on purpose; its message is one clean line."""


class ImageLoadError(FakescopeError, ValueError):
    """An input could not be read as an image (corrupt, unsupported, too large, too small)."""


class StorageError(FakescopeError, OSError):
    """A storage location could not be listed, read or written."""


class StorageUnavailableError(StorageError):
    """The storage itself failed (unreachable, no credentials), not one file: a scan stops instead of
    recording an error row for every file it could not reach."""


class UnknownModelError(FakescopeError, KeyError):
    """A model (or architecture) name is neither registered nor a path."""

    def __init__(self, name: str, known: list[str], kind: str = "model", hint: str = ""):
        close = difflib.get_close_matches(name, known, n=3)
        known_hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known))}"
        super().__init__(f"unknown {kind} {name!r}{known_hint}{hint}")

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class ModelLoadError(FakescopeError, OSError):
    """A model directory or file exists but cannot be loaded."""


class ConfigError(FakescopeError, ValueError):
    """A configuration file or option is invalid."""


class PluginError(ConfigError):
    """A module named in FAKESCOPE_PLUGINS (architectures of your own) could not be imported."""


class NotFittedError(FakescopeError, ValueError, AttributeError):
    """An estimator was used before `fit`."""
