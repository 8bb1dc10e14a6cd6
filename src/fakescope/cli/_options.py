"""Typed option aliases shared by every command, so flags are spelled the same everywhere."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from fakescope.cli._style import ClickCommand
from fakescope.errors import DEVICES, ConfigError
from fakescope.models.config import MAX_GRID


class UsageCommand(ClickCommand):
    """A command whose usage line leaves out hidden arguments (an older spelling still taken), as its help does."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Bundled model name, model folder or file, or hf://owner/name. Default: the bundled "
                 "model."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help=f"{DEVICES}.")]
BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", "-b", min=1, help="Tiles per forward pass (an image gives up to grid x grid tiles).")]
DECODE_WORKERS, READ_WORKERS = 2, 8
"""`--workers` defaults: detect/scan decode beside the network, which wants the cores; dataset verbs wait on storage."""
WorkersOpt = Annotated[int, typer.Option(
    "--workers", "-j", min=0, help="Threads (processes with --processes) decoding images and cutting tiles while the "
                                   "network scores the previous batch (0 = decode inline).")]
ReadWorkersOpt = Annotated[int, typer.Option(
    "--workers", "-j", min=0, help="Threads reading images to describe, measure or hash them (0 = one).")]
ProcessesOpt = Annotated[bool, typer.Option(
    "--processes", help="Decode in --workers processes instead of threads (free of the GIL: for many cores).")]
MAX_SEED = 2**32 - 1
"""numpy's largest seed, as `fakescope.train.config.MAX_SEED` (repeated: the CLI starts without numpy)."""
SeedOpt = Annotated[int, typer.Option("--seed", min=0, max=MAX_SEED, help="Random seed.")]
OutDirOpt = Annotated[str, typer.Option("--out", "-o", help="Output folder or storage URI.")]
GridOpt = Annotated[
    int | None,
    typer.Option("--grid", min=1, max=MAX_GRID, help="At most GRID x GRID tiles per image (default: the model's; fewer is "
                                                     "faster, see docs/scale.md)."),
]
ThresholdOpt = Annotated[float | None, typer.Option(
    "--threshold", min=0.0, max=1.0, help="Decision threshold on P(ai), the uncertain band moving with it; default: the "
                                          "model's.")]
ProvenanceOpt = Annotated[bool, typer.Option(
    "--provenance/--no-provenance", help="Fuse C2PA, metadata and watermark evidence with the pixel score.")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for inference (default: one per core).")]


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    int8 = "int8"


PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="fp32; bf16 (torch runtime; faster on GPUs and on CPUs with bf16 instructions); int8 (onnx "
                        "runtime on the CPU, after `fakescope export --int8`; faster, scores differ slightly).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile/--no-compile", help="torch.compile the network (torch runtime): seconds to a minute of warm-up, for long runs.")]


class Decode(str, Enum):
    host = "host"
    device = "device"


DecodeOpt = Annotated[Decode, typer.Option(
    "--decode", help="Where plain JPEGs are decoded: host, or device (nvJPEG on CUDA: faster, scores differ slightly).")]

ProgressOpt = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", help="Show progress on stderr (default: when stderr is a terminal).")]


def show_progress(progress: bool | None) -> bool:
    """`--progress/--no-progress` as given, else whether stderr is a terminal: one rule for every command."""
    return sys.stderr.isatty() if progress is None else progress


def with_progress(items, progress: bool | None):
    """`items`, counted by a progress bar on stderr where `show_progress(progress)` says so."""
    if not show_progress(progress):
        return items
    from tqdm import tqdm

    return tqdm(items, unit="img", file=sys.stderr, leave=False)


def model_then_rest(option: str | None, *args: str | None) -> list[str | None]:
    """`[model, *rest]` for a verb documented with its model as the first argument (`models info MODEL`, `evaluate
    MODEL MANIFEST`) that also takes it as `--model`, as the other verbs do: the arguments given are then the rest.

    Raises:
        ConfigError: the model given both ways.
    """
    if option is None:
        return list(args)
    given = [a for a in args if a is not None]
    if len(given) == len(args):
        raise ConfigError(f"the model is given twice, as {given[0]!r} and --model {option!r}; give it one way")
    return [option, *given, *[None] * (len(args) - 1 - len(given))]


def run_again(resume: bool | None, overwrite: bool | None) -> dict[str, bool | None]:
    """The config keys `resume` and `overwrite` as the command line sets them (None: the config's): a flag given wins
    over its key, and one asked for turns the other off, as they exclude each other (so `--resume` continues a
    config's `overwrite: true` run); both asked for stay both, which the config refuses."""
    return {"resume": False if resume is None and overwrite else resume,
            "overwrite": False if overwrite is None and resume else overwrite}


def resume_command(ctx: typer.Context) -> str:
    """This call's command line, with the arguments and options it was given and --resume for --overwrite: for an
    interrupted run, `--resume -o OUT` alone would drop the options that changed the config (--epochs, the folds...)."""
    import shlex

    words = ["fakescope", str(ctx.info_name)]
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if param.name in ("resume", "overwrite") or ctx.get_parameter_source(param.name).name != "COMMANDLINE":
            continue
        if param.param_type_name == "argument":  # typer ships its own click: no isinstance
            words.append(str(value))
        elif getattr(param, "is_flag", False):
            words.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            words += [param.opts[0], str(value)]
    return shlex.join([*words, "--resume"])
