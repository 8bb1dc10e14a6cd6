"""Ray scan throughput with 1 vs 2 inference actors on the same generated images, in one run.

Starts one local loopback Ray (actors + 1 CPUs) and times `ray_scan` into fresh folders; actor
start-up (model load) is included, Ray start-up is not. Before the timed runs the model's ONNX export is
cached and an untimed 2-actor scan of a few images starts Ray Data and its workers: otherwise the
1-actor run, always first, alone pays for them (on 4 images it ran at 0.1 images/s without the warm-up,
1.2 with it). Actor start-up still weighs on small runs: give `--images` 128 or more for a ratio.

    python benchmarks/scan_scaling.py --images 128
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine, require, size
from PIL import Image

from fakescope.scale.ray_scan import LOOPBACK_ENV, ray_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="generated JPEGs to scan")
    parser.add_argument("--size", type=size, default="512x384", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--runtime", default="onnx", choices=["torch", "onnx"], help="as scan's --runtime")
    args = parser.parse_args()
    require("benchmarks/scan_scaling.py", "ray")
    if args.runtime == "onnx":
        require("benchmarks/scan_scaling.py", "onnxruntime", why="for --runtime onnx (or give --runtime torch)")
        from fakescope import Detector

        Detector.load(device="cpu", runtime="onnx")  # exports into the cache the actors then read
    os.environ.update(LOOPBACK_ENV)
    import ray

    ray.init(num_cpus=3, object_store_memory=200 * 2**20, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    print(machine())
    width, height = map(int, args.size.split("x"))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i in range(args.images):
            path = Path(tmp) / f"{i:05d}.jpg"
            small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((width, height), Image.BICUBIC).save(path, quality=90)
            files.append(str(path))
        def scan(inputs: list[str], actors: int, out: str) -> None:
            ray_scan(inputs, Path(tmp) / out, actors=actors, batch_size=16, device="cpu", workers=1, provenance=False,
                     runtime=args.runtime)

        scan(files[:8], 2, "warm-up")
        rates = {}
        for actors in (1, 2):
            start = time.perf_counter()
            scan(files, actors, f"out{actors}")
            rates[actors] = len(files) / (time.perf_counter() - start)
            print(f"{actors} actor(s): {rates[actors]:6.1f} images/s")
    print(f"2 actors / 1 actor: {rates[2] / rates[1]:.2f} (runtime {args.runtime})")
    ray.shutdown()


if __name__ == "__main__":
    main()
