"""`fakescope generate`: make ai images from real ones (taef2, OpenAI Images API, local diffusers)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from fakescope.cli._errors import clean_errors, sigterm_as_interrupt
from fakescope.cli._options import DeviceOpt, OutDirOpt, SeedOpt
from fakescope.cli._style import ClickCommand, ClickGroup
from fakescope.generate.openai_models import DEFAULT_MODEL, MAX_N

if TYPE_CHECKING:
    from fakescope.generate.openai_images import OpenAIImagesConfig
    from fakescope.generate.runner import RunReport

UNCAPPED_REQUESTS = 20
"""The most requests `generate openai` sends without --max-images, a spend budget or --yes."""

_SRC_HELP = ("Image file or folder (path or storage URI), a quoted local glob ('photos/**/*.jpg'), or a dataset manifest "
             "(.csv/.parquet, or a quoted glob of them) whose real rows are the sources")
SrcArg = Annotated[str, typer.Argument(help=f"{_SRC_HELP}.")]
OpenAISrcArg = Annotated[str, typer.Argument(help=f"{_SRC_HELP}; for `--mode generate` a UTF-8 text file, one prompt per line "
                                             "(blank lines skipped).")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="With a manifest SRC: only the real rows of this split (train, "
                                              "val, test; default: every split).")]
ManifestOpt = Annotated[str, typer.Option("--manifest", help="Manifest file name inside --out (.csv or .parquet).")]
Taef2BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Same-size images per forward pass, at most 1 "
                                            "megapixel in all; larger images run in tiles (same output).")]
DiffusersBatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Same-size images per pipeline call.")]


class SaveFormat(str, Enum):
    source = "source"
    png = "png"


SaveFormatOpt = Annotated[SaveFormat, typer.Option("--format", help=(
    "source: each ai image saved like its source, so the file tells nothing: a JPEG's with its quantization tables "
    "and subsampling, a WebP's as WebP (lossless, or quality 80 for a lossy one), any other as PNG; in the source's "
    "colour mode (greyscale, palette) with its alpha and ICC profile; 16-bit sources give 8-bit images. png: every "
    "one an RGB PNG, which makes the file format tell ai from JPEG reals."))]


def register(app: typer.Typer) -> None:
    """Add the `generate` command group."""
    sub = typer.Typer(help="Make ai images from real ones, with a manifest linking each to its source.", no_args_is_help=True,
                      cls=ClickGroup)
    sub.command("openai", cls=ClickCommand)(openai)
    sub.command("taef2", cls=ClickCommand)(taef2)
    sub.command("diffusers", cls=ClickCommand)(diffusers)
    app.add_typer(sub, name="generate")


def taef2(
    src: SrcArg,
    out: OutDirOpt,
    weights: Annotated[str | None, typer.Option("--weights", help="Folder with taef2_encoder.pth and taef2_decoder.pth (default "
                                                "$FAKESCOPE_TAEF2_WEIGHTS or ../shared/data/generators/taef2).")] = None,
    device: DeviceOpt = "auto",
    batch_size: Taef2BatchOpt = 8,
    manifest: ManifestOpt = "manifest.csv",
    split: SplitOpt = None,
    save_format: SaveFormatOpt = SaveFormat.source,
) -> None:
    """Reconstruct real images through the FLUX.2 tiny autoencoder: aligned ai images at the source's size.

    Exit status: 0 when every source was made (or done before), 1 when some could not be used (unreadable,
    too small), 2 on usage errors.
    """
    with clean_errors():
        from fakescope.generate.local import generate_local
        from fakescope.generate.taef2 import TAEF2

        model = TAEF2.from_dir(weights, device=device, batch_size=batch_size)
        count, manifest_uri, unusable, before = generate_local(
            src, out, model.reconstruct, generator="taef2", model="taef2",
            params={"weights": "taef2"}, batch_size=batch_size, manifest_name=manifest, split=split,
            output_format=save_format.value,
        )
        typer.echo(_written(count, manifest_uri, unusable, before))
    raise typer.Exit(1 if unusable else 0)


def openai(
    src: OpenAISrcArg,
    out: OutDirOpt,
    mode: Annotated[str, typer.Option("--mode", help="variation (a new photo of the same kind: on GPT image models an edit of "
                                      "the whole image; on dall-e-2 its variations endpoint), edit or generate.")] = "variation",
    model: Annotated[str, typer.Option("--model", "-m", help="gpt-image-2.6-flare/-sunburst, gpt-image-2.5-flare/-sunburst, "
                                       "gpt-image-2, ...; retired dall-e-2, dall-e-3, gpt-image-1 only with an OPENAI_BASE_URL "
                                       "server that serves them.")] = DEFAULT_MODEL,
    size: Annotated[str, typer.Option("--size", help="Output size: 1024x1024, 1536x1024, 1024x1536 or auto (gpt-image-2 and 2.5: "
                                      "any WxH, sides divisible by 16, aspect 1:3 to 3:1, at most 3840x2160); dall-e-2 "
                                      "256x256/512x512/1024x1024.")] = "1024x1024",
    quality: Annotated[str | None, typer.Option("--quality", help="low/medium/high/auto (GPT image models; 2.5 also xhigh/max), "
                                                "standard/hd (dall-e-3). Default: auto, or standard for dall-e.")] = None,
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_N, help="Images per source, each its own request.")] = 1,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Prompt for --mode edit (required there); for --mode variation "
                                               "on a GPT image model it replaces the built-in one.")] = None,
    mask: Annotated[str, typer.Option("--mask", help="For --mode edit, what may change: center (a centred box of half the width "
                                      "and height; the rest stays the photo), full, or a PNG whose transparent pixels mark "
                                      "it.")] = "center",
    input_fidelity: Annotated[str | None, typer.Option("--input-fidelity", help="high or low: how closely an edit (a GPT image "
                                                       "model's variation included) keeps the photo's style and features, faces "
                                                       "above all; default: the model's (low). gpt-image-1.5 takes both, "
                                                       "gpt-image-1-mini low, gpt-image-2 neither.")] = None,
    response_format: Annotated[str | None, typer.Option("--response-format", help="b64_json (default) or url, dall-e models "
                                                        "only: GPT image models always answer base64.")] = None,
    max_images: Annotated[int | None, typer.Option("--max-images", min=1, help="Stop after this many new images in this run. "
                                                   "Without it, a spend budget or --yes, a run that may send more than "
                                                   f"{UNCAPPED_REQUESTS} requests is refused, and one let through stops after "
                                                   f"{UNCAPPED_REQUESTS} images.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send as many requests as the sources need, unbudgeted.")] = False,
    max_spend: Annotated[float | None, typer.Option("--max-spend", min=0, help="Stop before this run's estimated spend exceeds "
                                                    "this (USD); earlier runs are not counted.")] = None,
    max_total_spend: Annotated[float | None, typer.Option("--max-total-spend", min=0, help="Stop before the estimated spend of "
                                                          "all runs into --out exceeds this (USD): what this ledger paid or may "
                                                          "have (requests whose answer was lost), plus, at this run's price, the "
                                                          "images --out holds (of any model and parameters) that it did not pay "
                                                          "for (another machine's) and the images it recorded as made at no cost "
                                                          "without a price (not those made at --price-per-image 0, which are "
                                                          "free); re-running with the same value spends nothing more.")] = None,
    price_per_image: Annotated[float | None, typer.Option("--price-per-image", min=0, help="USD per image for the budgets and "
                                                          "the recorded spend (0: free, e.g. a self-hosted server); needed for a "
                                                          "budget with GPT image models, which are billed by tokens (the table "
                                                          "has prices for the retired models only).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-j", min=1, help="Requests in flight at once.")] = 4,
    ledger: Annotated[str | None, typer.Option("--ledger", help="SQLite job ledger, this machine's record of what was paid "
                                               "(default: inside --out; for an s3:// or gdrive:// --out in "
                                               "$FAKESCOPE_CACHE/ledgers, else $XDG_CACHE_HOME/fakescope/ledgers, else "
                                               "~/.cache/fakescope/ledgers).")] = None,
    new_settings: Annotated[bool, typer.Option("--new-settings", help="Make images under other options (--mode, --model, --size, "
                                               "--quality, --prompt, --mask, --input-fidelity, --format, --resize-to-source) "
                                               "than those recorded for --out (its ledger's and manifest's): a second set beside "
                                               "the first. Without it such a run, as a rerun that left out an option, is refused "
                                               "in one line naming the options that differ, whatever its photos: new ones would "
                                               "mix two sets in one --out.")] = False,
    at_most_once: Annotated[bool, typer.Option("--at-most-once", help="Never resend a request a crash left in flight (may lose, "
                                               "never double-pays).")] = False,
    max_retries: Annotated[int, typer.Option("--max-retries", min=0, help="Client retries on 429/5xx and on connection errors "
                                             "before an answer, waiting as Retry-After says up to 120 s (longer: the run pauses, "
                                             "see --max-wait); an answer that times out or breaks off may be billed: never "
                                             "resent in the run.")] = 4,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for a byte of an answer; one that takes "
                                           "longer may still be made and billed, and is not resent in the run: raise it for "
                                           "slow, large or high-quality images.")] = 300.0,
    max_wait: Annotated[float, typer.Option("--max-wait", min=0, help="Seconds the run may pause in all for rate limits (a 429 "
                                            "whose Retry-After the client does not wait for: over 120 s, or once --max-retries "
                                            "are spent): it prints 'waiting N s, rate limited', then sends those jobs (unpaid) "
                                            "again; a longer wait stops it in one line saying when to rerun (exit 1).")] = 900.0,
    save_format: Annotated[SaveFormat | None, typer.Option("--format", help=(
        "source (default for edit and variation): each image saved like its photo, as generate taef2 saves them (a "
        "JPEG photo's as a JPEG with its quantization tables and subsampling, a WebP's as WebP, any other as PNG; its "
        "colour mode, alpha and ICC profile), so the file format tells nothing; the API's own PNG is not kept. png "
        "(default for --mode generate): the API's PNG byte for byte, as earlier versions saved it, which makes PNG "
        "tell ai from JPEG reals. The API is always asked for PNG, never JPEG: a JPEG answer re-encoded like its "
        "photo would be compressed twice."))] = None,
    resize_to_source: Annotated[bool, typer.Option("--resize-to-source", help="Resize each image to its photo's size (Lanczos), "
                                                   "so the size tells nothing either; a photo of another aspect than --size is "
                                                   "stretched back (dall-e-2's image, made from the photo's centred square, to "
                                                   "that square's size instead; the manifest's params record the box, crop). "
                                                   "Upscaling leaves a resampling trace (smooth, interpolated high frequencies) "
                                                   "that reals lack: generate taef2 pairs, made at the photo's size, have "
                                                   "none.")] = False,
    manifest: ManifestOpt = "manifest.csv",
    split: SplitOpt = None,
) -> None:
    """Make images with the OpenAI Images API (OPENAI_API_KEY, OPENAI_BASE_URL); re-run to resume.

    It first prints how many requests it may send (sources x --n, less the images --out holds already, known by their
    names); more than 20 need --max-images, a spend budget (--max-spend, --max-total-spend) or --yes. Each image's
    token usage (GPT image models) goes into the manifest's params; the run prints their total.

    Ctrl-C or `kill` (SIGTERM) finishes the requests in flight before stopping (saying how many), so none is paid
    twice; one before the plan is printed stops at once, saying nothing was sent.

    Exit status: 0 when no job failed (a budget stop included), 1 when some failed (recorded in the ledger; a re-run
    retries them), --at-most-once left some unresolved or a rate limit outlasted --max-wait, 2 on usage errors or an
    unreachable --out, 130 on Ctrl-C, 143 on SIGTERM.
    """
    with sigterm_as_interrupt() as stop, clean_errors():
        import openai as _  # noqa: F401 - the extra missing: said before any other check, as the other verbs say theirs

        from fakescope.generate.openai_images import OpenAIImagesConfig, make_client
        from fakescope.generate.runner import run_openai

        config = OpenAIImagesConfig(
            mode=mode, model=model, size=size, quality=quality, n=n, prompt=prompt, mask=mask,
            response_format=response_format, price_per_image=price_per_image, input_fidelity=input_fidelity,
            output_format=save_format.value if save_format else None, resize_to_source=resize_to_source,
        )
        planned: list[str] = []  # the plan, once printed: until then no request was sent
        limited = max_spend is not None or max_total_spend is not None or yes
        cap = max_images if max_images is not None or limited else UNCAPPED_REQUESTS  # the plan knows images by name
        try:
            report = run_openai(
                src, out, config, ledger=ledger, concurrency=concurrency, max_images=cap, max_spend=max_spend,
                max_total_spend=max_total_spend, split=split, retry_interrupted=not at_most_once,
                manifest_name=manifest, client=functools.partial(make_client, max_retries=max_retries, timeout=timeout),
                confirm=_confirm(config, max_images, limited, planned), new_settings=new_settings, max_wait=max_wait,
            )
        except KeyboardInterrupt:  # one the request loop did not catch: before it, or a second one while it drained
            typer.echo("stopped before sending any request: nothing was made or paid for" if not planned
                       else "stopped before the run finished; re-run to resume", err=True)
            raise typer.Exit(stop.exit_code) from None
        typer.echo(_summary(report, max_total_spend, config.known_price() is not None))
        if report.unresolved:
            typer.echo(f"warning: {report.unresolved} job(s) left unresolved: their requests were sent but no answer "
                       "was had (a crash, or an answer that timed out or broke off), so whether they were billed is "
                       "unknown; a rerun resends them, unless --at-most-once", err=True)
    if report.stopped == "interrupted":
        raise typer.Exit(stop.exit_code)
    rate_limited = (report.stopped or "").startswith("rate limited")
    raise typer.Exit(1 if report.failed or report.unresolved or rate_limited else 0)


def _confirm(config: OpenAIImagesConfig, max_images: int | None, limited: bool,
             planned: list[str]) -> Callable[[int, int, int], None]:
    """Print the run's plan (and add it to `planned`); refuse (ConfigError) one of more than UNCAPPED_REQUESTS
    requests that nothing limits (images --out holds already are not counted)."""
    from fakescope.errors import ConfigError

    def confirm(sources: int, requests: int, made: int) -> None:
        held = f", {made} made before" if made else ""
        price = config.known_price()  # None for models billed by tokens without --price-per-image: no estimate
        cost = f" (~${requests * price:.2f} at ${price:.3f} per image)" if price and requests else ""
        plan = (f"{sources} {'prompt' if config.mode == 'generate' else 'image'}(s) x --n {config.n}{held}: "
                f"up to {requests} request(s){cost}")
        if requests > UNCAPPED_REQUESTS and max_images is None and not limited:
            raise ConfigError(f"{plan}, more than {UNCAPPED_REQUESTS} without a limit: pass --max-images N, a budget "
                              "(--max-spend, --max-total-spend) or --yes")
        stop = f", --max-images {max_images}" if max_images is not None and max_images < requests else ""
        planned.append(f"{plan}{stop} (jobs done before are skipped, unpaid)")
        typer.echo(planned[-1])

    return confirm


def _written(count: int, manifest_uri: str | None, unusable: int, before: int) -> str:
    done = f", {before} already made" if before else ""  # by an earlier run: a rerun resumes
    skipped = f", {unusable} unusable source(s) skipped" if unusable else ""
    return f"{count} images written{done}{skipped}; " + (
        f"manifest {manifest_uri}" if manifest_uri else "no manifest: no source could be read")


def _summary(report: RunReport, max_total_spend: float | None, priced: bool = True) -> str:
    total = report.spent_before + report.spent
    left = f", ${max(max_total_spend - total, 0):.3f} left of --max-total-spend" if max_total_spend is not None else ""
    counted = f", {report.elsewhere} image(s) paid elsewhere included" if report.elsewhere else ""
    counted += f", {report.unpriced} image(s) recorded without a price included" if report.unpriced else ""
    maybe = report.maybe_before + report.maybe  # requests whose answer was lost: the API may have billed them
    split = f": ${total - maybe:.3f} billed, ${maybe:.3f} may have been (answers lost)" if maybe > 1e-9 else ""
    this = f", of which ${report.maybe:.3f} may have been billed" if report.maybe > 1e-9 else ""
    spend = (f"estimated spend ${report.spent:.3f}{this} (all runs ${total:.3f}{split}{counted}{left})" if priced
             else "estimated spend unknown (no price for this model; see --price-per-image)")
    return (
        f"done {report.done}, already done {report.skipped}, recovered {report.recovered}, failed {report.failed}, "
        f"unresolved {report.unresolved}, {spend}, "
        + (f"tokens {report.tokens or 0}" if report.tokens is not None or not report.done + report.recovered
           else "tokens not reported")  # a run that made nothing used none
        + (f", stopped: {report.stopped}" if report.stopped else "")
        + (f"; manifest {report.manifest}" if report.manifest else "")
    )


def diffusers(
    src: SrcArg,
    out: OutDirOpt,
    pipeline: Annotated[str, typer.Option("--pipeline", help="Local Stable Diffusion folder (diffusers layout).")],
    prompt: Annotated[str, typer.Option("--prompt", help="Text prompt for img2img.")] = "a photo",
    strength: Annotated[float, typer.Option("--strength", min=0.0, max=1.0, help="How far from the source (0-1).")] = 0.3,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps.")] = 30,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.")] = 7.5,
    seed: SeedOpt = 0,
    max_side: Annotated[int, typer.Option("--max-side", min=8, help="Longest side the pipeline works at; larger sources are "
                                          "scaled down for it and the output scaled back to the source's size.")] = 1024,
    device: DeviceOpt = "auto",
    batch_size: DiffusersBatchOpt = 1,
    manifest: ManifestOpt = "manifest.csv",
    split: SplitOpt = None,
    save_format: SaveFormatOpt = SaveFormat.source,
) -> None:
    """img2img from real images with local Stable Diffusion weights (needs `diffusers` and `transformers`).

    Exit status: 0 when every source was made (or done before), 1 when some could not be used (unreadable,
    too small), 2 on usage errors.
    """
    with clean_errors():
        from fakescope.generate.diffusers_backend import DiffusersImg2Img
        from fakescope.generate.local import generate_local

        backend = DiffusersImg2Img.from_pretrained(
            pipeline, device=device, prompt=prompt, strength=strength, steps=steps, guidance=guidance, seed=seed,
            max_side=max_side,
        )
        count, manifest_uri, unusable, before = generate_local(
            src, out, backend.generate, generator="stable-diffusion-img2img", model=backend.name,
            params=backend.params(), batch_size=batch_size, manifest_name=manifest, split=split,
            output_format=save_format.value,
        )
        typer.echo(_written(count, manifest_uri, unusable, before))
    raise typer.Exit(1 if unusable else 0)
