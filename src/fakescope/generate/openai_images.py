"""The OpenAI Images API as a generator: variations, edits and generations, one image per request.

The models it knows (`fakescope.generate.openai_models`): GPT image models (the default,
`gpt-image-2.6-flare`) make edits and generations; `variation` mode on them is an edit of the whole
image, with no mask, by `VARIATION_PROMPT` (or your `prompt`): a new photo of the same kind. On
dall-e-2 it is the legacy variations endpoint. dall-e-2, dall-e-3 and gpt-image-1 are retired on
api.openai.com: a run there refuses them at once; other servers (`OPENAI_BASE_URL`) may still serve them.

Every request asks for exactly one image (`n=1` on the wire), so one request is one billable
job in the ledger and "never pay twice for (input, index)" holds per request. `n` in
`OpenAIImagesConfig` is how many images to make per source.

Credentials: `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`) from the environment or a
`.env` file; the key is never logged or echoed.

Prices (`PRICES`, USD per output image, OpenAI list prices of 2025, for the retired models only) are
estimates for the `max_spend` and `max_total_spend` budgets and the cost the ledger records: edits and
variations cost like generations of the same size/quality. Current GPT image models are billed by
tokens and have no price here: budgets need `price_per_image`, and each image's token `usage`, as the
API reports it, goes into the ledger and the manifest's params.

Edits change only what their mask marks (transparent pixels): by default a centred box of half the
image's width and height, so the rest of the ai image is the real photo's (a local edit, as
inpainting tools make); `mask="full"` lets the whole image change, and a PNG file gives its own mask.

How an image is saved (`fakescope.generate._outputs`): under `output_format="source"` (the default for image
sources) like its source, as `fakescope.generate._encoding` saves a local generator's (a JPEG source's as a JPEG with
its quantization tables and subsampling, ...), so the file format tells nothing; the API's own PNG is not kept.
`png` keeps the API's answer byte for byte (what earlier versions saved). The API is always asked for a PNG, never
its `output_format` jpeg or webp: the only lossy compression of a saved image is then the source's, as a real photo
has it once; a lossy answer re-encoded like its source would be compressed twice, a trace reals lack.
`resize_to_source` resizes the image to its source's size (Lanczos), so the size tells nothing either; dall-e-2's,
made from the source's centred square (`crop_box`, recorded as its manifest row's `crop`), to that square's size.

A source over `MAX_UPLOAD_PIXELS` (whose PNG could pass the API's upload limit) is sent downscaled, keeping its
aspect (Lanczos), and its manifest row's params record the size sent (`upload`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from PIL import Image

from fakescope._quiet import ignore_warning
from fakescope.errors import ConfigError, FakescopeError, ImageLoadError
from fakescope.generate._encoding import SAVE_FORMATS
from fakescope.generate.openai_models import (
    DALL_E,
    DEFAULT_MODEL,
    INPUT_FIDELITIES,
    MAX_N,
    MODELS,
    check_options,
    family,
    prompt_too_long,
    retirement,
)
from fakescope.io import storage
from fakescope.io.fetch import FetchError, fetch_public
from fakescope.io.image import load_image, pixel_limit
from fakescope.io.redact import hide_secrets, redact_http_logs, shown_url

MODES = ("variation", "edit", "generate")
MASKS = ("center", "full")
MAX_SIZE_SIDE = 4096
"""The largest side a `size` may ask for (the API's sizes reach 1792); dall-e-2 uploads are resized to `size` first."""
SHARED_PARAMETERS = ("model", "size", "quality", "response_format", "input_fidelity")
"""Request parameters every request of a run sends alike: a 400 naming one stops the run (no later request can pass);
`prompt` too, outside `generate` mode (an edit's `--prompt`)."""
ACCOUNT_EXHAUSTED = ("insufficient_quota", "billing_hard_limit_reached")
"""Error codes (429 and 400) that refuse every request until the account is topped up: they stop a run."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
"""The most an image URL the API answers may download."""
IMAGE_URL_TIMEOUT_S = 120.0
"""Seconds an image URL the API answers may take in all (one deadline: redirects and a dripped answer included)."""
MAX_UPLOAD_PIXELS = 16_000_000
"""The most pixels a GPT image model's upload has: a source over it is sent downscaled, as its RGB PNG (at most 3 bytes
a pixel and a little) could pass the API's 50 MB upload limit. dall-e-2's uploads are cut to `size` (at most 1024x1024,
under its 4 MB limit)."""
VARIATION_PROMPT = (
    "A new photograph of the same kind as this one: a different person or scene, in the same style, framing, "
    "lighting and image quality, as if taken with the same camera. Do not copy or retouch this image."
)
"""What `variation` mode asks a GPT image model for (as an edit of the whole image), unless `prompt` is given."""
PRICES: dict[tuple[str, str, str], float] = {
    ("dall-e-2", "256x256", "standard"): 0.016,
    ("dall-e-2", "512x512", "standard"): 0.018,
    ("dall-e-2", "1024x1024", "standard"): 0.020,
    ("dall-e-3", "1024x1024", "standard"): 0.040,
    ("dall-e-3", "1024x1792", "standard"): 0.080,
    ("dall-e-3", "1792x1024", "standard"): 0.080,
    ("dall-e-3", "1024x1024", "hd"): 0.080,
    ("dall-e-3", "1024x1792", "hd"): 0.120,
    ("dall-e-3", "1792x1024", "hd"): 0.120,
    ("gpt-image-1", "1024x1024", "low"): 0.011,
    ("gpt-image-1", "1024x1536", "low"): 0.016,
    ("gpt-image-1", "1536x1024", "low"): 0.016,
    ("gpt-image-1", "1024x1024", "medium"): 0.042,
    ("gpt-image-1", "1024x1536", "medium"): 0.063,
    ("gpt-image-1", "1536x1024", "medium"): 0.063,
    ("gpt-image-1", "1024x1024", "high"): 0.167,
    ("gpt-image-1", "1024x1536", "high"): 0.250,
    ("gpt-image-1", "1536x1024", "high"): 0.250,
}
"""USD per image by (model, size, quality); `auto` size/quality are priced at the dearest entry."""


class LostImageError(FakescopeError):
    """The API made (and billed) an image that could not be had: its answer could not be read, its URL failed, or it is
    not an image."""


class PromptRefused(FakescopeError):
    """The API refused one of `generate` mode's prompts (unbilled): its job fails, the others are sent."""


