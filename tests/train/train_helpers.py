"""An easy generated task (a planted colour cast) and a small, fast training recipe for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakescope.train import AugmentConfig, TrainConfig

# neutralize nothing and perturb little: the task is a planted texture, not shortcut removal
PLAIN = AugmentConfig(bottom_crop=0.0, base_jpeg_quality=None, resize_prob=0.0, blur_prob=0.0,
                      noise_prob=0.0, jpeg_prob=0.0)


def _image(rng: np.random.Generator, ai: bool) -> Image.Image:
    arr = rng.integers(70, 190, 3) + rng.normal(0, 12, (80, 80, 3))
    arr[..., 0 if ai else 2] += 80  # the planted class signal: a colour cast
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_easy_manifest(root: Path) -> str:
    """24/8/8 images of each label in train/val/test under `root`, and their manifest (relative uris)."""
    rng = np.random.default_rng(0)
    rows = []
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        for i in range(n):
            for label in ("real", "ai"):
                path = root / split / label / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                _image(rng, label == "ai").save(path)
                rows.append({"uri": f"{split}/{label}/{i}.png", "label": label, "split": split,
                             "source": "synthetic", "generator": "checker" if label == "ai" else None})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return str(root / "manifest.csv")


def train_config(manifest: str, out, **changes) -> TrainConfig:
    """Four steps an epoch: enough for the loop's files and checks; tests of what it learns ask for more draws."""
    base = dict(manifest=manifest, out=str(out), architecture="test_tiny", pretrained=False, crop_size=64,
                grid=1, epochs=4, batch_size=16, samples_per_epoch=64, lr=0.003, num_workers=0, device="cpu", augment=PLAIN)
    return TrainConfig(**{**base, **changes})
