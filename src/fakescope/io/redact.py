"""Secrets kept out of the error text a command records, logs or raises: a client's or a server's text may echo them,
and out of what the HTTP clients fakescope builds log (`redact_http_logs`)."""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote

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


def shown_url(url: str) -> str:
    """`url` without its user info (a password) and query (a signed URL's signature), its control characters quoted;
    cut by hand, as `urlsplit` raises on a malformed URL."""
    scheme, sep, rest = url.partition("?")[0].partition("#")[0].partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        rest = authority.rpartition("@")[2] + slash + path
    return quote(scheme + sep + rest, safe="!$%&'()*+,/:;=@[]~")


HTTP_LOGGERS = ("httpx", "httpx2")
"""The loggers that name each request's URL at INFO: httpx's (`fetch_public`) and httpx2's (the `openai` client's HTTP
library). fakescope never turns INFO on, but an application that imports it may."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def redact_urls(text: str) -> str:
    """`text` with every URL in it as `shown_url` gives it."""
    return _URL.sub(lambda match: shown_url(match[0]), text)


class RedactURLs(logging.Filter):
    """Rewrites a record's message with every URL as `shown_url` gives it and `hide_secrets` applied (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: left for the handler to report, as logging does
            return True
        record.msg, record.args = hide_secrets(redact_urls(message)), None
        return True


def redact_http_logs() -> None:
    """Put `RedactURLs` on `HTTP_LOGGERS` (once; called where fakescope builds an HTTP client)."""
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactURLs) for existing in logger.filters):
            logger.addFilter(RedactURLs())
