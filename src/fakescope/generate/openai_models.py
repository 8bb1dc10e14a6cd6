"""The Images API models fakescope knows: family, modes, sizes, qualities, input fidelities, and retirement
(from `openai` 3.57.0).

GPT image models make generations and edits only, always answer base64 and report token `usage`;
fakescope's `variation` mode is an edit of the whole image for them. dall-e models are retired on
api.openai.com but other servers (`OPENAI_BASE_URL`) may still serve them, as may unknown models.
"""

from __future__ import annotations

import datetime
import logging
import re
import urllib.parse
from dataclasses import dataclass

from fakescope.errors import ConfigError

log = logging.getLogger(__name__)

DALL_E, GPT_IMAGE = "dall-e", "gpt-image"
DEFAULT_MODEL = "gpt-image-2.6-flare"
MAX_N = 10
"""The most images per source a run asks for (`n`, `generate openai --n`): the Images API's most per request (its `n`,
1 to 10), though fakescope sends each image as a request of its own (so dall-e-3, whose `n` is 1, takes them too)."""
GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
GPT_QUALITIES = ("low", "medium", "high", "auto")
INPUT_FIDELITIES = ("high", "low")
OPENAI_HOST = "api.openai.com"


@dataclass(frozen=True)
class ModelInfo:
    """One known model. `custom_sizes`: any WxH with sides divisible by 16, aspect 1:3 to 3:1, at most 3840x2160."""

    family: str
    modes: tuple[str, ...]
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    custom_sizes: bool = False
    retires: str | None = None
    """ISO date it was (or will be) shut down on api.openai.com."""
    replacement: str | None = None
    input_fidelities: tuple[str, ...] | None = None
    """The edits' `input_fidelity` values it takes (empty: none); None where the API reference does not say (not checked)."""
    max_prompt: int = 32_000
    """The longest prompt it takes, in characters (the API reference's limits: GPT image models 32,000)."""

    def retired(self, today: datetime.date | None = None) -> bool:
        """Whether api.openai.com no longer serves it."""
        return self.retires is not None and (today or datetime.date.today()) >= datetime.date.fromisoformat(self.retires)


_GPT = ("variation", "edit", "generate")
_SOON = dict(retires="2026-12-01", replacement="gpt-image-2.6-sunburst or gpt-image-2.6-flare")
_DALL_E = dict(retires="2026-05-12", replacement=DEFAULT_MODEL, input_fidelities=())
MODELS: dict[str, ModelInfo] = {
    **{name: ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES, custom_sizes=True, input_fidelities=())
       for name in ("gpt-image-2", "gpt-image-2-2026-04-21")},
    **{name: ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, (*GPT_QUALITIES, "xhigh", "max"), custom_sizes=True)
       for name in ("gpt-image-2.5-sunburst", "gpt-image-2.5-sunburst-2026-09-08",
                    "gpt-image-2.5-flare", "gpt-image-2.5-flare-2026-09-08")},
    "gpt-image-2.6-sunburst": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES),
    "gpt-image-2.6-flare": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES),
    "gpt-image-1.5": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES, **_SOON, input_fidelities=INPUT_FIDELITIES),
    "gpt-image-1-mini": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES, **_SOON, input_fidelities=("low",)),
    "chatgpt-image-latest": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES, **_SOON),
    "gpt-image-1": ModelInfo(GPT_IMAGE, _GPT, GPT_SIZES, GPT_QUALITIES, retires="2026-10-23",
                             replacement="gpt-image-2.5-sunburst or gpt-image-2.5-flare", input_fidelities=INPUT_FIDELITIES),
    "dall-e-2": ModelInfo(DALL_E, ("variation", "edit", "generate"), ("256x256", "512x512", "1024x1024"),
                          ("standard",), max_prompt=1_000, **_DALL_E),
    "dall-e-3": ModelInfo(DALL_E, ("generate",), ("1024x1024", "1792x1024", "1024x1792"), ("standard", "hd"),
                          max_prompt=4_000, **_DALL_E),
}
"""Known models; the first quality listed for a dall-e model is its default, GPT models default to `auto`."""


