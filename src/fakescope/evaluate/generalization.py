"""Leave-one-generator-out: how a training recipe does on a generator it never saw."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fakescope.detector import resolve_device
from fakescope.evaluate.metrics import binary_metrics
from fakescope.models.bundle import load_model
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import LABELS, neutralized_images
from fakescope.train.trainer import read_rows, train


def leave_one_generator_out(
    cfg: TrainConfig, generators: list[str] | None = None, manifest: pd.DataFrame | None = None, *, progress: bool = False
) -> pd.DataFrame:
    """Train once per generator with its images removed, then score them against the test reals.

    Returns one row per held-out generator: `auc_test` (its test-split images vs test reals),
    `auc_all` (all its images, none of which were trained on, vs test reals), counts, and the
    in-distribution test AUC of the same run on the remaining generators.
    """
    rows = manifest if manifest is not None else read_rows(cfg.manifest)
    gens = generators or sorted(rows.loc[rows["label"] == "ai", "generator"].dropna().unique())
    test_reals = rows[(rows["label"] == "real") & (rows["split"] == "test")]
    results = []
    for gen in gens:
        held = rows["generator"] == gen
        run_cfg = replace(cfg, out=str(Path(cfg.out) / f"without-{gen}"), name=f"{cfg.name}-without-{gen}")
        saved = train(run_cfg, rows[~held].reset_index(drop=True), progress=progress)
        model = load_model(Path(run_cfg.out) / "model", device=resolve_device(cfg.device))
        unseen = rows[held]
        scored = pd.concat([test_reals, unseen], ignore_index=True)
        probs = _probabilities(model, scored, cfg)
        labels = scored["label"].map(LABELS).to_numpy()
        in_test = (scored["split"] == "test").to_numpy()
        results.append({
            "held_out": gen,
            "n_unseen": int(len(unseen)),
            "auc_all": binary_metrics(labels, probs, saved.threshold)["auc"],
            "auc_test": binary_metrics(labels[in_test], probs[in_test], saved.threshold)["auc"],
            "recall_all": binary_metrics(labels, probs, saved.threshold)["recall"],
            "auc_seen_test": saved.metrics.get("test", {}).get("overall", {}).get("auc", float("nan")),
        })
    return pd.DataFrame(results)


def _probabilities(model, rows: pd.DataFrame, cfg: TrainConfig) -> np.ndarray:
    from fakescope.detector import Detector
    from fakescope.models.calibration import apply_calibration

    detector = Detector(model, device=next(model.network.parameters()).device, batch_size=cfg.batch_size, provenance=False)
    logits = detector.predict_logits(neutralized_images(rows, cfg.augment))
    return apply_calibration(model.config.calibration, logits)
