"""Scoring the validation and test splits during training: each image's logit (under torchrun, each rank
scoring its share) and the test report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from fakescope.detector import Detector
from fakescope.errors import ConfigError, UnscorableImages
from fakescope.evaluate.metrics import binary_metrics
from fakescope.models.bundle import LoadedModel
from fakescope.models.calibration import apply_calibration
from fakescope.models.config import ModelConfig
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import LABELS, neutralized_chunks, warn_unreadable


def report_on_test_split(network: nn.Module, model_cfg: ModelConfig, device: torch.device, rows: pd.DataFrame, cfg: TrainConfig,
                rank: int = 0, world: int = 1) -> dict:
    """Overall test metrics plus per-generator AUC (its images vs all test reals) and per-source accuracy
    (under torchrun, each rank scores its share of the images)."""
    logits = score_shared(network, model_cfg, device, rows["uri"].tolist(), cfg, rank, world)
    rows, logits = rows[~np.isnan(logits)].reset_index(drop=True), logits[~np.isnan(logits)]  # unreadable: left out
    probs = apply_calibration(model_cfg.calibration, logits)
    labels = rows["label"].map(LABELS).to_numpy()
    report = {"overall": binary_metrics(labels, probs, model_cfg.threshold), "per_generator": {}, "per_source": {}}
    real = labels == 0
    for gen, idx in rows[~real].groupby(rows["generator"].fillna("unknown")).groups.items():
        mask = real.copy()
        mask[list(idx)] = True
        metrics = binary_metrics(labels[mask], probs[mask], model_cfg.threshold)
        report["per_generator"][gen] = {k: metrics[k] for k in ("n", "auc", "recall")}
    for src, idx in rows.groupby(rows["source"].fillna("unknown")).groups.items():
        idx = list(idx)
        correct = (probs[idx] >= model_cfg.threshold) == labels[idx]
        report["per_source"][src] = {"n": len(idx), "accuracy": float(correct.mean())}
    return report


def score_shared(network: nn.Module, model_cfg: ModelConfig, device: torch.device, uris: list[str], cfg: TrainConfig,
                 rank: int, world: int) -> np.ndarray:
    """Every image's logit, each rank scoring every `world`-th image and all ranks receiving all."""
    if world == 1:
        return _score(network, model_cfg, device, uris, cfg)
    shares: list[np.ndarray | None] = [None] * world
    dist.all_gather_object(shares, _score(network, model_cfg, device, uris[rank::world], cfg))
    logits = np.empty(len(uris))
    for r, share in enumerate(shares):
        logits[r::world] = share
    return logits


def _score(network: nn.Module, model_cfg: ModelConfig, device: torch.device, uris: list[str], cfg: TrainConfig) -> np.ndarray:
    """Each image's logit, decoding a chunk at a time (neutralized as in training); NaN where unreadable."""
    network.eval()
    detector = Detector(LoadedModel(network, model_cfg, "training"), device=device, batch_size=cfg.batch_size, provenance=False)
    logits, start = np.full(len(uris), np.nan), 0
    for images in neutralized_chunks(uris, cfg.augment):
        read = [i for i, image in enumerate(images) if image is not None]
        if read:
            unscorable = {}
            try:
                scored = detector.predict_logits([images[i] for i in read])
            except UnscorableImages as exc:  # too long and thin to upscale to a tile: left out, as unreadable ones
                scored, unscorable = exc.scores, exc.reasons
            for j, reason in unscorable.items():
                warn_unreadable(uris[start + read[j]], reason)
            logits[start + np.array(read)] = scored
            if np.isnan(np.delete(scored, list(unscorable))).any():  # else NaN marks the unreadable: weights overflowed
                raise ConfigError("the network's outputs are NaN: training diverged (lower lr)")
        start += len(images)
    return logits
