"""What a training run keeps in its folder: the files it writes, the refusal of a folder that holds another
run, the recorded recipe, the identity a resumed run must share with its checkpoint, atomic saves and best.pt."""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from fakescope.errors import ConfigError, first_line
from fakescope.models.registry import usable_pretrained
from fakescope.train.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
"""The layout of checkpoint.pt this fakescope writes and resumes from (its `format`; one without it has 1). A newer
one (a state an older version would leave unrestored) is refused."""
BEST = "best.pt"
REPLACED = ("train_config.yaml", CHECKPOINT, BEST, "metrics.csv", "metrics.json")
"""The run files `overwrite` removes before the new run's first epoch: left, they would pass for the new run's."""
RUN_FILES = (*REPLACED, "model", "tensorboard")
"""What a run writes into its folder: any of them there means the folder holds a run. `model/` stays until the
new run saves its own over it (a folder of that name may not be a run's: never deleted), TensorBoard hides the
old run's events."""

FINISHED = (CHECKPOINT, BEST, "metrics.json", "model")
"""Run files that only a finished epoch (or a folder named model/) leaves."""

UNREADABLE = (EOFError, RuntimeError, ValueError, pickle.UnpicklingError)
"""What torch.load raises on a damaged .pt file, or (weights_only) one holding pickled code."""

RESUMABLE = frozenset({"manifest", "out", "name", "pretrained", "epochs", "device", "num_workers", "patience",
                       "calibration", "band", "amp", "resume", "overwrite"})
"""TrainConfig keys a resumed run may change; any other change would mix two runs in one model."""


def check_out(cfg: TrainConfig) -> None:
    """Refuse an output folder that holds a run, unless `cfg.resume` continues it or `cfg.overwrite` replaces it."""
    held = [name for name in RUN_FILES if (Path(cfg.out) / name).exists()]
    if not held or cfg.resume or cfg.overwrite:
        return
    if not set(held) & set(FINISHED):  # a run that failed in its first epoch (bad data) left these behind
        raise ConfigError(f"{cfg.out} holds the files of a run that finished no epoch ({', '.join(held)}; no {CHECKPOINT}); "
                          "start it over with --overwrite, or --resume, which starts it from its first epoch "
                          "(config keys overwrite: true / resume: true)")
    raise ConfigError(f"{cfg.out} already holds a training run ({', '.join(held)}); continue it with --resume "
                      "or replace it with --overwrite (config keys resume: true / overwrite: true)")


def recipe(cfg: TrainConfig) -> TrainConfig:
    """`cfg` as recorded with the run: without `resume` and `overwrite`, which say what this call did to the
    folder, so that a recorded config reused for another run does not replace that run's folder unasked, and
    with `pretrained` as the architecture could honour it (`usable_pretrained`)."""
    return replace(cfg, resume=False, overwrite=False, pretrained=usable_pretrained(cfg.architecture, cfg.pretrained))


def remove_run(out: Path) -> None:
    """Delete the `REPLACED` files of the run in `out`."""
    for name in REPLACED:
        (out / name).unlink(missing_ok=True)


OMITTED = {"architecture_kwargs": {}, "augment.small_images": "pad"}
"""Identity keys left out at these values, as in checkpoints written before the keys existed."""


def run_identity(cfg: TrainConfig, splits: dict[str, pd.DataFrame]) -> dict:
    """What a resumed run must share with its checkpoint: the other config keys and the train/val rows."""
    fixed = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE and k != "augment"}
    fixed.update({f"augment.{k}": v for k, v in cfg.to_dict()["augment"].items()})
    for key, value in OMITTED.items():
        if fixed[key] == value:
            del fixed[key]
    rows = pd.concat([splits["train"], splits["val"]])[["uri", "label", "split"]]
    fixed["data"] = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()  # stable across pandas versions
    return fixed


def save_atomic(state: dict, path: Path) -> None:
    """torch.save through a temporary file, so a run killed while saving leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_best(weights: dict, out: Path, epoch: int, val_auc: float) -> None:
    """Save the best epoch's `weights` as `out`/best.pt with its `epoch` (counted from 1) and validation AUC."""
    save_atomic({"network": weights, "epoch": epoch, "val_auc": val_auc}, out / BEST)


def read_best(path: Path, device: torch.device) -> tuple[dict, int | None, float | None]:
    """(weights, epoch, validation AUC) of a best.pt; an older one, its weights alone, records neither (None).

    Raises:
        ConfigError: the file is missing or unreadable (damaged), naming how to train a new best.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (*UNREADABLE, FileNotFoundError) as exc:
        raise ConfigError(f"cannot read the best epoch's weights {path}: {first_line(exc)}; resume with more --epochs "
                          "(or a higher patience) to train a new best, or train again with --overwrite") from None
    if "network" in state and "epoch" in state:
        return state["network"], state["epoch"], state["val_auc"]
    return state, None, None


def recorded_epoch(path: Path) -> int | None:
    """The epoch a best.pt records (None for an older one), its weights mapped from the file, not read."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state["epoch"] if "network" in state and "epoch" in state else None
