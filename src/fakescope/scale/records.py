"""The scan's output table: one row per source, the same columns and values from every engine.

A results folder holds Parquet part files (from the local engine, from Ray, or both) plus, while
a local scan runs, one Arrow IPC journal of the rows not yet in a part. `evidence` is stored as
JSON text (scores rounded to 6 decimals, like `score`) because its `data` dicts differ from
one evidence kind to the next. `caveat` is null unless set; `error_kind` (last) is null for a scored row, `transient`
for an error that may pass (a rerun scores the source again, and `drop_superseded` then rewrites the part holding the
old row without it), `permanent` for the rest. A folder that could not be listed has an error row of its own path, which
no row of its images replaces: a run that ends with a row for every image it holds now drops that row as well (one
that listed it). Parts are named in time order
(`run_id`): the last of several transient rows of a source is its newest. A folder begun by a version without these
columns (`ADDED_COLUMNS`) keeps its columns, so that every part of it reads as one table.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fakescope.detection import TRANSIENT, Detection
from fakescope.errors import StorageError
from fakescope.io import storage
from fakescope.io.fetch import is_url, legacy_url_name, shown_source
from fakescope.io.inputs import list_images, path_text
from fakescope.scale.scoring import FORMAT_KEY, NAMES_KEY, RESULTS_FORMAT, UNKNOWN, Scoring

SCHEMA = pa.schema([
    ("path", pa.string()),
    ("label", pa.string()),
    ("score", pa.float64()),
    ("threshold", pa.float64()),
    ("decided_by", pa.string()),
    ("reason", pa.string()),
    ("model", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("evidence", pa.string()),
    ("error", pa.string()),
    ("caveat", pa.string()),
    ("error_kind", pa.string()),
])
ADDED_COLUMNS = ("caveat", "error_kind")
"""Columns later versions added, in order: a folder holding a part without one goes on without it."""
PART_SUFFIX = ".parquet"
JOURNAL_SUFFIX = ".arrows"
TEMP_SUFFIX = ".tmp"
_STAMPED = re.compile(r"part-t(\d{20})-")
"""A part name's clock reading (`run_id`)."""
FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".txt", ".xlsx", ".arrow", ".feather")
"""Names that say a file: an --out that ends so and does not exist yet is refused rather than made a folder."""
RESUME_COLUMNS = ["path", "model", "threshold"]
"""The columns a resume reads from every part."""

log = logging.getLogger(__name__)


def detections_to_table(detections: Iterable[Detection], schema: pa.Schema = SCHEMA) -> pa.Table:
    """Rows of `Detection.to_dict()` in `schema` (evidence as JSON, `error` and `error_kind` null when scored)."""
    rows = []
    for d in detections:
        record = d.to_dict()
        record["evidence"] = json.dumps([_rounded(e) for e in record["evidence"]], sort_keys=True)
        record["path"] = path_text(record["path"])
        record["error"] = path_text(record["error"]) if "error" in record else None
        record.setdefault("error_kind", None)
        rows.append(record)
    return pa.Table.from_pylist(rows, schema=schema)


def source_key(source: str) -> str:
    """The name a source is stored and resumed under: a local path or `file://` URI made an absolute, normalised
    path (`./a/x.jpg`, `a/x.jpg`, `/cwd/a/x.jpg` and `file:///cwd/a/x.jpg` are one; symlinks are kept), another URI as given."""
    return storage.absolute(source.removeprefix("file://"))


def stored_path(source: str) -> str:
    """The `path` the row of a `source_key` holds, which a rerun skips: non-UTF-8 names escaped (`path_text`), an
    http(s) URL as its record names it (`shown_source`)."""
    return path_text(shown_source(source))


def _rounded(evidence: dict) -> dict:
    """Evidence scores to 6 decimals, like `score`: engines batch tiles differently (float noise)."""
    score = evidence["score"]
    return {**evidence, "score": score if score is None else round(float(score), 6)}


