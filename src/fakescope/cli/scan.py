"""`fakescope scan` (score a whole collection into resumable Parquet) and `fakescope export` (ONNX, fp32 or int8)."""

from __future__ import annotations

import itertools
import time
from enum import Enum
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors, no_images
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
from fakescope.cli.detect import Runtime, RuntimeOpt


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def scan(
    sources: Annotated[list[str], typer.Argument(help="Folders, quoted globs (images only, as a folder), manifests "
                                                      "(.parquet/.csv with a uri column), s3:// and gdrive:// prefixes, or "
                                                      "http(s) image URLs (in a manifest or on stdin with - too).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Local results folder of Parquet parts, e.g. results.parquet (read "
                                                         "it with pandas.read_parquet); a new name ending .csv, .json... is "
                                                         "refused.")],
    model: ModelOpt = None,
    engine: Annotated[Engine, typer.Option(help="local (this process) or ray (a Ray Data pipeline).")] = Engine.local,
    address: Annotated[str | None, typer.Option(help="Ray cluster host:port, ray://host:port or auto (the one running here); "
                                                "default: $RAY_ADDRESS, else (or local) start a local Ray on loopback.")] = None,
    actors: Annotated[int, typer.Option(min=1, help="Ray inference actors (workers).")] = 2,
    gpus_per_actor: Annotated[float, typer.Option(min=0.0, help="GPUs per Ray actor (0 = CPU actors).")] = 0.0,
    cpus_per_actor: Annotated[int, typer.Option(min=1, help="CPUs per Ray CPU actor (also its inference threads unless "
                                                "--threads).")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Ray's log lines, progress and actors' output (--engine ray); "
                                          "otherwise only in Ray's session log folder.")] = False,
    batch_size: BatchSizeOpt = 32,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = DECODE_WORKERS,
    processes: ProcessesOpt = False,
    runtime: RuntimeOpt = Runtime.auto,
    threshold: ThresholdOpt = None,
    provenance: ProvenanceOpt = True,
    rows_per_part: Annotated[int, typer.Option(min=1, help="Rows per Parquet part (local engine).")] = 10_000,
    grid: GridOpt = None,
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = Precision.fp32,
    compile_network: CompileOpt = False,
    decode: DecodeOpt = Decode.host,
    progress: ProgressOpt = None,
) -> None:
    """Score every image of SOURCES into OUT; a rerun skips what is done, bad files become error rows.

    A URL that failed for a reason that may pass (a timeout, a refused connection, HTTP 429 or 5xx), or an s3:// or
    gdrive:// read still throttled past its retries, is tried again by a rerun; the summary line says how many
    (`failed 5 (3 to retry: rerun the scan)`).

    The summary line's images/s is this run's scanned images (error rows included) over its whole time, loading the
    model (and starting Ray) included.

    A rerun into OUT with other settings that change scores (model or its weights, --threshold, --grid, --provenance,
    --precision) is refused; workers, batch size, device, runtime and engine may change.

    Exit status: 0 when every image this run read was scored (earlier runs' lasting error rows count as done), 1 when
    some failed, 2 on usage errors, an unreachable storage (or one whose reads keep failing busy: 4 in a row per
    worker) or a results folder that takes no more.
    """
    from fakescope.io.storage import scheme_of
    from fakescope.scale.scan import scan_sources

    start = time.perf_counter()
    detector_kwargs = dict(name_or_path=model, device=device, workers=workers, processes=processes, provenance=provenance,
                           threshold=threshold, runtime=runtime.value, grid=grid, threads=threads,
                           precision=precision.value, compile=compile_network, decode=decode.value)
    with clean_errors():
        scheme_of(out)  # an --out no storage serves: said before the inputs are listed
        listed = scan_sources(sources)
        first = next(listed, None)
        if first is None:  # said before the model loads and --out is made (it was left behind, empty)
            raise no_images()
        listed = itertools.chain([first], listed)
        if engine is Engine.ray:
            if progress:  # Ray Data's own bars: shown with its log lines, or not at all
                from fakescope.errors import ConfigError

                raise ConfigError("--progress counts the local engine's images; with --engine ray, --verbose shows "
                                  "Ray Data's progress")
            from fakescope.scale.ray_scan import ray_scan

            summary = ray_scan(listed, out, address=address, actors=actors,
                               gpus_per_actor=gpus_per_actor, cpus_per_actor=cpus_per_actor, batch_size=batch_size,
                               verbose=verbose, **detector_kwargs)
        else:
            from fakescope.detector import Detector
            from fakescope.scale.scan import scan as run

            detector = Detector.load(batch_size=batch_size, progress=show_progress(progress), **detector_kwargs)
            summary = run(with_progress(listed, progress), out, detector, rows_per_part=rows_per_part)
    if not summary.scanned and not summary.skipped:
        raise no_images()
    seconds = time.perf_counter() - start
    rate = f", {summary.scanned / seconds:.1f} images/s" if summary.scanned else ""
    retry = f" ({summary.transient} to retry: rerun the scan)" if summary.transient else ""
    typer.echo(f"scanned {summary.scanned}  failed {summary.failed}{retry}  skipped (done before) {summary.skipped}  -> "
               f"{out}  ({seconds:.1f} s{rate})")
    raise typer.Exit(1 if summary.failed else 0)


