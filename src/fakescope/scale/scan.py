"""`scan`: score a whole folder, glob, manifest or bucket prefix into a resumable Parquet folder.

The local engine reuses `Detector.stream` (decoding in worker threads, batched inference).
Rows are appended batch by batch to an Arrow IPC journal, flushed after every batch; every
`rows_per_part` rows the journal becomes one Parquet part (written to a temporary name, then
renamed). The journal and temporary names start with `_`, which Parquet readers (pyarrow,
pandas, Spark) skip, so the folder reads as a dataset while a scan writes it. A rerun first
deletes half-written temporaries and turns any journal left by a crash into a part, then skips
every source already written, so a crash loses at most the batch in flight. New rows take the
columns of the folder's parts (`writing_schema`), so a folder begun by an older version stays one table. A run that
ends rewrites the parts holding transient rows it superseded without them (`drop_superseded`).
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pyarrow as pa

from fakescope.data.manifest import MANIFEST_SUFFIXES, read_table, require_columns
from fakescope.errors import ConfigError, StorageError, reason_about
from fakescope.io.inputs import path_text
from fakescope.scale.records import (
    JOURNAL_SUFFIX,
    PART_SUFFIX,
    FolderContents,
    detections_to_table,
    drop_superseded,
    part_files,
    read_folder,
    remove_temporaries,
    results_folder,
    run_id,
    source_key,
    write_part,
    writing_schema,
    writing_to,
)
from fakescope.scale.scoring import Scoring

if TYPE_CHECKING:  # the type only: listing and reading results need no torch
    from fakescope.detector import Detector


@dataclass(frozen=True)
class ScanSummary:
    """What one scan run did: sources scored now (`failed` of them with an error, `transient` of those with one that may
    pass, which a rerun tries again) and skipped as done."""

    scanned: int
    failed: int
    skipped: int
    transient: int = 0


def scan(
    sources: Iterable[str],
    out: str | os.PathLike,
    detector: Detector,
    *,
    rows_per_part: int = 10_000,
) -> ScanSummary:
    """Score every source not yet in the results folder `out`, appending rows as they come.

    Bad inputs become rows with `error` set; they count as done, like scored ones, but for a transient error (a URL's
    fetch that timed out, was refused, or answered 429 or 5xx, or a storage read still throttled past its retries:
    `error_kind` `transient`), which a rerun tries again. Rows name each
    source by its `source_key` (a local path absolute), so `photos`, `./photos` and its absolute
    path resume one another. Parts record the settings that scored them (`Scoring`): a folder scored with other
    settings (model, weights, threshold, grid, provenance, precision; not runtime) is refused (`ConfigError`).

    Example:
        >>> detector = Detector.load(workers=2)                                  # doctest: +SKIP
        >>> scan(scan_sources(["photos/"]), "results.parquet", detector)         # doctest: +SKIP
        ScanSummary(scanned=1200, failed=3, skipped=0)
    """
    folder = results_folder(out)
    recover_journals(folder)
    scoring = Scoring.of(detector)
    contents = read_folder(folder, scoring)
    todo = _Pending(sources, contents)
    before = set(part_files(folder))
    schema, scanned, failed, transient = None, 0, 0, 0
    with _PartWriter(folder, rows_per_part) as writer:
        results = detector.stream(todo)
        while batch := list(itertools.islice(results, detector.batch_size)):
            if schema is None:  # here: an older folder's warning is for a run that writes rows to it
                schema = scoring.on(writing_schema(folder, contents.schema))
            writer.write(detections_to_table(batch, schema))
            scanned += len(batch)
            failed += sum(not d.ok for d in batch)
            transient += sum(d.transient for d in batch) if "error_kind" in schema.names else 0
    if contents.stale:  # the rows this run wrote supersede earlier transient rows; it listed folders that had a row
        drop_superseded(folder, contents, before)
    return ScanSummary(scanned, failed, todo.skipped, transient)


def scan_sources(inputs: str | Iterable[str]) -> Iterator[str]:
    """Expand scan inputs: a manifest (`.parquet`/`.csv` with a `uri` column) yields its URIs,
    anything else goes through `fakescope.io.inputs.iter_sources` (files, folders, globs, s3://).

    Relative manifest URIs resolve against the manifest's folder; blank ones are skipped. A local glob
    of manifests (`shards/*.parquet`) yields each one's URIs in name order. One string is one input.
    """
    from fakescope.io.inputs import iter_sources

    for item in [inputs] if isinstance(inputs, str) else inputs:
        if item.lower().endswith(MANIFEST_SUFFIXES):
            local_glob = "://" not in item and glob.has_magic(item) and not os.path.exists(item)
            for manifest in (sorted(glob.glob(item)) or [item]) if local_glob else [item]:  # none: "no such file"
                yield from _manifest_uris(manifest)
        else:
            yield from iter_sources([item])


def recover_journals(out: str | os.PathLike) -> int:
    """Delete half-written part temporaries and turn journals left by an interrupted scan into parts;
    return how many rows the journals saved."""
    remove_temporaries(out)
    return sum(_seal_journal(j) for j in sorted(Path(out).glob(f"*{JOURNAL_SUFFIX}")))


class _Pending:
    """Sources not yet done, each once, counting those done before (once each, as the Ray engine does)."""

    def __init__(self, sources: Iterable[str], contents: FolderContents):
        self.sources, self.contents, self.seen, self.skipped = sources, contents, set(), 0

    def __iter__(self) -> Iterator[str]:
        for source in map(source_key, self.sources):
            if (stored := path_text(source)) in self.seen:  # listed again in this run
                continue
            self.seen.add(stored)
            if self.contents.claim(source):  # a signed URL's row names it without its query
                self.skipped += 1
                continue
            yield source


class _PartWriter:
    """Appends tables (all of one schema) to a flushed journal and seals it into a Parquet part when full."""

    def __init__(self, out: Path, rows_per_part: int):
        self.out, self.rows_per_part = out, rows_per_part
        self.run = run_id(out)  # its parts' names follow those of earlier runs
        self.index = 0
        self.rows = 0
        self.sink: pa.OSFile | None = None
        self.stream: pa.ipc.RecordBatchStreamWriter | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seal()

    def write(self, table: pa.Table) -> None:
        with writing_to(self.out):
            self._append(table)

    def _append(self, table: pa.Table) -> None:
        while table.num_rows:  # a batch that overfills the part continues in the next one
            if self.stream is None:
                self.sink = pa.OSFile(str(self._journal()), "wb")
                self.stream = pa.ipc.new_stream(self.sink, table.schema)
            head, table = table.slice(0, self.rows_per_part - self.rows), table.slice(self.rows_per_part - self.rows)
            self.stream.write_table(head)
            self.sink.flush()
            self.rows += head.num_rows
            if self.rows >= self.rows_per_part:
                self.seal()

    def seal(self) -> None:
        if self.stream is None:
            return
        stream, sink, self.stream, self.sink = self.stream, self.sink, None, None  # closed once, even when that fails
        with writing_to(self.out):
            try:
                stream.close()
            finally:
                sink.close()
            _seal_journal(self._journal())
        self.index += 1
        self.rows = 0

    def _journal(self) -> Path:
        return self.out / f"_part-{self.run}-{self.index:05d}{JOURNAL_SUFFIX}"


def _seal_journal(journal: Path) -> int:
    """Write a journal's complete batches to the part of the same name (in the journal's own columns: an older
    version's have no `caveat`), then delete the journal."""
    part = journal.with_name(journal.stem.removeprefix("_") + PART_SUFFIX)  # older versions wrote no `_`
    rows = 0
    if not part.exists() and (table := _read_journal(journal)) is not None and (rows := table.num_rows):
        write_part(table, part)
    journal.unlink()
    return rows


def _read_journal(journal: Path) -> pa.Table | None:
    """A journal's complete batches, or None when a crash cut it off before its schema."""
    batches: list[pa.RecordBatch] = []
    try:
        with pa.OSFile(str(journal), "rb") as f, pa.ipc.open_stream(f) as reader:
            schema = reader.schema
            for batch in reader:
                batches.append(batch)  # noqa: PERF402 - not list(reader): the batches before a cut-off one are kept
    except (pa.ArrowInvalid, OSError):  # cut off mid-batch by a crash: keep the complete ones
        if not batches:
            return None
    return pa.Table.from_batches(batches, schema)


def _manifest_uris(manifest: str) -> Iterator[str]:
    from fakescope.io import storage

    try:
        rows = read_table(manifest, empty_ok=True)
    except StorageError as exc:
        raise ConfigError(f"cannot read manifest {manifest}: {reason_about(exc, manifest)}") from None
    require_columns(rows, ("uri",), f"manifest {manifest}")
    base = manifest.rsplit("/", 1)[0] if "/" in manifest else ""
    for uri in rows["uri"].dropna().astype(str):  # a blank cell names no image
        yield uri if "://" in uri or os.path.isabs(uri) or not base else storage.join(base, uri)
