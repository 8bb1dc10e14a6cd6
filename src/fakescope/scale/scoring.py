"""What scored a results folder, recorded in each part's Parquet metadata, so that a rerun that would score
differently is refused rather than mixed into the folder.

Only settings that change scores or labels are recorded: the model (its name and weights' sha256), the threshold,
the tile grid, provenance and precision, and at int8 the sha256 of the quantized file (its calibration images change
it). Workers, batch size, progress, device, runtime (torch and onnx agree within 1e-4) and the engine are not.
Parts written before this record have none; their rows' `model` and `threshold` are still checked. An int8 record
written before `int8_sha256` reads it as `UNKNOWN`, which any int8 model matches (`read_folder` says so once).
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
UNKNOWN = "unknown"
"""`int8_sha256` of an int8 record written before it: accepted, with a note."""
NAMES_KEY = b"fakescope.url_names"
"""Marks a part whose URLs are named by `url_name` with `Signing.when`; a part without it named them the legacy way."""
NAMES = b"signing-v2"
FORMAT_KEY = b"fakescope.results_format"
RESULTS_FORMAT = 1
"""The layout of a part (its columns, record and marks) this fakescope writes and reads; a part without `FORMAT_KEY`
has layout 1. A later layout that an older reader would misread (new meaning, or a record field it must not ignore)
raises it, and an older fakescope then refuses the folder (`records.check_format`)."""


@dataclass(frozen=True)
class Scoring:
    """The settings a scan's rows were scored with."""

    model: str
    weights_sha256: str | None
    threshold: float
    grid: int
    provenance: bool
    precision: str
    int8_sha256: str | None = None

    @classmethod
    def of(cls, detector: Detector) -> Scoring:
        """The settings `detector` scores with."""
        config = detector.model.config
        return cls(detector.name, config.weights_sha256, detector.threshold, config.input.grid, detector.provenance,
                   detector.precision, _int8_sha256(detector.model, detector.precision))

    @classmethod
    def planned(cls, model: LoadedModel, **detector_kwargs: Any) -> Scoring:
        """The settings Ray actors will score with, given `Detector.load`'s keyword arguments: `Detector`'s own defaults
        for the rest, and its threshold and grid rules, without building one (its network) here."""
        from fakescope.detector import Detector, model_threshold, with_grid

        given = {name: p.default for name, p in inspect.signature(Detector).parameters.items()} | detector_kwargs
        config = with_grid(model, given["grid"]).config
        return cls(config.name, config.weights_sha256, model_threshold(model, given["threshold"]), config.input.grid,
                   given["provenance"], given["precision"], _int8_sha256(model, given["precision"]))

    def on(self, schema: pa.Schema) -> pa.Schema:
        """`schema` carrying this record, the `NAMES_KEY` mark and `RESULTS_FORMAT` (Parquet keeps them in the part's footer)."""
        return schema.with_metadata({METADATA_KEY: json.dumps(asdict(self), sort_keys=True), NAMES_KEY: NAMES,
                                     FORMAT_KEY: str(RESULTS_FORMAT)})

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
        if values.get("precision") == "int8":
            values.setdefault("int8_sha256", UNKNOWN)
        return cls(**{f.name: values.get(f.name) for f in fields(cls)})

    def require_same(self, out: object, recorded: Scoring) -> None:
        """Refuse, in one line naming the differing settings and the ways out, rows scored otherwise than `recorded`.

        Raises:
            ConfigError: a setting differs.
        """
        differing = [f.name for f in fields(self) if getattr(self, f.name) != getattr(recorded, f.name) != UNKNOWN]
        if "precision" in differing and "int8_sha256" in differing:  # --precision says it
            differing.remove("int8_sha256")
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
    if name == "int8_sha256":
        return f"an int8 model of sha256 {value[:12]} (another calibration)"
    return f"--{name} {value:g}" if isinstance(value, float) else f"--{name} {value}"


def _int8_sha256(model: LoadedModel, precision: str) -> str | None:
    """The int8 model's identity at int8 precision (`int8_sha256`), else None."""
    if precision != "int8":
        return None
    from fakescope.models.quantize import int8_sha256

    return int8_sha256(model)
