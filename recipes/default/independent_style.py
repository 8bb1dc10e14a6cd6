"""Score held-out test images the way the independent evaluation prepares its set.

    python recipes/default/independent_style.py --shared ../shared/data [--model fakescope-default]

Test-split images as published (no neutralization), centre-cropped to at most 512 px and
re-encoded as JPEG q90; all test images of the 2022 renders, LFW and ImageNet and 200 of each
faces class. Prints AUC, balanced accuracy, ECE and the uncertain rate, as scored, after an extra
JPEG q75 pass, and with a 4 x 4 tile grid; then a compression-history check (the PNG sources
given a JPEG pass first, mean P(ai) per source); with `--grids 1,2,3` also the AUC and the onnxruntime
speed (images/s, decoded images in memory) at each tile grid, overall and on images of at least
224 px (the speed/accuracy table of docs/scale.md).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from prepare import collect

from fakescope.detector import Detector
from fakescope.evaluate.metrics import binary_metrics
from fakescope.io.image import load_image
from fakescope.models.calibration import apply_calibration
from fakescope.train.augment import jpeg


def centre_crop(image, side: int = 512):
    s = min(side, *image.size)
    left, top = (image.width - s) // 2, (image.height - s) // 2
    return image.crop((left, top, left + s, top + s))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--faces", type=int, default=200, help="images of each faces class")
    parser.add_argument("--grids", default="", help="comma-separated tile grids to compare (needs onnxruntime)")
    args = parser.parse_args()
    rows = [r for r in collect(args.shared) if r["split"] == "test"]
    faces = {s: [r for r in rows if r["source"] == s] for s in ("ffhq", "thispersondoesnotexist")}
    rng = random.Random(0)
    rows = [r for r in rows if r["source"] not in faces] + [r for f in faces.values() for r in rng.sample(f, min(len(f), args.faces))]
    originals = [load_image(r["path"]) for r in rows]
    images = [jpeg(centre_crop(o.image), 90) for o in originals]
    labels = np.array([r["label"] == "ai" for r in rows], int)
    print("images:", ", ".join(f"{s} {n}" for s, n in sorted(Counter(r["source"] for r in rows).items())))
    detector = Detector.load(args.model, device="cpu", provenance=False)
    config = detector.model.config
    variants = {
        "as scored": (config, lambda im: im),
        "+ JPEG q75": (config, lambda im: jpeg(im, 75)),
        "4x4 tiles": (replace(config, input=replace(config.input, grid=4)), lambda im: im),
    }
    scored = {}
    for name, (cfg, transform) in variants.items():
        detector.model = replace(detector.model, config=cfg)
        probs = scored[name] = apply_calibration(cfg.calibration, detector.predict_logits([transform(im) for im in images]))
        m = binary_metrics(labels, probs, cfg.threshold)
        uncertain = float(((probs >= cfg.band[0]) & (probs < cfg.band[1])).mean())
        print(f"{name:<11} auc={m['auc']:.3f} balanced_accuracy={m['balanced_accuracy']:.3f} "
              f"ece={m['ece']:.3f} uncertain={uncertain:.2f} n={len(rows)}")
    detector.model = replace(detector.model, config=config)  # back to the model's own grid
    compression_history(detector, originals, [r["source"] for r in rows], labels, scored["as scored"])
    if args.grids:
        compare_grids(args.model, images, labels, [int(g) for g in args.grids.split(",")])


def compression_history(detector: Detector, originals: list, sources: list[str], labels: np.ndarray,
                        as_scored: np.ndarray) -> None:
    """Does the model read compression history? FFHQ reals and the renders are PNG, every other source
    JPEG; give the PNG ones a JPEG q95 pass before the pipeline and compare the scores per source."""
    config = detector.model.config
    png = np.array([o.format != "JPEG" for o in originals])
    with_prior = as_scored.copy()  # the JPEG sources' inputs are unchanged: reuse their scores
    prior = [jpeg(centre_crop(jpeg(o.image, 95)), 90) for o, p in zip(originals, png) if p]
    with_prior[png] = apply_calibration(config.calibration, detector.predict_logits(prior))
    sources = np.array(sources)
    for name, probs in (("as scored", as_scored), ("+ JPEG q95 first for PNG sources", with_prior)):
        means = {s: float(probs[sources == s].mean()) for s in sorted(set(sources))}
        print(f"{name}: auc={binary_metrics(labels, probs, config.threshold)['auc']:.3f} mean P(ai) "
              + ", ".join(f"{s} {m:.3f}" for s, m in means.items()))


def compare_grids(model, images, labels: np.ndarray, grids: list[int]) -> None:
    large = np.array([min(im.size) >= 224 for im in images])
    for grid in grids:
        detector = Detector.load(model, device="cpu", provenance=False, runtime="onnx", grid=grid)
        config = detector.model.config
        detector.predict_logits(images[:8])  # warm-up
        start = time.perf_counter()
        probs = apply_calibration(config.calibration, detector.predict_logits(images))
        rate = len(images) / (time.perf_counter() - start)
        every = binary_metrics(labels, probs, config.threshold)["auc"]
        big = binary_metrics(labels[large], probs[large], config.threshold)["auc"]
        print(f"grid {grid}: auc={every:.3f} auc_224px_and_up={big:.3f} (n={large.sum()}) onnx {rate:.1f} images/s")


if __name__ == "__main__":
    main()
