"""How `fakescope app` starts the Streamlit web app."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from fakescope.serve.origins import is_loopback

WEBAPP_PATH = Path(__file__).with_name("webapp.py")


def webapp_command(host: str, port: int, allowed_hosts: Iterable[str] = ()) -> list[str]:
    """The command line that serves the web app headless on host:port (no telemetry, minimal toolbar).

    On loopback Streamlit's own `server.allowedHosts` admits only loopback names, `host` and `allowed_hosts` (checked
    names, `*`: any): a page under a rebound name gets no session, so it can neither run the script nor upload files.
    """
    names = ["localhost", "127.0.0.1", "::1", host.strip("[]"), *allowed_hosts] if is_loopback(host) else []
    return [sys.executable, "-m", "streamlit", "run", str(WEBAPP_PATH), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal", *(arg for name in dict.fromkeys(names) for arg in ("--server.allowedHosts", name))]
