"""`fakescope train`: train a detector from a YAML config, flags overriding its keys."""

from __future__ import annotations

import math
import os
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors, sigterm_as_interrupt
from fakescope.cli._options import MAX_SEED, ProgressOpt, resume_command, run_again, show_progress
from fakescope.cli._style import ClickCommand
from fakescope.errors import DEVICES, ConfigError


def train(
    ctx: typer.Context,
    config: Annotated[str, typer.Argument(help="A YAML TrainConfig, or a manifest (.csv/.parquet) to train on with defaults.")],
    out: Annotated[str | None, typer.Option("--out", "-o", help="Output folder (default: the config's out:, "
                                                                 "else runs/detector).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name in reports and CAM captions (default: the config's "
                                                          "name:, else the -o/out: folder's name, else "
                                                          "fakescope-detector).")] = None,
    architecture: Annotated[str | None, typer.Option(help="A registered architecture (see `fakescope models list`; "
                                                          "default: the config's, else efficientnet_lite0).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Epochs (default: the config's, else 10).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Images per step, one crop each "
                                                                                 "(default: the config's, else 64).")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Learning rate (default: the config's, else 0.001).")] = None,
    device: Annotated[str | None, typer.Option("--device", help=f"{DEVICES} (default: the config's, else auto); "
                                                          "under torchrun each process takes CUDA card LOCAL_RANK.")] = None,
    num_workers: Annotated[int | None, typer.Option(min=0, help="Data-loading processes (default: the config's, "
                                                                "else 2).")] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=MAX_SEED, help="Random seed (default: the config's, else 0).")] = None,
    pretrained: Annotated[bool | None, typer.Option("--pretrained/--scratch", help="Start from ImageNet weights, or from "
                                                    "random ones (default: the config's, else pretrained).")] = None,
    resume: Annotated[bool | None, typer.Option(help="Continue from the output folder's last checkpoint (default: the "
                                                "config's resume:, else no; --resume over a config's overwrite: true "
                                                "turns it off); with more --epochs, "
                                                "the learning-rate schedule is the longer run's. Refused when the run "
                                                "asks for fewer epochs than the checkpoint has trained, "
                                                "changes the train/val rows or a key other than epochs, patience, device, "
                                                "num_workers, name, calibration, band, amp, pretrained or the manifest's "
                                                "path.")] = None,
    overwrite: Annotated[bool | None, typer.Option(help="Replace the run the output folder already holds (without this or "
                                                   "--resume such a folder is refused; default: the config's "
                                                   "overwrite:, else no; --overwrite over a config's resume: true turns it "
                                                   "off).")] = None,
    progress: ProgressOpt = None,
) -> None:
    """Train, calibrate on the validation split, test once, and save a model folder in OUT/model.

    Exit status: 0 when saved, 2 on usage errors, 130 on Ctrl-C and 143 on SIGTERM (both say how to --resume;
    a second one while it stops is ignored, a third ends it at once).
    """
    from fakescope.data.manifest import MANIFEST_SUFFIXES
    from fakescope.train import TrainConfig
    from fakescope.train import train as run

    overrides = dict(out=out, name=name, architecture=architecture, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
                     num_workers=num_workers, seed=seed, pretrained=pretrained, **run_again(resume, overwrite))
    with clean_errors():
        if name is not None and not name.strip():  # else "" would be taken as no --name, and the folder's name used
            raise ConfigError(f"--name must be non-blank text (leave it out to name the model after its folder), got {name!r}")
        if config.endswith(MANIFEST_SUFFIXES):
            cfg = TrainConfig.from_dict({"manifest": config, **{k: v for k, v in overrides.items() if v is not None}})
        else:
            cfg = TrainConfig.from_yaml(config, **overrides)
        with sigterm_as_interrupt(once=True) as stop:
            try:
                saved = run(cfg, progress=show_progress(progress))
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the checkpoint of the last finished epoch is whole
                if os.environ.get("RANK", "0") == "0":  # under torchrun every rank is interrupted
                    typer.echo(f"interrupted: {cfg.out} holds the last finished epoch; continue with {resume_command(ctx)}",
                               err=True)
                raise typer.Exit(stop.exit_code) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun, one summary line: rank 0's
        return
    split = "test" if "test" in saved.metrics else "val"
    scores = saved.metrics["test"]["overall"] if split == "test" else saved.metrics["val"]
    why = "" if math.isfinite(scores["auc"]) else f" (AUC needs both labels in the {split} split)"
    typer.echo(f"saved {cfg.out}/model  {split} auc={scores['auc']:.4f}  "
               f"balanced_accuracy={scores['balanced_accuracy']:.4f}{why}")


def register(app: typer.Typer) -> None:
    app.command(cls=ClickCommand)(train)
