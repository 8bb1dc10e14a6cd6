"""Why images shorter than a tile are upscaled: AUC after a 0.5x resize, fed whole vs upscaled.

Scores each manifest's test rows with the bundled model (pixel model, calibrated, the model's
recipe preprocessing, as `fakescope evaluate` does) clean, and after `resize_0.5x` twice: with
`InputPolicy.upscale_small` off (a halved 128 px face is one 64 px input) and on (as shipped).
Images in several manifests are scored once. The figures quoted in README.md and docs/evaluate.md:

    python recipes/default/prepare.py --shared ../shared/data --out data/default   # step 1 only, no taef2
    # data/default/eval_test.csv: the card's robustness set, made by the command in MODEL_CARD.md,
    # "Robustness and calibration"
    python recipes/default/small_inputs.py data/default/manifest.csv data/default/eval_test.csv
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pandas as pd

from fakescope.data.manifest import read_rows
from fakescope.detector import Detector
from fakescope.errors import FakescopeError
from fakescope.evaluate.evaluator import make_scorer, recipe_preprocessing
from fakescope.evaluate.metrics import auc_score
from fakescope.evaluate.robustness import perturbed_scores
from fakescope.io.image import load_source
from fakescope.models.bundle import load_model


def policy_scores(model, uris: list[str], device: str, chunk: int = 256) -> pd.DataFrame:
    """Per uri: clean P(ai) as shipped, and after a 0.5x resize fed whole and upscaled."""
    whole = replace(model, config=replace(model.config, input=replace(model.config.input, upscale_small=False)))
    recipe = recipe_preprocessing(model.config)
    scorers = {name: make_scorer(Detector(m, device=device, provenance=False), recipe)
               for name, m in (("whole", whole), ("upscaled", model))}
    parts = []
    for start in range(0, len(uris), chunk):
        images = [load_source(u, keep_bytes=False).image for u in uris[start:start + chunk]]
        part = {"clean": scorers["upscaled"](images)}
        for name, scorer in scorers.items():
            part[f"0.5x_{name}"] = perturbed_scores(images, scorer, ["resize_0.5x"])["resize_0.5x"]
        parts.append(pd.DataFrame(part, index=uris[start:start + chunk]))
    return pd.concat(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", help="manifest CSVs; each one's test rows give a row of the table")
    parser.add_argument("--model", default="fakescope-default")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        tests = {m: read_rows(m).query("split == 'test'") for m in args.manifests}
        uris = list(dict.fromkeys(u for rows in tests.values() for u in rows["uri"].astype(str)))
        scores = policy_scores(load_model(args.model, args.device), uris, args.device)
    except FakescopeError as exc:
        raise SystemExit(f"error: {exc}") from None
    table = pd.DataFrame({
        m: {"images": len(rows), **{c: auc_score((rows["label"] == "ai").to_numpy().astype(int),
                                                 scores.loc[rows["uri"].astype(str), c].to_numpy())
                                    for c in scores.columns}}
        for m, rows in tests.items()}).T
    print(f"AUC of {args.model}, test rows; 0.5x = bicubic half size, fed whole or upscaled to one tile")
    print(table.to_string(float_format=lambda v: f"{v:.3f}", formatters={"images": lambda v: f"{v:.0f}"}))


if __name__ == "__main__":
    main()
