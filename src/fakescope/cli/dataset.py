"""`fakescope dataset`: build, split, audit and export manifests of real and ai images."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors
from fakescope.cli._options import READ_WORKERS, ProgressOpt, ReadWorkersOpt, SeedOpt, UsageCommand, show_progress
from fakescope.cli._style import ClickGroup

STRICT_EXIT = 1
HASH_BITS = 64
"""A dHash's bits, as `fakescope.data.splits.HASH_BITS` (repeated: the CLI starts without numpy)."""


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


ManifestArg = Annotated[str, typer.Argument(help="Manifest file (.parquet or .csv), local or a storage URI.")]
ManifestOutOpt = Annotated[str, typer.Option("--out", "-o", help="Manifest to write (.parquet or .csv), path or storage URI.")]
CsvOpt = Annotated[bool, typer.Option("--csv/--no-csv", help="Also write a .csv export beside a .parquet manifest.")]


def register(app: typer.Typer) -> None:
    """Add the `dataset` command group."""
    sub = typer.Typer(help="Build, merge, split, audit and export dataset manifests.", no_args_is_help=True, cls=ClickGroup)
    for verb in (build, merge, split, audit, export):
        sub.command(verb.__name__, cls=UsageCommand)(verb)  # export's older positional OUT stays out of its usage
    app.add_typer(sub, name="dataset")


def build(
    src: Annotated[str, typer.Argument(help="Folder with real/ and fake/<generator>/, an FFHQ-style .json, or a .csv.")],
    out: ManifestOutOpt,
    images: Annotated[str | None, typer.Option("--images", help="Folder holding the images an FFHQ .json lists (required with "
                                               "one).")] = None,
    source: Annotated[str | None, typer.Option("--source", help="Source name for the real images (default: from folders; a .csv: "
                                               "for rows with no source and no pair that has one).")] = None,
    attributes: Annotated[str | None, typer.Option("--attributes", help="CSV of attributes keyed by file name, e.g. "
                                                   "ffhq_attributes.csv; ai images take their pair's.")] = None,
    attributes_key: Annotated[str | None, typer.Option("--attributes-key", help="File-name column of --attributes (default: "
                                                       "first).")] = None,
    balance_by: Annotated[str | None, typer.Option("--balance-by", help="Comma-separated columns to balance, e.g. label or "
                                                   "label,gender; a real image and its ai variations (one pair_id) are kept or "
                                                   "dropped together. Default: no balancing.")] = None,
    per_stratum: Annotated[int | None, typer.Option("--per-stratum", min=1, help="Most rows per balanced stratum (default: the "
                                                    "smallest stratum's size).")] = None,
    csv_copy: CsvOpt = True,
    seed: SeedOpt = 0,
    workers: ReadWorkersOpt = READ_WORKERS,
    progress: ProgressOpt = None,
) -> None:
    """Build a manifest from a folder layout, an FFHQ-style JSON listing or a CSV.

    Exit status: 0 when written (an unreadable image is skipped with a warning), 2 on usage errors.
    """
    progress = show_progress(progress)
    with clean_errors():
        from fakescope.data import (
            balance_manifest,
            build_from_csv,
            build_from_ffhq_json,
            build_from_folders,
            join_attributes,
            write_manifest,
        )
        from fakescope.data.build import skipped
        from fakescope.data.manifest import manifest_files, refuse_overwrite
        from fakescope.errors import ConfigError
        from fakescope.io import storage

        refuse_overwrite(manifest_files(out, csv_copy=csv_copy), [src, *([attributes] if attributes else [])])
        if attributes:
            storage.size(attributes)  # a mistyped table name: said now, not once every image has been read
        if src.lower().endswith(".json"):
            if images is None:
                raise ConfigError("--images is required with an FFHQ-style .json listing")
            frame = build_from_ffhq_json(src, images, source=source or "ffhq", workers=workers, progress=progress)
        elif src.lower().endswith(".csv"):
            frame = build_from_csv(src, source=source, workers=workers, progress=progress)
        else:
            frame = build_from_folders(src, source=source, workers=workers, progress=progress)
        left_out = skipped(frame)
        if attributes:
            frame = join_attributes(frame, attributes, key=attributes_key)
        if balance_by:
            frame = balance_manifest(frame, [c.strip() for c in balance_by.split(",")], seed=seed, per_stratum=per_stratum)
        write_manifest(frame, out, csv_copy=csv_copy)
        counts = ", ".join(f"{label}: {n}" for label, n in frame["label"].value_counts().sort_index().items())
        reasons = ", ".join(f"{n} {reason}" for reason, n in left_out.items())
        typer.echo(f"{len(frame)} images ({counts})" + (f", {sum(left_out.values())} skipped: {reasons}" if left_out else "")
                   + f"; manifest {out}")


