"""The user cache folder: ONNX exports and the job ledgers of remote generation outputs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$FAKESCOPE_CACHE`, else `$XDG_CACHE_HOME/fakescope`, else `~/.cache/fakescope`, joined with `parts`."""
    if base := os.environ.get("FAKESCOPE_CACHE"):
        return Path(base, *parts)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "fakescope", *parts)