def results_folder(out: str | os.PathLike) -> Path:
    """The results folder `out` (a path or `file://` URI), created when missing.

    Raises:
        StorageError: `out` is a file, a remote URI, a new name ending as a table file does (`results.csv`: a
            folder of that name is not what was asked for; `results.parquet` is the folder's usual name), the folder
            cannot be created, or it holds other files and no results (the images' own folder given as --out, say:
            parts would be scattered among them).
    """
    out = os.fspath(out)
    if storage.is_remote(out):
        raise StorageError(f"cannot write results to {out}: --out must be a local folder (copy it there afterwards)")
    folder = Path(out.removeprefix("file://"))
    if not folder.exists() and (suffix := folder.suffix.lower()) in FILE_SUFFIXES:
        raise StorageError(f"cannot use {out} as the results folder: scan writes a folder of Parquet parts, not a "
                           f"{suffix} file; name it {folder.stem}.parquet or a plain folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entries = [e.name for e in os.scandir(folder) if not e.name.startswith(".")]  # .DS_Store and the like
    except OSError as exc:
        raise StorageError(f"cannot use {out} as the results folder: {exc.strerror or exc}") from None
    if entries and not any(n.endswith((PART_SUFFIX, JOURNAL_SUFFIX)) or n.startswith("_") for n in entries):  # parts, journals
        raise StorageError(f"cannot use {out} as the results folder: it holds other files ({min(entries)}...) and no "
                           "scan results; give --out a new or empty folder")
    return folder


def run_id(out: str | Path) -> str:
    """What one run's part names in the results folder `out` start with (`part-<run_id>-00000.parquet`): `t`, the wall
    clock in nanoseconds (20 digits), or just after the newest part's where that is later (a clock set back since, a
    folder from a machine whose clock ran ahead), and 6 random hex digits, so that name order is the order runs began
    in, and follows every name of versions that began it with 12 random hex digits (`t` sorts after `f`)."""
    newest = max((int(m[1]) for p in part_files(out) if (m := _STAMPED.match(p.name))), default=0)
    return f"t{max(time.time_ns(), newest + 1):020d}-{uuid.uuid4().hex[:6]}"


def part_files(out: str | Path) -> list[Path]:
    """Completed Parquet parts in a results folder, in name order (`run_id`: the order their runs began in)."""
    folder = Path(out)
    return sorted(folder.glob(f"*{PART_SUFFIX}")) if folder.is_dir() else []


def write_part(table: pa.Table, part: Path) -> None:
    """Write `table` as the Parquet part `part` under a temporary `_` name, then rename it: a crash
    mid-write leaves no part cut short, only a temporary that readers skip and a rerun deletes. The
    temporary is fsync'd before the rename and the folder after it, so a power loss cannot leave a
    renamed part whose data never reached the disk.

    Raises:
        StorageError: the folder took no part (read-only, full, gone); the temporary is deleted where it can be.
    """
    tmp = part.with_name(f"_{part.name}{TEMP_SUFFIX}")
    try:
        with writing_to(part.parent):
            with open(tmp, "wb") as sink:
                pq.write_table(table, sink)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(tmp, part)
            _fsync_folder(part.parent)
    except StorageError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; Windows cannot open a folder to fsync it)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a file system that cannot sync a folder
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing_to(folder: Path) -> Iterator[None]:
    """Turn an OSError of a write into the results folder into one StorageError naming the folder and the OS's reason.

    Raises:
        StorageError: `cannot write results to <folder>: <reason>` (pyarrow's own message repeats the path).
    """
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot write results to {folder}: {os.strerror(exc.errno) if exc.errno else exc}") from None


def remove_temporaries(out: str | Path) -> int:
    """Delete the temporaries of parts whose writing a crash cut short (their rows are in no part); return how many."""
    leftovers = list(Path(out).glob(f"_*{PART_SUFFIX}{TEMP_SUFFIX}"))
    for tmp in leftovers:
        tmp.unlink(missing_ok=True)
    return len(leftovers)


def folder_schema(out: str | Path) -> pa.Schema:
    """The columns of a results folder's parts: `SCHEMA` less the `ADDED_COLUMNS` some part lacks.

    Raises:
        StorageError: a part is not a readable Parquet file.
    """
    missing: set[str] = set()
    for part in part_files(out):
        try:
            schema = pq.read_schema(part)
            check_format(part, schema)
        except StorageError:  # check_format's: not unreadable, newer
            raise
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(part, exc) from None
        names = schema.names
        missing.update(set(ADDED_COLUMNS) - set(names))
    return _without(missing)


