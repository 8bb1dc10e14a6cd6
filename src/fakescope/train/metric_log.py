"""A run's per-epoch metrics: metrics.csv, and TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fakescope.io import storage


class MetricLog:
    """metrics.csv, plus TensorBoard scalars when tensorboard is installed, of the epochs after the `done` ones.

    Epochs are counted from 1, as everywhere else (progress bars, log lines, best.pt, the checkpoint's count).
    A resumed run keeps its file's columns and the rows of its `done` epochs: a run killed after logging an
    epoch but before checkpointing it logs that epoch again; rows an older fakescope wrote, counted from 0,
    are renumbered from 1. TensorBoard likewise hides the folder's events of later epochs (all of them for a
    fresh run).
    """

    def __init__(self, out: Path, done: int):
        path = out / "metrics.csv"
        lines = path.read_text().splitlines(keepends=True) if done and path.is_file() else []
        self.columns = lines[0].strip().split(",") if lines else None
        shift = int(len(lines) > 1 and _epoch(lines[1]) == 0)  # logged counting from 0
        kept = lines[:1] + [_renumbered(line, shift) for line in lines[1:] if _epoch(line) + shift <= done]
        storage.write_bytes(str(path), "".join(kept).encode())  # replaced whole: a kill before the next row keeps them
        self.file = open(path, "a", newline="")  # noqa: SIM115 - written each epoch of the run; close() closes it
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=done + 1)
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


def _epoch(line: str) -> float:
    """The epoch of a metrics.csv row (its first column); infinite for a line cut short by a kill."""
    first = line.split(",", 1)[0]
    return int(first) if first.isdigit() and line.endswith("\n") else math.inf


def _renumbered(line: str, shift: int) -> str:
    """A whole metrics.csv row with its epoch `shift` later."""
    first, rest = line.split(",", 1)
    return f"{int(first) + shift},{rest}" if shift else line
