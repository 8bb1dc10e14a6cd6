"""Where a feature cell's evidence is centred: the centroid of |d cell / d input| (its effective receptive field).

Class-activation maps draw cell (i, j) centred on (i, j) * stride + (stride - 1) / 2 (`fakescope.explain.cam.place`).
This probes a middle cell of 512 px inputs, photos (resized) and Gaussian noise, and prints each centroid's offset
from (i, j) * stride in pixels (rows, columns), their mean and spread beside the middle the maps use.

    python benchmarks/cell_centre.py --photos ../shared/data/real-imagenet-sample --count 16
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from _machine import folder
from PIL import Image

from fakescope.explain.cam import feature_stride
from fakescope.models import load_model
from fakescope.models.tiling import normalize

SIDE = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=folder, default="../shared/data/real-imagenet-sample",
                        help="a folder of photos (default: ../shared/data/real-imagenet-sample, the project's data)")
    parser.add_argument("--count", type=int, default=16, help="photos (spread over the folder's sorted files) and noise images")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    args = parser.parse_args()
    if args.count < 2:
        parser.error(f"--count must be at least 2 (a spread needs two), got {args.count}")
    files = sorted(path for path in args.photos.iterdir() if path.is_file())
    if len(files) < 2:
        parser.error(f"--photos {args.photos}: {len(files)} file(s) in it, at least 2 needed")
    model = load_model(args.model)
    network = model.network.eval()
    stride = feature_stride(network)
    chosen = files[::max(1, len(files) // args.count)][:args.count]
    photos = [np.asarray(Image.open(path).convert("RGB").resize((SIDE, SIDE))) for path in chosen]
    inputs = {
        "photos": normalize(torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2).contiguous(), model.config.input),
        "noise": torch.randn(args.count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0)),
    }
    print(f"stride {stride}; the maps centre a cell at {[(s - 1) / 2 for s in stride]}")
    for name, x in inputs.items():
        offsets = [centroid(network, sample[None], stride) for sample in x]
        print(f"{name}: " + ", ".join(f"({r:.1f}, {c:.1f})" for r, c in offsets))
        for axis, label in enumerate(("rows", "columns")):
            values = [offset[axis] for offset in offsets]
            print(f"  {label}: mean {statistics.mean(values):.1f}, sd {statistics.stdev(values):.1f}")


def centroid(network: torch.nn.Module, x: torch.Tensor, stride: tuple[int, int]) -> tuple[float, float]:
    """The |input gradient| centroid of the feature cell in the middle of `x`, from that cell's (i, j) * stride."""
    x = x.clone().requires_grad_(True)
    features = network.forward_features(x)
    cell = (features.shape[-2] // 2, features.shape[-1] // 2)
    grad, = torch.autograd.grad(features[0, :, cell[0], cell[1]].sum(), x)
    weight = grad[0].abs().sum(0)
    return tuple(float((weight.sum(1 - axis) * torch.arange(weight.shape[axis])).sum() / weight.sum()) - cell[axis] * stride[axis]
                 for axis in (0, 1))


if __name__ == "__main__":
    main()
