"""img2img from real images with local Stable Diffusion weights through `diffusers` (optional).

Needs `pip install diffusers transformers` and a local pipeline folder in the diffusers
layout; nothing is downloaded (`local_files_only=True`). Sources whose longer side exceeds
`max_side` are denoised at that size (Stable Diffusion is trained at 512-1024 px; a 24 MP photo at
full size would take hours and tens of GB); outputs are resized back to each source's exact size so
real and ai images stay aligned.

Example:
    >>> sd = DiffusersImg2Img.from_pretrained("weights/sd-1.5", prompt="a photo", strength=0.3)  # doctest: +SKIP
    >>> fakes = sd.generate([Image.open("examples/coffee.jpg")])  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fakescope.detector import resolve_device
from fakescope.errors import ModelLoadError

MULTIPLE = 8
"""Stable Diffusion's VAE needs sides that are multiples of this."""
LAYOUT = ("expected a local Stable Diffusion folder in the diffusers layout, with model_index.json, unet/, vae/, "
          "text_encoder/, tokenizer/ and scheduler/, as `hf download <repo> --local-dir FOLDER` or `save_pretrained` "
          "writes it")


class DiffusersImg2Img:
    """A loaded `StableDiffusionImg2ImgPipeline` plus the settings of one run.

    Args:
        pipeline: The pipeline, already on its device.
        name: Model name recorded in the manifest (the folder's name by default).
        prompt, strength, steps, guidance, seed: img2img settings; `seed` makes runs repeatable.
        max_side: Longest side the pipeline works at; larger sources are scaled down for it.
    """

    def __init__(self, pipeline, name: str, prompt: str = "a photo", strength: float = 0.3, steps: int = 30,
                 guidance: float = 7.5, seed: int = 0, max_side: int = 1024):
        self.pipeline = pipeline
        self.name = name
        self.prompt = prompt
        self.strength = strength
        self.steps = steps
        self.guidance = guidance
        self.seed = seed
        self.max_side = max_side

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "auto", **settings: Any) -> DiffusersImg2Img:
        """Load a local pipeline folder (fp16 on CUDA, fp32 on CPU) without its safety checker.

        Raises:
            ConfigError: `device` is no usable device.
            ModelLoadError: the folder is missing or not a loadable pipeline.
            ModuleNotFoundError: `diffusers` or `transformers` is not installed (the CLI names the extra).
        """
        import transformers  # noqa: F401 - without it diffusers' pipeline is a stub that raises a bare ImportError
        from diffusers import StableDiffusionImg2ImgPipeline
        from diffusers.utils import is_accelerate_available

        device = resolve_device(device)  # a bad name is one line before the folder is read
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        folder = Path(path)
        if not folder.is_dir():
            raise ModelLoadError(f"diffusers pipeline folder not found: {folder}; {LAYOUT}")
        try:
            pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(
                folder, dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=True,
                low_cpu_mem_usage=is_accelerate_available(),  # True without accelerate logs a warning and falls back
            )
        except (OSError, ValueError, TypeError, RuntimeError) as exc:  # RuntimeError: weights of other shapes
            reason = " ".join(" ".join(str(exc).split("\n")[:2]).split())  # a shape error's first mismatch too
            raise ModelLoadError(f"cannot load diffusers pipeline {folder}: {reason}; "
                                 f"{LAYOUT}") from exc
        pipeline.set_progress_bar_config(disable=True)
        return cls(pipeline.to(device), name=folder.name, **settings)

    def params(self) -> dict[str, Any]:
        """The settings recorded in the manifest."""
        return {"prompt": self.prompt, "strength": self.strength, "steps": self.steps,
                "guidance": self.guidance, "seed": self.seed, "max_side": self.max_side}

    def generate(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """img2img each image; same-size images share one pipeline call. Outputs have the sources' sizes."""
        results: list[Image.Image | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for (width, height), indices in by_size.items():
            work = self._work_size(width, height)
            batch = [images[i].convert("RGB").resize(work, Image.LANCZOS) for i in indices]
            generator = torch.Generator(device="cpu").manual_seed(self.seed)
            outputs = self.pipeline(
                prompt=[self.prompt] * len(batch), image=batch, strength=self.strength,
                num_inference_steps=self.steps, guidance_scale=self.guidance, generator=generator,
            ).images
            for i, output in zip(indices, outputs):
                results[i] = output.resize((width, height), Image.LANCZOS) if output.size != (width, height) else output
        return results  # type: ignore[return-value]

    def _work_size(self, width: int, height: int) -> tuple[int, int]:
        """The pipeline's size for a source: at most `max_side` on the longer side, sides multiples of 8."""
        scale = min(1.0, self.max_side / max(width, height))
        return tuple(max(MULTIPLE, int(side * scale) // MULTIPLE * MULTIPLE) for side in (width, height))  # type: ignore[return-value]
