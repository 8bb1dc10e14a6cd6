"""fakescope: tell whether an image was made by a generative model, and show why.

Example:
    >>> from fakescope import Detector
    >>> detector = Detector.load()                      # the bundled default model
    >>> [d.verdict for d in detector.predict(["examples/coffee.jpg", "examples/chelsea.jpg"])]
    ['real', 'real']
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes
from fakescope.detection import Detection, Evidence
from fakescope.errors import (
    ConfigError,
    FakescopeError,
    ImageLoadError,
    ModelLoadError,
    NotFittedError,
    StorageError,
    UnknownModelError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Detection",
    "Detector",
    "Evidence",
    "FakescopeError",
    "ImageLoadError",
    "ModelLoadError",
    "NotFittedError",
    "StorageError",
    "UnknownModelError",
    "__version__",
]

__getattr__, __dir__ = _lazy_attributes(__name__, {"Detector": "detector"})  # Detector pulls in torch: imported on first use
