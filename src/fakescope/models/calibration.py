"""Probability calibration of raw logits: temperature (Platt) scaling or isotonic regression."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from fakescope.errors import ConfigError, NotFittedError
from fakescope.models.config import Calibration

METHODS = ("temperature", "isotonic")
"""What `Calibrator` fits."""


class Calibrator:
    """Fit a map from logits to calibrated P(ai) on held-out data (scikit-learn manners).

    Example:
        >>> cal = Calibrator("temperature").fit(np.array([-2.0, -1, 1, 2]), np.array([0, 0, 1, 1]))
        >>> cal, float(cal.predict(np.array([0.0]))[0])
        (Calibrator(method='temperature'), 0.5)
    """

    def __init__(self, method: str = "temperature"):
        self.method = method

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method!r})"

    def fit(self, logits: np.ndarray, labels: np.ndarray) -> Calibrator:
        """Fit on finite logits and their 0/1 labels (both present); anything else raises `ConfigError`."""
        from sklearn.isotonic import IsotonicRegression  # here, not at import: scoring needs only apply_calibration
        from sklearn.linear_model import LogisticRegression  # and scikit-learn takes a second to import

        logits, labels = np.asarray(logits, np.float64).ravel(), np.asarray(labels).ravel()
        if len(logits) != len(labels):
            raise ConfigError(f"{len(logits)} logit(s) but {len(labels)} label(s): give one label per logit")
        if not np.isfinite(logits).all():
            raise ConfigError(f"{int((~np.isfinite(logits)).sum())} logit(s) are NaN or infinite: leave those images out")
        if not np.isin(labels, (0, 1)).all():
            raise ConfigError(f"labels must be 0 (real) or 1 (ai), got {', '.join(map(str, np.unique(labels)[:5]))}")
        labels = labels.astype(int)
        if len(np.unique(labels)) < 2:
            raise ConfigError("calibration needs both real (0) and ai (1) labels; these hold only one")
        if self.method == "temperature":
            lr = LogisticRegression(C=1e6).fit(logits[:, None], labels)
            scale = float(lr.coef_[0, 0])
            if scale <= 0:  # a model worse than chance: keep the order, flatten confidence
                scale = 1e-3
            self.calibration_ = Calibration("temperature", temperature=1.0 / scale, bias=float(lr.intercept_[0]))
        elif self.method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(logits, labels)
            self.calibration_ = Calibration(
                "isotonic", x=tuple(map(float, iso.X_thresholds_)), y=tuple(map(float, iso.y_thresholds_))
            )
        else:
            raise ConfigError(f"unknown calibration method {self.method!r} (use {' or '.join(METHODS)})")
        return self

    def predict(self, logits: np.ndarray) -> np.ndarray:
        if not hasattr(self, "calibration_"):
            raise NotFittedError("Calibrator is not fitted; call fit() first")
        return apply_calibration(self.calibration_, logits)


def apply_calibration(cal: Calibration, logits: np.ndarray) -> np.ndarray:
    """Calibrated P(ai) for raw logits under a stored `Calibration`."""
    z = np.asarray(logits, np.float64)
    if cal.method == "temperature":
        return expit(z / cal.temperature + cal.bias)
    if cal.method == "isotonic":
        return np.interp(z, cal.x, cal.y)
    if cal.method == "none":
        return expit(z)
    raise ConfigError(f"unknown calibration method {cal.method!r}")
