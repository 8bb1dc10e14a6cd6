"""What scored a results folder, recorded in each part's Parquet metadata, so that a rerun that would score
differently is refused rather than mixed into the folder.

Only settings that change scores or labels are recorded: the model (its name and weights' sha256), the threshold,
the tile grid, provenance and precision (int8 included: the onnx runtime's quantized export). Workers, batch size,
progress, device, runtime (torch and onnx agree within 1e-4) and the engine are not.
Parts written before this record have none; their rows' `model` and `threshold` are still checked.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fakescope.errors import ConfigError

if TYPE_CHECKING:
    from fakescope.detector import Detector
    from fakescope.models import LoadedModel

METADATA_KEY = b"fakescope.scoring"
NAMES_KEY = b"fakescope.url_names"
"""Marks a part whose URLs are named by `url_name` with `Signing.when`; a part without it named them the legacy way."""
NAMES = b"signing-v2"


@dataclass(frozen=True)
class Scoring:
    """The settings a scan's rows were scored with."""

    model: str
    weights_sha256: str | None
    threshold: float
    grid: int
    provenance: bool
    precision: str

    @classmethod
    def of(cls, detector: Detector) -> Scoring:
        """The settings `detector` scores with."""
        config = detector.model.config
        return cls(detector.name, config.weights_sha256, detector.threshold, config.input.grid, detector.provenance,
                   detector.precision)

    @classmethod
    def planned(cls, model: LoadedModel, **detector_kwargs: Any) -> Scoring:
        """The settings Ray actors will score with, given `Detector.load`'s keyword arguments: `Detector`'s own defaults
        for the rest, and its threshold and grid rules, without building one (its network) here."""
        from fakescope.detector import Detector, model_threshold, with_grid

        given = {name: p.default for name, p in inspect.signature(Detector).parameters.items()} | detector_kwargs
        config = with_grid(model, given["grid"]).config
        return cls(config.name, config.weights_sha256, model_threshold(model, given["threshold"]), config.input.grid,
                   given["provenance"], given["precision"])

    def on(self, schema: pa.Schema) -> pa.Schema:
        """`schema` carrying this record and the `NAMES_KEY` mark (Parquet keeps them in the part's footer)."""
        return schema.with_metadata({METADATA_KEY: json.dumps(asdict(self), sort_keys=True), NAMES_KEY: NAMES})

    @classmethod
    def recorded(cls, schema: pa.Schema) -> Scoring | None:
        """The record a part's schema carries; None for a part written before records (or by another writer).

        Raises:
            pa.ArrowInvalid: the record is not a JSON object (a foreign writer's).
        """
        raw = (schema.metadata or {}).get(METADATA_KEY)
        if raw is None:
            return None
        try:
            values = json.loads(raw)
        except ValueError:
            values = None
        if not isinstance(values, dict):
            raise pa.ArrowInvalid(f"its {METADATA_KEY.decode()} metadata is not a JSON object")
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    def require_same(self, out: object, recorded: Scoring) -> None:
        """Refuse, in one line naming the differing settings and the ways out, rows scored otherwise than `recorded`.

        Raises:
            ConfigError: a setting differs.
        """
        differing = [f.name for f in fields(self) if getattr(self, f.name) != getattr(recorded, f.name)]
        if differing:
            theirs, ours = (" ".join(_flag(name, getattr(s, name)) for name in differing) for s in (recorded, self))
            raise ConfigError(f"{out} was scored with {theirs}, not {ours}: a rerun skips the images it holds, so "
                              "resume it with the folder's settings or give these settings a new --out")


def _flag(name: str, value: object) -> str:
    """A setting as the option that gives it (`--grid 2`, `--no-provenance`)."""
    if name == "provenance":
        return "--provenance" if value else "--no-provenance"
    if name == "weights_sha256":
        return f"weights sha256 {str(value)[:12]}"
    return f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}"