def export(
    onnx: Annotated[str, typer.Option(
        "--onnx", help="Write the model's network as this local ONNX file (a path, not a storage URI).")],
    model: ModelOpt = None,
    int8: Annotated[bool, typer.Option("--int8", help="Quantize it to int8 (static, per channel) on --calibration "
                                                      "images, also into the cache that --precision int8 runs from.")] = False,
    calibration: Annotated[str | None, typer.Option(
        "--calibration", help="With --int8: a manifest (its train and val rows) or an image folder to calibrate on.")] = None,
    calibration_tiles: Annotated[int, typer.Option(
        "--calibration-tiles", min=1, help="With --int8: tiles to calibrate on, cut from the images in a seeded order.")] = 200,
) -> None:
    """Export a model's network to ONNX (dynamic batch and size), fp32 or int8 (for --precision int8), and check it.

    An fp32 export is checked against PyTorch on 4 random tiles, an int8 one against the fp32 export on the
    calibration tiles.

    Exit status: 0 when written, 2 on usage errors.
    """
    import torch

    from fakescope.models import load_model
    from fakescope.models.onnx import OnnxNetwork, export_onnx, onnx_target

    with clean_errors():
        if int8 != (calibration is not None):
            from fakescope.errors import ConfigError

            raise ConfigError("--int8 needs --calibration (a manifest or an image folder), and --calibration needs --int8")
        onnx_target(onnx)  # a URI or a path it cannot write: said now, not once the model is loaded and exported
        loaded = load_model(model)
        if int8:
            from fakescope.models.onnx import onnx_network
            from fakescope.models.quantize import export_int8

            path, tiles = export_int8(loaded, calibration, onnx, count=calibration_tiles)
            x = torch.from_numpy(tiles)
            diff = (OnnxNetwork(path)(x) - onnx_network(loaded)(x)).abs()
            typer.echo(f"wrote {onnx} (int8, cached for --precision int8)  |int8 - fp32| logit on {len(tiles)} "
                       f"calibration tiles: median {diff.median().item():.3f}, max {diff.max().item():.3f}")
            return
        side = loaded.config.input.crop_size
        path = export_onnx(loaded.network, onnx, tile_size=side)
        tiles = torch.rand(4, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            diff = (OnnxNetwork(path)(tiles) - loaded.network(tiles)).abs().max().item()
    typer.echo(f"wrote {path}  max |onnx - torch| on 4 random tiles: {diff:.2e}")


def register(app: typer.Typer) -> None:
    app.command(cls=ClickCommand)(scan)
    app.command(cls=ClickCommand)(export)