def _without(missing: set[str]) -> pa.Schema:
    return pa.schema([f for f in SCHEMA if f.name not in missing]) if missing else SCHEMA


@dataclass(frozen=True)
class FolderContents:
    """What a results folder's parts hold: the `source_key`s written, the columns new rows take (`folder_schema`), the
    URL rows of parts written before `NAMES_KEY` (named by `legacy_url_name`), the parts holding `transient` rows, the
    `path`s of those rows that a row of another kind also has (`drop_superseded` reads no other part), and the error rows
    of local folders (one that could not be listed, recorded in its images' place); then, as the run claims its
    sources, those that lie below such a folder."""

    done: set[str]
    schema: pa.Schema
    legacy: set[str]
    transient_parts: frozenset[Path] = frozenset()
    settled: frozenset[str] = frozenset()
    folders: frozenset[str] = frozenset()
    _claimed_below: set[str] = field(default_factory=set, repr=False)

    @property
    def stale(self) -> bool:
        """Whether the run's end has rows to drop (`drop_superseded`): `transient` ones, or those of `relisted` folders."""
        return bool(self.transient_parts or self.relisted)

    @functools.cached_property
    def relisted(self) -> frozenset[str]:
        """The `folders` that list now and every image of which (`list_images`: a folder below that cannot be listed
        too) has a row, this run's (it listed the folder, or named each one) or an earlier one's: `drop_superseded`
        drops their rows. A file named below one leaves its row while its other images have none; one that still cannot
        be listed keeps its row, also when a file below it was named (execute-only: it opens). Read once the run's
        claims are done."""
        return frozenset(f for f in self.folders if _lists(f) and all(
            (row := stored_path(source_key(image))) in self._claimed_below or row in self.done for image in list_images(f)))

    def claim(self, source: str) -> bool:
        """Whether a `source_key` is done: its row, or a legacy row its legacy name names. Each row answers once (URLs
        that the legacy names merged are scored again apart) and then leaves memory; one below a folder's row is kept
        for `relisted` (a folder still unlisted is claimed as itself, and its row stays)."""
        row = stored_path(source)
        if self.folders and row.startswith(self._prefixes):
            self._claimed_below.add(row)
        if row in self.done:
            self.done.discard(row)
            self.legacy.discard(row)
            return True
        if self.legacy and is_url(source) and (old := path_text(legacy_url_name(source))) in self.legacy:
            self.legacy.discard(old)
            return True
        return False

    @functools.cached_property
    def _prefixes(self) -> tuple[str, ...]:
        return tuple(folder.rstrip(os.sep) + os.sep for folder in self.folders)  # `read_folder` keeps local ones


