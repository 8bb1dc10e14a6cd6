"""`TrainConfig`: every knob of a training run; YAML keys = field names = CLI flags."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fakescope.data.manifest import MANIFEST_SUFFIXES
from fakescope.errors import ConfigError, UnknownModelError
from fakescope.models.calibration import METHODS
from fakescope.models.config import ModelConfig, check_band, check_grid
from fakescope.models.registry import architecture_info
from fakescope.train.augment import SMALL_IMAGES, AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """A training run, saved beside its outputs as `train_config.yaml`."""

    manifest: str
    out: str = "runs/detector"
    name: str = "fakescope-detector"
    """What reports and CAM captions call the model; `from_dict`/`from_yaml` default it to the `out` folder's name."""
    architecture: str = "efficientnet_lite0"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the architecture's builder, saved in the model's config.json to rebuild it."""
    pretrained: bool | str = True
    """ImageNet weights: True for the architecture's own source, or a state-dict file path (an architecture that
    registers no `pretrained_source` trains from random weights, and its run records False)."""
    crop_size: int | None = None
    grid: int | None = None
    epochs: int = 10
    batch_size: int = 64
    samples_per_epoch: int | None = None
    balance: str = "source"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    patience: int = 3
    calibration: str = "temperature"
    band: tuple[float, float] = (0.3, 0.7)
    amp: bool = True
    resume: bool = False
    """Continue the run already in `out` from its last checkpoint."""
    overwrite: bool = False
    """Replace the run already in `out`; without it (or `resume`) a folder holding a run is refused."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _check_types(self, "")
        _check_types(self.augment, "augment.")
        _check_augment_ranges(self.augment)
        if self.augment.small_images not in SMALL_IMAGES:  # else any other word would pad
            raise ConfigError(f"training config key 'augment.small_images' must be {' or '.join(SMALL_IMAGES)}, "
                              f"got {self.augment.small_images!r}")
        for key, low in MINIMUM.items():
            value = getattr(self, key)
            if value is not None and not (math.isfinite(value) and value >= low):  # nan, inf: AdamW's traceback
                finite = "" if math.isfinite(value) else "a finite number, "
                raise ConfigError(f"training config key '{key}' must be {finite}at least {low}, got {value!r}")
        if self.crop_size is not None and self.crop_size > MAX_CROP:  # else out of memory as the network is built
            raise ConfigError(f"training config key 'crop_size' must be at most {MAX_CROP} (a tile's side in pixels), "
                              f"got {self.crop_size}")
        if self.grid is not None:  # else the model config refuses it, naming no training key
            check_grid(self.grid, "training config key 'grid'")
        if not self.name.strip():  # else reports and CAM captions name no model
            raise ConfigError(f"training config key 'name' must be non-blank text, got {self.name!r}")
        if not 0 <= self.seed <= MAX_SEED:  # else numpy's ValueError traceback as the run starts
            raise ConfigError(f"training config key 'seed' must be within [0, {MAX_SEED}], got {self.seed}")
        check_band(self.band, ModelConfig.threshold, "training config key 'band'")  # else refused once the network is built
        try:  # else refused only by train(), after it read the manifest
            architecture_info(self.architecture)
        except UnknownModelError as exc:
            raise ConfigError(f"training config key 'architecture': {exc}") from None
        if self.calibration not in METHODS:  # else the run would fail only once trained
            raise ConfigError(f"unknown calibration method {self.calibration!r} (use {' or '.join(METHODS)})")
        try:  # saved in the model's config.json only once trained
            json.dumps(self.architecture_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"training config key 'architecture_kwargs' must hold JSON values (text, numbers, "
                              f"true/false, null, lists, mappings): {exc}") from None
        if "://" in self.out:  # else Path() would make a local folder named 's3:' and report the URI as saved
            raise ConfigError(f"training config key 'out' must be a local folder path, not {self.out!r}: a run writes "
                              "its checkpoints as it trains; copy OUT/model afterwards, or push it with fakescope models push")
        if self.resume and self.overwrite:
            raise ConfigError("resume (continue the run in out) and overwrite (replace it) exclude each other")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from its mapping, checked (`ConfigError`); with no `name`, the run is named after its `out` folder."""
        d = dict(d)
        _check_keys(d, cls, "")
        folder = Path(str(d.get("out") or "")).name
        if not d.get("name"):  # runs/mnv2 trains `mnv2`, not one more `fakescope-detector`
            d.pop("name", None)
            if folder.strip("."):
                d["name"] = folder
        if not isinstance(d.get("augment") or {}, dict):
            raise ConfigError(f"training config key 'augment' must be a mapping of augment keys, got {d['augment']!r}")
        _check_keys(d.get("augment") or {}, AugmentConfig, "augment.")
        d = _floats(d, cls, "")
        try:
            augment = _floats(d.pop("augment", None) or {}, AugmentConfig, "augment.")
            aug = {k: tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
            if isinstance(d.get("band"), list):
                d["band"] = tuple(d["band"])
            return cls(augment=AugmentConfig(**aug), **d)
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """`from_dict` of the YAML file at `path`, with `overrides` that are not None replacing its keys; its relative
        `manifest:` is found from the current folder, else from the config's folder (`ConfigError` naming both)."""
        if str(path).endswith(MANIFEST_SUFFIXES):
            raise ConfigError(f"{path} is a manifest, not a YAML training config; name it in one (manifest: {path})")
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a YAML training config: it is not UTF-8 text") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} is not a training config: it holds a {type(data).__name__}, not a mapping of keys")
        data.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls.from_dict(data)
        if overrides.get("manifest") is not None:  # given on a command line: the shell's folder alone
            return cfg
        return dataclasses.replace(cfg, manifest=_locate(cfg.manifest, Path(path)))

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _locate(manifest: str, config: Path) -> str:
    """A YAML config's relative `manifest`: from the current folder (so `fakescope train recipes/default/train.yaml`
    from the repository root reads data/default/manifest.csv), else from the config's folder."""
    if "://" in manifest or Path(manifest).is_absolute() or Path(manifest).exists():
        return manifest
    beside = config.parent / manifest
    if beside.exists():
        return str(beside)
    raise ConfigError(f"{config}: manifest {manifest} is found neither from the current folder ({Path.cwd()}) "
                      f"nor from the config's folder ({config.parent.resolve()})")


