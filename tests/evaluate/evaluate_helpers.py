"""Helpers shared by the evaluation tests: generated images, a small manifest, a tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakescope.models import ModelConfig, create_model, save_model
from fakescope.models.config import Calibration, InputPolicy

GENERATORS = ("g1", "g2")


def smooth(seed: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A smooth colour field: what the tests call `ai` (no sensor noise)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8))
    return coarse.resize(size, Image.Resampling.BICUBIC)


def noisy(seed: int, size: tuple[int, int] = (64, 48), std: float = 12.0) -> Image.Image:
    """A smooth field plus strong per-pixel noise: what the tests call `real` (camera-like grain)."""
    arr = np.asarray(smooth(seed + 10_000, size), np.float64)
    arr = arr + np.random.default_rng(seed).normal(0.0, std, arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def noise_scorer(images: list[Image.Image]) -> np.ndarray:
    """A real, hand-written detector: little high-frequency energy means P(ai) is high."""
    out = []
    for im in images:
        g = np.asarray(im.convert("L"), np.float64)
        energy = np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()
        out.append(1.0 / (1.0 + np.exp(energy - 13.0)))
    return np.array(out)


def write_dataset(root: Path, per_class: int = 8) -> pd.DataFrame:
    """`per_class` real PNGs (source `camera`, with a `glasses` attribute) and as many ai PNGs
    split between two generators (source `render`); every image in the test split, plus a
    few train/val rows so `split` filters matter. Returns the manifest (also at root/manifest.csv)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(per_class):
        for label, image, generator, source in (("real", noisy(i), "", "camera"),
                                                ("ai", smooth(i), GENERATORS[i % 2], "render")):
            path = root / f"{label}{i:02d}.png"
            image.save(path)
            rows.append({"uri": str(path), "label": label, "source": source, "generator": generator,
                         "split": "test" if i < per_class - 2 else ("val" if i % 2 else "train"),
                         "glasses": (i % 2) if label == "real" else np.nan})
    frame = pd.DataFrame(rows)
    frame.to_csv(root / "manifest.csv", index=False)
    return frame


def tiny_model(folder: Path, recipe: dict | None = None) -> Path:
    """An untrained `test_tiny` model folder (seeded), with an optional training recipe."""
    import torch

    torch.manual_seed(0)
    network = create_model("test_tiny").eval()
    config = ModelConfig(name="tiny", architecture="test_tiny", input=InputPolicy(crop_size=32, grid=2),
                         calibration=Calibration("temperature", temperature=2.0, bias=0.1),
                         band=(0.3, 0.7), training={"recipe": recipe} if recipe else {})
    save_model(network, config, folder)
    return folder
