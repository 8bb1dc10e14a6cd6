"""Evaluation: metrics, slices, robustness sweeps and reports."""

from fakescope.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    equal_error_rate,
    expected_calibration_error,
    reliability_curve,
)

__all__ = [
    "binary_metrics",
    "bootstrap_ci",
    "equal_error_rate",
    "expected_calibration_error",
    "reliability_curve",
]