AUGMENT_RANGES = {"bottom_crop": (0, 0.99), "base_jpeg_quality": (0, 100), "resize_prob": (0, 1), "resize_scale": (0, math.inf),
                  "blur_prob": (0, 1), "blur_sigma": (0, math.inf), "noise_prob": (0, 1), "noise_std": (0, math.inf),
                  "jpeg_prob": (0, 1), "jpeg_quality": (0, 100)}
"""The allowed values of each numeric augment key (pairs: both ends, low <= high; never nan or inf); else a run would
fail mid-epoch."""


def _check_augment_ranges(augment: AugmentConfig) -> None:
    for key, (low, high) in AUGMENT_RANGES.items():
        value = getattr(augment, key)
        ends = value if isinstance(value, tuple) else (value,)
        if value is not None and not (all(low <= v <= high and math.isfinite(v) for v in ends) and ends == tuple(sorted(ends))):
            within = f"finite, at least {low}" if high == math.inf else f"within [{low}, {high}]"
            what = f"a pair [low, high] with low <= high, both {within}" if isinstance(value, tuple) else within
            raise ConfigError(f"training config key 'augment.{key}' must be {what}, got {_plain(value)!r}")


MAX_SEED = 2**32 - 1
"""numpy's largest seed."""

MAX_CROP = 2048
"""The largest `crop_size`: tiles are cut at native resolution, and generated images are rarely larger."""

MINIMUM = {"epochs": 1, "batch_size": 1, "samples_per_epoch": 1, "crop_size": 1, "grid": 1, "patience": 1,
           "num_workers": 0, "lr": 0, "weight_decay": 0}
"""The least value of each numeric key (None, where allowed, keeps its default meaning)."""


def _check_types(config: Any, prefix: str) -> None:
    """Refuse a value of the wrong type in one line: YAML reads `1e-3` as text, and `ten` would fail mid-run."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if not _fits(value, hint):
            tip = " (YAML reads 1e-3 as text: write 1.0e-3)" if _fits(1.5, hint) and _number(value) else ""
            raise ConfigError(f"training config key '{prefix}{f.name}' must be {_describe(hint)}, got {value!r}{tip}")


def _fits(value: Any, hint: Any) -> bool:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType):
        return any(_fits(value, a) for a in args)
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and len(value) == len(args) and all(map(_fits, value, args))
    if typing.get_origin(hint) is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return f"a pair [low, high] of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}s"
    if typing.get_origin(hint) is dict:
        return "a mapping of keyword names to values"
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text",
            type(None): "null"}.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _number(text: Any) -> bool:
    """Whether a string reads as a number."""
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _check_keys(d: dict[str, Any], kind: type, prefix: str) -> None:
    """Refuse a key that names no field, suggesting the closest one (a typo would otherwise be ignored)."""
    names = [f.name for f in dataclasses.fields(kind)]
    for key in d:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown training config key '{prefix}{key}'{hint}")


def _floats(d: dict[str, Any], kind: type, prefix: str) -> dict[str, Any]:
    """`d` with text in its float fields read as numbers: YAML reads `3e-4` (no dot) as the text '3e-4'."""
    kinds = {f.name: f.type for f in dataclasses.fields(kind)}

    def number(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"training config key '{prefix}{key}' must be a number, got {value!r}") from None

    floats = {k: number(k, v) for k, v in d.items() if kinds.get(k) == "float"}
    pairs = {k: [number(k, x) for x in v] for k, v in d.items() if kinds.get(k) == "tuple[float, float]" and isinstance(v, list)}
    return {**d, **floats, **pairs}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
