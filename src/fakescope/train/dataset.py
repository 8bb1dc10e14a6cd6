"""Torch datasets over manifest rows: decode, neutralize shortcuts, augment, tile.

An unreadable image (corrupt, or a failed read of one file) is skipped with a logged warning: a
training draw takes another image of its label instead, validation and test leave it out.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from fakescope.errors import ConfigError, ImageLoadError, StorageError, StorageUnavailableError
from fakescope.io.image import decode_image, load_source
from fakescope.io.image import read_source as source_bytes
from fakescope.models.tiling import to_tensor
from fakescope.train.augment import AugmentConfig, augment, neutralize

if TYPE_CHECKING:
    from fakescope.data.audit import Inspections

LABELS = {"real": 0, "ai": 1}
SUBSTITUTES = 8
"""Other images of its label a draw tries before its unreadable one stops the run."""
SKIPPED = "\x1e"
"""Separates a draw's records of unreadable images, each `uri` + "\x1f" + reason."""
VAL_CHUNK = 256
"""Validation and test images decoded at a time (never the whole split: it may be millions)."""

logger = logging.getLogger(__name__)
_warned: set[str] = set()  # each unreadable image is named once per process


def read_source(uri: str) -> Image.Image:
    """Decode one manifest `uri` (local path or storage URI) to RGB."""
    return load_source(uri, keep_bytes=False).image


class TrainTiles(Dataset):
    """One random augmented tile per draw of a manifest row; labels 1 = ai."""

    def __init__(self, rows: pd.DataFrame, crop: int, augment_cfg: AugmentConfig, seed: int = 0):
        self.uris = rows["uri"].tolist()
        self.labels = rows["label"].map(LABELS).to_numpy()
        self.crop = crop
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        """Tile, label, and the unreadable images passed over (`SKIPPED` records) for the main process to
        name: a loader worker's record of the images it named would end with its epoch."""
        rng = random.Random(hash((self.seed, self.epoch, i)))
        same_label, skipped = None, []
        for _ in range(SUBSTITUTES + 1):
            try:  # augmenting may refuse an image too (a strip too long to upscale under small_images: upscale)
                tile = to_tensor(augment(read_source(self.uris[i]), self.augment_cfg, self.crop, rng))
            except StorageUnavailableError:
                raise
            except (ImageLoadError, StorageError) as exc:
                last = self.uris[i], _reason(self.uris[i], exc)  # named below: `i` moves on to a substitute
                skipped.append("\x1f".join(last))
            else:
                return tile, torch.tensor(float(self.labels[i])), SKIPPED.join(skipped)
            if same_label is None:
                same_label = np.flatnonzero(self.labels == self.labels[i])
            i = int(same_label[rng.randrange(len(same_label))])
        raise ImageLoadError(f"{SUBSTITUTES + 1} images of one label in a row were unreadable, the last {last[0]}: {last[1]}")


def balanced_sampler(rows: pd.DataFrame, by: str, num_samples: int, seed: int) -> WeightedRandomSampler | RandomSampler:
    """Draw each label equally and, within a label, each `by` group (e.g. source) equally; `none`: rows in
    shuffled passes. Either way `num_samples` draws."""
    if by == "none":
        return RandomSampler(rows, num_samples=num_samples, generator=torch.Generator().manual_seed(seed))
    if by not in rows:
        raise ConfigError(f"balance {by!r} names no manifest column; use none, label, or a column such as source")
    keys = rows["label"] if by == "label" else rows["label"] + "/" + rows[by].fillna("").astype(str)  # missing: one group
    per_label = keys.groupby(rows["label"]).nunique()
    counts = keys.map(keys.value_counts())
    groups = rows["label"].map(per_label)
    weights = 1.0 / (counts * groups).to_numpy(dtype=np.float64)
    return WeightedRandomSampler(torch.as_tensor(weights), num_samples, replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


class RankSlice(Sampler[int]):
    """One rank's share of a global draw, for distributed training.

    The base sampler's draw (the same on every rank: same seed) is cut to whole global batches
    and rank r takes every `world`-th index from r, so its k-th batch of `global_batch // world`
    indices is its slice of the single-process k-th batch: with gradients averaged across ranks,
    the ranks together take the single-process steps.
    """

    def __init__(self, base: Sampler[int], rank: int, world: int, global_batch: int):
        self.base, self.rank, self.world, self.global_batch = base, rank, world, global_batch

    def __iter__(self):
        draw = list(self.base)
        return iter(draw[: len(draw) // self.global_batch * self.global_batch][self.rank::self.world])

    def __len__(self) -> int:
        return len(self.base) // self.global_batch * self.global_batch // self.world


def readable(uri: str, inspections: Inspections | None = None) -> Image.Image | None:
    """The decoded image, or None (with a warning, once) when it cannot be read; an unavailable storage raises.
    `inspections` takes the shortcut audit's inspection of it from the bytes read, if it wants it (`Inspections.add`)."""
    data = image = None
    try:
        data = source_bytes(uri)
        image = decode_image(data, keep_bytes=False).image
    except StorageUnavailableError:
        raise
    except (ImageLoadError, StorageError) as exc:
        warn_unreadable(uri, _reason(uri, exc))
    if inspections is not None:
        inspections.add(uri, data, image)
    return image


def warn_unreadable(uri: str, reason: str) -> None:
    """Name an unreadable image in a warning, once per process."""
    if uri not in _warned:
        _warned.add(uri)
        logger.warning("skipping unreadable image %s: %s", uri, reason)


def _reason(uri: str, exc: Exception) -> str:
    return str(exc).removeprefix(f"{uri}: ")


def neutralized(uri: str, cfg: AugmentConfig | None, inspections: Inspections | None = None) -> Image.Image | None:
    """`readable(uri)` through the deterministic shortcut removal (`neutralize`, none where `cfg` is None); None, with a
    warning once, where unreadable or too large to re-encode."""
    image = readable(uri, inspections)
    if image is None or not cfg:
        return image
    try:
        return neutralize(image, cfg)
    except ImageLoadError as exc:
        warn_unreadable(uri, exc.reason)
        return None


def neutralized_chunks(uris: list[str], cfg: AugmentConfig) -> Iterator[list[Image.Image | None]]:
    """Validation/test images, `VAL_CHUNK` at a time, through the same deterministic shortcut removal as
    training; None where unreadable (`neutralized`)."""
    for start in range(0, len(uris), VAL_CHUNK):
        yield [neutralized(u, cfg) for u in uris[start:start + VAL_CHUNK]]
