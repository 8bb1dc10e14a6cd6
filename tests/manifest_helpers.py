"""A file given where a manifest is expected, and the one line every manifest reader says for it."""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image


def not_a_manifest(path: Path, data: bytes | None, what: str) -> str:
    """Write `data` to `path` (an 8 x 8 PNG where None); the readers' refusal, `it is {what}`, as an anchored regex."""
    if data is None:
        Image.new("RGB", (8, 8)).save(path, format="PNG")
    else:
        path.write_bytes(data)
    return f"^{re.escape(f'{path} is not a manifest (.csv or .parquet): it is {what}')}$"
