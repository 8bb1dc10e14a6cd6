"""Warm `Detector.predict` latency on the CPU for each runtime and inference thread count, in turns.

One process loads a detector per (runtime, threads) pair, then times a warm `predict` of IMAGE (one
image: a few tiles, the size of a web request) and of `--batch` copies of it in one call, each pair
in turn for `--repeats` rounds so the machine's load hits every pair alike; it prints the median
and the range. torch's threads are the process's (`torch.set_num_threads`, set as each pair runs);
onnxruntime's are its session's (with 1 thread it has no other thread to spin).

    python benchmarks/cpu_threads.py [--image examples/chelsea.jpg] [--threads 1,2] [--repeats 15]

On the shared 2-core machine (load average 3-4), 5 rounds, median seconds of 1 image / 16 images:
torch 1 thread 0.085 / 0.78, 2 threads 1.53 / 11.0; onnx 1 thread 0.045 / 0.57, 2 threads 0.46 / 7.2.
The next run with OMP_WAIT_POLICY=PASSIVE (torch's idle threads sleep, as the `fakescope` command now
sets): torch 2 threads 0.059 / 0.82, onnx 2 threads 0.059 / 1.02 (1 thread: 0.085 / 0.77, 0.040 / 0.57).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _machine import counts, file, machine, require

from fakescope import Detector

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=file, default=str(ROOT / "examples" / "chelsea.jpg"),
                        help="the image scored (alone, and --batch copies of it)")
    parser.add_argument("--threads", type=counts, default="1,2", help="comma-separated inference thread counts")
    parser.add_argument("--runtimes", default="torch,onnx", help="comma-separated runtimes to time: torch, onnx or both")
    parser.add_argument("--batch", type=int, default=16, help="images in the batched call")
    parser.add_argument("--repeats", type=int, default=15, help="timed rounds of every pair; the median and range are printed")
    args = parser.parse_args()
    if unknown := set(args.runtimes.split(",")) - {"torch", "onnx"}:
        parser.error(f"--runtimes: {', '.join(sorted(unknown))} is not torch or onnx")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if "onnx" in args.runtimes.split(","):
        require("benchmarks/cpu_threads.py", "onnxruntime", why="for --runtimes onnx (or give --runtimes torch)")
    detectors = {(runtime, n): Detector.load(device="cpu", runtime=runtime, threads=n, workers=0)
                 for runtime in args.runtimes.split(",") for n in args.threads}
    batch = [args.image] * args.batch
    times: dict[tuple[str, int, str], list[float]] = {}
    for _ in range(args.repeats + 1):  # the first round warms up and is dropped
        for (runtime, n), detector in detectors.items():
            torch.set_num_threads(n)  # the process's: each torch pair sets its own
            for label, inputs in (("1 image", [args.image]), (f"{args.batch} images", batch)):
                start = time.perf_counter()
                detector.predict(inputs)
                times.setdefault((runtime, n, label), []).append(time.perf_counter() - start)
    print(machine())
    print(f"{torch.get_num_threads()} torch threads by default here; {args.repeats} rounds, warm, median (min-max) seconds")
    for (runtime, n, label), seconds in times.items():
        kept = seconds[1:]
        print(f"| {runtime} | {n} thread(s) | {label} | {statistics.median(kept):.3f} ({min(kept):.3f}-{max(kept):.3f}) |")


if __name__ == "__main__":
    main()
