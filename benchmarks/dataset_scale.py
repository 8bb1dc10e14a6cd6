"""Wall time and peak memory of the dataset tools and the training input at scale, on synthetic data.

In a temporary folder (deleted at the end): a tree of `--images` smooth random images (`--distinct`
of them written, half JPEG and half PNG, `--size` pixels, the rest hard links; a third real, each with
two ai variations named after it) goes through `dataset build`, `dataset audit` and `dataset split`
(which reads and dHashes every image); a synthetic `--rows` manifest (pairs, attributes and a
stored dHash column) through `dataset split` with and without the near-duplicate search, checked
for leaks, and balanced by `label,gender`; and `fakescope train` runs one short epoch of `test_tiny`
on `--train-rows` rows of the built tree (its validation and test splits scored in full). Each
command runs in a process of its own, so its peak RSS is its own (train's loader workers aside).

    python benchmarks/dataset_scale.py [--images 150000] [--size 64x48] [--rows 1000000] [--train-rows 100000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _machine import machine, size
from PIL import Image

PREFIX = [sys.executable, "-m", "fakescope"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=150_000, help="images in the built tree")
    parser.add_argument("--distinct", type=int, default=300, help="distinct image files behind them")
    parser.add_argument("--size", type=size, default="64x48", help="WIDTHxHEIGHT of the tree's images")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic manifest to split")
    parser.add_argument("--train-rows", type=int, default=100_000, help="manifest rows `train` starts from")
    parser.add_argument("--audit-per-class", type=int, default=5000, help="dataset audit --max-per-class")
    parser.add_argument("--workers", type=int, default=8, help="dataset verbs' --workers (threads reading images)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fakescope-dataset-scale-") as tmp:
        root = Path(tmp)
        width, height = (int(side) for side in args.size.lower().split("x"))
        print(machine())
        make_tree(root / "tree", args.images, args.distinct, (width, height))
        built = root / "built.parquet"
        report(f"dataset build, {args.images:,} images", ["dataset", "build", str(root / "tree"), "-o", str(built),
                                                         "--no-csv", "--workers", str(args.workers)])
        report(f"dataset audit, {args.audit_per_class:,} per class", ["dataset", "audit", str(built), "--max-per-class",
                                                                     str(args.audit_per_class), "--workers", str(args.workers)])
        report(f"dataset split of the tree, {args.images:,} images read and dHashed",
               ["dataset", "split", str(built), "-o", str(root / "tree-split.parquet"), "--no-csv", "--workers", str(args.workers)])
        synthetic_manifest(args.rows).to_parquet(root / "big.parquet", index=False)
        for distance in ("4", "-1"):
            out = root / f"split{distance}.parquet"
            report(f"dataset split, {args.rows:,} rows, --max-distance {distance}",
                   ["dataset", "split", str(root / "big.parquet"), "-o", str(out), "--max-distance", distance,
                    "--no-csv"])
        check_leaks(root / "split4.parquet")
        balance = ("from fakescope.data import balance_manifest, read_manifest; import sys; "
                   "print(len(balance_manifest(read_manifest(sys.argv[1]), ['label', 'gender'])), 'rows kept')")
        report(f"balance by label,gender, {args.rows:,} rows", ["-c", balance, str(root / "big.parquet")], prefix=[sys.executable])
        config = train_manifest(built, args.train_rows, root)
        report(f"train 1 epoch of 256 draws, {args.train_rows:,} rows", ["train", str(config), "--no-progress"])


def report(label: str, args: list[str], prefix: list[str] = PREFIX) -> None:
    """Run one command; print its wall time and peak RSS (its own process, not its workers'); stop at its failure."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(prefix + args, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if process.returncode:
            sys.exit(f"{label} failed:\n{err.read()}")
        last = (out.read().strip().splitlines() or [""])[-1]
    print(f"{label}: {seconds:,.1f} s, peak RSS {usage.ru_maxrss / 1024:,.0f} MB  ({last[:100]})", flush=True)


def make_tree(root: Path, images: int, distinct: int, size: tuple[int, int]) -> None:
    """`root/real/<i>.png|jpg` and `root/fake/gen/<i>_var<v>...`, hard links to `distinct` images of `size`
    (random 8x6 colours upsampled: smooth, so they compress and decode like photos, not like noise)."""
    rng = np.random.default_rng(0)
    files = []
    (root / "_files").mkdir(parents=True)
    for i in range(distinct):
        path = root / "_files" / f"{i}.{'jpg' if i % 2 else 'png'}"
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        coarse.resize(size, Image.Resampling.BICUBIC).save(path)
        files.append(path)
    (root / "real").mkdir()
    (root / "fake" / "gen").mkdir(parents=True)
    for i in range(images):
        real, variation = divmod(i, 3)
        file = files[i % distinct]
        name = f"{real:07d}{file.suffix}" if variation == 0 else f"{real:07d}_var{variation}{file.suffix}"
        os.link(file, root / ("real" if variation == 0 else "fake/gen") / name)


def synthetic_manifest(rows: int) -> pd.DataFrame:
    """A third real, the rest ai variations of random reals; attributes and a random stored dHash."""
    rng = np.random.default_rng(0)
    reals = max(1, rows // 3)
    pair = np.concatenate([np.arange(reals), rng.integers(0, reals, rows - reals)])
    label = np.where(np.arange(rows) < reals, "real", "ai")
    return pd.DataFrame({
        "uri": [f"/data/{kind}/{i:08d}.png" for i, kind in enumerate(label)], "label": label,
        "source": rng.choice(["ffhq", "celeba", "coco"], rows),
        "generator": np.where(label == "ai", rng.choice(["dall-e-2", "sd15", "flux"], rows), ""),
        "pair_id": [f"{p:064x}" for p in pair], "split": "", "width": 256, "height": 256, "format": "PNG",
        "sha256": [f"{i:064x}" for i in range(rows)], "gender": rng.choice(["f", "m", None], rows),
        "dhash": [f"{h:016x}" for h in rng.integers(0, 2**63, rows, dtype=np.int64)],
    })


def check_leaks(path: Path) -> None:
    from fakescope.data import find_leaks, read_manifest

    frame = read_manifest(str(path))
    spread = int((frame.groupby("pair_id")["split"].nunique() > 1).sum())
    print(f"  leaks: {find_leaks(frame) or 'none'}; pair_ids in more than one split: {spread}", flush=True)


def train_manifest(built: Path, rows: int, out: Path) -> Path:
    """A config training on the built tree's rows (shuffled, cycled up to `rows`), split 80/10/10 at random, 256 draws."""
    frame = pd.read_parquet(built)
    rng = np.random.default_rng(0)
    frame = frame.iloc[np.resize(rng.permutation(len(frame)), rows)].reset_index(drop=True)
    frame["split"] = rng.choice(["train", "val", "test"], rows, p=[0.8, 0.1, 0.1])
    frame.to_parquet(out / "train.parquet", index=False)
    config = {"manifest": str(out / "train.parquet"), "out": str(out / "run"), "architecture": "test_tiny",
              "pretrained": False, "crop_size": 32, "grid": 1, "epochs": 1, "batch_size": 64,
              "samples_per_epoch": 256, "num_workers": 2, "device": "cpu"}
    (out / "train.yaml").write_text(yaml.safe_dump(config))
    return out / "train.yaml"


if __name__ == "__main__":
    main()
