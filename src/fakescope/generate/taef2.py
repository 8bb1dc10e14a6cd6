"""Aligned fakes from a real generator's decoder: the FLUX.2 tiny autoencoder (taef2).

A real photo goes through the encoder into FLUX.2's 32-channel latent space and back through
the decoder. Content, framing and size stay the photo's; only the decoder's up-sampling trace
is new, which makes (photo, reconstruction) an aligned real/ai pair.

The weights (`taef2_encoder.pth`, `taef2_decoder.pth`, MIT, by Ollin Boer Bohan) are never
bundled: pass their folder, or set `FAKESCOPE_TAEF2_WEIGHTS`.

Example:
    >>> from PIL import Image
    >>> taef2 = TAEF2.from_dir("../shared/data/generators/taef2")  # doctest: +SKIP
    >>> fake = taef2.reconstruct([Image.open("examples/coffee.jpg")])[0]      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from fakescope.detector import resolve_device
from fakescope.errors import ConfigError, ModelLoadError

WEIGHTS_ENV = "FAKESCOPE_TAEF2_WEIGHTS"
DEFAULT_WEIGHTS_DIR = Path("../shared/data/generators/taef2")
ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"
LATENT_CHANNELS = 32
SCALE = 8
"""Spatial down-sampling factor of the encoder: inputs are padded to multiples of it."""
ENCODER_LOCAL, DECODER_LOCAL = 11, 6
"""`encoder[:11]` and `decoder[6:]` (the full-resolution layers) hold no GroupNorm: they run tile by tile."""
TILE, MARGIN = 96, 12
"""Tile core and context margin in latent pixels (768 and 96 image pixels); the margin exceeds both
parts' receptive field (about 65 and 35 image pixels), so tiling changes no output pixel."""
PIXELS_PER_PASS = 1_000_000
"""`reconstruct` puts at most this many pixels in one batch (one image at least)."""


def _conv(in_ch: int, out_ch: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=bias)


