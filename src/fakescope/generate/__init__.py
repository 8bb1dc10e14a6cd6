"""Make ai images from real ones: aligned taef2 reconstructions, the OpenAI Images API, local diffusers.

- `TAEF2`: the FLUX.2 tiny autoencoder; `reconstruct(images)` gives aligned ai images.
- `generate_local`: run any image-to-image callable over a folder, with a manifest.
- `OpenAIImagesConfig`, `run_openai`: paid, resumable, budgeted runs against the Images API.
- `Ledger`: the SQLite job ledger behind `run_openai`.
- `DiffusersImg2Img` (in `fakescope.generate.diffusers_backend`): img2img with local Stable Diffusion weights.
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes

_HOMES = {"Ledger": "ledger", "generate_local": "local", "MANIFEST_COLUMNS": "manifest", "append_manifest": "manifest",
          "OpenAIImagesConfig": "openai_images", "RunReport": "runner", "run_openai": "runner", "TAEF2": "taef2"}

# the CLI reads `fakescope.generate.openai_models` without loading torch
__getattr__, __dir__ = _lazy_attributes(__name__, _HOMES)

__all__ = [
    "MANIFEST_COLUMNS", "TAEF2", "Ledger", "OpenAIImagesConfig", "RunReport",
    "append_manifest", "generate_local", "run_openai",
]
