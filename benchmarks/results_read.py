"""Reading back a results folder of a million rows that holds error rows: `read_results` in all, and the step that
leaves out superseded rows (`_superseded`) alone, on synthetic rows.

Writes `--rows` rows in parts of `--rows-per-part`: images in folders of 1,000, one in `--error-every` a broken
file's error row (every other one transient), and `--folders` rows of folders that could not be listed, half of them
followed by a later run's rows below them (kept: a row below a folder tells no listing of it). Prints the median of
`--repeats` timings of each.

    python benchmarks/results_read.py --rows 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from _machine import machine

from fakescope.scale import read_results
from fakescope.scale.records import SCHEMA, _superseded, write_part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="image rows in the folder")
    parser.add_argument("--rows-per-part", type=int, default=100_000, help="rows per Parquet part")
    parser.add_argument("--error-every", type=int, default=1000, help="one image row in this many is an error")
    parser.add_argument("--folders", type=int, default=100, help="rows of folders that could not be listed")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each step (the median is printed)")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results"
        out.mkdir()
        _build(out, args)
        rows = read_results(out)
        print(f"{args.rows:,} image rows, {args.rows // args.error_every:,} of them errors, {args.folders} folder rows: "
              f"{len(rows):,} rows read back")
        frame = _all_rows(out)
        for label, step in [("read_results", lambda: read_results(out)), ("_superseded", lambda: _superseded(frame))]:
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            print(f"{label:<14} {statistics.median(times):8.3f} s (median of {args.repeats})")


def _build(out: Path, args: argparse.Namespace) -> None:
    """Parts of image rows (every `error_every`-th an error), then a run of folder rows, then a later run's
    rows below every other of those folders."""
    paths = [f"/data/photos/f{i // 1000:05d}/img{i % 1000:04d}.jpg" for i in range(args.rows)]
    for index, start in enumerate(range(0, args.rows, args.rows_per_part)):
        chunk = paths[start:start + args.rows_per_part]
        kinds = [("transient", "permanent")[(start + i) // args.error_every % 2] if (start + i) % args.error_every == 0
                 else None for i in range(len(chunk))]
        write_part(_table(chunk, kinds), out / f"part-t{1:020d}-aaaaaa-{index:05d}.parquet")
    folders = [f"/data/unlisted/d{i:04d}" for i in range(args.folders)]
    write_part(_table(folders, ["permanent"] * len(folders)), out / f"part-t{2:020d}-bbbbbb-00000.parquet")
    below = [f"{folder}/img.jpg" for folder in folders[::2]]
    write_part(_table(below, [None] * len(below)), out / f"part-t{3:020d}-cccccc-00000.parquet")


def _table(paths: list[str], kinds: list[str | None]) -> pa.Table:
    n, failed = len(paths), [kind is not None for kind in kinds]
    return pa.table({"path": paths, "label": [None if f else "real" for f in failed],
                     "score": [None if f else 0.1 for f in failed],
                     "threshold": [0.5] * n, "decided_by": ["pixel"] * n, "reason": [""] * n,
                     "model": ["fakescope-default"] * n, "width": [64] * n, "height": [64] * n, "format": ["JPEG"] * n,
                     "evidence": ["[]"] * n, "error": ["broken" if f else None for f in failed], "caveat": [None] * n,
                     "error_kind": kinds}, schema=SCHEMA)


def _all_rows(out: Path) -> pd.DataFrame:
    """Every row of the folder as `read_results` has them before it leaves any out."""
    return pa.concat_tables(pq.read_table(p, schema=SCHEMA) for p in sorted(out.glob("*.parquet"))).to_pandas()


if __name__ == "__main__":
    main()
