"""Native-resolution tiling: the input policy that keeps generator traces intact.

Resizing an image before a detector sees it smooths away the up-sampling and spectral
traces generators leave, so fakescope never resizes: it cuts tiles of the model's crop
size at native resolution, spread evenly over the image (at most grid x grid), scores
each tile and averages their logits. The one exception is an image with a side shorter than a
tile: it has little trace left to keep, and a network trained on tiles misjudges a smaller input
(figures in README.md, "How images reach the model"), so it is upscaled
(bicubic) until its short side fills a tile, unless the policy says `upscale_small=False`, in
which case it is scored whole.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fakescope.errors import ImageLoadError
from fakescope.io.image import MAX_PIXELS
from fakescope.models.config import InputPolicy

if TYPE_CHECKING:  # torch only where tiles are cut on a device or a network runs: host tiles are numpy
    import torch


@dataclass(frozen=True)
class Tiles:
    """The tiles of one image: (T, 3, h, w) uint8 pixels and each tile's (top, left) corner.

    The pixels are a numpy array on the host (`torch.from_numpy` shares it with a torch network), or a tensor
    when cut on a device (`cut_tiles`). Tiles stay uint8 until `normalize` (4x less memory and host-to-GPU
    traffic than floats).

    `image_size` is the original (height, width); `scale` > 1 when a small image was upscaled
    before tiling, and boxes are then in upscaled pixels.
    """

    pixels: np.ndarray | torch.Tensor
    boxes: tuple[tuple[int, int], ...]
    image_size: tuple[int, int]
    scale: float = 1.0


def tile_positions(length: int, crop: int, grid: int) -> list[int]:
    """Evenly spread start offsets of at most `grid` crops along one axis of `length` pixels (one crop: centred)."""
    if length <= crop:
        return [0]
    n = min(grid, -(-length // crop))
    if n == 1:
        return [(length - crop) // 2]
    return sorted({round(i * (length - crop) / max(n - 1, 1)) for i in range(n)})


def to_tensor(image: Image.Image | np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float in [0, 1]."""
    import torch

    arr = np.array(image, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def normalize(x: np.ndarray | torch.Tensor, policy: InputPolicy) -> np.ndarray | torch.Tensor:
    """(N, 3, h, w) uint8 tiles, or floats in [0, 1], -> float32 network input: a numpy array from one, else a tensor on
    `x`'s device (the same float32 operations, so the same numbers)."""
    if isinstance(x, np.ndarray):
        dtype = x.dtype if x.dtype.kind == "f" else np.float32
        mean, std = (np.asarray(v, dtype=dtype).reshape(-1, 3, 1, 1) for v in (policy.mean, policy.std))
        if x.dtype == np.uint8:  # as below, in numpy
            scaled = x.astype(np.float32)
            scaled *= 1.0 / (255.0 * std)
            scaled -= mean / std
            return scaled
        return (x - mean) / std
    import torch

    dtype = x.dtype if x.is_floating_point() else torch.float32
    mean = torch.tensor(policy.mean, dtype=dtype, device=x.device).view(-1, 3, 1, 1)
    std = torch.tensor(policy.std, dtype=dtype, device=x.device).view(-1, 3, 1, 1)
    if x.dtype == torch.uint8:  # one scale-and-shift pass on a fresh float copy: 2.8x faster than (x / 255 - mean) / std
        return x.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)
    return (x - mean) / std


def make_tiles(image: Image.Image | np.ndarray, policy: InputPolicy) -> Tiles:
    """Cut an RGB image (PIL, or its HxWx3 uint8 array) into its tiles (uint8, un-normalised).

    Raises:
        ImageLoadError: upscaling the image to fill a tile would make more than `MAX_PIXELS`.
    """
    h, w = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    c, scale = policy.crop_size, 1.0
    if policy.upscale_small:
        image, scale = fill_tile(image, c)
    arr = np.asarray(image, dtype=np.uint8)
    sh, sw = arr.shape[:2]
    if sh < c or sw < c:  # too small to tile: the whole image, once
        return whole_image_tiles(arr)
    boxes = tile_boxes(sh, sw, policy)
    crops = np.stack([arr[t:t + c, l:l + c] for t, l in boxes])
    return Tiles(crops.transpose(0, 3, 1, 2), boxes, (h, w), scale)


def fill_tile(image: Image.Image | np.ndarray, crop: int) -> tuple[Image.Image | np.ndarray, float]:
    """(`image` upscaled (bicubic) until its short side fills a `crop` tile, the scale); unchanged (1.0) when it does.

    Raises:
        ImageLoadError: the upscaled image would have more than `MAX_PIXELS`.
    """
    h, w = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    if min(h, w) >= crop:
        return image, 1.0
    scale = crop / min(h, w)
    size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
    if size[0] * size[1] > MAX_PIXELS:  # a 32 x 6M px strip: 12x its pixels, 25 GB, for a few tiles
        raise ImageLoadError(f"image too long and thin: upscaling {w}x{h} to fill a {crop}-px tile gives "
                             f"{size[0]}x{size[1]} ({size[0] * size[1]:,} pixels), over {MAX_PIXELS:,}")
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    return image.resize(size, Image.BICUBIC), scale


@functools.lru_cache(maxsize=4096)  # collections repeat a few sizes; the workers ask once per image
def tile_boxes(height: int, width: int, policy: InputPolicy) -> tuple[tuple[int, int], ...]:
    """The (top, left) corners `make_tiles` cuts from an image at least one tile in each side."""
    c = policy.crop_size
    return tuple((t, l) for t in tile_positions(height, c, policy.grid) for l in tile_positions(width, c, policy.grid))


def cut_tiles(pixels: torch.Tensor, boxes: tuple[tuple[int, int], ...], crop: int) -> torch.Tensor:
    """(..., T, 3, crop, crop) tiles of (..., 3, H, W) pixels at `boxes`, on the pixels' device."""
    import torch

    return torch.stack([pixels[..., t:t + crop, l:l + crop] for t, l in boxes], dim=-4)


def whole_image_tiles(image: Image.Image | np.ndarray) -> Tiles:
    """The whole RGB image as its one (uint8) tile."""
    arr = np.array(image, dtype=np.uint8)  # a writable copy
    return Tiles(arr.transpose(2, 0, 1)[None], ((0, 0),), arr.shape[:2])


def tile_heatmap(tiles: Tiles, tile_probs: np.ndarray) -> np.ndarray:
    """Paint each tile's probability over the image area it covers (mean where tiles overlap).

    Pixels no tile covers take the mean of all tiles: a flat, neutral fill, not a measurement.
    """
    h, w = tiles.image_size
    if tiles.scale != 1.0:  # paint at the upscaled size, then bring the map back to the image's
        upscaled = Tiles(tiles.pixels, tiles.boxes, (round(h * tiles.scale), round(w * tiles.scale)))
        painted = Image.fromarray(tile_heatmap(upscaled, tile_probs), mode="F").resize((w, h), Image.BILINEAR)
        return np.asarray(painted, dtype=np.float32)
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    bh, bw = tiles.pixels.shape[-2:]
    for (t, l), p in zip(tiles.boxes, tile_probs):
        total[t:t + bh, l:l + bw] += p
        count[t:t + bh, l:l + bw] += 1
    covered = count > 0
    total[covered] /= count[covered]
    total[~covered] = float(np.mean(tile_probs))
    return total
