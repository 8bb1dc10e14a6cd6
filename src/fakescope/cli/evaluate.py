"""`fakescope evaluate` (a model on a manifest) and `fakescope evaluate-logo` (leave-one-generator-out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from fakescope.cli._errors import clean_errors, sigterm_as_interrupt
from fakescope.cli._options import (
    BatchSizeOpt,
    DeviceOpt,
    ModelOpt,
    OutDirOpt,
    ProgressOpt,
    ProvenanceOpt,
    model_then_rest,
    resume_command,
    run_again,
    show_progress,
)
from fakescope.cli._style import ClickCommand
from fakescope.errors import DEVICES

if TYPE_CHECKING:
    from pathlib import Path

    from fakescope.evaluate.report import ExtraFigure


def evaluate(
    model: Annotated[str | None, typer.Argument(
        metavar="MODEL", help="Bundled model name, model folder or file, or hf://owner/name (or give it with --model).",
        show_default=False)] = None,
    manifest: Annotated[str | None, typer.Argument(
        metavar="MANIFEST", help="Manifest (.csv or .parquet) with uri, label, split; generator, source and attributes "
                                 "optional.", show_default=False)] = None,
    out: OutDirOpt = ...,
    split: Annotated[str, typer.Option(help="train, val, test, or all.")] = "test",
    robustness: Annotated[bool, typer.Option("--robustness/--no-robustness", help="Score again after each perturbation.")] = True,
    perturbations: Annotated[str | None, typer.Option(help="Comma-separated subset of the perturbations (default: all).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for confidence intervals: at least 1000, or 0 for "
                                           "none.")] = 1000,
    provenance: ProvenanceOpt = True,
    examples: Annotated[int, typer.Option(min=0, help="Example images shown in the report.")] = 12,
    attributes: Annotated[str | None, typer.Option(
        help="Comma-separated attribute columns to slice by (default: all low-cardinality extras; the others "
             "are named, with why).")] = None,
    figure: Annotated[list[str] | None, typer.Option(
        help="Extra figure for the report as TITLE=PATH to a PNG or JPEG; repeatable.")] = None,
    explain: Annotated[bool, typer.Option(
        "--explain/--no-explain", help="Add UMAP, mosaic and Grad-CAM figures (fakescope.explain) to the report.")] = False,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 32,
    progress: ProgressOpt = None,
    audit: Annotated[bool, typer.Option(
        "--audit/--no-audit", help="Check the scored rows for shortcuts (format, JPEG quality, size, metadata, "
                                   "watermark) as dataset audit does, about 1000 images per label; a warning line for "
                                   "each the model's preprocessing leaves.")] = True,
    model_option: ModelOpt = None,
) -> None:
    """Score a manifest split; write report.html, report.json and scores.csv to OUT.

    Images are preprocessed as the model's training recipe says; with --explain, OUT/figures too. Every file
    written is listed. The rows are audited for shortcuts as they are read (--no-audit skips it): one warning line on stderr
    per property that separates real from ai and the model's preprocessing does not neutralize.

    Exit status: 0 when every image was scored, 1 when some could not be read or got no finite score (the report
    lists them), 2 on usage errors.
    """
    import math
    import tempfile
    from pathlib import Path

    from fakescope.data.manifest import read_rows
    from fakescope.errors import ConfigError
    from fakescope.evaluate import evaluate as run
    from fakescope.evaluate import write_report
    from fakescope.evaluate.evaluator import check_bootstrap, check_split
    from fakescope.evaluate.metrics import few_images_note
    from fakescope.evaluate.shortcuts import warning_lines
    from fakescope.evaluate.slices import not_sliced_line
    from fakescope.io.storage import require_out_folder
    from fakescope.models.bundle import DEFAULT_MODEL

    with clean_errors():
        model, manifest = model_then_rest(model_option, model, manifest)
        if manifest is None and model_option is None:  # MANIFEST alone: the bundled model, as the other verbs default to
            model, manifest = DEFAULT_MODEL, model
        if manifest is None:
            raise ConfigError("missing MANIFEST: give MODEL MANIFEST, MANIFEST alone (the bundled model), or MANIFEST "
                              "with --model MODEL")
        check_split(split)
        check_bootstrap(bootstrap)
        require_out_folder(out)  # a file, or read-only: refused now, not once every image is scored
        chosen, sliced = _names(perturbations, "--perturbations"), _names(attributes, "--attributes")
        extras, written = [_figure_pair(f) for f in figure or []], []
        import matplotlib  # noqa: F401 - the report's figures need it: missing, fail before scoring, not after

        if explain:  # as matplotlib, after the options (seconds to import, numba compiles on a first run)
            import pytorch_grad_cam  # noqa: F401
            import umap  # noqa: F401
        rows = read_rows(manifest, split_required=split != "all")
        with tempfile.TemporaryDirectory(prefix="fakescope-figures-") as scratch:  # --explain's, copied to OUT/figures
            report = run(model, rows, split, robustness=robustness, perturbations=chosen,
                         bootstrap=bootstrap, examples=examples, provenance=provenance, attributes=sliced,
                         device=device, batch_size=batch_size, progress=show_progress(progress), audit=audit,
                         explain_to=scratch if explain else None)  # drawn as scored, once evaluate checked every option
            for line in warning_lines(report.shortcuts):
                typer.echo(line, err=True)
            if explain:
                figures, written = _copy_figures(report.figures, Path(scratch), out)
                extras += figures
        try:
            paths = write_report(report, out, extras)
        except OSError as exc:
            raise ConfigError(f"cannot write the report to {out}: {exc}") from None
    overall, ci = report.overall, report.intervals.get("auc")
    interval = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci and math.isfinite(ci[0]) else ""
    few = few_images_note(overall["n"], overall["n_ai"]) if interval else None
    why = "" if math.isfinite(overall["auc"]) else f" (AUC needs both labels in the {split} split)"
    typer.echo(f"{report.model} on {split}: n={overall['n']} auc={_num(overall['auc'])}{interval} "
               f"balanced_accuracy={_num(overall['balanced_accuracy'])} eer={_num(overall['eer'])} "
               f"uncertain_rate={overall['uncertain_rate']:.3f}{why}")
    if few:
        typer.echo(f"  intervals: {few}")
    for line in _rate_lines(report.rates, report.threshold):
        typer.echo(line)
    for row in report.robustness[1:]:
        typer.echo(f"  {row['perturbation']:<15} auc={_num(row['auc'])}  drop={_num(row['auc_drop'], '+.4f')}")
    if report.slices["not_sliced"]:
        typer.echo(f"  {not_sliced_line(report.slices['not_sliced'])}")
    if report.failures:
        first, more = report.failures[0], ", ..." if len(report.failures) > 1 else ""  # no "..." after the only one
        typer.echo(f"  {len(report.failures)} image(s) left out (unreadable or no finite score), listed in the report: "
                   f"{first['uri']} ({first['error']}){more}")
    for path in [*paths.values(), *written]:
        typer.echo(f"wrote {path}")
    raise typer.Exit(1 if report.failures else 0)


def evaluate_logo(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="A YAML TrainConfig (the recipe to test).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Local output folder; each fold trains in OUT/without-<g>.")],
    generators: Annotated[str | None, typer.Option(help="Comma-separated generators to hold out (default: all).")] = None,
    by: Annotated[str, typer.Option("--by", help="What each fold holds out: a generator, or a whole ai source "
                                                 "(a family).")] = "generator",
    epochs: Annotated[int | None, typer.Option(min=1, help="Override the recipe's epochs.")] = None,
    samples_per_epoch: Annotated[int | None, typer.Option(min=1, help="Override the recipe's samples per epoch.")] = None,
    device: Annotated[str | None, typer.Option("--device", help=f"Override the recipe's device: {DEVICES}.")] = None,
    num_workers: Annotated[int | None, typer.Option(min=0, help="Override the recipe's data-loading processes.")] = None,
    audit: Annotated[bool, typer.Option(
        "--audit/--no-audit", help="Check each fold's unseen images and the test reals for shortcuts as evaluate "
                                   "does; a warning line for each the recipe's preprocessing leaves.")] = True,
    resume: Annotated[bool | None, typer.Option(help="Continue each fold's run in OUT/without-<g> (a finished one is "
                                                     "only scored again; default: the recipe's resume:, else no; --resume "
                                                     "over the recipe's overwrite: true turns it off).")] = None,
    overwrite: Annotated[bool | None, typer.Option(help="Replace the fold runs OUT already holds (default: the recipe's "
                                                        "overwrite:, else no; --overwrite over the recipe's resume: true "
                                                        "turns it off).")] = None,
    progress: ProgressOpt = None,
) -> None:
    """Leave-one-generator-out: train without each generator, test on all; write logo.csv and logo.json.

    Both go to OUT, each run to OUT/without-<g>; every file and run folder written is listed. Each fold's unseen
    images and the test reals are audited for shortcuts (--no-audit skips it): one warning line on stderr per property
    that separates them and the recipe's preprocessing does not neutralize.

    Exit status: 0 when written, 2 on usage errors, 130 on Ctrl-C and 143 on SIGTERM (both say how to --resume;
    a second one while it stops is ignored, a third ends it at once).
    """
    from fakescope.evaluate.generalization import (
        count_matrix,
        fold_folder,
        generalization_matrix,
        leave_one_generator_out,
        no_auc_reason,
        real_source_table,
        save_generalization,
    )
    from fakescope.evaluate.metrics import few_images_note
    from fakescope.evaluate.shortcuts import warning_lines
    from fakescope.train import TrainConfig

    with clean_errors():
        held = _names(generators, "--generators")
        cfg = TrainConfig.from_yaml(config, out=out, epochs=epochs, samples_per_epoch=samples_per_epoch, device=device,
                                   num_workers=num_workers, **run_again(resume, overwrite))
        with sigterm_as_interrupt(once=True) as stop:
            try:
                table = leave_one_generator_out(cfg, held, by=by, progress=show_progress(progress), audit=audit)
                paths = save_generalization(table, out, cfg)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each fold keeps the checkpoint of its last finished epoch
                typer.echo(f"interrupted: continue with {resume_command(ctx)} (finished folds are only scored again)", err=True)
                raise typer.Exit(stop.exit_code) from None
    typer.echo("each fold: the held-out generator's images (all, none trained on) vs the test reals, with a 95% "
               "interval, beside the run's own test AUC on the generators it trained on")
    for run in table.to_dict("records"):
        for line in warning_lines(run["shortcuts"], f"in fold {run['held_out']}'s unseen images and the test reals"):
            typer.echo(line, err=True)
        own = f"own test auc={_num(run['auc_seen_test'])}"
        if why := no_auc_reason(run):
            typer.echo(f"  {run['held_out']}: no unseen auc: {why}  {own}")
            continue
        typer.echo(f"  {run['held_out']}: unseen auc={_num(run['auc_all'])} [{_num(run['auc_all_low'])}, "
                   f"{_num(run['auc_all_high'])}] (n={run['n_unseen']})  {own}")
        if few := few_images_note(run["n_unseen"] + run["n_real"], run["n_unseen"]):
            typer.echo(f"    interval: {few}")
        if run["n_paired_trained"]:
            typer.echo(f"    {run['n_paired_trained']} of them were made from reals this run trained on (one pair_id): "
                       f"its test-split images alone (auc_test={_num(run['auc_test'])}) leave those out")
    typer.echo("AUC (rows: generator left out of training; columns: generator tested; diagonal = unseen)")
    typer.echo(generalization_matrix(table).to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
    typer.echo("ai images behind each AUC above (the held-out generator: all of them; the others: their test images)")
    typer.echo(count_matrix(table).to_string())
    typer.echo("AUC of each unseen generator against each real source alone")
    typer.echo(real_source_table(table).to_string(float_format=lambda v: f"{v:.4f}", na_rep="-"))
    for path in paths.values():
        typer.echo(f"wrote {path}")
    for held_out in table["held_out"]:
        typer.echo(f"wrote {fold_folder(out, held_out)}/ (the run trained without {held_out})")


def _num(value: float, spec: str = ".4f") -> str:
    """A metric for the console; `n/a` for NaN (undefined, as the HTML report shows it)."""
    import math

    return "n/a" if math.isnan(value) else format(value, spec)


def _rate_lines(rates: dict, threshold: float) -> list[str]:
    """One console line per label scored: its error rate and uncertain share, each with its exact 95% interval."""
    lines = []
    for label, error, side in (("reals", "false_positive_rate", ">="), ("ai", "miss_rate", "<")):
        wrong, unsure = rates[error], rates[f"uncertain_rate_{label.rstrip('s')}"]
        if wrong["of"]:
            lines.append(f"  {label}: {error}={_rate(wrong)} ({wrong['count']} of {wrong['of']} at P(ai) {side} "
                         f"{threshold:g}), uncertain={_rate(unsure)} ({unsure['count']} of {unsure['of']})")
    return lines


def _rate(rate: dict) -> str:
    """A counted rate and its interval, as `0.0060 [0.0012, 0.0174]`."""
    return f"{rate['value']:.4f} [{rate['ci'][0]:.4f}, {rate['ci'][1]:.4f}]"


def _names(text: str | None, option: str) -> list[str] | None:
    """`a, b,c` -> ['a', 'b', 'c']; None -> None (the default); refuses text with no names (`,` or blank)."""
    from fakescope.errors import ConfigError

    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{option} {text!r} names nothing: give comma-separated names, or leave it out for all")
    return names


def _copy_figures(figures: list[tuple[str, Path]], folder: Path, out: str) -> tuple[list[ExtraFigure], list[str]]:
    """The explanation figures drawn in `folder` (`EvaluationReport.figures`), copied to OUT/figures: the figures, each
    read once, and the URIs of the files written."""
    from fakescope.io import storage

    written = []
    drawn = {path: path.read_bytes() for path in sorted(p for p in folder.rglob("*") if p.is_file())}  # each read once
    for path, data in drawn.items():
        written.append(storage.join(out, "figures", *path.relative_to(folder).parts))
        storage.write_bytes(written[-1], data)
    return [(title, drawn[path]) for title, path in figures], written


def _figure_pair(text: str) -> tuple[str, str]:
    from pathlib import Path

    from fakescope.errors import ConfigError
    from fakescope.evaluate.report import figure_data_uri

    title, sep, path = text.partition("=")
    if not sep or not Path(path).is_file():
        raise ConfigError(f"--figure expects TITLE=PATH to an existing PNG or JPEG, got {text!r}")
    figure_data_uri(path)  # not a PNG or JPEG: say so now, not after scoring
    return title, path


def register(app: typer.Typer) -> None:
    app.command("evaluate", cls=ClickCommand)(evaluate)
    app.command("evaluate-logo", cls=ClickCommand)(evaluate_logo)
