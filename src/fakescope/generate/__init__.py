"""Make ai images from real ones: aligned taef2 reconstructions, the OpenAI Images API, local diffusers."""

from fakescope.generate.taef2 import TAEF2

__all__ = ["TAEF2"]
