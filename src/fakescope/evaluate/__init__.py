"""Evaluation: metrics, slices, robustness sweeps and reports.

Leave-one-generator-out training lives in `fakescope.evaluate.generalization` (it imports the
training loop, which itself imports these metrics, so it is not re-exported here).
"""

from fakescope.evaluate.evaluator import EvaluationReport, evaluate, make_scorer, recipe_preprocessing
from fakescope.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    bootstrap_intervals,
    equal_error_rate,
    expected_calibration_error,
    reliability_curve,
    roc_pr_curves,
    uncertain_rate,
)
from fakescope.evaluate.report import render_html, write_report
from fakescope.evaluate.robustness import PERTURBATIONS, perturbed_scores, robustness_table
from fakescope.evaluate.slices import attribute_columns, slice_report, unsliced_columns

__all__ = [
    "PERTURBATIONS",
    "EvaluationReport",
    "attribute_columns",
    "binary_metrics",
    "bootstrap_ci",
    "bootstrap_intervals",
    "equal_error_rate",
    "evaluate",
    "expected_calibration_error",
    "make_scorer",
    "perturbed_scores",
    "recipe_preprocessing",
    "reliability_curve",
    "render_html",
    "robustness_table",
    "roc_pr_curves",
    "slice_report",
    "uncertain_rate",
    "unsliced_columns",
    "write_report",
]
