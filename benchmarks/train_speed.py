"""Training images/s of every zoo model, on the CPU and (when present) on CUDA.

Each model takes `--warmup` then `--steps` timed training steps on random batches of
`--batch-size` tiles at its registered crop size, the way `fakescope train` steps: AdamW,
BCE on one logit, channels_last, and on CUDA bf16 autocast. Data loading is left out,
so the figures are the model's ceiling. `test_tiny` is skipped.

    python benchmarks/train_speed.py [--steps 3] [--batch-size 16] [--devices cpu,cuda] [--models a,b]
"""

from __future__ import annotations

import argparse
import time

import torch
from _machine import machine
from torch import nn

from fakescope.models import architecture_info, create_model, list_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and device")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=16, help="images per training step")
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    parser.add_argument("--models", help="comma-separated subset of the zoo (default: all but test_tiny)")
    parser.add_argument("--contiguous", action="store_true", help="NCHW instead of channels_last (to compare)")
    args = parser.parse_args()
    for option, value, low in (("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1), ("--warmup", args.warmup, 0)):
        if value < low:  # else a batch of 0 prints 0.0 images/s for every model
            parser.error(f"{option} must be at least {low}, got {value}")
    models = args.models.split(",") if args.models else [m for m in list_models() if m != "test_tiny"]
    unknown = [m for m in models if m not in list_models()]
    if unknown:  # else a traceback once the models before it have run
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list_models())}")
    devices = [d for d in args.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    if not devices:
        parser.error("no device left: cuda is absent; add cpu to --devices")
    print(machine(",".join(devices)) + ("" if torch.cuda.is_available() else "; no CUDA device"))
    print(f"| model | crop | {' | '.join(f'{d} images/s' for d in devices)} |")
    print(f"|---|---|{'---|' * len(devices)}")
    for name in models:
        crop = architecture_info(name).input.crop_size
        rates = [train_rate(name, crop, torch.device(d), args.batch_size, args.steps, args.warmup, args.contiguous) for d in devices]
        print(f"| {name} | {crop} | {' | '.join(f'{r:,.1f}' for r in rates)} |", flush=True)


def train_rate(name: str, crop: int, device: torch.device, batch_size: int, steps: int, warmup: int,
               contiguous: bool = False) -> float:
    """Images per second over `steps` timed training steps of a freshly built model."""
    torch.manual_seed(0)
    network = create_model(name, pretrained=False).to(device).train()
    cuda = device.type == "cuda"
    layout = torch.contiguous_format if contiguous else torch.channels_last
    network = network.to(memory_format=layout)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.randn(batch_size, 3, crop, crop, device=device).contiguous(memory_format=layout)
    y = (torch.arange(batch_size, device=device) % 2).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(network(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
