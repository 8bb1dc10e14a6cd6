"""`TrainConfig`: every knob of a training run; YAML keys = field names = CLI flags."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fakescope.errors import ConfigError
from fakescope.train.augment import AugmentConfig


@dataclass(frozen=True)
class TrainConfig:
    """A training run, saved beside its outputs as `train_config.yaml`."""

    manifest: str
    out: str = "runs/detector"
    name: str = "fakescope-detector"
    """What reports and CAM captions call the model; `from_dict`/`from_yaml` default it to the `out` folder's name."""
    architecture: str = "efficientnet_lite0"
    pretrained: bool | str = True
    """ImageNet weights: True for the architecture's own source, or a state-dict file path."""
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
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        _check_keys(d, cls, "")
        folder = Path(str(d.get("out") or "")).name
        if not d.get("name") and folder.strip("."):
            d["name"] = folder  # runs/mnv2 trains `mnv2`, not one more `fakescope-detector`
        _check_keys(d.get("augment") or {}, AugmentConfig, "augment.")
        try:
            aug = {k: tuple(v) if isinstance(v, list) else v for k, v in (d.pop("augment", None) or {}).items()}
            if "band" in d:
                d["band"] = tuple(d["band"])
            return cls(augment=AugmentConfig(**aug), **d)
        except TypeError as exc:
            raise ConfigError(f"invalid training config: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _check_keys(d: dict[str, Any], kind: type, prefix: str) -> None:
    """Refuse a key that names no field, suggesting the closest one (a typo would otherwise be ignored)."""
    names = [f.name for f in dataclasses.fields(kind)]
    for key in d:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown training config key '{prefix}{key}'{hint}")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