def merge(
    manifests: Annotated[list[str], typer.Argument(help="Manifests to merge (.parquet or .csv), in order; a uri listed twice "
                                                   "keeps its first row.")],
    out: ManifestOutOpt,
    max_distance: Annotated[int, typer.Option("--max-distance", min=-1, max=HASH_BITS, help="dHash bits within which split "
                                              "images in different splits are near copies, a leak that is refused, as audit's "
                                              "(-1: off).")] = 4,
    csv_copy: CsvOpt = True,
    workers: ReadWorkersOpt = READ_WORKERS,
    progress: ProgressOpt = None,
) -> None:
    """Merge manifests: ai images made from the reals of another take their face's split and attributes.

    Exit status: 0 when written, 2 on usage errors.
    """
    with clean_errors():
        from fakescope.data import merge_manifests, write_manifest
        from fakescope.data.manifest import manifest_files, refuse_overwrite

        refuse_overwrite(manifest_files(out, csv_copy=csv_copy), manifests, updated=out)  # --out may update an input
        frame = merge_manifests(manifests, max_distance=max_distance, workers=workers, progress=show_progress(progress))
        write_manifest(frame, out, csv_copy=csv_copy)
        counts = ", ".join(f"{label}: {n}" for label, n in frame["label"].value_counts().sort_index().items())
        typer.echo(f"{len(frame)} images ({counts}); manifest {out}")
        unsplit = int((frame["split"] == "").sum())
        if unsplit and unsplit < len(frame):
            typer.echo(f"warning: {unsplit} image(s) have no split and no pair with one; "
                       f"`fakescope dataset split {out} --keep-splits` deals out those alone", err=True)


def split(
    manifest: ManifestArg,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Where to write the split manifest (default: "
                                            "overwrite).")] = None,
    ratios: Annotated[str, typer.Option("--ratios", help="Shares per split, e.g. "
                                        "train=0.8,val=0.1,test=0.1.")] = "train=0.8,val=0.1,test=0.1",
    max_distance: Annotated[int, typer.Option("--max-distance", min=-1, max=HASH_BITS, help="dHash bits two near duplicates may "
                                              "differ in (-1: off).")] = 4,
    keep_splits: Annotated[bool, typer.Option("--keep-splits", help="Keep the splits images have and deal only those without one "
                                              "(files added since the last split), so no image moves.")] = False,
    rehash: Annotated[bool, typer.Option("--rehash", help="Read every image again for its dHash, width and height instead "
                                         "of reusing the manifest's (once, on a manifest split before they were taken "
                                         "turned upright by the EXIF orientation).")] = False,
    csv_copy: CsvOpt = True,
    seed: SeedOpt = 0,
    workers: ReadWorkersOpt = READ_WORKERS,
    progress: ProgressOpt = None,
) -> None:
    """Split by pair and (near-)duplicate groups so no related images straddle splits.

    Exit status: 0 when written (an unreadable image is not checked for near duplicates, with a warning), 2 on usage
    errors.
    """
    with clean_errors():
        from fakescope.data import find_leaks, read_manifest, split_manifest, write_manifest
        from fakescope.data.manifest import manifest_files, refuse_overwrite, resolve_uris
        from fakescope.data.splits import rehash_manifest

        # a name no command reads as a manifest, or a .csv copy over the input: refused before hashing
        refuse_overwrite(manifest_files(out or manifest, csv_copy=csv_copy), [manifest], updated=out or manifest)
        shares = _ratios(ratios)
        listed = read_manifest(manifest)
        resolved = resolve_uris(listed, manifest)
        if rehash:
            resolved = rehash_manifest(resolved, workers=workers, progress=show_progress(progress))
        frame = split_manifest(resolved, shares, seed=seed, max_distance=max_distance, workers=workers,
                               progress=show_progress(progress), keep=keep_splits)
        paths = [c for c in ("uri", "source_uri") if c in listed]
        if resolve_uris(listed, out or manifest)[paths].equals(resolved[paths]):  # the listed paths hold there too
            frame[paths] = listed[paths].to_numpy()  # relative ones stay relative
        write_manifest(frame, out or manifest, csv_copy=csv_copy)  # build's .csv copy would keep no splits
        sizes = frame.groupby(["split", "label"]).size()
        typer.echo("  ".join(f"{s}/{label}: {n}" for (s, label), n in sizes.items()))
        for problem in find_leaks(frame):
            typer.echo(f"warning: {problem}", err=True)
        had = listed["split"].to_numpy() != ""
        if moved := int((listed["split"].to_numpy() != frame["split"].to_numpy())[had].sum()):
            typer.echo(f"warning: {moved} of the {int(had.sum())} image(s) that had a split are in another one now"
                       + ("" if keep_splits else "; --keep-splits keeps them where they were"), err=True)
        empty = [name for name, share in shares.items() if share > 0 and not (frame["split"] == name).any()]
        if empty:
            typer.echo(f"warning: no images in {', '.join(empty)}: too few pair and near-duplicate groups to deal out"
                       f" (--max-distance -1 turns the near-duplicate grouping off)", err=True)
        unread = int((frame["dhash"] == "").sum()) if "dhash" in frame else 0
        if unread:
            typer.echo(f"warning: {unread} image(s) could not be read, so not checked for near duplicates", err=True)


