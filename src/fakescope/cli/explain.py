"""`fakescope explain` (heatmap overlays per image) and `fakescope embed` (a model's view of a data set)."""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors, install_hint, no_images
from fakescope.cli._options import BatchSizeOpt, DeviceOpt, ModelOpt, OutDirOpt, SeedOpt
from fakescope.cli._style import ClickCommand


class Method(str, Enum):
    tiles = "tiles"
    gradcam = "gradcam"
    gradcam_pp = "gradcam++"
    cam = "cam"


def explain(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive), quoted globs (images only, as a folder) "
                                                "or storage URIs.")],
    model: ModelOpt = None,
    out: OutDirOpt = "explanations",
    method: Annotated[list[Method] | None, typer.Option(
        "--method", help="Repeatable: tiles, gradcam, gradcam++, cam. Default: all the model (and install) allows.")] = None,
    device: DeviceOpt = "auto",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the overlays of these images that --out holds from an earlier run.")] = False,
) -> None:
    """Write one heatmap overlay PNG per image and method, the model's score in the caption.

    Each image's files are named after it and a hash of its path (`x-1a2b3c4d_tiles.png`), so two images named `x`
    never share files, in one run or two. Prints one line per image: the input, then each PNG written for it,
    tab-separated. Overlays --out already holds for these images are refused before any work, unless --overwrite.
    Exit status: 0 when every image was explained, 1 when some could not be read, 2 on usage errors.
    """
    from fakescope.detector import Detector
    from fakescope.io.fetch import shown_source
    from fakescope.io.inputs import iter_sources, path_text

    with clean_errors(extra="explain"):
        from fakescope.io.storage import require_out_folder

        require_out_folder(out)  # before the seconds the model code takes to import
        from fakescope.errors import ConfigError
        from fakescope.explain import DEFAULT_METHODS, explain_image, unsupported
        from fakescope.explain.report import overlay_name

        named: dict[str, str] = {}
        for source in iter_sources(inputs):
            named.setdefault(overlay_name(source), source)  # an image named twice (x.png ./x.png) is explained once
        if not named:  # none: said before the model loads
            raise no_images()
        methods = tuple(m.value for m in method) if method else DEFAULT_METHODS
        if {"gradcam", "gradcam++"} & set(methods):
            try:
                import pytorch_grad_cam  # noqa: F401 - missing: one line naming how to install it, before any work
            except ModuleNotFoundError:
                if method:
                    raise
                methods = tuple(m for m in methods if m not in ("gradcam", "gradcam++"))
                typer.echo(f"note: gradcam and gradcam++ skipped: missing optional package 'pytorch_grad_cam'; "
                           f"{install_hint('pytorch_grad_cam')}", err=True)
        detector = Detector.load(model, device=device)
        refused = {m: why for m in methods if m != "tiles" and (why := unsupported(detector.torch_model, m))}
        for name, why in refused.items():  # the architecture's, so every image's: said once, before any work
            if method:
                raise ConfigError(f"--method {name}: {why}")
            typer.echo(f"note: {name} skipped: {why}", err=True)
        methods = tuple(m for m in methods if m not in refused)
        if not overwrite:
            _refuse_earlier_overlays(out, named, methods)
    failures = 0
    for name, source in named.items():
        shown = shown_source(source)  # a signed URL without its signature or password, as detect names it
        try:
            with clean_errors(source=shown, extra="explain"):
                result = explain_image(detector, source, out, methods=methods, name=name)
        except typer.Exit:
            failures += 1
            continue
        if result.files:
            typer.echo("\t".join(map(path_text, (shown, *result.files.values()))))
        for skipped, reason in result.skipped.items():
            typer.echo(f"note: {shown}: {skipped} skipped: {reason}", err=True)
    raise typer.Exit(1 if failures else 0)


def embed(
    manifest: Annotated[str, typer.Argument(
        help="A manifest (Parquet or CSV), local or a storage URI, with at least uri and label, as evaluate takes.")],
    model: ModelOpt = None,
    out: OutDirOpt = "embedding",
    color_by: Annotated[list[str] | None, typer.Option(
        "--color-by", help="Repeatable manifest column to colour the UMAP by (label is always drawn).")] = None,
    clusters: Annotated[int | None, typer.Option(min=2, help="k for k-means; default: the number of labels.")] = None,
    max_thumbnails: Annotated[int, typer.Option(min=1, help="Images drawn in the thumbnail mosaic.")] = 400,
    seed: SeedOpt = 0,
    batch_size: BatchSizeOpt = 64,
    device: DeviceOpt = "auto",
) -> None:
    """Penultimate features of every image (Parquet), UMAP scatters and mosaic, k-means purity.

    Exit status: 0 when every image was embedded, 1 when some were left out (unreadable, or non-finite
    features; each named on stderr), 2 on usage errors.
    """
    from fakescope.data import read_rows
    from fakescope.detector import resolve_device
    from fakescope.io import storage
    from fakescope.io.fetch import shown_source
    from fakescope.models import load_model

    with clean_errors(extra="explain"):
        from fakescope.explain import embedding_report
        from fakescope.explain.embedding import named_values

        rows = read_rows(manifest, split_required=False)
        loaded = load_model(model, device=resolve_device(device))
        report = embedding_report(loaded, rows, out, color_by=tuple(color_by or ("label", "generator")),
                                  clusters=clusters, seed=seed, batch_size=batch_size, max_thumbnails=max_thumbnails)
    failed = report.table["error"].notna()
    typer.echo(f"embedded {int((~failed).sum())} image(s), {int(failed.sum())} left out; "
               f"k-means k={len(report.clusters.table)}, label purity {report.clusters.purity:.3f}")
    typer.echo(storage.join(out, "embeddings.parquet"))
    typer.echo(storage.join(out, "clusters.csv"))
    for _, uri in report.figures:
        typer.echo(uri)
    drawn = {title for title, _ in report.figures}
    for column in dict.fromkeys(color_by or ()):
        if f"UMAP by {column}" not in drawn:
            values = named_values(report.table.loc[~failed, column])  # missing ones aside, as the scatter draws them
            held = f"one value, {values[0]}, in every embedded image that has one" if values else "no value in any embedded image"
            typer.echo(f"note: --color-by {column}: {held}, so it is not drawn", err=True)
    for source, error in report.table.loc[failed, ["uri", "error"]].itertuples(index=False):
        typer.echo(f"note: {shown_source(source)}: {error}", err=True)  # a signed URL without its signature
    raise typer.Exit(1 if failed.any() else 0)


def _refuse_earlier_overlays(out: str, named: dict[str, str], methods: tuple[str, ...]) -> None:
    """Raise `ConfigError` when `out` holds an overlay this run would write (one listing of `out`, remote too)."""
    from fakescope.errors import ConfigError
    from fakescope.explain.report import overlay_file
    from fakescope.io import storage
    from fakescope.io.inputs import path_text

    if not storage.exists(out):
        return
    held = {os.path.basename(uri) for uri in storage.list_files(out, suffixes=(".png",), recursive=False)}
    earlier = [uri for name in named for m in methods if os.path.basename(uri := overlay_file(out, name, m)) in held]
    if earlier:
        raise ConfigError(f"{path_text(out)} already holds {len(earlier)} overlay(s) of these images from an earlier run "
                          f"(first: {path_text(earlier[0])}); replace them with --overwrite, or choose another --out")


def register(app: typer.Typer) -> None:
    app.command("explain", cls=ClickCommand)(explain)
    app.command("embed", cls=ClickCommand)(embed)