class AnswerLost(FakescopeError):
    """A sent request's answer timed out or broke off: the API may have made and billed its image (not resent)."""


@dataclass(frozen=True)
class OpenAIImagesConfig:
    """What to ask the Images API for.

    Args:
        mode: `variation` (a GPT image model's edit of the whole image by `VARIATION_PROMPT`; dall-e-2's
            variations endpoint), `edit` or `generate` (dall-e-3: generate only).
        model: API model name; see `openai_models.MODELS` for the known ones (others are not checked).
        size: Output size: `1024x1024`, `1536x1024`, `1024x1536` or `auto` for GPT image models (gpt-image-2
            and 2.5 also WxH, sides divisible by 16, aspect 1:3 to 3:1, at most 3840x2160).
        quality: `low`/`medium`/`high`/`auto` for GPT image models (2.5 also `xhigh`/`max`), `standard`/`hd`
            (dall-e-3); None = model default.
        n: Images per source, 1 to `MAX_N` (each its own request and ledger job).
        prompt: Required for `edit`; for `variation` on a GPT image model it replaces `VARIATION_PROMPT`;
            `generate` reads prompts from its source instead (and refuses one given here).
        mask: For `edit`, what may change: `center` (a centred box of half the width and height),
            `full`, or a PNG file (path or storage URI) whose transparent pixels mark it.
        response_format: `b64_json` (None: the default) or `url`, sent to dall-e models only; other models
            always answer base64 (`url` is refused for them).
        price_per_image: Override `PRICES` (USD), e.g. for new models or negotiated rates.
        input_fidelity: `high` or `low`: how closely an edit (a GPT image model's variation included) keeps the input's
            style and features, faces above all; None: the model's default (`low`). gpt-image-1.5 takes both,
            gpt-image-1-mini `low`, gpt-image-2 neither; models the API reference is silent on are not checked.
        output_format: `source` (each image saved like its source) or `png` (the API's PNG, unchanged); None: `source`,
            `png` in `generate` mode (no source to follow, and `source` is refused there). See the module.
        resize_to_source: Resize each image to its source's size (Lanczos; not in `generate` mode).
    """

    mode: str = "variation"
    model: str = DEFAULT_MODEL
    size: str = "1024x1024"
    quality: str | None = None
    n: int = 1
    prompt: str | None = None
    mask: str = "center"
    response_format: str | None = None
    price_per_image: float | None = None
    input_fidelity: str | None = None
    output_format: str | None = None
    resize_to_source: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not re.fullmatch(r"[\w][\w.:+-]{0,99}", self.model, re.ASCII):  # it names output files and folders
            raise ConfigError("model: expected a plain name (letters, digits, . _ : + -, at most 100 characters), "
                              f"as {DEFAULT_MODEL}")
        if self.mode == "edit" and not self.prompt:
            raise ConfigError("edit mode needs a prompt")
        if self.mode == "generate" and self.prompt is not None:  # it was recorded in the manifest, never sent
            raise ConfigError("generate mode takes its prompts from its source, one per line; prompt (--prompt) is for "
                              "edit and variation")
        if self.mode == "edit" and self.mask not in MASKS:
            self.mask_image  # noqa: B018 - a missing or unusable mask file fails before any request
        sides = re.fullmatch(r"(\d{1,6})x(\d{1,6})", self.size, re.ASCII)
        if self.size != "auto" and not (sides and all(0 < int(side) <= MAX_SIZE_SIDE for side in sides.groups())):
            raise ConfigError(f"size: expected WIDTHxHEIGHT with sides of 1 to {MAX_SIZE_SIDE} pixels (as 1024x1024), or auto")
        if self.input_fidelity is not None and self.input_fidelity not in INPUT_FIDELITIES:
            raise ConfigError(f"input_fidelity must be {' or '.join(INPUT_FIDELITIES)}")
        if self.input_fidelity is not None and (self.mode == "generate" or self.legacy):
            raise ConfigError(f"input_fidelity is for edits by GPT image models; {self.model} {self.mode} sends none")
        check_options(self.model, self.mode, self.size, self.quality, self.input_fidelity)
        if self.prompt is not None and (too_long := prompt_too_long(self.model, self.prompt)):  # before any upload
            raise ConfigError(f"prompt: {too_long}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or not 1 <= self.n <= MAX_N:
            raise ConfigError(f"n must be a whole number from 1 to {MAX_N} (images per source), got {self.n!r}")
        if self.response_format not in (None, "b64_json", "url"):
            raise ConfigError("response_format must be b64_json or url")
        if self.response_format == "url" and not self.legacy:  # b64_json: what it answers anyway (old job records say so)
            raise ConfigError(f"response_format url is for dall-e models; {self.model} always answers base64")
        if self.output_format not in (None, *SAVE_FORMATS):
            raise ConfigError(f"output format {self.output_format!r}: use {' or '.join(SAVE_FORMATS)}")
        if self.mode == "generate" and (self.output_format == "source" or self.resize_to_source):
            raise ConfigError("generate mode has no source image to follow: --format source and --resize-to-source are "
                              "for edit and variation (its images are saved as the API answers them)")

    @property
    def save_format(self) -> str:
        """`output_format`, or its default: `source`, `png` in `generate` mode."""
        return self.output_format or ("png" if self.mode == "generate" else "source")

    @property
    def legacy(self) -> bool:
        """A dall-e model (known, or unknown but so named): variations endpoint, response_format, no usage."""
        return family(self.model) == DALL_E or (self.model not in MODELS and self.model.startswith("dall-e"))

    @property
    def edit_prompt(self) -> str | None:
        """The prompt an edit sends: `prompt`, or `VARIATION_PROMPT` for a variation made as an edit."""
        return (self.prompt or VARIATION_PROMPT) if self.mode == "variation" and not self.legacy else self.prompt

    @property
    def resolved_quality(self) -> str | None:
        """The quality sent (or implied); None where the model has no such option."""
        if self.quality or self.model not in MODELS:
            return self.quality
        return MODELS[self.model].qualities[0] if self.legacy else "auto"

    def params(self) -> dict[str, Any]:
        """The parameters that determine the output: recorded in the manifest and hashed into job keys.

        An edit's mask is `center`, `full` or `png:` and the first 16 hex digits of the mask file's sha256;
        a variation made as an edit records `"via": "edit"` and the prompt it sends; `input_fidelity` only where set;
        `"format": "source"` and `"resize": "source"` only under those settings (so `png`, what earlier versions saved,
        keeps their job keys).
        """
        params = {"mode": self.mode, "size": self.size, "quality": self.resolved_quality, "prompt": self.edit_prompt}
        if self.mode == "variation" and not self.legacy:
            params["via"] = "edit"
        if self.mode == "edit":
            params["mask"] = self.mask if self.mask in MASKS else f"png:{self._mask_sha256[:16]}"
        if self.input_fidelity is not None:  # absent otherwise, so earlier runs' job keys still match
            params["input_fidelity"] = self.input_fidelity
        if self.save_format == "source":
            params["format"] = "source"
        if self.resize_to_source:
            params["resize"] = "source"
        return params

    @cached_property
    def _mask_bytes(self) -> bytes:
        return storage.read_bytes(self.mask)

    @cached_property
    def _mask_sha256(self) -> str:
        return hashlib.sha256(self._mask_bytes).hexdigest()

    @cached_property
    def mask_image(self) -> Image.Image:
        """The mask file as RGBA.

        Raises:
            ConfigError: it is not an image, or it has no transparent pixel (it would mark nothing to change).
        """
        data = self._mask_bytes
        try:
            with pixel_limit():
                image = Image.open(io.BytesIO(data)).convert("RGBA")
        except ImageLoadError as exc:  # over twice MAX_PIXELS (`pixel_limit`)
            raise ConfigError(f"edit mask {self.mask}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"edit mask {self.mask} is not a readable image ({type(exc).__name__})") from None
        if image.getchannel("A").getextrema()[0] == 255:
            raise ConfigError(f"edit mask {self.mask} has no transparent pixel; make transparent what the edit may change")
        return image

    def params_hash(self) -> str:
        """Short stable hash of `params()`."""
        return params_hash(self.params())

    def price(self) -> float:
        """Estimated USD per image.

        Raises:
            ConfigError: no price is known for this model/size/quality and none was given.
        """
        if (price := self.known_price()) is None:
            billed = " (it is billed by tokens)" if not self.legacy else ""
            raise ConfigError(
                f"no price known for {self.model} at size {self.size}, quality {self.resolved_quality}{billed}; "
                "a budget needs your USD per image: pass price_per_image (--price-per-image)"
            )
        return price

    def known_price(self) -> float | None:
        """`price_per_image`, else the dearest matching `PRICES` entry, else None."""
        if self.price_per_image is not None:
            return self.price_per_image
        quality = self.resolved_quality
        candidates = [
            price for (model, size, qual), price in PRICES.items()
            if model == self.model and self.size in (size, "auto") and quality in (qual, "auto")
        ]
        return max(candidates, default=None)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)

    def edit_mask(self, size: tuple[int, int]) -> tuple[str, bytes, str] | None:
        """The mask upload for an edit of an image of `size`, or None where none is sent (a GPT model's `full`, a variation)."""
        width, height = size
        if self.mode == "variation":
            return None
        if self.mask == "full":
            if not self.legacy:
                return None
            mask = Image.new("RGBA", size, (0, 0, 0, 0))  # dall-e-2 edits only what is transparent
        elif self.mask == "center":
            mask = Image.new("RGBA", size, (255, 255, 255, 255))
            mask.paste((0, 0, 0, 0), (width // 4, height // 4, width - width // 4, height - height // 4))
        else:
            mask = self.mask_image.resize(size, Image.NEAREST)
        buffer = io.BytesIO()
        mask.save(buffer, format="PNG")
        return "mask.png", buffer.getvalue(), "image/png"


def make_client(max_retries: int = 4, timeout: float = 300.0, *, api_key: str | None = None):
    """Build an `openai.OpenAI` client for `api_key`, else `OPENAI_API_KEY` (environment or `.env`);
    `OPENAI_BASE_URL` applies either way. Surrounding whitespace (a pasted newline) is dropped from the key. The
    `httpx` and `openai` loggers name URLs without their query or user info (`redact_http_logs`).

    The client itself retries 429, 408, 409, 5xx and connection errors with exponential
    backoff (0.5 s doubling to 8 s, up to 25 % jitter) and honours `Retry-After` up to 120 s
    (a longer one is not retried: the run pauses for it, `fakescope.generate._loop`, and sends the job
    again); the runner adds no other retries, so nothing is retried twice. An answer that times out (`timeout` seconds
    without a byte) or breaks off is not resent: it may have been billed (`AnswerLost`, `_client`). Its `stop()` (the run's
    Ctrl-C) ends a wait before a retry at once and sends nothing more.

    Raises:
        ConfigError: no API key is configured.
    """
    import openai  # noqa: F401 - missing, the install hint comes before the key's absence

    storage.load_env_file()
    key = (api_key or os.environ.get("OPENAI_API_KEY") or "").strip()  # a newline: every request a bare "Connection error."
    if not key:
        raise ConfigError("OPENAI_API_KEY is not set: export it, or put OPENAI_API_KEY=... in a .env file in the working "
                          "directory or above (OPENAI_BASE_URL too, for another server)")
    from fakescope.generate._client import StoppableClient

    redact_http_logs()
    return StoppableClient(api_key=key, max_retries=max_retries, timeout=timeout)


def params_hash(params: dict[str, Any]) -> str:
    """Short stable hash of a run's `OpenAIImagesConfig.params()` (job keys, output names)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def crop_box(size: tuple[int, int], config: OpenAIImagesConfig) -> tuple[int, int, int, int] | None:
    """The centred square (left, top, right, bottom) of an upright image of `size` that dall-e-2's upload is cut to;
    None for other models, which are sent the whole image."""
    if config.model != "dall-e-2":
        return None
    width, height = size
    side = min(size)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def upload_size(size: tuple[int, int], config: OpenAIImagesConfig) -> tuple[int, int] | None:
    """The size a GPT image model's upload of an upright image of `size` is downscaled to (aspect kept), or None where
    it is sent at its own size (at most `MAX_UPLOAD_PIXELS`; dall-e-2's uploads are cut to `size` instead)."""
    width, height = size
    if config.model == "dall-e-2" or width * height <= MAX_UPLOAD_PIXELS:
        return None
    scale = (MAX_UPLOAD_PIXELS / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def prepare_upload(data: bytes, config: OpenAIImagesConfig) -> tuple[str, bytes, str]:
    """Turn a source image into the `(filename, bytes, mime)` the API accepts.

    dall-e-2 wants a square PNG under 4 MB: the image is cut to its `crop_box` and
    resized to the requested size. Other models take the image as a PNG at its own size, downscaled (Lanczos, aspect
    kept) to `upload_size` where it has over `MAX_UPLOAD_PIXELS`.
    """
    image = load_image(data).image
    if (smaller := upload_size(image.size, config)) is not None:
        image = image.resize(smaller, Image.LANCZOS)
    if (box := crop_box(image.size, config)) is not None:
        target = int(config.size.split("x")[0]) if "x" in config.size else 1024
        image = image.crop(box).resize((target, target), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "image.png", buffer.getvalue(), "image/png"


def request_image(
    client, config: OpenAIImagesConfig, *, source: bytes | None = None, prompt: str | None = None
) -> tuple[bytes, dict | None]:
    """Send one request for one image; return the image bytes (decoded or fetched from its URL) and the
    token `usage` the API reported for it (GPT image models), else None.

    Raises:
        ConfigError: the API refused the key, the model, the endpoint or a parameter every request sends alike (no later
            request can succeed).
        PromptRefused: the API refused `prompt` (400 naming it; a model outside `openai_models.MODELS` has no length
            checked before): that prompt's job fails, the run goes on.
        LostImageError: the API answered (and billed) an image that could not be had: its answer could not be read
            (not JSON, no image, broken base64), or its URL could not be fetched.
    """
    import openai

    try:
        answer = _send(client, config, source, prompt)  # a 2xx answer, read whole: the image is billed
    except openai.APIStatusError as exc:
        if (refusal := _refusal(exc, config)) is not None:
            raise refusal from None  # the client's error holds the server's text, which may echo the key
        if prompt is not None and isinstance(exc, openai.BadRequestError) and getattr(exc, "param", None) == "prompt":
            raise PromptRefused(f"the Images API refused this prompt (400): {_api_message(exc)}") from None
        raise
    try:
        response = answer.parse()
        usage = response.usage.model_dump(exclude_none=True) if getattr(response, "usage", None) else None
        return _image_bytes(response.data[0], client.base_url), usage
    except LostImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - not JSON, no image in it, broken base64: billed all the same
        raise LostImageError(f"the API answered {answer.status_code} (billed) but its answer could not be read: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _send(client, config: OpenAIImagesConfig, source: bytes | None, prompt: str | None):
    """The API's raw answer to one request for one image (parsed by the caller, so an answer that cannot be is known to
    have come): dall-e-2's variations endpoint, an edit, or a generation."""
    options: dict[str, Any] = {"model": config.model, "n": 1, "size": config.size}
    if config.legacy:  # GPT image models refuse it: they always answer base64
        options["response_format"] = config.response_format or "b64_json"
    if config.quality and not (config.mode == "variation" and config.legacy):
        options["quality"] = config.quality
    if config.mode == "variation" and config.legacy:
        quiet_variation_warning()  # process-wide on purpose: the run's worker threads send at once (see there)
        return client.images.with_raw_response.create_variation(image=prepare_upload(source, config), **options)
    if config.mode == "generate":
        return client.images.with_raw_response.generate(prompt=prompt, **options)
    upload = prepare_upload(source, config)
    if (mask := config.edit_mask(Image.open(io.BytesIO(upload[1])).size)) is not None:
        options["mask"] = mask
    if config.input_fidelity is not None:
        options["input_fidelity"] = config.input_fidelity
    return client.images.with_raw_response.edit(image=upload, prompt=config.edit_prompt, **options)


def _refusal(exc, config: OpenAIImagesConfig) -> ConfigError | None:
    """The error that stops a run for a refusal no later request can get past (the account, the key, the model,
    the endpoint, a parameter every request sends alike); None for one that may pass (a rate limit, a bad image, one
    of `generate` mode's prompts)."""
    import openai

    model = config.model
    code = getattr(exc, "code", None)
    if code in ACCOUNT_EXHAUSTED:  # every later request would be refused alike
        return ConfigError(f"the OpenAI account cannot pay for more images ({code}): {_api_message(exc)}; add credit or "
                           "raise the account's usage limit (platform.openai.com billing settings), then rerun")
    if code == "model_not_found" or isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError,
                                                      openai.NotFoundError)):
        fix = {401: _key_fix(exc),
               403: f"; check that the key's organization and project may use {model} (verification, model access)"}
        return ConfigError(f"the Images API refused the request ({exc.status_code}): {_api_message(exc, model)}"
                           f"{fix.get(exc.status_code, '')}")
    shared = (*SHARED_PARAMETERS, *(("prompt",) if config.mode != "generate" else ()))
    if isinstance(exc, openai.BadRequestError) and (param := getattr(exc, "param", None)) in shared:
        return ConfigError(f"the Images API refused {param} for {model} (400): {_api_message(exc)}; every request sends "
                           f"it alike: change it (--{param.replace('_', '-')})")
    return None


def quiet_variation_warning() -> None:
    """Keep out of stderr the `openai` client's DeprecationWarning for `images.create_variation` (dall-e-2's variations
    endpoint, chosen on purpose), only as called here (through its `with_raw_response` wrapper, which the warning names).
    Idempotent and process-wide, as one filter list entry (`fakescope._quiet`: a run's worker threads send at once),
    hiding that message from these two modules only, and no other warning."""
    ignore_warning(r"deprecated\Z", DeprecationWarning, rf"({re.escape(__name__)}|openai\._legacy_response)\Z")


def _image_bytes(item, api_base) -> bytes:
    """The image of one answer: base64, or fetched from its URL (public addresses or the API's own server only)."""
    if item.b64_json:
        return base64.b64decode(item.b64_json)
    try:
        return fetch_public(item.url or "", max_bytes=MAX_IMAGE_BYTES, timeout=IMAGE_URL_TIMEOUT_S, trusted=(str(api_base),))
    except FetchError as exc:
        raise LostImageError(f"the API made the image but its URL could not be fetched: {exc} "
                             f"({shown_url(item.url or '')})") from None


def _key_fix(exc) -> str:
    """What to do about a refused key: OPENAI_API_KEY's, or one the caller gave (the web app's field, X-OpenAI-Key),
    where setting OPENAI_API_KEY would change nothing."""
    sent = exc.request.headers.get("Authorization", "").removeprefix("Bearer ")
    if sent == (os.environ.get("OPENAI_API_KEY") or "").strip():
        return "; set a valid OPENAI_API_KEY (environment or .env)"
    return "; check the key given"


def _api_message(exc, model: str | None = None) -> str:
    if exc.status_code == 401:  # the server's text may echo part of the key
        return "the API key was refused"
    body = exc.body if isinstance(exc.body, dict) else {}
    key = exc.request.headers.get("Authorization", "").removeprefix("Bearer ")  # a server or proxy may echo it
    message = hide_secrets(str(body.get("message") or exc.message), key)[:300]
    if model and (exc.status_code == 404 or getattr(exc, "code", None) == "model_not_found"):
        message += f" ({retirement(model)})"
    return message
