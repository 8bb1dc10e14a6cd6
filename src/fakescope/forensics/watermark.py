"""Invisible generator watermarks: the DWT-DCT marks that Stable Diffusion pipelines embed.

The public reference code (CompVis and Stability scripts, diffusers' SDXL pipeline) uses the
`invisible-watermark` package's `dwtDct` method: in the Haar approximation band of the U channel
(its default scales skip Y, and its loop never reaches V), each 4x4 block carries one bit, bit `i` repeated on every
block `n` with
`n % length == i`, read as whether the block's largest AC coefficient sits in the upper half
of a 36-step quantiser. This module reads exactly that (bit-identical to
`imwatermark.WatermarkDecoder(...).decode(img, "dwtDct")`, checked by the tests) but vectorised
in numpy for host pixels and in torch for those on a device (the GPU that decoded the image), the same
operations either way, and for all known marks at once, since
the package loops over blocks in Python (~100x slower). The colour conversion and the Haar step
repeat OpenCV's fixed-point arithmetic and PyWavelets' float order exactly (the tests check both).

Pipelines disagree on channel order: the CompVis/Stability scripts hand the encoder BGR,
diffusers hands it RGB, so both orders are read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fakescope.detection import Evidence

if TYPE_CHECKING:  # torch only for pixels already on a device: host pixels are read in numpy
    import torch

KIND = "watermark"
SCORE_MATCH = 0.99
MIN_PIXELS = 256 * 256
"""The encoder refuses smaller images, so no generator mark can be there."""
MAX_PIXELS = 4096 * 4096
"""Larger images are not read: generators emit at most a few megapixels and resizing erases the mark."""
_SCALE = 36.0
_BLOCK = 4
_HAAR = 0.7071067811865476  # PyWavelets' Haar low-pass tap

SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110
"""diffusers' `StableDiffusionXLWatermarker` and Stability's generative-models WATERMARK_MESSAGE."""


@dataclass(frozen=True)
class KnownMark:
    """A published watermark payload and how many bit errors still count as that mark."""

    name: str
    bits: tuple[int, ...]
    max_bit_errors: int

    @property
    def chance_match(self) -> float:
        """Probability that random bits fall within `max_bit_errors` of the payload."""
        n = len(self.bits)
        return sum(math.comb(n, k) for k in range(self.max_bit_errors + 1)) / 2.0 ** n


def _bits_of_bytes(payload: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(payload, dtype=np.uint8)))


KNOWN_MARKS: tuple[KnownMark, ...] = (
    KnownMark("Stable Diffusion XL", tuple(int(b) for b in f"{SDXL_MESSAGE:048b}"), 2),
    KnownMark("Stable Diffusion 2", _bits_of_bytes(b"SDV2"), 0),
    KnownMark("Stable Diffusion 1", _bits_of_bytes(b"StableDiffusionV1"), 6),
)
"""Bit-error limits keep the chance of a random match under 1e-8 per image and channel order."""


def check_watermark(image: Image.Image) -> Evidence:
    """Look for the known generator watermarks in an RGB image (see `read_watermark`).

    Example:
        >>> check_watermark(Image.new("RGB", (64, 64))).detail
        'image too small for generator watermarks (64x64 < 65,536 pixels)'
    """
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return read_watermark(rgb.transpose(2, 0, 1))


def read_watermark(pixels: np.ndarray | torch.Tensor) -> Evidence:
    """Look for the known generator watermarks in (3, H, W) uint8 RGB pixels: a numpy array, or a tensor on any device.

    Returns:
        Evidence of kind `watermark`: decisive with `score` 0.99 when a mark decodes within its
        bit-error limit; otherwise `score` None (no mark proves nothing). `data` lists, per mark,
        the fewest bit errors seen, the limit and the channel order.
    """
    return read_watermarks([pixels])[0]


def read_watermarks(images: Sequence[np.ndarray | torch.Tensor], *, max_pixels: int = 2**25) -> list[Evidence]:
    """`read_watermark` for many images: those of one size are read together, up to `max_pixels` at
    once (~1 GiB of intermediates; on a GPU, a few kernel launches and one transfer back instead of
    dozens per image)."""
    results: list[Evidence | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, pixels in enumerate(images):
        h, w = pixels.shape[-2:]
        if w * h < MIN_PIXELS:
            results[i] = Evidence(KIND, None, f"image too small for generator watermarks ({w}x{h} < {MIN_PIXELS:,} pixels)")
        elif w * h > MAX_PIXELS:
            results[i] = Evidence(KIND, None, f"image too large to read watermarks ({w}x{h} > {MAX_PIXELS:,} pixels)")
        else:
            by_size.setdefault((h, w), []).append(i)
    for (h, w), indices in by_size.items():
        per_batch = max(1, max_pixels // (h * w))
        for start in range(0, len(indices), per_batch):
            part = indices[start:start + per_batch]
            xp = _namespace(images[part[0]])
            batch = xp.stack([images[i] for i in part]) if len(part) > 1 else images[part[0]][None]  # one: no copy
            votes = _votes_in_both_orders(batch, xp)
            for i, image_votes in zip(part, votes if xp is np else votes.cpu().numpy()):
                results[i] = _evidence(dict(zip(("bgr", "rgb"), image_votes)))
    return results


def _namespace(pixels: np.ndarray | torch.Tensor):
    """numpy for an array, torch for a tensor (imported only then: it takes seconds)."""
    if isinstance(pixels, np.ndarray):
        return np
    import torch

    return torch


def _evidence(votes: dict[str, np.ndarray]) -> Evidence:
    """The watermark evidence from one image's block votes in each channel order."""
    results = {}
    for order, block_bits in votes.items():
        for mark in KNOWN_MARKS:
            errors = int(np.count_nonzero(decode_bits(block_bits, len(mark.bits)) != np.array(mark.bits)))
            if mark.name not in results or errors < results[mark.name]["bit_errors"]:
                results[mark.name] = {"bit_errors": errors, "bits": len(mark.bits),
                                      "max_bit_errors": mark.max_bit_errors, "channel_order": order}
    matches = [m for m in KNOWN_MARKS if results[m.name]["bit_errors"] <= m.max_bit_errors]
    if not matches:
        closest = min(results.values(), key=lambda r: r["bit_errors"] / r["bits"])
        return Evidence(KIND, None, f"no known generator watermark (closest: {closest['bit_errors']}/"
                        f"{closest['bits']} bits wrong)", data={"marks": results})
    mark = matches[0]
    found = results[mark.name]
    return Evidence(KIND, SCORE_MATCH, f"{mark.name} invisible watermark decoded ({found['bit_errors']}/"
                    f"{found['bits']} bits wrong, limit {mark.max_bit_errors}; chance match "
                    f"{mark.chance_match:.1e})", decisive=True,
                    data={"generator": mark.name, "marks": results})


