"""Torch datasets over manifest rows: decode, neutralize shortcuts, augment, tile."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

from fakescope.io.image import load_source
from fakescope.models.tiling import to_tensor
from fakescope.train.augment import AugmentConfig, augment, neutralize

LABELS = {"real": 0, "ai": 1}


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

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(hash((self.seed, self.epoch, i)))
        tile = augment(read_source(self.uris[i]), self.augment_cfg, self.crop, rng)
        return to_tensor(tile), torch.tensor(float(self.labels[i]))


def balanced_sampler(rows: pd.DataFrame, by: str, num_samples: int, seed: int) -> WeightedRandomSampler | None:
    """Draw each label equally and, within a label, each `by` group (e.g. source) equally."""
    if by == "none":
        return None
    keys = rows["label"] if by == "label" else rows["label"] + "/" + rows[by].fillna("")
    per_label = rows.groupby("label")[by].nunique() if by != "label" else rows["label"].value_counts() ** 0
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


def neutralized_images(rows: pd.DataFrame, cfg: AugmentConfig) -> list[Image.Image]:
    """Validation/test images through the same deterministic shortcut removal as training."""
    return [neutralize(read_source(u), cfg) for u in rows["uri"]]
