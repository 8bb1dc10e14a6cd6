"""The shortcut-neutralizing pipeline: same steps for both classes, native-resolution crops."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fakescope.errors import ConfigError
from fakescope.models.config import InputPolicy
from fakescope.models.tiling import make_tiles
from fakescope.train import AugmentConfig, TrainConfig, augment, neutralize
from fakescope.train.augment import random_crop
from fakescope.train.dataset import TrainTiles


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_neutralize_crops_the_bottom_strip_and_jpeg_encodes():
    image = _noise(200, 100)
    out = neutralize(image, AugmentConfig(bottom_crop=0.1, base_jpeg_quality=75))
    assert out.size == (200, 90)
    assert not np.array_equal(np.asarray(out), np.asarray(image)[:90])  # JPEG changed the pixels


def test_neutralize_off_is_the_identity():
    image = _noise(64, 64)
    out = neutralize(image, AugmentConfig(bottom_crop=0.0, base_jpeg_quality=None))
    assert np.array_equal(np.asarray(out), np.asarray(image))


def test_augment_gives_one_tile_of_the_crop_size_and_is_seeded():
    image = _noise(300, 200)
    cfg = AugmentConfig(resize_prob=1.0, blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0)
    a = augment(image, cfg, 112, random.Random(3))
    b = augment(image, cfg, 112, random.Random(3))
    assert a.size == (112, 112)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_downscaling_never_goes_below_one_tile():
    image = _noise(120, 120)
    cfg = AugmentConfig(bottom_crop=0.0, resize_prob=1.0, resize_scale=(0.1, 0.2), blur_prob=0, noise_prob=0, jpeg_prob=0)
    assert augment(image, cfg, 112, random.Random(0)).size == (112, 112)


def test_small_images_are_reflect_padded_not_resized():
    image = _noise(50, 40)
    tile = random_crop(image, 64, random.Random(0))
    assert tile.size == (64, 64)
    assert np.array_equal(np.asarray(tile)[:40, :50], np.asarray(image))


def test_small_images_upscale_gives_the_inference_tile_and_pad_does_not():
    """README: `augment.small_images: upscale` feeds a small image as detection does; the default `pad` does not."""
    image = _noise(40, 40)
    inference = make_tiles(image, InputPolicy(crop_size=64, grid=1)).pixels[0].transpose(1, 2, 0)
    steps_off = dict(bottom_crop=0.0, base_jpeg_quality=None, resize_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0, hflip=False)
    upscaled, padded = (augment(image, AugmentConfig(**steps_off, small_images=small), 64, random.Random(0))
                        for small in ("upscale", "pad"))
    assert np.array_equal(np.asarray(upscaled), inference)
    assert not np.array_equal(np.asarray(padded), inference)
    assert np.array_equal(np.asarray(padded)[:40, :40], np.asarray(image))


def test_an_upscaled_oblong_image_gives_one_of_the_windows_inference_tiles_from():
    image = _noise(50, 40)  # upscaled to 80 x 64: inference tiles it at left 0 and 16
    inference = make_tiles(image, InputPolicy(crop_size=64, grid=3)).pixels.transpose(0, 2, 3, 1)
    tiles = {random_crop(image, 64, random.Random(seed), "upscale").tobytes() for seed in range(200)}
    assert {tile.tobytes() for tile in inference} <= tiles  # the random crop reaches both ends of the same pixels
    assert random_crop(_noise(80, 70), 64, random.Random(0), "upscale").size == (64, 64)  # a tile or larger: cropped


def test_an_unknown_small_images_setting_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^training config key 'augment.small_images' must be pad or upscale, got 'resize'$"):
        TrainConfig.from_dict({"manifest": "m.csv", "augment": {"small_images": "resize"}})


def test_both_labels_go_through_the_same_pipeline(tmp_path):
    """A step that depended on the label (another crop, JPEG pass or flip for one class) would be a shortcut to learn:
    the same images labelled real and labelled ai give the same tiles, draw for draw."""
    uris = []
    for i in range(4):
        _noise(96, 80, seed=i).save(tmp_path / f"{i}.png")
        uris.append(str(tmp_path / f"{i}.png"))
    cfg = AugmentConfig(resize_prob=0.5, blur_prob=0.5, noise_prob=0.5, jpeg_prob=0.5)  # default neutralization too
    real, ai = (TrainTiles(pd.DataFrame({"uri": uris, "label": label}), 64, cfg, seed=1) for label in ("real", "ai"))
    tiles = set()
    for epoch in (0, 1):
        real.epoch = ai.epoch = epoch
        for i in range(len(uris)):
            (x_real, y_real, _), (x_ai, y_ai, _) = real[i], ai[i]
            assert torch.equal(x_real, x_ai) and (y_real.item(), y_ai.item()) == (0.0, 1.0)
            tiles.add(x_real.numpy().tobytes())
    assert len(tiles) == 2 * len(uris)  # each epoch draws afresh: the equality is not that of an idle pipeline


def test_a_strip_too_long_to_upscale_is_passed_over_as_unreadable(tmp_path, monkeypatch):
    """Under `small_images: upscale` a strip whose upscaled copy would be too large was refused inside augmenting,
    outside the skipping of unreadable images, so it stopped the run; it is passed over with its reason."""
    from fakescope.models import tiling

    monkeypatch.setattr(tiling, "MAX_PIXELS", 20_000)
    _noise(400, 40, seed=0).save(tmp_path / "strip.png")  # upscaled: 640 x 64
    _noise(96, 80, seed=1).save(tmp_path / "photo.png")
    rows = pd.DataFrame({"uri": [str(tmp_path / "strip.png"), str(tmp_path / "photo.png")], "label": ["real", "real"]})
    tiles = TrainTiles(rows, 64, AugmentConfig(resize_prob=0, blur_prob=0, noise_prob=0, jpeg_prob=0,
                                               small_images="upscale"), seed=0)
    tile, label, skipped = tiles[0]
    assert tile.shape == (3, 64, 64) and label.item() == 0.0
    assert "strip.png" in skipped and "image too long and thin" in skipped


def test_under_upscale_down_scaling_goes_below_a_tile_and_the_image_comes_back_as_detect_feeds_it():
    """`pad` stops down-scaling at one tile (a face halved below a tile was never seen so); `upscale` scales below it
    and upscales back to a tile as detection does, which is how a photo resized to half reaches detection."""
    image = _noise(256, 256)
    steps_off = dict(bottom_crop=0.0, base_jpeg_quality=None, resize_prob=1.0, resize_scale=(0.2, 0.24), blur_prob=0,
                     noise_prob=0, jpeg_prob=0, hflip=False)
    padded, upscaled = (augment(image, AugmentConfig(**steps_off, small_images=small), 64, random.Random(0))
                        for small in ("pad", "upscale"))
    drawn = random.Random(0)
    drawn.random()  # the resize_prob draw
    side = round(256 * drawn.uniform(0.2, 0.24))  # 51-61 px: under the 64 px tile
    small = image.resize((side, side), Image.BICUBIC)
    inference = make_tiles(small, InputPolicy(crop_size=64, grid=1)).pixels[0].transpose(1, 2, 0)
    assert side < 64 and np.array_equal(np.asarray(upscaled), inference)
    assert np.asarray(padded).shape == (64, 64, 3) and not np.array_equal(np.asarray(padded), inference)
