"""A run's per-epoch metrics: metrics.csv, and TensorBoard scalars when tensorboard is installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from fakescope.io import storage


class MetricLog:
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
        storage.write_bytes(str(path), "".join(kept).encode())  # replaced whole: a kill before the next row keeps them
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


def _epoch(line: str) -> float:
    """The epoch of a metrics.csv row (its first column); infinite for a line cut short by a kill."""
    first = line.split(",", 1)[0]
    return int(first) if first.isdigit() and line.endswith("\n") else math.inf
