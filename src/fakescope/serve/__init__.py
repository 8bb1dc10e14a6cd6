"""Serving: the REST API (`fakescope serve`) and the Streamlit web app (`fakescope app`).

- `create_app`, `ServeConfig`: the FastAPI application and its settings.
- `MicroBatcher`: gathers concurrent requests into batched `Detector.predict` calls.
- `heatmap_overlay`, `heatmap_image`: render `Detector.explain` heatmaps.
- `generate_from_upload`, `save_pair`, `openai_client`: generation from one upload, for the API and the app.
- `fakescope.serve.schemas`: the API's JSON answers as Pydantic models (what `/openapi.json` describes).
- `WEBAPP_PATH`, `webapp_command`: the Streamlit script `fakescope app` runs, and how it is started.
"""

import sys
from collections.abc import Iterable
from pathlib import Path

from fakescope._lazy import lazy_attributes

WEBAPP_PATH = Path(__file__).with_name("webapp.py")
_HOMES = {"create_app": "app", "MicroBatcher": "batching", "ServeConfig": "config", "generate_from_upload": "generation",
          "openai_client": "generation", "save_pair": "generation", "heatmap_image": "overlay", "heatmap_overlay": "overlay"}

__getattr__ = lazy_attributes(__name__, _HOMES)  # the CLI reads `fakescope.serve.limits` without loading FastAPI and torch


def webapp_command(host: str, port: int, allowed_hosts: Iterable[str] = ()) -> list[str]:
    """The command line that serves the web app headless on host:port (no telemetry, minimal toolbar).

    On loopback Streamlit's own `server.allowedHosts` admits only loopback names, `host` and `allowed_hosts` (checked
    names, `*`: any): a page under a rebound name gets no session, so it can neither run the script nor upload files.
    """
    from fakescope.serve.origins import is_loopback

    names = ["localhost", "127.0.0.1", "::1", host.strip("[]"), *allowed_hosts] if is_loopback(host) else []
    return [sys.executable, "-m", "streamlit", "run", str(WEBAPP_PATH), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal", *(arg for name in dict.fromkeys(names) for arg in ("--server.allowedHosts", name))]


__all__ = [
    "WEBAPP_PATH", "MicroBatcher", "webapp_command", "ServeConfig", "create_app", "generate_from_upload",
    "heatmap_image", "heatmap_overlay", "openai_client", "save_pair",
]
