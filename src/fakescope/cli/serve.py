"""`fakescope serve` (the REST API) and `fakescope app` (the Streamlit web app)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from fakescope.cli._errors import clean_errors
from fakescope.cli._options import DeviceOpt, GridOpt, ModelOpt, Precision, PrecisionOpt
from fakescope.cli._style import ClickCommand
from fakescope.cli.detect import Runtime, RuntimeOpt
from fakescope.serve.limits import (
    DEFAULT_MAX_BODY_MEMORY_MB,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_FREE_MB,
    DEFAULT_SHUTDOWN_GRACE_S,
    MAX_PIXELS_ENV,
    MIN_FREE_ENV,
    MULTIPART_MAX_FILES,
    checked_max_pixels,
)

ServeHostOpt = Annotated[str, typer.Option(
    "--host", help="Address to listen on; beyond loopback FAKESCOPE_API_TOKEN or --allow-anonymous is required.")]
AppHostOpt = Annotated[str, typer.Option(
    "--host", help="Address to listen on; any but loopback is refused unless --allow-anonymous.")]
AllowedHostOpt = Annotated[list[str] | None, typer.Option(
    "--allowed-host", help="A Host name (or *) accepted on loopback besides localhost, 127.0.0.1 and [::1], as a "
                           "local proxy sends; repeatable.")]
MAX_PIXELS = 200_000_000
"""The largest image any reader takes, as `fakescope.io.image.MAX_PIXELS` (repeated: the CLI starts without Pillow)."""
MaxPixelsOpt = Annotated[int, typer.Option(min=1, max=MAX_PIXELS, help="Largest image in pixels (refused above, from its "
                                           "header).")]


def serve(
    host: ServeHostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")] = 8000,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    max_upload_mb: Annotated[float, typer.Option(
        min=0.001, help="Largest image in MB, uploaded or fetched from a URL (413 above; a batch file: its error).")] = 20.0,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    max_batch: Annotated[int, typer.Option(min=1, help="Most images the micro-batcher scores in one model call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(min=0.0, help="How long the micro-batcher waits to fill a batch.")] = 5.0,
    max_files: Annotated[int, typer.Option(min=1, max=MULTIPART_MAX_FILES, help="Most files in one /v1/detect/batch "
                                           "request.")] = 64,
    max_queue: Annotated[int, typer.Option(min=1, help="Most images waiting for the model, at least --max-files (503 + "
                                           "Retry-After above).")] = 256,
    max_jobs: Annotated[int, typer.Option(min=1, help="Most generation jobs queued or running (503 + Retry-After above).")] = 16,
    max_connections: Annotated[int, typer.Option(
        min=1, help="Most open connections (idle ones too) and requests at once (a request beyond answers 503; sockets are still "
                    "accepted, each held until --header-timeout).")] = 512,
    header_timeout: Annotated[float, typer.Option(
        min=0.1, help="Seconds a connection may take to send a request's line and headers (closed after).")] = 10.0,
    max_body_memory_mb: Annotated[float, typer.Option(
        min=0.001, help="Most MB of upload bodies (and fetched image URLs, queued jobs' uploads) held in memory at once, all "
                        "requests together, at least --max-upload-mb (503 + Retry-After for one that does not fit; 413 "
                        "for a batch over it).")] = DEFAULT_MAX_BODY_MEMORY_MB,
    max_body_seconds: Annotated[float, typer.Option(
        min=1.0, help="Seconds an upload may take to send the bytes it holds of --max-body-memory-mb: each 30 s must bring "
                      "its size over this (a 20 MB upload: 34,953 bytes/s at the default; 408 below).")] = 600.0,
    cors_origin: Annotated[list[str] | None, typer.Option(
        "--cors-origin", help="Let pages of this origin (https://app.example.com, or *) call the API; repeatable.")] = None,
    allowed_host: AllowedHostOpt = None,
    shutdown_grace_s: Annotated[float, typer.Option(
        "--shutdown-grace-s", min=0.0, help="Seconds a stop (Ctrl-C, SIGTERM) waits for requests in flight and running "
                                            "generation jobs, which then fail saying what was billed; queued jobs never "
                                            "start. Keep it below the orchestrator's kill timeout.")] = DEFAULT_SHUTDOWN_GRACE_S,
    jobs_dir: Annotated[Path | None, typer.Option(help="Folder for generation jobs (default serve-jobs in $FAKESCOPE_CACHE, else "
                                                  "$XDG_CACHE_HOME/fakescope, else ~/.cache/fakescope).")] = None,
    runtime: RuntimeOpt = Runtime.auto,
    grid: GridOpt = None,
    precision: PrecisionOpt = Precision.fp32,
    allow_anonymous: Annotated[bool, typer.Option(
        "--allow-anonymous", help="Serve beyond loopback without FAKESCOPE_API_TOKEN: anyone may score images; "
                                  "/v1/generate and /v1/jobs stay off until a token is set.")] = False,
) -> None:
    """Serve the REST API (docs at /docs); FAKESCOPE_API_TOKEN requires a bearer token.

    A token (or --allow-anonymous, detection only) is needed to listen beyond loopback.

    A stop (Ctrl-C, SIGTERM) ends within about --shutdown-grace-s: queued generation jobs never start.

    Exit status: 0 when stopped by Ctrl-C, 143 by SIGTERM (uvicorn raises it again once stopped), 2 on usage errors (a
    port in use, or a --host it cannot listen on, included).
    """
    with clean_errors(extra="serve"):
        import uvicorn  # noqa: F401 - missing: one line naming the extra, even where fakescope.serve is imported already

        from fakescope.serve import ServeConfig, create_app
        from fakescope.serve.config import ANONYMOUS_FLAG, check_port_free, for_host
        from fakescope.serve.connections import run
        from fakescope.serve.origins import any_host_warning

        options = {"jobs_dir": jobs_dir} if jobs_dir else {}
        config = ServeConfig(model=model, device=device, max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                             max_batch=max_batch, max_wait_ms=max_wait_ms, max_files=max_files, max_queue=max_queue,
                             max_jobs=max_jobs, max_connections=max_connections, header_timeout_s=header_timeout,
                             max_body_memory_mb=max_body_memory_mb, max_body_seconds=max_body_seconds,
                             shutdown_grace_s=shutdown_grace_s,
                             cors_origins=tuple(cors_origin or ()), allowed_hosts=tuple(allowed_host or ()),
                             runtime=runtime.value, grid=grid, precision=precision.value, **options)
        config = for_host(config, host, allow_anonymous=allow_anonymous)  # before the model loads: a refusal is quick
        check_port_free(host, port)  # before the model loads too
        detector = config.load_detector()  # before uvicorn, so a bad --model is one clean line
        if not config.generation:
            typer.echo(f"warning: serving on {host} without FAKESCOPE_API_TOKEN ({ANONYMOUS_FLAG}): anyone who can reach "
                       "this port can score images; /v1/generate and /v1/jobs are off (403) until a token is set", err=True)
        if warning := any_host_warning(config.allowed_hosts, "serve"):
            typer.echo(warning, err=True)
        run(create_app(config, detector=detector), config, host=host, port=port)


def app(
    host: AppHostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")] = 8501,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    root: Annotated[Path | None, typer.Option(
        "--root", help="The only folder the app writes datasets to and reads reports from "
                       "(default: $FAKESCOPE_APP_ROOT, else the current folder).")] = None,
    allow_anonymous: Annotated[bool, typer.Option(
        "--allow-anonymous", help="Serve beyond loopback: the app has no login, so anyone who reaches the port "
                                  "may use it (the generator then takes the visitor's own OpenAI key only).")] = False,
    allowed_host: AllowedHostOpt = None,
    min_free_mb: Annotated[int, typer.Option(
        "--min-free-mb", min=0, help="With --allow-anonymous: refuse a dataset save that would leave less than this "
                                     "many MB free on --root's disk.")] = DEFAULT_MIN_FREE_MB,
) -> None:
    """Open the web app (Streamlit): detector, generator and report pages.

    Exit status: 0 when stopped (Ctrl-C or SIGTERM), 2 on usage errors (a port in use, or a --host it cannot listen on, included).
    """
    with clean_errors(extra="serve"):
        from fakescope.serve.config import APP_ANONYMOUS_ENV, app_is_anonymous, check_port_free

        anonymous = app_is_anonymous(host, allow_anonymous=allow_anonymous)
        check_port_free(host, port)  # before Streamlit and torch are imported: a taken port fails at once, as in serve
        import streamlit  # noqa: F401 - missing: one line naming the extra, not a failed subprocess

        from fakescope.detector import resolve_device
        from fakescope.models import resolve_model
        from fakescope.serve import webapp_command
        from fakescope.serve.origins import APP_ALLOWED_HOSTS_ENV, any_host_warning, checked_host
        from fakescope.serve.paths import ROOT_ENV, app_root

        resolve_device(device)  # a bad --device or --model: one line here, not on the page once a browser opens it
        if model:
            resolve_model(model)
        allowed = [checked_host(name) for name in allowed_host or ()]  # a bad name: one line before Streamlit starts
        command = webapp_command(host, port, allowed)
        env = {**os.environ, "FAKESCOPE_DEVICE": device, MAX_PIXELS_ENV: str(checked_max_pixels(max_pixels)),
               ROOT_ENV: str(app_root(root)), APP_ANONYMOUS_ENV: "1" if anonymous else "0",
               APP_ALLOWED_HOSTS_ENV: ",".join(allowed), MIN_FREE_ENV: str(min_free_mb),
               **({"FAKESCOPE_MODEL": model} if model else {})}
        if warning := any_host_warning(allowed, "app"):
            typer.echo(warning, err=True)
        os.execve(command[0], command, env)  # Streamlit takes this process: a SIGTERM to it stops the server


def register(root: typer.Typer) -> None:
    root.command(cls=ClickCommand)(serve)
    root.command("app", cls=ClickCommand)(app)
