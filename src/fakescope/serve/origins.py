"""Who may talk to the API from a browser: the `Host` check (DNS rebinding) and the cross-origin write check.

As Jupyter does: a request that reached a loopback address must name a loopback host (or an allowed one), so a
page whose name was rebound to 127.0.0.1 is refused; and a state-changing request (anything but GET, HEAD,
OPTIONS) with an `Origin` header must come from the server's own origin or a `--cors-origin`, so no page can
start a job with a plain form POST (which needs no CORS preflight). Clients that send no `Origin` (curl,
requests, httpx) are unaffected.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from fakescope.errors import ConfigError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOSTNAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")
APP_ALLOWED_HOSTS_ENV = "FAKESCOPE_APP_ALLOWED_HOSTS"  # `fakescope app --allowed-host` names, comma-separated
APP_REMEDY = "open the app as http://127.0.0.1 or http://localhost, or allow a proxy's name with fakescope app --allowed-host"


def host_refusal(headers: Mapping[str, str], server: tuple[str, int] | None, allowed: tuple[str, ...],
                 remedy: str = "a proxy's name can be allowed with fakescope serve --allowed-host") -> str | None:
    """Why a request that arrived on a loopback address (`server`) names a host it may not; None when it may.

    Allowed: `localhost`, a loopback address (`127.0.0.1`, `[::1]`), any port, and the names in `allowed`
    (`*`: any). No `Host` header (HTTP/1.0, never a browser) passes.
    """
    host = headers.get("host")
    if host is None or server is None or not is_loopback(server[0]) or "*" in allowed:
        return None
    name = _hostname(host)
    if name is not None and (is_loopback(name) or name in allowed):
        return None
    return (f"host not allowed: {host!r} is not a loopback name (localhost, 127.0.0.1, [::1]); "
            f"{remedy}")


def app_host_refusal(host: str | None, address: str) -> str | None:
    """`host_refusal` for the web app listening on `address`, admitting the names in `FAKESCOPE_APP_ALLOWED_HOSTS`.

    Raises:
        ConfigError: a name there that `checked_host` refuses.
    """
    allowed = tuple(checked_host(name) for name in os.environ.get(APP_ALLOWED_HOSTS_ENV, "").split(",") if name.strip())
    return host_refusal({"host": host} if host else {}, (address, 0), allowed, remedy=APP_REMEDY)


def any_host_warning(allowed: Iterable[str], command: str) -> str | None:
    """The warning `fakescope <command>` prints on start when its checked `--allowed-host` names hold `*`; else None."""
    if "*" not in allowed:
        return None
    return (f"warning: --allowed-host * turns the DNS-rebinding check off: a web page under any name that resolves to "
            f"this machine can use fakescope {command}; allow only the names a proxy sends")


def origin_refusal(method: str, headers: Mapping[str, str], cors_origins: tuple[str, ...]) -> str | None:
    """Why a state-changing request from a web page of another origin is refused; None when it may go on."""
    origin = headers.get("origin")
    if method in SAFE_METHODS or origin is None or "*" in cors_origins or origin in cors_origins:
        return None
    try:
        sender = urlsplit(origin).netloc.lower()
    except ValueError:  # `http://[`: no origin a browser sends
        sender = None
    if sender and sender == headers.get("host", "").lower():
        return None
    return (f"cross-origin request refused: a page on {origin} may not call this API "
            "(allow its origin with fakescope serve --cors-origin)")


def checked_host(name: str) -> str:
    """An `--allowed-host` value as compared: a host name or IP address, lower case (`*`: any); else `ConfigError`."""
    cleaned = name.strip().lower().rstrip(".")
    normal = "*" if cleaned == "*" else _normal(cleaned.removeprefix("[").removesuffix("]"))
    if normal is None:
        raise ConfigError(f"allowed host {name!r}: expected a host name or IP address without scheme, port or path "
                          "(as api.example.com), or *")
    return normal


def _hostname(host: str) -> str | None:
    """The name in a `Host` value (`[::1]:8000` -> `::1`) as `checked_host` gives it; None if unreadable."""
    try:
        name = urlsplit(f"//{host}").hostname
    except ValueError:
        return None
    return _normal(name.rstrip(".")) if name else None


def _normal(name: str) -> str | None:
    """An IP address in its standard form, or a host name as it is; None for anything else."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name if HOSTNAME.fullmatch(name) else None


def is_loopback(host: str) -> bool:
    """Whether `host` (an address, `[::1]`, or `localhost`) is this machine only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
