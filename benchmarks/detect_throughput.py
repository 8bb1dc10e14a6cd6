"""CPU throughput of `Detector` against decoding alone, on the same files, torch vs onnxruntime.

Generates JPEGs (or reads --folder), then measures in one run: decode-only images/s
(`load_image` in the same number of threads), and detect images/s with the PyTorch and the
onnxruntime network at the model's tile grid, the torch network in bf16 and in bf16 under
`torch.compile` (fast on CPUs with bf16 instructions; `--no-bf16` skips both, `--no-compile` the
compiled one), then onnxruntime at each `--grids` value (fewer tiles per image: faster, less of a
large image seen), and with `--int8` the int8 onnx network (its export made beforehand by `fakescope export
--onnx FILE --int8 --calibration DATA`). Prints each rate and its ratio to decode-only. `--device cuda`
times the torch rows on the GPU (decoding stays on the host's `--workers` threads; `--decode device`
decodes plain JPEGs with nvJPEG, as `fakescope scan --device cuda --decode device` does); `--processes` decodes in
`--workers` processes instead, for decode-only and detect alike (`Detector(processes=True)`). The
decode-only row is always the host's. Every rate is the median of `--repeats` timed passes over all the
files, after an untimed pass (decode-only included: files read and decoders loaded alike for both).

    python benchmarks/detect_throughput.py --images 96 --size 1024x768
    python benchmarks/detect_throughput.py --folder ../shared/data/real-imagenet-sample --grids 1,2
    python benchmarks/detect_throughput.py --no-bf16 --grids "" --int8
    python benchmarks/detect_throughput.py --device cuda --images 8192 --workers 14 --batch-size 2304 --grids "" --processes
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _machine import counts, folder, machine, require, size
from PIL import Image

from fakescope.detector import Detector
from fakescope.errors import ConfigError
from fakescope.io.image import load_image
from fakescope.io.inputs import iter_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=folder, help="images to use (default: generated JPEGs)")
    parser.add_argument("--images", type=int, default=96, help="generated JPEGs to score (without --folder)")
    parser.add_argument("--size", type=size, default="512x384", help="WIDTHxHEIGHT of generated JPEGs")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads")
    parser.add_argument("--processes", action="store_true", help="decode in --workers processes instead of threads")
    parser.add_argument("--batch-size", type=int, default=32, help="tiles per forward pass")
    parser.add_argument("--provenance", action="store_true", help="also collect C2PA/metadata/watermark evidence")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the torch rows (onnx rows are CPU-only)")
    parser.add_argument("--decode", default="host", choices=("host", "device"),
                        help="where detect decodes plain JPEGs (device: nvJPEG, with --device cuda)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the torch bf16 rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled torch bf16 row (seconds to a minute of warm-up)")
    parser.add_argument("--grids", type=counts, default="1,2", help="comma-separated tile grids to also time with onnxruntime ('' for none)")
    parser.add_argument("--int8", action="store_true", help="also time the int8 onnx network (exported beforehand)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the median is printed (default 3)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and none is visible")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.device == "cpu":
        require("benchmarks/detect_throughput.py", "onnxruntime", why="for its onnx rows (the torch rows alone: --device cuda)")
    if args.int8:  # refused before any timing: no int8 export yet, or not on the CPU
        try:
            Detector.load(device=args.device, runtime="onnx", precision="int8", provenance=False)
        except ConfigError as exc:
            parser.error(f"--int8: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        files = list(iter_sources([str(args.folder)])) if args.folder else generate_jpegs(Path(tmp), args.images, args.size)
        if not files:
            parser.error(f"--folder {args.folder}: no images in it")
        _decode_all(files, args.workers, args.processes)  # warm-up: file cache, decoder plugins
        decode, spread = _rate(lambda: _decode_all(files, args.workers, args.processes), len(files), args.repeats)
        kind = "processes" if args.processes else "threads"
        print(machine(args.device))
        print(f"{len(files)} images ({args.folder or 'generated ' + args.size + ' JPEG'}), {args.workers} decoding {kind}, "
              f"median of {args.repeats} timed pass(es) after one untimed")
        print(f"decode only: {decode:7.1f} images/s{spread}")
        bf16 = [] if args.no_bf16 else [("torch", None, "bf16", False), *([] if args.no_compile else [("torch", None, "bf16", True)])]
        int8 = [("onnx", None, "int8", False)] if args.int8 else []
        grids = [("onnx", g, "fp32", False) for g in args.grids]
        onnx = [] if args.device != "cpu" else [("onnx", None, "fp32", False), *int8, *grids]
        rows = [("torch", None, "fp32", False), *bf16, *onnx]
        for runtime, grid, precision, compiled in rows:
            detector = Detector.load(device=args.device, batch_size=args.batch_size, workers=args.workers, processes=args.processes,
                                     provenance=args.provenance, runtime=runtime, grid=grid, precision=precision, compile=compiled,
                                     decode=args.decode)
            start = time.perf_counter()
            list(detector.stream(files[: args.batch_size]))  # warm-up: ONNX export, compiling (full batches: --batch-size counts tiles)
            list(detector.stream(files[:3]))  # and a partial batch (a batch of 1 tile compiles its own graph)
            warm_up = time.perf_counter() - start
            rate, spread = _rate(lambda d=detector: list(d.stream(files)), len(files), args.repeats)
            label = f"{runtime} {precision}{' compiled' if compiled else ''}, grid {detector.model.config.input.grid}, {detector.decode}"
            print(f"detect ({label:32s}): {rate:7.1f} images/s  = {rate / decode:.2f} x decode-only  "
                  f"(warm-up {warm_up:.1f} s{spread})")


def generate_jpegs(folder: Path, n: int, size: str) -> list[str]:
    """`n` distinct smooth-noise JPEGs of WIDTHxHEIGHT `size` (upscaled noise compresses like a photo)."""
    width, height = map(int, size.split("x"))
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=90)
        files.append(str(path))
    return files


def _decode_all(files: list[str], workers: int, processes: bool) -> None:
    with (ProcessPoolExecutor if processes else ThreadPoolExecutor)(max(workers, 1)) as pool:
        list(pool.map(_decode, files, chunksize=16 if processes else 1))


def _decode(file: str) -> tuple[int, int]:
    return load_image(file).image.size  # decoded; only the size travels back from a process


def _rate(run, n: int, repeats: int) -> tuple[float, str]:
    """The median images/s of `repeats` calls of `run` over `n` images, and the range as text (none for one call)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), (f", range {min(rates):.1f}-{max(rates):.1f}" if repeats > 1 else "")


if __name__ == "__main__":
    main()
