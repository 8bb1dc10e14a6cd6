"""One process-wide `ignore` entry per warning that fakescope reports itself or chose to use.

Not `warnings.catch_warnings` around a call: before Python 3.14's context-aware warnings (on by default only in
free-threaded builds) it saves and restores the module-global filter list unlocked, so threads decoding or sending at
once restore one another's lists out of order, leaving a filter in place or dropping others' (the `warnings` docs call
it not thread-safe).
"""

from __future__ import annotations

import re
import warnings


def ignore_warning(message: str, category: type[Warning], module: str) -> None:
    """`warnings.filterwarnings("ignore", message, category, module)` unless that entry is in the list already
    (idempotent: called on every decode or request, it does not grow or reorder the list)."""
    entry = ("ignore", re.compile(message, re.IGNORECASE) if message else None, category, re.compile(module), 0)
    if entry not in warnings.filters:
        warnings.filterwarnings("ignore", message, category, module)