def _lists(folder: str) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def read_folder(out: str | Path, scoring: Scoring | None = None) -> FolderContents:
    """Every `path` already written to a part of the results folder but those of transient errors alone (a rerun tries
    them again), as `source_key`s (older versions stored local
    paths as given: a relative one is taken from the current folder), and the folder's columns, reading each part once;
    `FolderContents.claim` tells whether a source is among them.

    Raises:
        StorageError: a part is not a readable results table (damaged, or another file).
        ConfigError: `scoring` is given and a part records other settings, or (a part without a record) a row was
            scored by another model or at another threshold: a rerun would skip its paths, leaving their scores as they were.
    """
    done: set[str] = set()
    legacy: set[str] = set()
    absent: set[str] = set()
    transient_parts: set[Path] = set()
    transient_paths: set[str] = set()
    errors: list[str] = []
    unknown_int8 = False
    for part in part_files(out):
        try:
            with pq.ParquetFile(part) as parquet:
                check_format(part, parquet.schema_arrow)
                names, recorded = parquet.schema_arrow.names, Scoring.recorded(parquet.schema_arrow)
                named_before = NAMES_KEY not in (parquet.schema_arrow.metadata or {})
                if missing := [c for c in RESUME_COLUMNS if c not in names]:
                    raise pa.ArrowInvalid(f"no {', '.join(missing)} column")
                columns = ["path"] if recorded else RESUME_COLUMNS  # a record tells the rest
                table = parquet.read(columns=columns + ["error_kind"] * ("error_kind" in names))
        except StorageError:  # check_format's: not unreadable, newer
            raise
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(part, exc) from None
        absent.update(set(ADDED_COLUMNS) - set(names))
        if scoring is not None and recorded is not None:
            scoring.require_same(out, recorded)
            unknown_int8 = unknown_int8 or recorded.int8_sha256 == UNKNOWN
        elif scoring is not None:
            _check_scored_alike(out, table, scoring)
        if "error_kind" in names:  # a transient error is not done: a rerun tries it again
            lasting = pc.fill_null(pc.not_equal(table.column("error_kind"), TRANSIENT), True)
            if not pc.all(lasting).as_py():
                transient_parts.add(part)
                transient_paths.update(table.filter(pc.invert(lasting)).column("path").to_pylist())
            table = table.filter(lasting)
            errors += table.filter(pc.is_valid(table.column("error_kind"))).column("path").to_pylist()
        paths = table.column("path").to_pylist()
        done.update(map(source_key, paths))
        if named_before:
            legacy.update(filter(is_url, paths))
    if unknown_int8:
        log.warning("%s holds int8 rows scored before scans recorded which int8 model scored them: taken to be this one "
                    "(%s); if it was exported again with other calibration images since, give this run a new --out",
                    out, scoring.int8_sha256[:12])
    settled = frozenset(p for p in transient_paths if source_key(p) in done)  # before `claim` empties `done`
    folders = frozenset(f for f in map(source_key, errors) if os.path.isabs(f) and os.path.isdir(f))
    return FolderContents(done, _without(absent), legacy, frozenset(transient_parts), settled, folders)


def _check_scored_alike(out: str | Path, table: pa.Table, scoring: Scoring) -> None:
    """Refuse rows of another model or threshold (all a part without a record tells), worded as `require_same`."""
    for name in ("model", "threshold"):
        if other := set(table.column(name).unique().to_pylist()) - {getattr(scoring, name), None}:
            scoring.require_same(out, replace(scoring, **{name: min(other)}))


def writing_schema(folder: Path, schema: pa.Schema) -> pa.Schema:
    """`schema` (`FolderContents.schema`), with a warning when new rows must go without some `ADDED_COLUMNS` to keep the
    folder one table."""
    if missing := [name for name in ADDED_COLUMNS if name not in schema.names]:
        retry = ("; without error_kind, a URL that failed for a passing reason is not tried again by a rerun"
                 if "error_kind" in missing else "")
        log.warning("%s was begun by a fakescope without the %s column%s: new rows are written without %s too, so that "
                    "the folder reads as one table%s; to have %s, scan the same sources into a new folder (fakescope scan "
                    "SOURCE... --out NEW_FOLDER): this one is not rescored in place", folder, " and ".join(missing),
                    "s" * (len(missing) > 1), "them" if len(missing) > 1 else "it", retry,
                    "them" if len(missing) > 1 else "it")
    return schema


def check_format(part: Path, schema: pa.Schema) -> None:
    """Refuse a part of a layout newer than `RESULTS_FORMAT` in one line (it would be misread); one without a format has 1.

    Raises:
        StorageError: a newer layout.
        pa.ArrowInvalid: the format is not a whole number (a foreign writer's).
    """
    raw = (schema.metadata or {}).get(FORMAT_KEY, b"1")
    if not raw.isdigit() or int(raw) < 1:
        raise pa.ArrowInvalid(f"its {FORMAT_KEY.decode()} metadata is not a whole number from 1")
    if int(raw) > RESULTS_FORMAT:
        from fakescope import __version__

        raise StorageError(f"{part} was written by a newer fakescope (results format {int(raw)}; fakescope {__version__} "
                           f"reads {RESULTS_FORMAT}): upgrade fakescope to resume or read this folder")


