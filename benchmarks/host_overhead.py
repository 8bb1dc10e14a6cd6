"""The host's own time per image in `Detector(decode="device")`, with the device's work taken away.

The network becomes a no-op and the "device" decoder returns pixels on PyTorch's `meta` device
(shapes without data), so what is timed is everything a GPU scan does on the host per image:
reading files, walking JPEG headers, C2PA and metadata checks (`--provenance`; the watermark
reader is stubbed, it runs on the device), worker hand-over, batching, tile bookkeeping,
calibration, fusion and result records. Runs on any machine; compare trees or settings in one run.

    python benchmarks/host_overhead.py --images 6000 --workers 2 [--provenance]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from _machine import machine, size
from PIL import Image

import fakescope.io.device_jpeg as device_jpeg
from fakescope import forensics
from fakescope.detection import Evidence
from fakescope.detector import Detector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6000, help="files to read (copies of one generated JPEG)")
    parser.add_argument("--size", type=size, default="512x384", help="WIDTHxHEIGHT of the generated JPEG")
    parser.add_argument("--workers", type=int, default=2, help="reading threads (0: all in the calling thread)")
    parser.add_argument("--batch-size", type=int, default=2304, help="tiles per forward pass")
    parser.add_argument("--provenance", action="store_true", help="also check C2PA and metadata")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the median is printed")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp, _device_work_stubbed():
        files = _files(Path(tmp), args.images, width, height)
        detector = Detector.load(device="cpu", decode="device", workers=args.workers, batch_size=args.batch_size,
                                 provenance=args.provenance)
        detector._network = lambda x: torch.zeros(len(x))
        list(detector.stream(files[:300]))  # warm-up
        print(machine())
        print(f"{len(files)} copies of one {args.size} JPEG ({len(Path(files[0]).read_bytes()) // 1024} KB), "
              f"{args.workers} reading threads, provenance {'on' if args.provenance else 'off'}")
        for _ in range(args.repeats):
            start = time.perf_counter()
            results = list(detector.stream(files))
            elapsed = time.perf_counter() - start
            assert not any(r.error for r in results), results[0].error
            print(f"{len(files) / elapsed:8.0f} images/s  ({elapsed / len(files) * 1e6:.0f} us of host time an image)")


@contextlib.contextmanager
def _device_work_stubbed():
    """Decoding yields data-free `meta` pixels; the watermark reader answers without reading."""
    def decode(encoded, sizes, device):
        return [torch.empty((3, h, w), dtype=torch.uint8, device="meta") for w, h in sizes]

    def watermarks(images):
        return [Evidence("watermark", None, "not read (benchmark stub)") for _ in images]

    with mock.patch.object(device_jpeg, "decode_jpegs", decode), mock.patch.object(forensics, "collect_watermarks", watermarks):
        yield


def _files(folder: Path, n: int, width: int, height: int) -> list[str]:
    small = np.random.default_rng(0).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    files = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(buffer.getvalue())
        files.append(str(path))
    return files


if __name__ == "__main__":
    main()
