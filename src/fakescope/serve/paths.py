"""The web app's root folder: every server-side path it writes or reads (dataset folder, reports) lies under it.

The app has no login, so a visitor's typed path must not reach the rest of the server's files or its storage
credentials: `confined` refuses URIs (`s3://...`) and any path that resolves (symlinks followed) outside the root.
"""

from __future__ import annotations

import os
from pathlib import Path

from fakescope.errors import ConfigError

ROOT_ENV = "FAKESCOPE_APP_ROOT"


def app_root(root: str | Path | None = None) -> Path:
    """`root` (default `FAKESCOPE_APP_ROOT`, else the current folder) resolved; not an existing folder: `ConfigError`."""
    folder = Path(root or os.environ.get(ROOT_ENV) or Path.cwd()).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"the app's root {folder} is not a folder")
    return folder


def confined(path: str | Path, root: Path) -> Path:
    """`path` (`~` is the home folder; relative to `root`) resolved; refused unless it lies under `root`."""
    text = str(path).strip()
    if "://" in text:
        raise ConfigError(f"{text}: the web app reads and writes local folders under {root} only")
    resolved = (root / Path(text).expanduser()).resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(f"{text} is outside the app's folder {root} (fakescope app --root)")
    return resolved


def within(path: str | Path, root: Path) -> Path | None:
    """`confined(path, root)`, or None where it refuses."""
    try:
        return confined(path, root)
    except ConfigError:
        return None
