"""`train`: fit a registered architecture on a manifest and save a calibrated model folder.

One loop for CPU and CUDA (channels_last on both, bf16 autocast on CUDA), deterministic seeds,
a checkpoint every epoch (`--resume` continues from it, also with more epochs, and refuses a run
that would train on other rows, with another recipe or with fewer epochs than the checkpoint has trained;
a folder holding a run is refused without `--resume` or `--overwrite`), early stopping on validation AUC,
metrics (with the learning rate) to CSV (and TensorBoard when installed). After training the best
epoch's logits on the validation split fit the calibration; the test split is scored once, at the end.

Under `torchrun --nproc-per-node N` (WORLD_SIZE > 1) the same loop runs data-parallel:
DistributedDataParallel over NCCL on CUDA (with synchronised batch norm) or gloo on the CPU,
each rank taking its slice of every global batch (`batch_size` stays the global batch), all
ranks scoring a share of the validation and test splits and seeing the same gathered metrics,
and only rank 0 writing files. Ranks > 0 reseed torch once the network is built (and on resume, whose checkpoint
holds rank 0's random states) so that their dropout draws its own masks; rank 0 keeps a one-process run's draws.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from fakescope.data.manifest import check_rows, read_rows
from fakescope.detector import resolve_device
from fakescope.errors import ConfigError
from fakescope.evaluate.metrics import auc_score, binary_metrics
from fakescope.io import storage
from fakescope.models.bundle import save_model
from fakescope.models.calibration import Calibrator, apply_calibration
from fakescope.models.config import ModelConfig
from fakescope.models.registry import architecture_info, create_checked, usable_pretrained
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import LABELS
from fakescope.train.loop import Loop, seed_own_stream
from fakescope.train.metric_log import MetricLog
from fakescope.train.run_folder import (
    BEST,
    CHECKPOINT,
    UNREADABLE,
    check_out,
    read_best,
    recipe,
    recorded_epoch,
    remove_run,
    run_identity,
    save_best,
)
from fakescope.train.scoring import report_on_test_split, score_shared

logger = logging.getLogger(__name__)


def train(cfg: TrainConfig, manifest: pd.DataFrame | None = None, *, progress: bool = True) -> ModelConfig:
    """Train, calibrate, test and save a model folder under `cfg.out`; return its config.

    `manifest` rows, when given instead of `cfg.manifest`, are checked and normalised as a manifest file's are
    (`check_rows`): a label `fake` is `ai`, an unknown label or split is refused.
    """
    rows = check_rows(manifest) if manifest is not None else read_rows(cfg.manifest)
    splits = {s: rows[rows["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    unsplit = int((~rows["split"].isin(splits)).sum())  # check_rows refused any other split, a typo such as 'Test'
    if unsplit:
        _warn_once("%d unsplit manifest row(s) (empty split) left out: only train, val and test are used", unsplit)
    for s in ("train", "val"):
        if splits[s]["label"].nunique() < 2:
            held = f"only {splits[s]['label'].iloc[0]} images" if len(splits[s]) else "no rows"
            hint = f" ({unsplit} unsplit: fakescope dataset split assigns splits)" if unsplit and splits[s].empty else ""
            raise ConfigError(f"the manifest's {s!r} split has {held}{hint}; training needs images of both labels in it")
    pretrained = usable_pretrained(cfg.architecture, cfg.pretrained)
    if pretrained != cfg.pretrained:
        _warn_once("architecture %r registers no pretrained_source, so it has no pretrained weights to load: "
                   "trained from random weights, recorded as pretrained: false", cfg.architecture)
    check_out(cfg)
    device = resolve_device(cfg.device)
    if device.type == "cpu":  # 'cpu:0' is the CPU too, but torch.load cannot map best.pt or a checkpoint to it
        device = torch.device("cpu")
    rank, world, device = _init_distributed(device, cfg.batch_size)
    main = rank == 0
    _seed_everything(cfg.seed)
    info = architecture_info(cfg.architecture)
    policy = replace(info.input, crop_size=cfg.crop_size or info.input.crop_size, grid=cfg.grid or info.input.grid)
    network = create_checked(cfg.architecture, policy.crop_size, pretrained, **cfg.architecture_kwargs).to(device)
    network = network.to(memory_format=torch.channels_last)  # on CPU too: 1.5x faster training steps
    if world > 1 and device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        network = convert_sync_batchnorm(network)
    model_cfg = ModelConfig(name=cfg.name, architecture=cfg.architecture, architecture_kwargs=cfg.architecture_kwargs,
                            input=policy, band=cfg.band)
    val_uris, val_labels = splits["val"]["uri"].tolist(), splits["val"]["label"].map(LABELS).to_numpy()

    loop = Loop(cfg, network, policy, device, splits["train"], rank, world)
    if rank:  # every rank has built the network alike (DDP has broadcast rank 0's weights); now its own dropout
        seed_own_stream(cfg.seed, rank)
    loop.run = run_identity(cfg, splits)
    out = Path(cfg.out)  # created only now: a run refused above leaves no empty folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    start_epoch, best_auc, stale = _resume(loop, out, main) if cfg.resume else (0, -1.0, 0)
    if main:
        if cfg.overwrite:  # only now: a run refused above leaves the old one whole
            remove_run(out)
        recipe(cfg).to_yaml(out / "train_config.yaml")
    log = MetricLog(out, start_epoch) if main else None
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience:  # stopped early, also when a resumed run had
            break
        t0 = time.perf_counter()
        loss = loop.run_epoch(epoch, progress and main)
        if not all(torch.isfinite(p).all() for p in network.parameters()):  # else scored as if all images were unreadable
            raise ConfigError(f"training diverged in epoch {epoch + 1} (train loss {loss:g}, weights not finite): lower lr")
        logits = score_shared(network, model_cfg, device, val_uris, cfg, rank, world)
        if np.isnan(logits).any():  # unreadable images (each named in a warning) are left out from now on
            read = ~np.isnan(logits)
            val_uris, val_labels, logits = [u for u, r in zip(val_uris, read) if r], val_labels[read], logits[read]
            if len(set(val_labels)) < 2:
                raise ConfigError("the 'val' split has no readable images of one label left (each unreadable one "
                                  "is named in a warning), so its AUC cannot choose the best epoch")
        auc = auc_score(val_labels, logits)  # on the logits: a sigmoid would tie saturated scores
        best_auc, stale = (auc, 0) if auc > best_auc else (best_auc, stale + 1)
        if main:
            log.write(epoch=epoch + 1, train_loss=loss, val_auc=auc, seconds=round(time.perf_counter() - t0, 1),
                      lr=loop.optimizer.param_groups[0]["lr"])
            loop.save(out, epoch + 1, best_auc, stale)
            if not stale:  # after the checkpoint, which holds these weights too: see _resume
                save_best(network.state_dict(), out, epoch + 1, auc)
    if main:
        log.close()
    if world > 1:
        dist.barrier()  # rank 0 has written best.pt
    # every rank scores its share of validation and test: one rank alone could outlast the others' wait
    # at the barrier below (the process group's 30-minute timeout)
    network.load_state_dict(read_best(out / BEST, device)[0])
    logits = score_shared(network, model_cfg, device, val_uris, cfg, rank, world)
    read = ~np.isnan(logits)
    logits, val_labels = logits[read], val_labels[read]
    calibration = Calibrator(cfg.calibration).fit(logits, val_labels).calibration_
    if auc_score(val_labels, logits) == 1.0:  # no finite fit: test errors would be scored near 0 or 1, never uncertain
        _warn_once("the best epoch separates the val split's %d images perfectly, so its %s calibration saturates: "
                   "P(ai) is near 0 or 1 for every image and the uncertain band catches none; calibrate on a larger or "
                   "harder val split", len(logits), cfg.calibration)
    model_cfg = replace(model_cfg, calibration=calibration)
    metrics = {"val": binary_metrics(val_labels, apply_calibration(calibration, logits), model_cfg.threshold)}
    if not splits["test"].empty:
        metrics["test"] = report_on_test_split(network, model_cfg, device, splits["test"], cfg, rank, world)
    if main:
        summary = {"recipe": recipe(cfg).to_dict(), "data": _data_summary(rows)}
        if manifest is None:  # the recipe's manifest is as given, maybe relative to the folder the run started in
            summary["manifest"] = storage.absolute(cfg.manifest)
        model_cfg = save_model(network, replace(model_cfg, training=summary, metrics=metrics), out / "model")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if world > 1:
        dist.barrier()  # rank 0 has saved the model
        dist.destroy_process_group()
    return model_cfg if main else ModelConfig.load(out / "model" / "config.json")


def _init_distributed(device: torch.device, batch_size: int) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins torchrun's process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of the {world} processes")
    mine = process_device(device, os.environ)
    if device.index is not None and mine != device:
        _warn_once("device %s: under torchrun each process takes CUDA card LOCAL_RANK, not the index given", device)
    if mine.type == "cuda" and mine.index is not None:  # else pinned memory and the like open a context on card 0
        torch.cuda.set_device(mine)
    if world == 1:
        return 0, 1, mine
    if not dist.is_initialized():
        dist.init_process_group("nccl" if mine.type == "cuda" else "gloo")
    return dist.get_rank(), world, mine


def process_device(device: torch.device, env: Mapping[str, str]) -> torch.device:
    """This process's device: the one asked for, index included; under torchrun (`WORLD_SIZE` > 1) a CUDA device
    is card `LOCAL_RANK`, one per process."""
    if device.type == "cuda" and int(env.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(env.get("LOCAL_RANK", "0")))
    return device


def _resume(loop: Loop, out: Path, main: bool) -> tuple[int, float, int]:
    """`loop.restore` from the checkpoint in `out`; the first epoch's start, with a warning, when there is none.

    best.pt follows the checkpoint: written after it, and written again here from it when its last epoch was the
    best (no stale epochs), so a run killed between the two resumes with the best model its checkpoint records.
    A best.pt holding another epoch (missing, damaged, or written by an older fakescope before its epoch's checkpoint and
    so, after a kill between them, an epoch ahead) is not the checkpoint's best, whose weights are nowhere else:
    with a warning, the resumed run takes its next epoch as its best so far."""
    if not (out / CHECKPOINT).is_file():
        _warn_once("nothing to resume in %s (no %s): training from the first epoch", out, CHECKPOINT)
        return 0, -1.0, 0
    start, best_auc, stale = loop.restore(out)
    if not stale:
        if main:
            save_best(loop.network.state_dict(), out, start, best_auc)
        return start, best_auc, stale
    held = _best_epoch(out, start, stale)
    if held != start - stale:
        what = f"holds epoch {held}" if held else "is missing or unreadable"
        _warn_once("%s %s, not the best epoch its checkpoint records (epoch %d, val AUC %.4f): the resumed run takes "
                   "its next epoch as its best so far", out / BEST, what, start - stale, best_auc)
        return start, -1.0, stale
    return start, best_auc, stale


def _best_epoch(out: Path, start: int, stale: int) -> int | None:
    """The epoch (from 1) whose weights `out`/best.pt holds, None when there is none or it is damaged. One an older
    fakescope wrote records none: written before its epoch's checkpoint, it is the next epoch's (`start + 1`) when
    newer than the checkpoint, else the checkpoint's best (`start - stale`)."""
    if not (out / BEST).is_file():
        return None
    try:
        epoch = recorded_epoch(out / BEST)
    except UNREADABLE:  # damaged: its weights are lost, as when it is missing
        return None
    if epoch is not None:
        return epoch
    return start + 1 if (out / BEST).stat().st_mtime_ns > (out / CHECKPOINT).stat().st_mtime_ns else start - stale


def _warn_once(message: str, *args: object) -> None:
    """A warning about the run as a whole (its config, rows or folder), which every rank would give alike:
    under torchrun logged by rank 0 only. What one rank meets alone (an image it cannot read) each logs itself."""
    if os.environ.get("RANK", "0") == "0":
        logger.warning(message, *args)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data_summary(rows: pd.DataFrame) -> dict:
    counts = rows.groupby(["split", "label", rows["source"].fillna("unknown")]).size()
    return {"/".join(map(str, k)): int(v) for k, v in counts.items()}
