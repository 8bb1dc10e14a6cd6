"""Make ai images from real ones: aligned taef2 reconstructions, the OpenAI Images API, local diffusers.

- `TAEF2`: the FLUX.2 tiny autoencoder; `reconstruct(images)` gives aligned ai images.
- `generate_local`: run any image-to-image callable over a folder, with a manifest.
- `OpenAIImagesConfig`, `run_openai`: paid, resumable, budgeted runs against the Images API.
- `Ledger`: the SQLite job ledger behind `run_openai`.
- `DiffusersImg2Img` (in `fakescope.generate.diffusers_backend`): img2img with local Stable Diffusion weights.
"""

from fakescope.generate.ledger import Ledger
from fakescope.generate.local import generate_local
from fakescope.generate.manifest import MANIFEST_COLUMNS, append_manifest
from fakescope.generate.openai_images import OpenAIImagesConfig
from fakescope.generate.runner import RunReport, run_openai
from fakescope.generate.taef2 import TAEF2

__all__ = [
    "MANIFEST_COLUMNS", "TAEF2", "Ledger", "OpenAIImagesConfig", "RunReport",
    "append_manifest", "generate_local", "run_openai",
]
