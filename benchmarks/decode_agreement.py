"""How far device (nvJPEG) decoding moves the scores from host (Pillow) decoding, on the same files.

Scores each image twice with the bundled model (or `--model`), once per `Detector(decode=...)`,
and prints the largest and mean change in P(ai), how many verdicts changed, and, given a manifest
with labels, the AUC of each. On a CPU both decoders are libjpeg-turbo and agree exactly.

    python benchmarks/decode_agreement.py --manifest data/half/manifest.csv --limit 2000 --device cuda
    python benchmarks/decode_agreement.py --folder ../shared/data/real-imagenet-sample --device cuda
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import folder
from sklearn.metrics import roc_auc_score

from fakescope.detector import Detector
from fakescope.io.inputs import iter_sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", help="a manifest CSV (label, uri relative to its folder)")
    source.add_argument("--folder", type=folder, help="a folder of images (no labels: no AUC)")
    parser.add_argument("--limit", type=int, default=2000, help="at most this many images, spread over the list")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled model)")
    parser.add_argument("--device", default="cuda", help="the inference device; cuda decodes with nvJPEG")
    parser.add_argument("--workers", type=int, default=8, help="decoding threads")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and none is visible")
    if args.manifest and not Path(args.manifest).is_file():
        parser.error(f"--manifest {args.manifest}: no such file (recipes/default/prepare.py writes data/default/manifest.csv)")
    if args.manifest:
        table = pd.read_csv(args.manifest)
        table = table.iloc[np.linspace(0, len(table) - 1, min(args.limit, len(table))).astype(int)]
        files = [str(Path(args.manifest).parent / uri) for uri in table["uri"]]
        labels = (table["label"] == "ai").to_numpy()
    else:
        files, labels = list(iter_sources([str(args.folder)]))[: args.limit], None
        if not files:
            parser.error(f"--folder {args.folder}: no images in it")
    scores = {}
    for decode in ("host", "device"):
        detector = Detector.load(args.model, device=args.device, decode=decode, workers=args.workers, provenance=False)
        results = detector.predict(files)
        scores[decode] = (np.array([np.nan if r.probability is None else r.probability for r in results]),
                          [r.verdict for r in results])
    (host, host_verdicts), (device, device_verdicts) = scores["host"], scores["device"]
    ok = ~np.isnan(host) & ~np.isnan(device)
    change = np.abs(device - host)[ok]
    print(f"{len(files)} images, {int(ok.sum())} scored by both, device {args.device}")
    print(f"|P(ai) device - host|: max {change.max():.4f}  mean {change.mean():.5f}  p99 {np.quantile(change, 0.99):.4f}")
    print(f"verdicts changed: {sum(h != d for h, d in zip(host_verdicts, device_verdicts))} of {len(files)}")
    if labels is not None:
        print(f"AUC host {roc_auc_score(labels[ok], host[ok]):.4f}  device {roc_auc_score(labels[ok], device[ok]):.4f}")


if __name__ == "__main__":
    main()
