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
and only rank 0 writing files.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import pickle
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from fakescope.data.manifest import check_rows, read_rows
from fakescope.detector import Detector, resolve_device
from fakescope.errors import ConfigError, FakescopeError
from fakescope.evaluate.metrics import auc_score, binary_metrics
from fakescope.models.bundle import LoadedModel, save_model
from fakescope.models.calibration import Calibrator, apply_calibration
from fakescope.models.config import InputPolicy, ModelConfig
from fakescope.models.registry import architecture_info, check_logits, create_checked, usable_pretrained
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import (
    LABELS,
    SKIPPED,
    RankSlice,
    TrainTiles,
    balanced_sampler,
    neutralized_chunks,
    warn_unreadable,
)

CHECKPOINT = "checkpoint.pt"
REPLACED = ("train_config.yaml", CHECKPOINT, "best.pt", "metrics.csv", "metrics.json")
"""The run files `overwrite` removes before the new run's first epoch: left, they would pass for the new run's."""
RUN_FILES = (*REPLACED, "model", "tensorboard")
"""What a run writes into its folder: any of them there means the folder holds a run. `model/` stays until the
new run saves its own over it (a folder of that name may not be a run's: never deleted), TensorBoard hides the
old run's events."""

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

    loop = _Loop(cfg, network, policy, device, splits["train"], rank, world)
    loop.run = _run_identity(cfg, splits)
    out = Path(cfg.out)  # created only now: a run refused above leaves no empty folder
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    start_epoch, best_auc, stale = loop.restore(out) if cfg.resume else (0, -1.0, 0)
    if main:
        if cfg.overwrite:  # only now: a run refused above leaves the old one whole
            _remove_run(out)
        recipe(cfg).to_yaml(out / "train_config.yaml")
    log = _MetricLog(out, start_epoch) if main else None
    for epoch in range(start_epoch, cfg.epochs):
        if stale >= cfg.patience:  # stopped early, also when a resumed run had
            break
        t0 = time.perf_counter()
        loss = loop.run_epoch(epoch, progress and main)
        if not all(torch.isfinite(p).all() for p in network.parameters()):  # else scored as if all images were unreadable
            raise ConfigError(f"training diverged in epoch {epoch + 1} (train loss {loss:g}, weights not finite): lower lr")
        logits = _score_shared(network, model_cfg, device, val_uris, cfg, rank, world)
        if np.isnan(logits).any():  # unreadable images (each named in a warning) are left out from now on
            read = ~np.isnan(logits)
            val_uris, val_labels, logits = [u for u, r in zip(val_uris, read) if r], val_labels[read], logits[read]
            if len(set(val_labels)) < 2:
                raise ConfigError("the 'val' split has no readable images of one label left (each unreadable one "
                                  "is named in a warning), so its AUC cannot choose the best epoch")
        auc = auc_score(val_labels, logits)  # on the logits: a sigmoid would tie saturated scores
        if auc > best_auc:
            best_auc, stale = auc, 0
            if main:
                _save(network.state_dict(), out / "best.pt")
        else:
            stale += 1
        if main:
            log.write(epoch=epoch, train_loss=loss, val_auc=auc, seconds=round(time.perf_counter() - t0, 1),
                      lr=loop.optimizer.param_groups[0]["lr"])
            loop.save(out, epoch + 1, best_auc, stale)
    if main:
        log.close()
    if world > 1:
        dist.barrier()  # rank 0 has written best.pt
    # every rank scores its share of validation and test: one rank alone could outlast the others' wait
    # at the barrier below (the process group's 30-minute timeout)
    network.load_state_dict(torch.load(out / "best.pt", map_location=device, weights_only=True))
    logits = _score_shared(network, model_cfg, device, val_uris, cfg, rank, world)
    read = ~np.isnan(logits)
    logits, val_labels = logits[read], val_labels[read]
    calibration = Calibrator(cfg.calibration).fit(logits, val_labels).calibration_
    model_cfg = replace(model_cfg, calibration=calibration)
    metrics = {"val": binary_metrics(val_labels, apply_calibration(calibration, logits), model_cfg.threshold)}
    if not splits["test"].empty:
        metrics["test"] = test_report(network, model_cfg, device, splits["test"], cfg, rank, world)
    if main:
        summary = {"recipe": recipe(cfg).to_dict(), "data": _data_summary(rows)}
        model_cfg = save_model(network, replace(model_cfg, training=summary, metrics=metrics), out / "model")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if world > 1:
        dist.barrier()  # rank 0 has saved the model
        dist.destroy_process_group()
    return model_cfg if main else ModelConfig.load(out / "model" / "config.json")


