"""`fakescope models`: list, inspect and publish models."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors
from fakescope.cli._options import ModelOpt, model_then_rest
from fakescope.cli._style import ClickCommand, ClickGroup

models_app = typer.Typer(help="List, inspect and publish detector models.", no_args_is_help=True, cls=ClickGroup)


@models_app.command("list", cls=ClickCommand)
def list_() -> None:
    """Bundled models and registered architectures.

    Exit status: 0 when listed, 2 on usage errors (a module FAKESCOPE_PLUGINS names cannot be imported).
    """
    from fakescope.models import architecture_info, bundled_models, list_models

    with clean_errors():
        names = list_models()
    typer.echo("bundled models:")
    for name in bundled_models():
        typer.echo(f"  {name}")
    typer.echo("architectures:")
    for name in names:
        typer.echo(f"  {name:<20} {architecture_info(name).description}")


@models_app.command("info", cls=ClickCommand)
def info(
    model: Annotated[str | None, typer.Argument(help="Bundled model name, model folder or file, or hf://owner/name "
                                                     "(default: the bundled model; or give it with --model).")] = None,
    model_option: ModelOpt = None,
) -> None:
    """Print a model's config (input policy, calibration, threshold, training summary, metrics) as JSON.

    Exit status: 0 when printed, 2 on usage errors (no such model).
    """
    from fakescope.models import load_model

    with clean_errors():
        model, = model_then_rest(model_option, model)
        loaded = load_model(model, lazy=True)  # the config only: no need for the architecture's code
    typer.echo(json.dumps({"location": loaded.location, **loaded.config.to_dict()}, indent=2))


@models_app.command("push", cls=ClickCommand)
def push(
    folder: Annotated[str, typer.Argument(help="A model folder (model.safetensors + config.json + MODEL_CARD.md), file or "
                                          "bundled name.")],
    repo_id: Annotated[str, typer.Argument(help="Hub repo, owner/name or hf://owner/name.")],
    private: Annotated[bool, typer.Option(help="Create the repo as private.")] = False,
) -> None:
    """Upload weights, config and card to the Hugging Face Hub (token from HF_TOKEN or the hub login).

    Exit status: 0 when uploaded (the URL is printed), 2 on usage errors or a refused upload.
    """
    from fakescope.models import push_model

    with clean_errors():
        url = push_model(folder, repo_id.removeprefix("hf://"), private=private)
    typer.echo(url)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
