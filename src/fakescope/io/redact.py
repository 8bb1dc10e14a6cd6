"""Secrets kept out of the error text a command records, logs or raises: a client's or a server's text may echo them."""

from __future__ import annotations

import os

SECRET_ENV = ("OPENAI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
"""The environment variables whose values are hidden wherever they appear."""
MIN_LENGTH = 8
"""Shorter values (a placeholder such as `test`) are left alone: replacing them would mangle text, not hide a secret."""


def hide_secrets(text: str, *keys: str | None) -> str:
    """`text` with `keys` and the values of `SECRET_ENV` (surrounding whitespace dropped) replaced by `***`."""
    values = {value.strip() for value in (*keys, *map(os.environ.get, SECRET_ENV)) if value}
    for value in sorted((value for value in values if len(value) >= MIN_LENGTH), key=len, reverse=True):
        text = text.replace(value, "***")
    return text
