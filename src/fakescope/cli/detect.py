"""`fakescope detect`: score images from files, folders, globs, storage URIs or stdin."""

from __future__ import annotations

import collections
import csv
import json
import sys
from enum import Enum
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors, no_images, output_errors, sigterm_as_interrupt
from fakescope.cli._options import (
    DECODE_WORKERS,
    BatchSizeOpt,
    CompileOpt,
    Decode,
    DecodeOpt,
    DeviceOpt,
    GridOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    ProcessesOpt,
    ProgressOpt,
    ProvenanceOpt,
    ThreadsOpt,
    ThresholdOpt,
    WorkersOpt,
    show_progress,
    with_progress,
)
from fakescope.cli._style import ClickCommand
from fakescope.detection import CSV_FIELDS, csv_row, evidence_line


class OutputFormat(str, Enum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


class Runtime(str, Enum):
    torch = "torch"
    onnx = "onnx"
    auto = "auto"


RuntimeOpt = Annotated[Runtime, typer.Option(
    "--runtime", help="torch; onnx (onnxruntime on the CPU; needs the scale extra); auto (onnx on the CPU when available).")]


def detect(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive), quoted globs (images only, as a "
                                                     "folder), s3:// and gdrive:// URIs, http(s) image URLs, or - to read "
                                                     "these one per line from stdin.")],
    model: ModelOpt = None,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    threshold: ThresholdOpt = None,
    output: Annotated[OutputFormat, typer.Option(
        "--format", "-f", help="table (printed once all are scored, with a count of verdicts); jsonl or csv (a record per "
                               "image as it is scored).")] = OutputFormat.table,
    workers: WorkersOpt = DECODE_WORKERS,
    processes: ProcessesOpt = False,
    provenance: ProvenanceOpt = True,
    runtime: RuntimeOpt = Runtime.auto,
    grid: GridOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = Precision.fp32,
    compile_network: CompileOpt = False,
    decode: DecodeOpt = Decode.host,
    progress: ProgressOpt = None,
) -> None:
    """Say whether each image was made by a generative model.

    Examples: fakescope detect photo.jpg photos/
              fakescope detect photos/ -f jsonl > results.jsonl
              find photos -name '*.jpg' | fakescope detect - -f csv

    Exit status: 0 when every input was scored, 1 when some failed (each failure is reported as a record with an
    `error`), 2 on usage errors, an unreachable storage (or one whose reads keep failing busy: 4 in a row per
    worker) or results it cannot write (a full disk), 130 on Ctrl-C and 143 on SIGTERM (the images scored by then
    are still printed).
    """
    from fakescope.detector import Detector
    from fakescope.io.inputs import iter_sources

    with clean_errors():
        detector = Detector.load(model, device=device, batch_size=batch_size, workers=workers, processes=processes,
                                 provenance=provenance, threshold=threshold, runtime=runtime.value,
                                 grid=grid, threads=threads,
                                 precision=precision.value, compile=compile_network, decode=decode.value,
                                 progress=show_progress(progress))
        sources = iter_sources(inputs)
        first = next(sources, None)
        if first is None:
            raise no_images()
    # an unreachable storage (StorageUnavailableError) stops the batch in one line
    with sigterm_as_interrupt() as stop, clean_errors():
        scored, failures, interrupted = _render(detector.stream(with_progress(_chain(first, sources), progress)), output)
    if interrupted:
        typer.echo(f"interrupted: {_count(scored, failures)} printed; the rest were not scored", err=True)
        raise typer.Exit(stop.exit_code)
    raise typer.Exit(1 if failures else 0)


def _chain(first, rest):
    yield first
    yield from rest


def _count(done: int, failures: int) -> str:
    return f"{done} image{'s' * (done != 1)}" + (f" ({failures} failed)" if failures else "")


def _render(results, output: OutputFormat) -> tuple[int, int, bool]:
    """Print each result as it comes (the table once at the end); (results, failures, whether Ctrl-C or SIGTERM
    stopped them). Every record printed is whole, and the table shows what was scored before a stop."""
    done = failures = 0
    interrupted = False
    writer = csv.DictWriter(sys.stdout, CSV_FIELDS, extrasaction="ignore") if output is OutputFormat.csv else None
    table_rows, header = [], writer is not None  # the header waits for the first row: an error before it prints alone
    try:
        for detection in results:
            done += 1
            failures += not detection.ok
            record = detection.to_dict()
            if output is OutputFormat.table:
                table_rows.append(_shown(record))
                continue
            with output_errors():
                _write(record, writer, header)
            header = False
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM inside sigterm_as_interrupt
        interrupted = True
    finally:  # what was scored before an error that stops the batch (an unreachable storage) is still shown
        if output is OutputFormat.table and table_rows:
            with output_errors():
                _print_table(table_rows, interrupted)
    return done, failures, interrupted


def _write(record: dict, writer: csv.DictWriter | None, header: bool) -> None:
    """One JSONL line, or one CSV row (after the header for the first), flushed: a SIGTERM or a reader of a pipe sees
    whole records."""
    if writer is None:  # JSON escapes a file name that is not UTF-8 by itself
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        if header:
            writer.writeheader()
        writer.writerow(csv_row(_shown(record)))
    sys.stdout.flush()


def _shown(record: dict) -> dict:
    """The record with a path (and an error naming it) that is not UTF-8 printable (`path_text`), for CSV and the table."""
    from fakescope.io.inputs import path_text

    return record | {key: path_text(record[key]) for key in ("path", "error") if key in record}


def _print_table(rows: list[dict], interrupted: bool = False) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from fakescope.forensics.fusion import CONFLICT  # here: the package loads numpy and Pillow, which help need not

    counts = collections.Counter("failed" if "error" in r else r["label"] for r in rows)
    summary = ", ".join(f"{counts[k]} {k}" for k in ("ai", "uncertain", "real", "failed") if counts[k])
    marks = {text: "*" * n for n, text in enumerate(dict.fromkeys(r["caveat"] for r in rows if r.get("caveat")), 1)}
    notes = "".join(f"\n{mark} {escape(text)}" for text, mark in marks.items())  # once, not on every row
    stopped = " (interrupted: the rest were not scored)" if interrupted else ""
    table = Table(show_lines=False, caption=f"{len(rows)} image{'s' * (len(rows) != 1)}: {summary}{stopped}{notes}")
    for col in ("file", "verdict", "P(ai)", "decided by", "top evidence"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(escape(r["path"]), "[red]error[/red]", "", "", escape(r["error"]))
            continue
        colour = {"ai": "red", "real": "green"}.get(r["label"], "yellow")
        top = next((e for e in r["evidence"] if e["kind"] == r["decided_by"]), None)
        shown = r["reason"] if top is None and r["decided_by"] == CONFLICT else evidence_line(top or r["evidence"][0])
        mark = escape(marks.get(r.get("caveat"), ""))
        table.add_row(escape(r["path"]), f"[{colour}]{r['label']}[/{colour}]{mark}", f"{r['score']:.3f}", r["decided_by"] or "",
                      escape(shown))  # a conflict shows its reason: both contradicting records
    console = Console()
    if not console.is_terminal:  # a file or pipe: wide enough for a path and its evidence; a terminal's own width fits it
        console.width = max(100, console.width)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command(cls=ClickCommand)(detect)