def check_out(cfg: TrainConfig) -> None:
    """Refuse an output folder that holds a run, unless `cfg.resume` continues it or `cfg.overwrite` replaces it."""
    held = [name for name in RUN_FILES if (Path(cfg.out) / name).exists()]
    if held and not (cfg.resume or cfg.overwrite):
        raise ConfigError(f"{cfg.out} already holds a training run ({', '.join(held)}); continue it with --resume "
                          "or replace it with --overwrite (config keys resume: true / overwrite: true)")


def recipe(cfg: TrainConfig) -> TrainConfig:
    """`cfg` as recorded with the run: without `resume` and `overwrite`, which say what this call did to the
    folder, so that a recorded config reused for another run does not replace that run's folder unasked, and
    with `pretrained` as the architecture could honour it (`usable_pretrained`)."""
    return replace(cfg, resume=False, overwrite=False, pretrained=usable_pretrained(cfg.architecture, cfg.pretrained))


def _remove_run(out: Path) -> None:
    for name in REPLACED:
        (out / name).unlink(missing_ok=True)


def test_report(network: nn.Module, model_cfg: ModelConfig, device: torch.device, rows: pd.DataFrame, cfg: TrainConfig,
                rank: int = 0, world: int = 1) -> dict:
    """Overall test metrics plus per-generator AUC (its images vs all test reals) and per-source accuracy
    (under torchrun, each rank scores its share of the images)."""
    logits = _score_shared(network, model_cfg, device, rows["uri"].tolist(), cfg, rank, world)
    rows, logits = rows[~np.isnan(logits)].reset_index(drop=True), logits[~np.isnan(logits)]  # unreadable: left out
    probs = apply_calibration(model_cfg.calibration, logits)
    labels = rows["label"].map(LABELS).to_numpy()
    report = {"overall": binary_metrics(labels, probs, model_cfg.threshold), "per_generator": {}, "per_source": {}}
    real = labels == 0
    for gen, idx in rows[~real].groupby(rows["generator"].fillna("unknown")).groups.items():
        mask = real.copy()
        mask[list(idx)] = True
        report["per_generator"][gen] = {k: binary_metrics(labels[mask], probs[mask], model_cfg.threshold)[k] for k in ("n", "auc", "recall")}
    for src, idx in rows.groupby(rows["source"].fillna("unknown")).groups.items():
        idx = list(idx)
        report["per_source"][src] = {"n": len(idx), "accuracy": float(((probs[idx] >= model_cfg.threshold) == labels[idx]).mean())}
    return report