def audit(
    src: Annotated[str, typer.Argument(help="Manifest (.parquet/.csv) or a folder with real/ and fake/.")],
    max_per_class: Annotated[int, typer.Option("--max-per-class", min=1, help="About this many images inspected per class (a "
                                               "seeded sample drawn per source: each source's share, at least 10 of each class); "
                                               "the watermark check needs about 150-200.")] = 1000,
    max_distance: Annotated[int, typer.Option("--max-distance", min=-1, max=HASH_BITS, help="dHash bits within which images in "
                                              "different splits are near copies, a leak, as split's (-1: off).")] = 4,
    output: Annotated[ReportFormat | None, typer.Option("--format", "-f", help="table (the default) or json.")] = None,
    as_json: Annotated[bool, typer.Option("--json", hidden=True, help="Same as --format json (the older spelling).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help=f"Exit {STRICT_EXIT} when any shortcut (a SHORTCUT verdict) or split "
                                         "leak is found, or nothing could be compared (one class, no readable image).")] = False,
    seed: SeedOpt = 0,
    workers: ReadWorkersOpt = READ_WORKERS,
    progress: ProgressOpt = None,
) -> None:
    """Report the shortcuts a detector could cheat by, and split leaks.

    Shortcuts are per-class properties (format, JPEG quality, size, metadata, watermarks), checked over the whole
    set and within each source (`format@ffhq`), and the classes' sources (content: a warning at most, never a
    SHORTCUT, since a source's name cannot say what it shows).

    Exit status: 0 when reported, 1 with --strict when it finds a shortcut or split leak (or nothing to compare),
    2 on usage errors.
    """
    with clean_errors():
        from fakescope.data import audit_manifest, build_from_folders, read_manifest
        from fakescope.data.manifest import MANIFEST_SUFFIXES, resolve_uris
        from fakescope.errors import ConfigError
        from fakescope.io import storage

        if as_json and output is ReportFormat.table:
            raise ConfigError("--json (the older --format json) contradicts --format table: give one of them")
        output = ReportFormat.json if as_json else output or ReportFormat.table
        is_manifest = src.lower().endswith(MANIFEST_SUFFIXES)
        if not is_manifest and storage.exists(src) and not storage.exists(src.rstrip("/") + "/"):  # a file, not a folder
            raise ConfigError(f"{src} is a file: audit expects a folder with real/ and fake/ (or ai/), "
                              "or a manifest (.csv or .parquet)")
        progress = show_progress(progress)
        frame = (resolve_uris(read_manifest(src), src) if is_manifest
                 else build_from_folders(src, workers=workers, progress=progress))
        report = audit_manifest(frame, max_per_class=max_per_class, seed=seed, workers=workers, progress=progress,
                                max_distance=max_distance)
        typer.echo(json.dumps(report.to_dict(), indent=2) if output is ReportFormat.json else _audit_table(report))
    if strict and (report.shortcuts or report.leaks or not report.checks):
        found = [f"{len(report.shortcuts)} shortcut(s) ({', '.join(report.shortcuts)})"] if report.shortcuts else []
        found += [f"{len(report.leaks)} split leak(s)"] if report.leaks else []
        found += ["nothing compared: it needs readable real and ai images"] if not report.checks else []
        typer.echo(f"audit failed (--strict): {' and '.join(found)}", err=True)
        raise typer.Exit(STRICT_EXIT)