class Clamp(nn.Module):
    """Soft clamp of the latent to (-3, 3): `tanh(x / 3) * 3`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Residual block of three 3x3 convolutions, with an optional GroupNorm pooling pre-mix."""

    def __init__(self, in_ch: int, out_ch: int, gn: bool = False):
        super().__init__()
        self.conv = nn.Sequential(
            _conv(in_ch, out_ch), nn.ReLU(), _conv(out_ch, out_ch), nn.ReLU(), _conv(out_ch, out_ch)
        )
        self.skip = nn.Conv2d(in_ch, out_ch, 1, bias=False) if in_ch != out_ch else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = (
            nn.Sequential(
                nn.Conv2d(in_ch, 4 * in_ch, 1, bias=False),
                nn.GroupNorm(4, 4 * in_ch),
                nn.ReLU(),
                nn.Conv2d(4 * in_ch, in_ch, 1, bias=False),
            )
            if gn
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder() -> nn.Sequential:
    """Encoder: RGB in [0, 1], (N, 3, H, W) -> latent (N, 32, H/8, W/8)."""
    return nn.Sequential(
        _conv(3, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        _conv(64, 64, stride=2, bias=False), Block(64, 64, gn=True), Block(64, 64, gn=True), Block(64, 64, gn=True),
        _conv(64, LATENT_CHANNELS),
    )


def build_decoder() -> nn.Sequential:
    """Decoder: latent (N, 32, h, w) -> RGB (N, 3, 8h, 8w), unclamped."""
    return nn.Sequential(
        Clamp(), _conv(LATENT_CHANNELS, 64), nn.ReLU(),
        Block(64, 64, gn=True), Block(64, 64, gn=True), Block(64, 64, gn=True),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        nn.Upsample(scale_factor=2), _conv(64, 64, bias=False), Block(64, 64),
        _conv(64, 3),
    )


def resolve_weights_dir(path: str | os.PathLike | None = None) -> Path:
    """Find the weights folder: the argument, else `$FAKESCOPE_TAEF2_WEIGHTS`, else `../shared/data/generators/taef2`.

    Raises:
        ConfigError: no folder was given and the default one does not exist.
    """
    chosen = path or os.environ.get(WEIGHTS_ENV)
    if chosen:
        return Path(chosen).expanduser()
    if DEFAULT_WEIGHTS_DIR.is_dir():
        return DEFAULT_WEIGHTS_DIR.resolve()
    raise ConfigError(
        f"no taef2 weights folder: give one (--weights) or set {WEIGHTS_ENV} to the folder holding {ENCODER_FILE} and "
        f"{DECODER_FILE} (the default, {DEFAULT_WEIGHTS_DIR}, is not there from {Path.cwd()})"
    )


def _load_state(module: nn.Module, file: Path) -> None:
    if not file.is_file():
        raise ModelLoadError(f"taef2 weights file not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load taef2 weights {file}: {' '.join(str(exc).split())}") from exc


def _tiled(module: nn.Module, x: torch.Tensor, k_in: int, k_out: int) -> torch.Tensor:
    """Run a normalisation-free `module` over overlapping tiles of `x`, `k_in`/`k_out` pixels per latent pixel.

    Tiles are laid on the latent grid (multiples of 8 image pixels), so the strides keep their phase.
    """
    height, width = x.shape[-2] // k_in, x.shape[-1] // k_in
    out: torch.Tensor | None = None
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            bottom, right = min(top + TILE, height), min(left + TILE, width)
            t0, l0 = max(top - MARGIN, 0), max(left - MARGIN, 0)
            b0, r0 = min(bottom + MARGIN, height), min(right + MARGIN, width)
            y = module(x[..., t0 * k_in:b0 * k_in, l0 * k_in:r0 * k_in])
            if out is None:
                out = y.new_empty((*y.shape[:2], height * k_out, width * k_out))
            out[..., top * k_out:bottom * k_out, left * k_out:right * k_out] = y[
                ..., (top - t0) * k_out:(bottom - t0) * k_out, (left - l0) * k_out:(right - l0) * k_out
            ]
    return out  # type: ignore[return-value]


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _to_image(x: torch.Tensor) -> Image.Image:
    array = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


class TAEF2(nn.Module):
    """The FLUX.2 tiny autoencoder: `encoder` and `decoder` as `nn.Sequential`s with the published keys.

    Args:
        device: Where the networks run (`cpu`, `cuda`, `cuda:N`, `mps`, `auto`); an unusable one is a `ConfigError`.
        batch_size: Images per forward pass in `reconstruct`.
    """

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 16):
        super().__init__()
        self.encoder = build_encoder()
        self.decoder = build_decoder()
        self.batch_size = batch_size
        self.to(resolve_device(device)).eval()

    @classmethod
    def from_dir(
        cls, path: str | os.PathLike | None = None, device: str | torch.device = "cpu", batch_size: int = 16
    ) -> TAEF2:
        """Build the autoencoder and load both state dicts with `strict=True` from a weights folder.

        Raises:
            ConfigError: no weights folder could be resolved.
            ModelLoadError: a file is missing or its keys/shapes do not match the architecture.
        """
        folder = resolve_weights_dir(path)
        model = cls(device="cpu", batch_size=batch_size)
        _load_state(model.encoder, folder / ENCODER_FILE)
        _load_state(model.decoder, folder / DECODER_FILE)
        return model.to(resolve_device(device)).eval()

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.parameters()).device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode and decode RGB floats in [0, 1] whose sides are multiples of 8; output clamped to [0, 1].

        The full-resolution layers run on overlapping tiles, so memory stays bounded for any image size;
        the GroupNorm layers see the whole latent, so the output equals an untiled pass.
        """
        features = _tiled(self.encoder[:ENCODER_LOCAL], x, SCALE, 1)
        latent = self.decoder[:DECODER_LOCAL](self.encoder[ENCODER_LOCAL:](features))
        return _tiled(self.decoder[DECODER_LOCAL:], latent, 1, SCALE).clamp(0, 1)

    @torch.inference_mode()
    def reconstruct_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Round-trip a float batch (N, 3, H, W) in [0, 1] of any size; returns the same shape on `x`'s device.

        Sides that are not multiples of 8 are reflect-padded, and the output is cropped back.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) tensor, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % SCALE, -width % SCALE
        batch = x.to(self.device, torch.float32)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            batch = F.pad(batch, (0, pad_w, 0, pad_h), mode=mode)
        out = self(batch)[..., :height, :width]
        return out.to(x.device)

    def reconstruct(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """Round-trip PIL images at their own resolution; same-size images share batches.

        Returns:
            RGB images, in input order, each exactly the size of its source.
        """
        results: list[Image.Image | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_size.setdefault(image.size, []).append(index)
        for (width, height), indices in by_size.items():
            step = max(1, min(self.batch_size, PIXELS_PER_PASS // (width * height)))
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                batch = torch.stack([_to_tensor(images[i]) for i in chunk]).to(self.device).float() / 255
                for i, out in zip(chunk, self.reconstruct_tensor(batch)):
                    results[i] = _to_image(out)
        return results  # type: ignore[return-value]