def _init_distributed(device: torch.device, batch_size: int) -> tuple[int, int, torch.device]:
    """(rank, world size, this rank's device); joins torchrun's process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if batch_size % world:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of the {world} processes")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def _score_shared(network: nn.Module, model_cfg: ModelConfig, device: torch.device, uris: list[str], cfg: TrainConfig,
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
            logits[start + np.array(read)] = scored = detector.predict_logits([images[i] for i in read])
            if np.isnan(scored).any():  # NaN marks the unreadable images: finite weights can still overflow
                raise ConfigError("the network's outputs are NaN: training diverged (lower lr)")
        start += len(images)
    return logits


RESUMABLE = frozenset({"manifest", "out", "name", "pretrained", "epochs", "device", "num_workers", "patience",
                       "calibration", "band", "amp", "resume", "overwrite"})
"""TrainConfig keys a resumed run may change; any other change would mix two runs in one model."""


def _run_identity(cfg: TrainConfig, splits: dict[str, pd.DataFrame]) -> dict:
    """What a resumed run must share with its checkpoint: the other config keys and the train/val rows."""
    fixed = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE and k != "augment"}
    if not fixed["architecture_kwargs"]:  # as in checkpoints written before the key existed
        del fixed["architecture_kwargs"]
    fixed.update({f"augment.{k}": v for k, v in cfg.to_dict()["augment"].items()})
    rows = pd.concat([splits["train"], splits["val"]])[["uri", "label", "split"]]
    fixed["data"] = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()  # stable across pandas versions
    return fixed


class _Loop:
    """Optimizer, scheduler, loader and one epoch of steps."""

    run: dict | None = None
    """The run's `_run_identity`, saved with each checkpoint and checked on restore."""

    def __init__(self, cfg: TrainConfig, network: nn.Module, policy: InputPolicy, device: torch.device, rows: pd.DataFrame,
                 rank: int = 0, world: int = 1):
        self.cfg, self.network, self.policy, self.device, self.world = cfg, network, policy, device, world
        self.dataset = TrainTiles(rows, policy.crop_size, cfg.augment, cfg.seed)
        n = cfg.samples_per_epoch or len(rows)
        self.sampler = balanced_sampler(rows, cfg.balance, n, cfg.seed)
        self.model = network
        if world > 1:
            self.rank_sampler = RankSlice(self.sampler, rank, world, cfg.batch_size)
            self.model = nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
        self.steps = n // cfg.batch_size  # the loaders drop a last, partial batch
        if not self.steps:
            raise ConfigError(f"an epoch of {n} draws (samples_per_epoch, else the train split's rows) is less than "
                              f"one batch of {cfg.batch_size}, so no step would be taken; lower batch_size or raise "
                              "samples_per_epoch")
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = self._one_cycle()
        self.loss_fn = nn.BCEWithLogitsLoss()
        mean = torch.tensor(policy.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(policy.std, device=device).view(1, 3, 1, 1)
        self.normalize = lambda x: (x - mean) / std

    def _one_cycle(self, done_steps: int = 0) -> torch.optim.lr_scheduler.OneCycleLR:
        """The run's one-cycle schedule over all its epochs, positioned after `done_steps` steps."""
        total = max(self.steps * self.cfg.epochs, 4)  # OneCycle needs a few steps in each phase
        return torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=self.cfg.lr, total_steps=total,
                                                   pct_start=max(0.1, 2.0 / total),
                                                   last_epoch=min(done_steps, total - 1) - 1)

    def run_epoch(self, epoch: int, progress: bool) -> float:
        self.dataset.epoch = epoch
        self.sampler.generator.manual_seed(self.cfg.seed + epoch)
        if self.world > 1:
            loader = DataLoader(self.dataset, batch_size=self.cfg.batch_size // self.world, sampler=self.rank_sampler,
                                num_workers=self.cfg.num_workers, drop_last=True,
                                pin_memory=self.device.type == "cuda", persistent_workers=False)
        else:
            loader = DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=self.sampler,
                                num_workers=self.cfg.num_workers, drop_last=True,
                                pin_memory=self.device.type == "cuda", persistent_workers=False)
        self.model.train()
        use_amp = self.cfg.amp and self.device.type == "cuda"
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0  # summed on the device: no sync per step
        batches = loader
        if progress:
            from tqdm import tqdm

            batches = tqdm(loader, desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False)
        for x, y, skipped in _own_errors(batches):
            for record in filter(None, SKIPPED.join(skipped).split(SKIPPED)):
                warn_unreadable(*record.split("\x1f", 1))
            x = self.normalize(x.to(self.device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = self.loss_fn(check_logits(self.model(x), len(y), self.cfg.architecture).float(), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler.last_epoch < self.scheduler.total_steps - 1:
                self.scheduler.step()
            total += loss.detach() * len(y)
            count += len(y)
        sums = torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=self.device)])
        if self.world > 1:
            dist.all_reduce(sums)
        total, count = sums.tolist()
        return total / max(count, 1)

    def save(self, out: Path, next_epoch: int, best_auc: float, stale: int) -> None:
        _save({"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
               "scheduler": self.scheduler.state_dict(), "epoch": next_epoch, "best_auc": best_auc,
               "stale": stale, "rng": random.getstate(), "run": self.run}, out / CHECKPOINT)

    def restore(self, out: Path) -> tuple[int, float, int]:
        path = out / CHECKPOINT
        if not path.is_file():
            _warn_once("nothing to resume in %s (no %s): training from the first epoch", out, CHECKPOINT)
            return 0, -1.0, 0
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)  # no pickled code from a foreign folder
        except (EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
            raise ConfigError(f"cannot resume from {path}: unreadable checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0]}); "
                              "delete it to start the run over") from None
        if state.get("run", self.run) != self.run:  # checkpoints of older versions have no "run"
            old = state["run"]
            changed = [k for k in {**old, **self.run} if old.get(k) != self.run.get(k)]
            what = ", ".join(f"{k} {old.get(k)!r} -> {self.run.get(k)!r}" if k != "data" else
                             "the manifest's train/val rows" for k in changed)
            raise ConfigError(f"cannot resume from {path}: this run changes {what}; "
                              "set them back, train into another --out, or replace the run with --overwrite")
        if state["epoch"] > self.cfg.epochs:  # else the model would record fewer epochs than it was trained for
            raise ConfigError(f"cannot resume from {path}: it has trained {state['epoch']} epochs, more than this run's "
                              f"epochs {self.cfg.epochs}; ask for at least {state['epoch']}")
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scheduler"]["total_steps"] == self.scheduler.total_steps:
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # more (or fewer) epochs than the checkpoint's run: this run's schedule, from the step reached
            self.scheduler = self._one_cycle(done_steps=state["epoch"] * self.steps)
        random.setstate(state["rng"])
        return state["epoch"], state["best_auc"], state["stale"]


class _MetricLog:
    """metrics.csv, plus TensorBoard scalars when tensorboard is installed; from `start_epoch` on.

    A resumed run keeps its file's columns and the rows of the epochs before `start_epoch`: a run
    killed after logging an epoch but before checkpointing it logs that epoch again. TensorBoard
    likewise hides the folder's events from `start_epoch` on (all of them for a fresh run).
    """

    def __init__(self, out: Path, start_epoch: int):
        path = out / "metrics.csv"
        lines = path.read_text().splitlines(keepends=True) if start_epoch and path.is_file() else []
        self.columns = lines[0].strip().split(",") if lines else None
        kept = lines[:1] + [line for line in lines[1:] if _epoch(line) < start_epoch]
        tmp = path.with_name(path.name + ".tmp")  # replaced whole: a kill before the next row keeps the earlier ones
        tmp.write_text("".join(kept), newline="")
        os.replace(tmp, path)
        self.file = open(path, "a", newline="")
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_epoch)
        except ImportError:
            self.tb = None

    def write(self, **row) -> None:
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, self.columns or list(row), extrasaction="ignore")
            if self.file.tell() == 0:
                self.writer.writeheader()
        self.writer.writerow(row)
        self.file.flush()
        if self.tb:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])

    def close(self) -> None:
        self.file.close()
        if self.tb:
            self.tb.close()