def family(model: str) -> str | None:
    """`dall-e`, `gpt-image`, or None for a model fakescope does not know."""
    return MODELS[model].family if model in MODELS else None


def current_models(mode: str, *, retired: bool = False, today: datetime.date | None = None) -> list[str]:
    """Known models api.openai.com still serves for `mode` `today` (with `retired`, the others too), default first."""
    names = [name for name, info in MODELS.items() if mode in info.modes and (retired or not info.retired(today))]
    return sorted(names, key=lambda name: name != DEFAULT_MODEL)


def input_fidelities(model: str) -> tuple[str, ...]:
    """The `input_fidelity` values a known `model`'s edits take: both where the API reference does not say, none for dall-e."""
    takes = MODELS[model].input_fidelities
    return INPUT_FIDELITIES if takes is None else takes


def check_options(model: str, mode: str, size: str, quality: str | None, input_fidelity: str | None = None) -> None:
    """Refuse a mode, size, quality or input fidelity a known model does not take (unknown models are not checked).

    Raises:
        ConfigError: one line naming what the model takes.
    """
    info = MODELS.get(model)
    if info is None:
        return
    if mode not in info.modes:
        raise ConfigError(f"{model} does not support {mode}; use {DEFAULT_MODEL} or another GPT image model")
    if size not in info.sizes and not (info.custom_sizes and _custom_size(size)):
        extra = (", or WIDTHxHEIGHT with both sides divisible by 16, aspect between 1:3 and 3:1, at most 3840x2160"
                 if info.custom_sizes else "")
        raise ConfigError(f"size {size} is not one {model} makes: use {', '.join(info.sizes)}{extra}")
    if quality is not None and quality not in info.qualities:
        raise ConfigError(f"quality {quality} is not one {model} takes: use {', '.join(info.qualities)}")
    if input_fidelity is not None and info.input_fidelities is not None and input_fidelity not in info.input_fidelities:
        takes = f"use {', '.join(info.input_fidelities)}" if info.input_fidelities else "it takes none, leave it out"
        raise ConfigError(f"input_fidelity {input_fidelity} is not one {model} takes: {takes}")


def prompt_too_long(model: str, prompt: str) -> str | None:
    """Why a known `model` refuses `prompt` ('N characters, over <model>'s limit of L; shorten it'), else None."""
    info = MODELS.get(model)
    if info is None or len(prompt) <= info.max_prompt:
        return None
    return f"{len(prompt):,} characters, over {model}'s limit of {info.max_prompt:,}; shorten it"


def check_served(model: str, base_url: object, today: datetime.date | None = None) -> None:
    """Refuse, in one line, a known model that api.openai.com (`base_url`'s host) has retired by `today` (default: the
    date now); warn of one it will retire. Other servers may serve it: neither."""
    info = MODELS.get(model)
    host = urllib.parse.urlsplit(str(base_url)).hostname
    if info is None or host != OPENAI_HOST or info.retires is None:
        return
    if info.retired(today):
        raise ConfigError(retirement(model, today) + "; set OPENAI_BASE_URL to use a server that still serves it")
    log.warning("%s will be shut down on api.openai.com on %s; use %s", model, info.retires, info.replacement)


def retirement(model: str, today: datetime.date | None = None) -> str:
    """'<model> was shut down on api.openai.com on <date>; use <replacement>' where it was by `today`, else a hint to check it."""
    info = MODELS.get(model)
    if info is None or not info.retired(today):
        return f"check that the server serves {model}"
    return f"{model} was shut down on api.openai.com on {info.retires}; use {info.replacement}"


def _custom_size(size: str) -> bool:
    sides = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size, re.ASCII)
    if not sides:
        return False
    width, height = int(sides[1]), int(sides[2])
    return (width % 16 == height % 16 == 0 and 0 < width and 0 < height and max(width, height) <= 3 * min(width, height)
            and max(width, height) <= 3840 and min(width, height) <= 2160)
