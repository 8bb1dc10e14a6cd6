"""The Ray engine's writer: parts written whole or not at all, as the local engine writes them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.data import Datasink
from ray.data.block import BlockAccessor

from fakescope.scale.records import PART_SUFFIX, run_id, write_part


class PartSink(Datasink):
    """Each Ray Data write task's rows become one part of the results folder, through `write_part`
    (a temporary name, then a rename), so a crash mid-write leaves no part cut short. A folder that takes no part
    raises `StorageError`, which reaches the driver as the `cause` of a `RayTaskError`. Rows take `schema`, the
    folder's columns (`writing_schema`)."""

    def __init__(self, folder: Path, schema: pa.Schema):
        self.folder, self.schema, self.run = folder, schema, run_id(folder)  # on the driver: one clock

    def write(self, blocks: Iterable[Any], ctx: Any) -> None:
        tables = [t for t in (BlockAccessor.for_block(b).to_arrow() for b in blocks) if t.num_rows]
        if not tables:
            return
        write_part(pa.concat_tables(tables).select(self.schema.names).cast(self.schema),
                   self.folder / f"part-{self.run}-{ctx.task_idx:05d}{PART_SUFFIX}")