def _own_errors(batches: Iterable) -> Iterator:
    """The loader's batches; a fakescope error raised in a loader worker, which the loader raises again with
    the worker's traceback in its message, is raised as its own one line."""
    try:
        yield from batches
    except FakescopeError as exc:
        lines = str(exc).rstrip().splitlines()
        if len(lines) < 2 or "in DataLoader worker process" not in lines[0]:
            raise
        raise type(exc)(lines[-1].partition(": ")[2]) from None


def _epoch(line: str) -> float:
    """The epoch of a metrics.csv row (its first column); infinite for a line cut short by a kill."""
    first = line.split(",", 1)[0]
    return int(first) if first.isdigit() and line.endswith("\n") else math.inf


def _warn_once(message: str, *args: object) -> None:
    """A warning about the run as a whole (its config, rows or folder), which every rank would give alike:
    under torchrun logged by rank 0 only. What one rank meets alone (an image it cannot read) each logs itself."""
    if os.environ.get("RANK", "0") == "0":
        logger.warning(message, *args)


def _save(state: dict, path: Path) -> None:
    """torch.save through a temporary file, so a run killed while saving leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _data_summary(rows: pd.DataFrame) -> dict:
    counts = rows.groupby(["split", "label", rows["source"].fillna("unknown")]).size()
    return {"/".join(map(str, k)): int(v) for k, v in counts.items()}
