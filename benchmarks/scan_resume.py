"""Listing, starting, resuming and reading back a scan of a million inputs, on synthetic input.

Builds in a temporary folder a manifest (CSV and Parquet) of `--inputs` URIs, of which the last
`--pending` are real small JPEGs (symlinks to `--images` generated ones) and the others do not
exist; a results folder already holding Parquet parts for all but the pending ones; and a folder of
`--folder-files` empty `.jpg` files in folders of 1,000. Each step then runs in a fresh process
and prints its wall time and that process's peak RSS (and how much the step added to it):
listing each kind of input, a fresh scan of the first `--fresh` URIs (missing files: error rows,
no decoding), the resume (time until the first pending input reaches the detector, then in all),
and reading the results back, checked for one row per input.

    python benchmarks/scan_resume.py --inputs 1000000 --pending 1000 --folder-files 200000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from _machine import machine
from PIL import Image

from fakescope.scale.records import SCHEMA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1_000_000, help="URIs in the manifest")
    parser.add_argument("--pending", type=int, default=1000, help="of them not done yet: real JPEGs, scored on resume")
    parser.add_argument("--images", type=int, default=300, help="distinct 64x64 JPEGs behind the pending URIs")
    parser.add_argument("--fresh", type=int, default=200_000, help="URIs (missing files) scanned into an empty folder")
    parser.add_argument("--folder-files", type=int, default=200_000, help="empty files in the folder listed")
    parser.add_argument("--rows-per-part", type=int, default=10_000, help="as scan's --rows-per-part: rows per Parquet part")
    parser.add_argument("--workers", type=int, default=2, help="as scan's --workers")
    parser.add_argument("--batch-size", type=int, default=32, help="as scan's --batch-size")
    parser.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"], help="as scan's --runtime")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        _build(root, args)
        print(f"{args.inputs:,} inputs ({args.inputs - args.pending:,} done, {args.pending:,} pending on "
              f"{args.images} JPEGs), {args.folder_files:,} files in a folder; built in "
              f"{time.perf_counter() - start:.0f} s; {os.cpu_count()} CPU cores")
        print(machine())
        print(f"{'step':<34} {'seconds':>8} {'items':>10} {'peak RSS MB':>12} {'added MB':>9}")
        glob = str(root / "folder" / "*" / "*.jpg")
        for label, step, arg in [("list manifest.csv", _list, root / "manifest.csv"),
                                 ("list manifest.parquet", _list, root / "manifest.parquet"),
                                 ("list folder", _list, root / "folder"),
                                 ("list glob folder/*/*.jpg", _list, glob),
                                 ("read done paths (resume set)", _done, root / "results"),
                                 (f"fresh scan, {args.fresh:,} missing files", _scan, (root / "fresh.csv", root / "fresh")),
                                 ("resume scan", _scan, (root / "manifest.parquet", root / "results")),
                                 ("read_results", _read, root / "results"),
                                 ("pandas.read_parquet", _read_pandas, root / "results")]:
            _report(label, step, arg, args)
        parts = sorted((root / "results").glob("*.parquet"))
        print(f"results: {len(parts)} parts, {sum(p.stat().st_size for p in parts) / 2**20:.1f} MB, "
              f"{len([p for p in (root / 'results').iterdir() if p.name.startswith('_')])} journals left")


def _report(label: str, step, arg, args: argparse.Namespace) -> None:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:  # a fresh process: its own peak RSS
        seconds, items, peak, added, note = pool.submit(_timed, step, arg, args).result()
    print(f"{label:<34} {seconds:8.2f} {items:>10,} {peak:12.0f} {added:9.0f}{note}")


def _timed(step, arg, args: argparse.Namespace) -> tuple[float, int, float, float, str]:
    prepared = step(arg, args)  # imports and set-up, not timed
    before = _peak_mb()
    start = time.perf_counter()
    items, note = prepared()
    return time.perf_counter() - start, items, _peak_mb(), _peak_mb() - before, note


def _peak_mb() -> float:
    """This process's peak RSS: Linux's VmHWM (ru_maxrss would count the parent's size before exec)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 2**20)


def _list(source, args):
    from fakescope.scale.scan import scan_sources

    return lambda: (sum(1 for _ in scan_sources([str(source)])), "")


def _done(folder, args):
    from fakescope.scale.records import read_folder

    return lambda: (len(read_folder(folder).done), "")


def _scan(paths, args):
    from fakescope.detector import Detector
    from fakescope.scale.scan import scan, scan_sources

    manifest, out = paths
    detector = Detector.load(device="cpu", workers=args.workers, batch_size=args.batch_size, provenance=False,
                             runtime=args.runtime)
    stream, first = detector.stream, []

    def timed_stream(inputs, **kwargs):  # notes when the first input not done yet reaches the detector
        def noted():
            for item in inputs:
                if not first:
                    first.append(time.perf_counter())
                yield item
        return stream(noted(), **kwargs)

    detector.stream = timed_stream

    def run():
        start = time.perf_counter()
        summary = scan(scan_sources([str(manifest)]), out, detector, rows_per_part=args.rows_per_part)
        return summary.scanned + summary.skipped, (f"  (first pending input after {first[0] - start:.2f} s; "
                                                    f"scanned {summary.scanned:,}, skipped {summary.skipped:,})")
    return run


def _read(folder, args):
    from fakescope.scale.records import read_results

    def run():
        rows = read_results(folder)
        return len(rows), f"  ({rows['path'].nunique():,} distinct paths)"
    return run


def _read_pandas(folder, args):
    import pandas as pd

    def run():
        rows = pd.read_parquet(folder, columns=["path", "score"])
        return len(rows), f"  ({rows['path'].nunique():,} distinct paths)"
    return run


def _build(root: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for k in range(args.images):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "images" / f"{k:04d}.jpg", quality=90)
    uris = [str(root / "files" / f"d{i // 1000:05d}" / f"img{i:08d}.jpg") for i in range(args.inputs)]
    pcsv.write_csv(pa.table({"uri": uris}), root / "manifest.csv")
    pq.write_table(pa.table({"uri": uris}), root / "manifest.parquet")
    pcsv.write_csv(pa.table({"uri": uris[:args.fresh]}), root / "fresh.csv")
    done = args.inputs - args.pending
    for i in range(done, args.inputs):
        link = Path(uris[i])
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(root / "images" / f"{i % args.images:04d}.jpg")
    (root / "results").mkdir()
    for start in range(0, done, args.rows_per_part):
        paths = uris[start:min(done, start + args.rows_per_part)]
        n = len(paths)
        row = {"label": "real", "score": 0.1, "threshold": 0.5, "decided_by": "pixels", "reason": "synthetic",
               "model": "fakescope-default", "width": 64, "height": 64, "format": "JPEG", "evidence": "[]", "error": None,
               "caveat": None, "error_kind": None}
        columns = {"path": paths, **{k: pa.array([v] * n, SCHEMA.field(k).type) for k, v in row.items()}}
        pq.write_table(pa.table(columns, schema=SCHEMA), root / "results" / f"part-synthetic-{start // args.rows_per_part:05d}.parquet")
    for d in range(0, args.folder_files, 1000):
        sub = root / "folder" / f"s{d // 1000:04d}"
        sub.mkdir(parents=True)
        for j in range(min(1000, args.folder_files - d)):
            (sub / f"f{j:04d}.jpg").touch()


if __name__ == "__main__":
    main()
