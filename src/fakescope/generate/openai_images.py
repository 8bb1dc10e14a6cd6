"""The OpenAI Images API as a generator: variations, edits and generations, one image per request.

Every request asks for exactly one image (`n=1` on the wire), so one request is one billable
job in the ledger and "never pay twice for (input, index)" holds per request. `n` in
`OpenAIImagesConfig` is how many images to make per source.

Credentials: `OPENAI_API_KEY` (and optionally `OPENAI_BASE_URL`) from the environment or a
`.env` file; the key is never logged or echoed.

Prices (`PRICES`, USD per output image, OpenAI list prices of 2025) are estimates for the
`max_spend` and `max_total_spend` budgets and the cost the ledger records: edits and variations
cost like generations of the same size/quality, and gpt-image-1's input-image tokens are not
counted. Unknown combinations need `price_per_image`.

Edits change only what their mask marks (transparent pixels): by default a centred box of half the
image's width and height, so the rest of the ai image is the real photo's (a local edit, as
inpainting tools make); `mask="full"` lets the whole image change, and a PNG file gives its own mask.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from PIL import Image

from fakescope.errors import ConfigError, FakescopeError
from fakescope.io import storage
from fakescope.io.image import load_image

MODES = ("variation", "edit", "generate")
MASKS = ("center", "full")
MAX_SIZE_SIDE = 4096
"""The largest side a `size` may ask for (the API's sizes reach 1792); dall-e-2 uploads are resized to `size` first."""
ACCOUNT_EXHAUSTED = ("insufficient_quota", "billing_hard_limit_reached")
"""Error codes (429 and 400) that refuse every request until the account is topped up: they stop a run."""
MODELS_BY_MODE = {
    "variation": ("dall-e-2",),
    "edit": ("dall-e-2", "gpt-image-1"),
    "generate": ("dall-e-2", "dall-e-3", "gpt-image-1"),
}
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
DEFAULT_QUALITY = {"dall-e-2": "standard", "dall-e-3": "standard", "gpt-image-1": "auto"}


class LostImageError(FakescopeError):
    """The API made (and billed) an image that could not be had: its URL failed, or it is not an image."""


@dataclass(frozen=True)
class OpenAIImagesConfig:
    """What to ask the Images API for.

    Args:
        mode: `variation` (dall-e-2), `edit` (dall-e-2, gpt-image-1) or `generate` (any model).
        model: API model name.
        size: Output size such as `1024x1024` (or `auto` for gpt-image-1).
        quality: `standard`/`hd` (dall-e-3), `low`/`medium`/`high`/`auto` (gpt-image-1); None = model default.
        n: Images per source (each its own request and ledger job).
        prompt: Required for `edit`; `generate` reads prompts from its source instead.
        mask: For `edit`, what may change: `center` (a centred box of half the width and height),
            `full`, or a PNG file (path or storage URI) whose transparent pixels mark it.
        response_format: `b64_json` or `url` for dall-e models (gpt-image-1 always answers b64_json).
        price_per_image: Override `PRICES` (USD), e.g. for new models or negotiated rates.
    """

    mode: str = "variation"
    model: str = "dall-e-2"
    size: str = "1024x1024"
    quality: str | None = None
    n: int = 1
    prompt: str | None = None
    mask: str = "center"
    response_format: str = "b64_json"
    price_per_image: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not re.fullmatch(r"[\w][\w.:+-]{0,99}", self.model, re.ASCII):  # it names output files and folders
            raise ConfigError("model: expected a plain name (letters, digits, . _ : + -, at most 100 characters), "
                              "as dall-e-2 or gpt-image-1")
        if self.model in DEFAULT_QUALITY and self.model not in MODELS_BY_MODE[self.mode]:
            raise ConfigError(f"{self.model} does not support {self.mode}; use {', '.join(MODELS_BY_MODE[self.mode])}")
        if self.mode == "edit" and not self.prompt:
            raise ConfigError("edit mode needs a prompt")
        if self.mode == "edit" and self.mask not in MASKS:
            self.mask_image  # noqa: B018 - a missing or unusable mask file fails before any request
        sides = re.fullmatch(r"(\d{1,6})x(\d{1,6})", self.size, re.ASCII)
        if self.size != "auto" and not (sides and all(0 < int(side) <= MAX_SIZE_SIDE for side in sides.groups())):
            raise ConfigError(f"size: expected WIDTHxHEIGHT with sides of 1 to {MAX_SIZE_SIDE} pixels (as 1024x1024), or auto")
        if self.n < 1:
            raise ConfigError("n must be at least 1")
        if self.response_format not in ("b64_json", "url"):
            raise ConfigError("response_format must be b64_json or url")

    @property
    def resolved_quality(self) -> str | None:
        """The quality sent (or implied); None where the model has no such option."""
        return self.quality or DEFAULT_QUALITY.get(self.model)

    def params(self) -> dict[str, Any]:
        """The parameters that determine the output: recorded in the manifest and hashed into job keys.

        An edit's mask is `center`, `full` or `png:` and the first 16 hex digits of the mask file's sha256.
        """
        params = {"mode": self.mode, "size": self.size, "quality": self.resolved_quality, "prompt": self.prompt}
        if self.mode == "edit":
            params["mask"] = self.mask if self.mask in MASKS else f"png:{self._mask_sha256[:16]}"
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
            image = Image.open(io.BytesIO(data))
            image = image.convert("RGBA")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ConfigError(f"edit mask {self.mask} is not a readable image ({type(exc).__name__})") from None
        if image.getchannel("A").getextrema()[0] == 255:
            raise ConfigError(f"edit mask {self.mask} has no transparent pixel; make transparent what the edit may change")
        return image

    def params_hash(self) -> str:
        """Short stable hash of `params()`."""
        return hashlib.sha256(json.dumps(self.params(), sort_keys=True).encode()).hexdigest()[:16]

    def price(self) -> float:
        """Estimated USD per image.

        Raises:
            ConfigError: no price is known for this model/size/quality and none was given.
        """
        if self.price_per_image is not None:
            return self.price_per_image
        quality = self.resolved_quality
        candidates = [
            price for (model, size, qual), price in PRICES.items()
            if model == self.model and self.size in (size, "auto") and quality in (qual, "auto")
        ]
        if not candidates:
            raise ConfigError(
                f"no price known for {self.model} {self.size} {quality}; pass price_per_image (--price-per-image)"
            )
        return max(candidates)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return asdict(self)

    def edit_mask(self, size: tuple[int, int]) -> tuple[str, bytes, str] | None:
        """The mask upload for an edit of an image of `size`, or None where the model needs none (gpt-image-1, `full`)."""
        width, height = size
        if self.mask == "full":
            if self.model != "dall-e-2":
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
    `OPENAI_BASE_URL` applies either way. Surrounding whitespace (a pasted newline) is dropped from the key.

    The client itself retries 429, 408, 409, 5xx and connection errors with exponential
    backoff (0.5 s doubling to 8 s, up to 25 % jitter) and honours `Retry-After`; the runner
    adds no retries of its own, so nothing is retried twice.

    Raises:
        ConfigError: no API key is configured.
    """
    import openai

    storage.load_env_file()
    key = (api_key or os.environ.get("OPENAI_API_KEY") or "").strip()  # a newline: every request a bare "Connection error."
    if not key:
        raise ConfigError("OPENAI_API_KEY is not set (environment or .env)")
    return openai.OpenAI(api_key=key, max_retries=max_retries, timeout=timeout)


def prepare_upload(data: bytes, config: OpenAIImagesConfig) -> tuple[str, bytes, str]:
    """Turn a source image into the `(filename, bytes, mime)` the API accepts.

    dall-e-2 wants a square PNG under 4 MB: the image is centre-cropped to a square and
    resized to the requested size. gpt-image-1 takes the image as a PNG at its own size.
    """
    image = load_image(data).image
    if config.model == "dall-e-2":
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        target = int(config.size.split("x")[0]) if "x" in config.size else 1024
        image = image.crop((left, top, left + side, top + side)).resize((target, target), Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "image.png", buffer.getvalue(), "image/png"


def request_image(client, config: OpenAIImagesConfig, *, source: bytes | None = None, prompt: str | None = None) -> bytes:
    """Send one request for one image and return the image bytes (decoded or fetched from its URL).

    Raises:
        ConfigError: the API refused the key, the model or the endpoint (no later request can succeed).
        LostImageError: the image's URL could not be fetched.
    """
    import openai

    options: dict[str, Any] = {"model": config.model, "n": 1, "size": config.size}
    if config.model != "gpt-image-1":
        options["response_format"] = config.response_format
    if config.quality and config.mode != "variation":
        options["quality"] = config.quality
    try:
        if config.mode == "variation":
            response = client.images.create_variation(image=prepare_upload(source, config), **options)
        elif config.mode == "edit":
            upload = prepare_upload(source, config)
            if (mask := config.edit_mask(Image.open(io.BytesIO(upload[1])).size)) is not None:
                options["mask"] = mask
            response = client.images.edit(image=upload, prompt=config.prompt, **options)
        else:
            response = client.images.generate(prompt=prompt, **options)
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as exc:
        raise ConfigError(f"the Images API refused the request ({exc.status_code}): {_api_message(exc)}") from exc
    except openai.APIStatusError as exc:
        if getattr(exc, "code", None) in ACCOUNT_EXHAUSTED:  # every later request would be refused alike
            raise ConfigError(f"the OpenAI account cannot pay for more images ({exc.code}): {_api_message(exc)}") from exc
        raise
    item = response.data[0]
    if item.b64_json:
        return base64.b64decode(item.b64_json)
    scheme = urllib.parse.urlsplit(item.url or "").scheme.lower()
    if scheme not in ("http", "https"):  # urlopen would read file:, ftp: and data: URLs too: this machine's files
        raise LostImageError(f"the API answered a {scheme or 'schemeless'}: URL, not an http(s) one; it was not fetched")
    try:
        with urllib.request.urlopen(item.url, timeout=120) as answer:  # noqa: S310 - scheme checked above
            return answer.read()
    except OSError as exc:  # URLError, HTTPError and timeouts are OSErrors
        raise LostImageError(f"the API made the image but its URL could not be fetched: {exc}") from exc


def _api_message(exc) -> str:
    if exc.status_code == 401:  # the server's text may echo part of the key
        return "the API key was refused"
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)[:300]
