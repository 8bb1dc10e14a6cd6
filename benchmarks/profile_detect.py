"""Where `Detector.stream` spends its time: torch.profiler over one timed run, on the CPU or a GPU.

Scores generated JPEGs once to warm up, then again under `torch.profiler` and prints images/s,
the operators with the most host time (every thread: the reading workers' too), and on CUDA the
kernels with the most device time. Host time far above device time means the GPU waits for
Python; nvJPEG shows as `image::decode_jpegs_cuda`.

    python benchmarks/profile_detect.py --device cuda --decode device --workers 4 --images 4096
    python benchmarks/profile_detect.py --images 64 --batch-size 36        # the CPU path
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _machine import machine, size
from detect_throughput import generate_jpegs  # the sibling benchmark's images
from torch.profiler import ProfilerActivity, profile

from fakescope.detector import Detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2048, help="generated JPEGs to score")
    parser.add_argument("--size", type=size, default="512x384", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--device", default="cpu", help="the inference device (cpu, cuda)")
    parser.add_argument("--decode", default="host", choices=("host", "device"),
                        help="where plain JPEGs are decoded (device: nvJPEG, with --device cuda)")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    parser.add_argument("--batch-size", type=int, default=2304, help="tiles per forward pass")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="as detect's --precision")
    parser.add_argument("--provenance", action="store_true", help="also collect C2PA/metadata/watermark evidence")
    parser.add_argument("--rows", type=int, default=20, help="operators listed per table")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and none is visible")
    with tempfile.TemporaryDirectory() as tmp:
        files = generate_jpegs(Path(tmp), args.images, args.size)
        detector = Detector.load(device=args.device, decode=args.decode, workers=args.workers, batch_size=args.batch_size,
                                 precision=args.precision, provenance=args.provenance)
        list(detector.stream(files[: max(args.batch_size // 9, 8)]))  # warm-up
        cuda = detector.device.type == "cuda"
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            results = list(detector.stream(files))
            elapsed = time.perf_counter() - start
        assert not any(r.error for r in results), next(r.error for r in results if r.error)
    print(machine(args.device))
    print(f"{len(files)} images of {args.size}, {args.device}, decode {args.decode}, {args.workers} workers: "
          f"{len(files) / elapsed:,.0f} images/s under the profiler")
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if cuda:
        print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
