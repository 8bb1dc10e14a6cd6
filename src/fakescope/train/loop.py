"""The training loop's state and steps: optimizer, one-cycle schedule, loader, one epoch of steps, and the
checkpoint that saves and restores them."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from fakescope.errors import ConfigError, FakescopeError, first_line
from fakescope.models.config import InputPolicy
from fakescope.models.registry import check_logits
from fakescope.train.config import TrainConfig
from fakescope.train.dataset import SKIPPED, RankSlice, TrainTiles, balanced_sampler, warn_unreadable
from fakescope.train.run_folder import CHECKPOINT, CHECKPOINT_FORMAT, OMITTED, UNREADABLE, save_atomic


class Loop:
    """Optimizer, scheduler, loader and one epoch of steps."""

    run: dict | None = None
    """The run's `run_identity`, saved with each checkpoint and checked on restore."""

    def __init__(self, cfg: TrainConfig, network: nn.Module, policy: InputPolicy, device: torch.device, rows: pd.DataFrame,
                 rank: int = 0, world: int = 1):
        self.cfg, self.network, self.policy, self.device = cfg, network, policy, device
        self.rank, self.world = rank, world
        self.dataset = TrainTiles(rows, policy.crop_size, cfg.augment, cfg.seed)
        n = cfg.samples_per_epoch or len(rows)
        self.sampler = balanced_sampler(rows, cfg.balance, n, cfg.seed)
        self.model = network
        if world > 1:
            self.rank_sampler = RankSlice(self.sampler, rank, world, cfg.batch_size)
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        self.steps = n // cfg.batch_size  # the loaders drop a last, partial batch
        if not self.steps:
            raise ConfigError(f"an epoch of {n} draws (samples_per_epoch, else the train split's rows) is less than "
                              f"one batch of {cfg.batch_size}, so no step would be taken; lower batch_size (--batch-size) "
                              "or raise a config's samples_per_epoch")
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
        save_atomic({"network": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "epoch": next_epoch, "best_auc": best_auc,
                     "stale": stale, "rng": random.getstate(), "torch_rng": torch.get_rng_state(),
                     "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                     "run": self.run, "format": CHECKPOINT_FORMAT}, out / CHECKPOINT)

    def restore(self, out: Path) -> tuple[int, float, int]:
        """Continue from the checkpoint in `out` (which must exist); (next epoch, best AUC, stale epochs)."""
        path = out / CHECKPOINT
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)  # no pickled code from a foreign folder
        except UNREADABLE as exc:
            raise ConfigError(f"cannot resume from {path}: unreadable checkpoint ({first_line(exc)}); "
                              "delete it to start the run over") from None
        if (version := state.get("format", 1)) != CHECKPOINT_FORMAT:  # checkpoints of older versions have no "format"
            from fakescope import __version__

            newer = isinstance(version, int) and version > CHECKPOINT_FORMAT
            raise ConfigError(f"cannot resume from {path}: " + (
                f"written by a newer fakescope (checkpoint format {version}; fakescope {__version__} reads "
                f"{CHECKPOINT_FORMAT}): upgrade fakescope" if newer else f"unreadable checkpoint (format {version!r})") +
                ", or replace the run with --overwrite")
        if state.get("run", self.run) != self.run:  # checkpoints of older versions have no "run"
            old = state["run"]
            changed = [k for k in {**old, **self.run} if old.get(k) != self.run.get(k)]
            what = ", ".join(f"{k} {old.get(k, OMITTED.get(k))!r} -> {self.run.get(k, OMITTED.get(k))!r}" if k != "data" else
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
        if self.rank:  # the checkpoint holds rank 0's torch states
            seed_own_stream(self.cfg.seed, self.rank, state["epoch"])
        elif "torch_rng" in state:  # dropout's draws; checkpoints of older versions have none
            torch.set_rng_state(state["torch_rng"].cpu())
        if not self.rank and state.get("cuda_rng") is not None and self.device.type == "cuda":  # none: a CUDA run resumed on CPU
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        return state["epoch"], state["best_auc"], state["stale"]


def seed_own_stream(seed: int, rank: int, *more: int) -> None:
    """Reseed torch's CPU and CUDA generators from (`seed`, `rank`, *`more`), for a rank > 0 under torchrun: its
    dropout then draws its own masks. Rank 0 is never reseeded, so it draws what a one-process run draws."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, *more]).generate_state(1)[0]))


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
