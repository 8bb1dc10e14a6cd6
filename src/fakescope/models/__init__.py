"""Models: the architecture registry, the model format, tiling and calibration."""

from fakescope._lazy import lazy_attributes as _lazy_attributes
from fakescope.models.bundle import (
    DEFAULT_MODEL,
    LoadedModel,
    bundled_models,
    load_model,
    push_model,
    resolve_model,
    save_model,
)
from fakescope.models.config import Calibration, InputPolicy, ModelConfig
from fakescope.models.registry import architecture_info, create_model, list_models, register_model

__all__ = [
    "DEFAULT_MODEL",
    "Calibration",
    "Calibrator",
    "InputPolicy",
    "LoadedModel",
    "ModelConfig",
    "apply_calibration",
    "architecture_info",
    "bundled_models",
    "create_model",
    "list_models",
    "load_model",
    "push_model",
    "register_model",
    "resolve_model",
    "save_model",
]

# calibration needs numpy and scipy (0.2 s): listing the zoo and reading a config do not
__getattr__, __dir__ = _lazy_attributes(__name__, {"Calibrator": "calibration", "apply_calibration": "calibration"})
