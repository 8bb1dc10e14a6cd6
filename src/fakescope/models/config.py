"""The frozen config that travels with every model: everything inference needs."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakescope.errors import ConfigError

MAX_GRID = 32
"""Most tiles per side a model's or a user's `grid` may ask for: 1,024 tiles, covering 3,584 px at 112-px tiles.
An image's tiles grow with its square: grid 10,000 would cut a 200 Mpx image into 16k tiles, 2.4 GB as floats.
(Grad-CAM's covering tiles go past it, scored in batches.)"""
FORMAT_VERSION = 1
"""The layout of a model's config this fakescope writes and reads; a config without `format_version` has layout 1."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_grid(grid: object, name: str = "grid") -> int:
    """`grid` as an int where it is a whole number from 1 to `MAX_GRID`, else a one-line `ConfigError` naming it `name`."""
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral) or not 1 <= grid <= MAX_GRID:
        raise ConfigError(f"{name} must be a whole number from 1 to {MAX_GRID} (tiles per side), got {grid!r}")
    return int(grid)


PRECISIONS = ("fp32", "bf16", "int8")
"""int8 runs the onnx runtime on a quantized export (`fakescope.models.quantize`); the others, either runtime."""


def check_precision(precision: str) -> None:
    """Refuse a precision other than `PRECISIONS` in one line (`ConfigError`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}")


def check_band(band: tuple[float, float], threshold: float, name: str = "band") -> None:
    """Refuse, in one line naming it `name`, an uncertain band that does not surround `threshold` within [0, 1]."""
    low, high = band
    if not 0.0 <= low <= threshold <= high <= 1.0:
        raise ConfigError(f"{name} must be a pair [low, high] with 0 <= low <= {threshold:g} (the threshold) <= high <= 1, "
                          f"got {[*band]!r}")


@dataclass(frozen=True)
class InputPolicy:
    """How an image of any size becomes model input, without destructive resizing.

    Images are cut into `crop_size` tiles at native resolution, at most `grid` x `grid` of
    them spread evenly over the image; the image's logit is the mean of its tiles' logits.
    An image with a side shorter than a tile is upscaled until it fills one (`upscale_small`),
    or else fed whole (the networks are fully convolutional).
    """

    crop_size: int = 112
    grid: int = 3
    upscale_small: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("crop_size", "grid"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                square = " (tiles are square)" if name == "crop_size" else ""
                raise ConfigError(f"input {name} must be a positive integer{square}, got {value!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not (isinstance(value, (tuple, list)) and len(value) == 3
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ConfigError(f"input {name} must be 3 numbers, one per RGB channel (a network for one channel "
                                  f"converts its RGB input itself), got {value!r}")
        if min(self.std) <= 0:
            raise ConfigError(f"input std must be positive, got {self.std!r}")


@dataclass(frozen=True)
class Calibration:
    """Maps a raw logit to a calibrated P(ai).

    `temperature`: p = sigmoid(logit / temperature + bias) (Platt-style temperature scaling).
    `isotonic`: p = interp(logit, x, y) with the fitted isotonic steps.
    """

    method: str = "temperature"
    temperature: float = 1.0
    bias: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in ("temperature", "isotonic", "none"):
            raise ConfigError(f"unknown calibration method {self.method!r} (use temperature, isotonic or none)")
        if self.method == "temperature" and not (_finite(self.temperature) and self.temperature > 0 and _finite(self.bias)):
            raise ConfigError(f"calibration temperature must be a positive number and bias a number, got "
                              f"{self.temperature!r} and {self.bias!r}")
        if self.method == "isotonic" and not (
                len(self.x) == len(self.y) >= 1 and all(map(_finite, self.x + self.y))
                and all(a <= b for a, b in zip(self.x, self.x[1:])) and all(0 <= v <= 1 for v in self.y)):
            raise ConfigError(f"isotonic calibration needs as many x as y values (at least one), x ascending and y "
                              f"in [0, 1]; got {len(self.x)} x and {len(self.y)} y")


@dataclass(frozen=True)
class ModelConfig:
    """A model's identity, input policy, calibration and decision rule, plus its provenance.

    `band` is the uncertain band: a calibrated probability p gives `ai` when p >= band[1],
    `real` when p < band[0], and `uncertain` between.
    """

    name: str
    architecture: str
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    input: InputPolicy = field(default_factory=InputPolicy)
    calibration: Calibration = field(default_factory=Calibration)
    threshold: float = 0.5
    band: tuple[float, float] = (0.35, 0.65)
    weights_sha256: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    license: str = "MIT"

    def __post_init__(self) -> None:
        check_band(self.band, self.threshold)
        check_grid(self.input.grid, "input grid")  # here, not in InputPolicy: Grad-CAM's covering tiles go past it

    def to_dict(self) -> dict[str, Any]:
        """The config as stored (config.json, the weights' header), led by its `format_version`."""
        return {"format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """A config from its JSON object (`to_dict`): an unknown key, a bad value or a newer format is a `ConfigError`."""
        if not isinstance(d, dict):
            raise ConfigError(f"invalid model config: must be a JSON object of settings, not a {type(d).__name__}")
        d = dict(d)
        _check_format_version(d.pop("format_version", 1))
        for part in ("input", "calibration", "architecture_kwargs", "training", "metrics"):
            if not isinstance(d.get(part, {}), dict):
                raise ConfigError(f"invalid model config: {part!r} must be a JSON object, not a {type(d[part]).__name__}")
        band = d.get("band", (0.35, 0.65))
        if not (isinstance(band, (list, tuple)) and len(band) == 2 and all(map(_finite, band))):
            raise ConfigError(f"invalid model config: band must be two numbers [low, high], got {band!r}")
        try:
            for part, kind in (("input", InputPolicy), ("calibration", Calibration), (None, cls)):
                _refuse_unknown_keys(d.get(part, {}) if part else d, kind, part)
            d["input"] = InputPolicy(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.get("input", {}).items()})
            cal = d.get("calibration", {})
            d["calibration"] = Calibration(**{k: tuple(v) if isinstance(v, list) else v for k, v in cal.items()})
            d["band"] = tuple(band)
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"invalid model config: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """`from_dict` of the JSON file at `path`, errors naming it."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_format_version(version: Any) -> None:
    """Refuse, in one line, a layout this fakescope does not know: a newer one would be misread."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"invalid model config: format_version must be a whole number from 1, got {version!r}")
    if version > FORMAT_VERSION:
        from fakescope import __version__

        raise ConfigError(f"model format_version {version} is newer than fakescope {__version__} reads "
                          f"({FORMAT_VERSION}): upgrade fakescope")


def _refuse_unknown_keys(d: dict[str, Any], kind: type, part: str | None) -> None:
    """A key this version does not know may change inference, so it is refused, not ignored."""
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        where = f" in {part!r}" if part else ""
        raise ConfigError(f"invalid model config: unknown key(s){where}: {', '.join(map(repr, unknown))} "
                          "(written by a newer fakescope? upgrade it)")
