"""The CUDA training sweep reported in MODEL_CARD.md: the shipped recipe at two seeds, longer, and
with 160 px crops, each trained, calibrated on validation and tested once.

    python recipes/default/gpu_sweep.py --out runs/gpu-sweep [--device cuda] [--num-workers 12] [--pretrained FILE]
        [--manifest data/half/manifest.csv] [--resume | --overwrite]

Prints one row per run (best validation AUC, test AUC and ECE); each run's model folder, metrics.csv
and metrics.json stay under OUT/NAME. Runs on the CPU too (`--device cpu`), about 50x slower.
`--manifest` trains on another prepared set than the recipes' `data/default`, e.g. half of the
faces (`prepare.py --faces-fraction 0.5`, which is how the sweep in MODEL_CARD.md ran, and small
enough to carry to a GPU machine).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fakescope.errors import FakescopeError
from fakescope.train import TrainConfig, train
from fakescope.train.trainer import check_out

HERE = Path(__file__).parent
# name -> (recipe file, overrides)
VARIANTS = {
    "shipped": ("train.yaml", {}),
    "shipped_seed1": ("train.yaml", {"seed": 1}),
    "long": ("long.yaml", {}),
    "crop160": ("train.yaml", {"crop_size": 160}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--num-workers", type=int, default=12)
    parser.add_argument("--pretrained", help="ImageNet weights file (default: the recipe's own source)")
    parser.add_argument("--manifest", help="prepared manifest to train on (default: the recipe's)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the runs OUT already holds")
    again.add_argument("--overwrite", action="store_true", help="replace the runs OUT already holds")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    data = {"manifest": args.manifest} if args.manifest else {}
    try:  # every run's folder checked before the first trains
        cfgs = {name: TrainConfig.from_yaml(HERE / VARIANTS[name][0], **VARIANTS[name][1], **data, pretrained=args.pretrained,
                                            out=str(args.out / name), name=f"sweep-{name}", device=args.device,
                                            num_workers=args.num_workers, resume=args.resume, overwrite=args.overwrite)
                for name in names}
        for cfg in cfgs.values():
            check_out(cfg)
    except FakescopeError as exc:
        raise SystemExit(f"error: {exc}") from None
    print("| run | best val AUC | test AUC | test ECE |\n|---|---|---|---|")
    for name, cfg in cfgs.items():
        try:
            test = train(cfg, progress=False).metrics["test"]["overall"]
        except FakescopeError as exc:
            raise SystemExit(f"error: {exc}") from None
        with open(args.out / name / "metrics.csv") as f:
            best_val = max(float(row["val_auc"]) for row in csv.DictReader(f))
        print(f"| {name} | {best_val:.4f} | {test['auc']:.4f} | {test['ece']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