def _votes_in_both_orders(rgb: np.ndarray | torch.Tensor, xp) -> np.ndarray | torch.Tensor:
    """(..., 2, blocks) per-block dwtDct bits, in the encoder's block order, of (..., 3, H, W) RGB pixels handed to the
    encoder as BGR, then as RGB (the channels converted once, not flipped into a copy); `xp` is numpy or torch,
    whichever holds the pixels."""
    rows, cols = rgb.shape[-2] // 4 * 4, rgb.shape[-1] // 4 * 4
    r, g, b = (xp.asarray(rgb[..., c, :rows, :cols], dtype=xp.int32) for c in range(3))
    return xp.stack([_block_votes(_u_plane(b, g, r), xp), _block_votes(_u_plane(r, g, b), xp)], -2)  # a plane at a time


def _block_votes(u: np.ndarray | torch.Tensor, xp) -> np.ndarray | torch.Tensor:
    """(..., blocks) bits from (..., H, W) U planes (H, W multiples of 4): Haar band, 4x4 blocks, quantiser."""
    u = xp.asarray(u, dtype=xp.float64)
    half = _HAAR * u[..., 0::2, :] + _HAAR * u[..., 1::2, :]  # pywt.dwt2's approximation band: rows first, then columns
    approx = _HAAR * half[..., 0::2] + _HAAR * half[..., 1::2]
    br, bc = approx.shape[-2] // _BLOCK, approx.shape[-1] // _BLOCK
    lead = tuple(approx.shape[:-2])
    blocks = approx[..., :br * _BLOCK, :bc * _BLOCK].reshape(*lead, br, _BLOCK, bc, _BLOCK).swapaxes(-3, -2)
    peak = xp.amax(abs(blocks.reshape(*lead, br * bc, _BLOCK * _BLOCK)[..., 1:]), -1)
    return xp.fmod(peak, _SCALE) > 0.5 * _SCALE


def _u_plane(b: np.ndarray | torch.Tensor, g: np.ndarray | torch.Tensor,
             r: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The U plane of OpenCV's 8-bit `COLOR_BGR2YUV` (its 14-bit fixed point, bit for bit) of int32 planes (numpy or
    torch), computed in place on one temporary (every sum stays positive, so the shift floors)."""
    y = b * 1868
    y += g * 9617
    y += r * 4899
    y += 8192
    y >>= 14
    y -= b
    y *= -8061
    y += (128 << 14) + 8192
    y >>= 14
    return y.clip(0, 255)


def decode_bits(block_bits: np.ndarray, length: int) -> np.ndarray:
    """Majority-vote a `length`-bit message from per-block bits (the package's 127/255 rule)."""
    index = np.arange(block_bits.shape[0]) % length
    ones = np.bincount(index, weights=block_bits.astype(np.float64), minlength=length)
    counts = np.bincount(index, minlength=length)
    return (ones / np.maximum(counts, 1) * 255 > 127).astype(np.uint8)
