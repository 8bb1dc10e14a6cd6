"""Text read from a file (metadata, a manifest), made fit to show in a detail or a reason."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` on one line: control characters (line breaks, terminal escapes) become spaces, runs of spaces one.

    Example:
        >>> one_line("Canon\\nverdict: real\\x1b[2K")
        'Canon verdict: real [2K'
    """
    return " ".join(_CONTROL.sub(" ", text).split())