def _unreadable(part: Path, exc: Exception) -> StorageError:
    reason = str(exc).partition("\n")[0]  # Arrow's may go on to list a schema
    return StorageError(f"{part} is not a readable part of the results ({reason}); "
                        "move it out of the folder to score its images again")


def read_results(out: str | Path) -> pd.DataFrame:
    """All rows of a results folder as one DataFrame, in `folder_schema`'s columns (without the `ADDED_COLUMNS` of a
    folder begun before them). A transient error's row is left out once its source has another row (a rerun scored
    it, or failed it for good), and kept once (its newest: the last in `part_files`' order) while every row of its
    source is one. A folder's error row (it could not be listed) is kept until a run that ends with a row for every
    image the folder holds drops it from its part (`drop_superseded`): a row below it tells no listing.

    Raises:
        StorageError: `out` is no folder (a mistyped name read as no results at all).

    Example:
        >>> read_results("results.parquet").query("label == 'ai'")  # doctest: +SKIP
    """
    if not Path(out).is_dir():
        raise StorageError("no such results folder (scan writes its rows as Parquet parts into a folder)",
                           source=os.fspath(out))
    schema = folder_schema(out)
    parts = part_files(out)
    rows = pa.concat_tables([schema.empty_table(), *(pq.read_table(p, schema=schema) for p in parts)]).to_pandas()
    if "error_kind" not in rows.columns:
        return rows
    return rows[~_superseded(rows)].reset_index(drop=True)


def _superseded(rows: pd.DataFrame) -> pd.Series:
    """The transient rows that another row of their path supersedes: one of another kind, or a later transient one."""
    superseded = np.zeros(len(rows), dtype=bool)
    if (transient := rows["error_kind"].eq(TRANSIENT).to_numpy()).any():  # pyarrow's is_in: pandas' loops over the others
        paths = rows["path"][transient]
        other = pc.is_in(pa.array(paths, pa.string()), value_set=pa.array(rows["path"][~transient], pa.string()))
        superseded[transient] = other.to_numpy(zero_copy_only=False) | paths.duplicated(keep="last").to_numpy()
    return pd.Series(superseded, index=rows.index)


def drop_superseded(out: str | Path, contents: FolderContents, older: Collection[Path]) -> int:
    """Rewrite each part holding transient rows that `read_results` leaves out without them, so that
    `pandas.read_parquet` also reads one row per source, and the rows of folders the run listed (`contents.relisted`);
    return how many went. `contents` is what `read_folder` found before the run, in the parts `older`, and what the
    run's claims added: only the parts it found holding transient rows and the run's own are read again
    (`contents.settled` names the transient rows that rows of other parts supersede), every part when a folder was
    relisted (its row may be in any). A part is rewritten whole
    under its own name (`write_part`: a temporary, then a rename over it), or deleted when none of its rows stays: a
    crash leaves each part as it was or as it becomes, never a row lost, and the next run that ends drops what is left.

    Raises:
        StorageError: the folder took no rewritten part (read-only, full); its parts stay as they were.
    """
    parts = part_files(out) if contents.relisted else sorted(contents.transient_parts.union(set(part_files(out)) - set(older)))
    rows = pd.concat([_path_kinds(p).assign(part=i) for i, p in enumerate(parts)], ignore_index=True)  # time order
    superseded = (_superseded(rows)
                  | (rows["error_kind"].eq(TRANSIENT) & rows["path"].isin(contents.settled))
                  | rows["path"].isin(contents.relisted))
    for i in rows.loc[superseded, "part"].unique():
        keep = ~superseded[rows["part"] == i].to_numpy()
        with pq.ParquetFile(parts[i]) as parquet:
            table = parquet.read()  # every column, and the metadata recording how its rows were scored
        if keep.any():
            write_part(table.filter(keep), parts[i])
            continue
        with writing_to(parts[i].parent):
            parts[i].unlink()
            _fsync_folder(parts[i].parent)
    return int(superseded.sum())


def _path_kinds(part: Path) -> pd.DataFrame:
    """A part's `path` and `error_kind` columns (all null in a part without `error_kind`)."""
    return pq.read_table(part, schema=pa.schema([SCHEMA.field("path"), SCHEMA.field("error_kind")])).to_pandas()
