"""fakescope: tell whether an image was made by a generative model, and show why.

Example:
    >>> from fakescope import Detector
    >>> detector = Detector.load()                      # the bundled default model
    >>> [d.verdict for d in detector.predict(["photo.jpg"])]  # doctest: +SKIP
    ['real']
"""

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


def __getattr__(name: str):
    # Detector pulls in torch; import it on first use so light submodules stay light.
    if name == "Detector":
        from fakescope.detector import Detector

        return Detector
    raise AttributeError(f"module 'fakescope' has no attribute {name!r}")
