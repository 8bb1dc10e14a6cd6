"""Serving: the REST API (`fakescope serve`) and the Streamlit web app (`fakescope app`).

- `create_app`, `ServeConfig`: the FastAPI application and its settings.
- `MicroBatcher`: gathers concurrent requests into batched `Detector.predict` calls.
- `heatmap_overlay`, `heatmap_image`: render `Detector.explain` heatmaps.
- `generate_from_upload`, `save_pair`, `openai_client`: generation from one upload, for the API and the app.
- `fakescope.serve.schemas`: the API's JSON answers as Pydantic models (what `/openapi.json` describes).
- `WEBAPP_PATH`, `webapp_command`: the Streamlit script `fakescope app` runs, and how it is started.
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes
from fakescope.serve._webapp_launch import WEBAPP_PATH, webapp_command

_HOMES = {"create_app": "app", "MicroBatcher": "batching", "ServeConfig": "config", "generate_from_upload": "generation",
          "openai_client": "generation", "save_pair": "generation", "heatmap_image": "overlay", "heatmap_overlay": "overlay"}

# the CLI reads `fakescope.serve.limits` without loading FastAPI and torch
__getattr__, __dir__ = _lazy_attributes(__name__, _HOMES)

__all__ = [
    "WEBAPP_PATH", "MicroBatcher", "webapp_command", "ServeConfig", "create_app", "generate_from_upload",
    "heatmap_image", "heatmap_overlay", "openai_client", "save_pair",
]