def export(
    manifest: ManifestArg,
    out_argument: Annotated[str | None, typer.Argument(hidden=True, show_default=False, metavar="OUT")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", show_default=False, help="Required: folder (folders layout; not one "
                                            "holding an earlier export) or file (.tar, .npy, .safetensors), path or storage "
                                            "URI.")] = None,
    layout: Annotated[str | None, typer.Option("--layout", help="folders, tar, npy or safetensors (default: OUT's suffix .tar, "
                                               ".npy or .safetensors names it, else folders).")] = None,
    size: Annotated[int, typer.Option("--size", min=8, help="Crop side for npy/safetensors packs.")] = 256,
    only_split: Annotated[str | None, typer.Option("--split", help="Export only this split (default: every split).")] = None,
) -> None:
    """Export images and manifest as a folder tree, one tar, or a uint8 array pack for a GPU machine.

    Exit status: 0 when written, 2 on usage errors (an unreadable image included).
    """
    with clean_errors():
        from fakescope.data import export_manifest, layout_for, read_manifest
        from fakescope.data.manifest import resolve_uris
        from fakescope.errors import ConfigError

        out = _export_target(out, out_argument)
        frame = resolve_uris(read_manifest(manifest), manifest)
        if only_split is not None:
            splits = sorted(set(frame["split"]) - {""})
            frame = frame[frame["split"] == only_split]
            if frame.empty:
                raise ConfigError(f"{manifest} has no images in split {only_split!r}; its splits: {', '.join(splits) or 'none'}"
                                  + ("" if splits else f" (`fakescope dataset split {manifest}` makes them)"))
        layout = layout or layout_for(out)
        exported = export_manifest(frame, out, layout=layout, size=size, manifest=manifest)
        typer.echo(f"{len(exported)} images exported to {out} ({layout})")


def _export_target(option: str | None, argument: str | None) -> str:
    """`--out/-o OUT`, as every verb takes it, or OUT after MANIFEST (the older spelling); refuses neither, or both differing."""
    from fakescope.errors import ConfigError

    if option is not None and argument is not None and option != argument:
        raise ConfigError(f"two outputs, --out {option} and {argument}: give one")
    if option is None and argument is None:
        raise ConfigError("missing --out/-o: the folder or file (.tar, .npy, .safetensors) to export to")
    return option if option is not None else argument


def _ratios(text: str) -> dict[str, float]:
    from fakescope.errors import ConfigError

    try:
        pairs = [(name.strip(), float(value)) for name, value in (item.split("=") for item in text.split(",") if item.strip())]
    except ValueError:
        raise ConfigError(f"--ratios must look like train=0.8,val=0.1,test=0.1, got {text!r}") from None
    if len({name for name, _ in pairs}) < len(pairs):
        raise ConfigError(f"--ratios names a split twice: {text!r}")
    return dict(pairs)


def _audit_table(report: object) -> str:
    counts = ", ".join(f"{label}: {n} ({report.inspected.get(label, 0)} inspected)" for label, n in report.counts.items())
    lines = [f"images  {counts}", ""]
    if report.checks:
        width = max(len(c.name) for c in report.checks)
        lines.append(f"{'check':<{width}}  {'verdict':<17}  {'sep.':>4}  real | ai")
        for check in report.checks:
            sides = f"{check.per_class.get('real', '')} | {check.per_class.get('ai', '')}"
            lines.append(f"{check.name:<{width}}  {check.level:<17}  {check.separability:4.2f}  {sides}")
    if report.warnings:
        lines += ["", f"{len(report.warnings)} warning(s):"] + [f"  ! {w}" for w in report.warnings]
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)
