"""Is the failure on held-out families the fine-tuning's fault? A linear probe on frozen features.

    python recipes/default/linear_probe.py [--manifest data/default/manifest.csv]

Embeds every image of the recipe's manifest with the frozen ImageNet EfficientNet-Lite0 (the
shipped model's starting point, never fine-tuned): the mean and standard deviation of each of its
five feature levels over the image's 3 x 3 tiles of 112 px, as the model's input policy cuts them.
A standardised logistic regression on the training split is then scored in distribution and with
each family left out of training (the same folds as `fakescope evaluate-logo --by source`: the
unseen family's test images against all test reals), per feature level and for all of them.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fakescope.data.manifest import read_rows
from fakescope.errors import FakescopeError
from fakescope.evaluate.metrics import auc_score
from fakescope.io.image import load_image
from fakescope.models import create_model
from fakescope.models.config import InputPolicy
from fakescope.models.tiling import make_tiles, normalize

FAMILIES = ("thispersondoesnotexist", "fake-text2image-2022")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default="data/default/manifest.csv")
    parser.add_argument("--C", type=float, default=0.1, help="inverse L2 strength of the logistic regression")
    args = parser.parse_args()
    try:
        frame = read_rows(args.manifest)
    except FakescopeError as exc:
        raise SystemExit(f"error: {exc}") from None
    features, widths = _embed(frame)
    label = (frame["label"] == "ai").to_numpy()
    split, source = frame["split"].to_numpy(), frame["source"].to_numpy()
    bounds = np.cumsum([0, *widths])
    columns = {f"level {i + 1} ({widths[i] // 2} channels)": slice(bounds[i], bounds[i + 1]) for i in range(len(widths))}
    columns["all levels"] = slice(0, bounds[-1])
    print(f"| features | in distribution | {' | '.join(f'{f} left out' for f in FAMILIES)} |")
    print("|---|---|" + "---|" * len(FAMILIES))
    for name, cols in columns.items():
        x = features[:, cols]
        aucs = [_fit_and_score(x, label, split == "train", split == "test", args.C)]
        for family in FAMILIES:
            scored = (split == "test") & (~label | (source == family))
            aucs.append(_fit_and_score(x, label, (split == "train") & (source != family), scored, args.C))
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in aucs) + " |")


def _embed(frame) -> tuple[np.ndarray, list[int]]:
    """Per image: mean and std of each feature level over space, averaged over its tiles."""
    network = create_model("efficientnet_lite0", pretrained=True).backbone.eval()
    policy, rows = InputPolicy(), []
    with torch.inference_mode():
        for uri in frame["uri"]:
            tiles = make_tiles(load_image(uri).image, policy)
            levels = network.forward_intermediates(normalize(tiles.pixels, policy), intermediates_only=True)
            rows.append(torch.cat([torch.cat([z.mean((2, 3)), z.std((2, 3))], 1).mean(0) for z in levels]).numpy())
    return np.stack(rows), [2 * z.shape[1] for z in levels]


def _fit_and_score(x: np.ndarray, label: np.ndarray, train: np.ndarray, test: np.ndarray, c: float) -> float:
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))
    probe.fit(x[train], label[train])
    return auc_score(label[test], probe.decision_function(x[test]))


if __name__ == "__main__":
    main()
