"""The network alone, with timm's same padding (a separate pad) against padding inside the convolution.

In one process, alternating round by round on the same tiles: onnxruntime on an export with a `Pad`
before each same convolution (the TorchScript exporter's graph of timm's `Conv2dSame`) against
fakescope's export (`auto_pad=SAME_UPPER`), and torch's `inference_network` with timm's layers
against `pad_in_conv`'s. Prints ms per tile (median and fastest round) and the median per-round
ratio, which a shared machine's load swings less than the rates.

    python benchmarks/same_padding.py --rounds 20
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _machine import machine, require

from fakescope.models import load_model
from fakescope.models.acceleration import fold_batch_norm
from fakescope.models.onnx import INPUT_NAME, OPSET, OUTPUT_NAME, OnnxNetwork, export_onnx
from fakescope.models.same_padding import pad_in_conv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="timed forward passes of each variant")
    parser.add_argument("--tiles", type=int, default=36, help="tiles of the model's crop size per forward pass")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch's and each onnx session's)")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    args = parser.parse_args()
    require("benchmarks/same_padding.py", "onnxruntime", why="for its onnx rows")
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    crop, network = model.config.input.crop_size, model.network.eval()
    x = torch.rand(args.tiles, 3, crop, crop, generator=torch.Generator().manual_seed(0))
    folded = fold_batch_norm(network.to(memory_format=torch.channels_last))
    runs = {
        "onnx, Pad then Conv": (OnnxNetwork(_plain_export(network, crop), threads=args.threads), x),
        "onnx, auto_pad Conv": (OnnxNetwork(_export(network, crop), threads=args.threads), x),
        "torch, F.pad then conv": (folded, x.contiguous(memory_format=torch.channels_last)),
        "torch, padding in conv": (pad_in_conv(folded), x.contiguous(memory_format=torch.channels_last)),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for forward, tiles in runs.values():
            forward(tiles)  # warm-up
        for _ in range(args.rounds):
            for name, (forward, tiles) in runs.items():
                start = time.perf_counter()
                forward(tiles)
                times[name].append((time.perf_counter() - start) / args.tiles * 1000)
    print(machine())
    for name, ms in times.items():
        print(f"{name:24s}: {statistics.median(ms):6.2f} ms/tile (fastest round {min(ms):.2f})")
    names = list(runs)
    for old, new in (names[:2], names[2:]):
        ratios = [a / b for a, b in zip(times[old], times[new])]
        print(f"{new.split(',')[0]}: {statistics.median(ratios):.2f}x faster (median per-round ratio; "
              f"{min(ratios):.2f}-{max(ratios):.2f})")


def _export(network: torch.nn.Module, crop: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(network, Path(tmp) / "m.onnx", tile_size=crop).read_bytes()


def _plain_export(network: torch.nn.Module, crop: int) -> bytes:
    """The export without fakescope's same convolutions: timm's pad, as the exporter traces it."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(network, (torch.zeros(2, 3, crop, crop),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}})
    return buffer.getvalue()


if __name__ == "__main__":
    main()
