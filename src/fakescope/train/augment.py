"""Training-time image pipeline, applied identically to both classes.

Shortcut removal comes first and is deterministic (it is also applied when validating and
testing): crop the bottom strip where some generators print watermarks, then JPEG-encode
every image at one base quality so file format and original compression stop telling the
classes apart. Robustness augmentations follow at random: down-scaling, blur, noise and a
second JPEG pass, then a native-resolution crop and a flip. An image with a side shorter than the
crop is reflect-padded (`small_images: pad`, where down-scaling stops at one tile) or upscaled as inference does
(`upscale`, where down-scaling may go below a tile and the image is upscaled back, as a small photo reaches detection).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from fakescope.errors import ConfigError, ImageLoadError
from fakescope.io.image import MIN_SIDE, pixel_limit

if TYPE_CHECKING:
    from fakescope.models.config import ModelConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each step; `None` or 0 turns a step off."""

    bottom_crop: float = 0.06
    base_jpeg_quality: int | None = 75
    resize_prob: float = 0.25
    resize_scale: tuple[float, float] = (0.5, 1.0)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    noise_prob: float = 0.1
    noise_std: tuple[float, float] = (1.0, 6.0)
    jpeg_prob: float = 0.6
    jpeg_quality: tuple[int, int] = (60, 98)
    hflip: bool = True
    small_images: str = "pad"
    """An image with a side under the crop: `pad` (reflect-padded; down-scaling stops at one tile) or `upscale` (as
    detection does: `fill_tile`; down-scaling may go below a tile, as a halved photo reaches detection)."""


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    """Encode and decode as baseline JPEG 4:2:0 at `quality`."""
    return reencode(image, "JPEG", quality=int(quality))


JPEG_MAX_SIDE = 65_500
"""libjpeg's largest side: Pillow fails on a longer one with a bare "broken data stream"."""


def reencode(image: Image.Image, fmt: str, **options) -> Image.Image:
    """Encode `image` as `fmt` with Pillow's save `options`, and decode it back to RGB.

    Raises:
        ImageLoadError: the format cannot hold the image (a side over JPEG's 65,500 px or WebP's 16,383 px).
    """
    buf = io.BytesIO()
    if fmt == "JPEG" and max(image.size) > JPEG_MAX_SIDE:
        raise ImageLoadError(f"cannot re-encode a {image.width}x{image.height} image as JPEG: a side is over its "
                             f"{JPEG_MAX_SIDE:,} px")
    try:
        image.save(buf, fmt, **options)
    except (OSError, ValueError) as exc:  # WebP: "Image size exceeds WebP limit of 16383 pixels"
        raise ImageLoadError(f"cannot re-encode a {image.width}x{image.height} image as {fmt}: {exc}") from None
    buf.seek(0)
    with pixel_limit():  # up to fakescope's limit, as the image it re-encodes was decoded
        return Image.open(buf).convert("RGB")


def neutralize(image: Image.Image, cfg: AugmentConfig) -> Image.Image:
    """The deterministic shortcut-removing steps, shared by training, validation and test."""
    if cfg.bottom_crop:
        keep = max(1, round(image.height * (1.0 - cfg.bottom_crop)))
        image = image.crop((0, 0, image.width, keep))
    if cfg.base_jpeg_quality:
        image = jpeg(image, cfg.base_jpeg_quality)
    return image


def recipe_preprocessing(config: ModelConfig) -> AugmentConfig | None:
    """The deterministic preprocessing of the model's training recipe (`training.recipe.augment`), if any.

    Raises:
        ConfigError: the stored recipe has settings this version does not know.
    """
    stored = config.training.get("recipe", {}).get("augment")
    if not stored:
        return None
    try:
        return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    except TypeError as exc:
        raise ConfigError(f"model {config.name}: unreadable training recipe augment settings ({exc})") from None


def augment(image: Image.Image, cfg: AugmentConfig, crop: int, rng: random.Random) -> Image.Image:
    """Neutralize, perturb at random, and cut one `crop` x `crop` tile at native resolution."""
    image = neutralize(image, cfg)
    if rng.random() < cfg.resize_prob:  # pad: never below one tile; upscale: below it too, upscaled back as detect does
        least = crop if cfg.small_images == "pad" else MIN_SIDE
        low = max(cfg.resize_scale[0], least / min(image.size))
        if low < cfg.resize_scale[1]:
            s = rng.uniform(low, cfg.resize_scale[1])
            image = image.resize((max(least, round(image.width * s)), max(least, round(image.height * s))), Image.BICUBIC)
    if rng.random() < cfg.blur_prob:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*cfg.blur_sigma)))
    if rng.random() < cfg.noise_prob:
        arr = np.asarray(image, np.float32)
        arr = arr + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(*cfg.noise_std), arr.shape)
        image = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    if rng.random() < cfg.jpeg_prob:
        image = jpeg(image, rng.randint(*cfg.jpeg_quality))
    image = random_crop(image, crop, rng, cfg.small_images)
    if cfg.hflip and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


SMALL_IMAGES = ("pad", "upscale")
"""The values of `AugmentConfig.small_images`."""


def random_crop(image: Image.Image, crop: int, rng: random.Random, small: str = "pad") -> Image.Image:
    """A crop x crop window at a random position; a smaller image is first reflect-padded (`small` pad) or
    upscaled until its short side fills the crop, exactly as detection's tiling does (`upscale`)."""
    if small == "upscale":
        from fakescope.models.tiling import fill_tile  # torch: this module stays numpy and PIL

        image = fill_tile(image, crop)[0]
    if image.width < crop or image.height < crop:
        arr = np.asarray(image)
        ph, pw = max(0, crop - image.height), max(0, crop - image.width)
        image = Image.fromarray(np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="reflect"))
    left = rng.randint(0, image.width - crop)
    top = rng.randint(0, image.height - crop)
    return image.crop((left, top, left + crop, top + crop))
