"""Evaluation: metrics, slices, robustness sweeps and reports.

Leave-one-generator-out training lives in `fakescope.evaluate.generalization` (it imports the
training loop, which itself imports these metrics, so it is not re-exported here).
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes

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

# torch, pandas and scikit-learn load with the names that need them, not with the package
__getattr__, __dir__ = _lazy_attributes(__name__, {
    "EvaluationReport": "evaluator",
    "evaluate": "evaluator",
    "make_scorer": "evaluator",
    "recipe_preprocessing": "evaluator",
    "binary_metrics": "metrics",
    "bootstrap_ci": "metrics",
    "bootstrap_intervals": "metrics",
    "equal_error_rate": "metrics",
    "expected_calibration_error": "metrics",
    "reliability_curve": "metrics",
    "roc_pr_curves": "metrics",
    "uncertain_rate": "metrics",
    "render_html": "report",
    "write_report": "report",
    "PERTURBATIONS": "robustness",
    "perturbed_scores": "robustness",
    "robustness_table": "robustness",
    "attribute_columns": "slices",
    "slice_report": "slices",
    "unsliced_columns": "slices",
})
