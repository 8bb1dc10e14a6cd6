"""Explanations: where a model sees ai traces in an image, and how it arranges a data set.

Needs the `explain` extra (matplotlib, umap-learn); Grad-CAM and Grad-CAM++ also need pytorch-grad-cam,
installed with `pip install --no-deps grad-cam ttach` (its declared dependencies pull in GUI OpenCV).
"""

from fakescope.explain.cam import METHODS, class_activation_map, feature_layer, unsupported
from fakescope.explain.embedding import (
    Clusters,
    cluster_purity,
    embed_images,
    mosaic_png,
    project_umap,
    scatter_png,
)
from fakescope.explain.overlay import overlay_png, save_overlay
from fakescope.explain.report import (
    DEFAULT_METHODS,
    EmbeddingReport,
    ExplainedImage,
    embedding_report,
    explain_image,
    report_figures,
)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Clusters",
    "EmbeddingReport",
    "ExplainedImage",
    "class_activation_map",
    "cluster_purity",
    "embed_images",
    "embedding_report",
    "explain_image",
    "feature_layer",
    "mosaic_png",
    "overlay_png",
    "project_umap",
    "report_figures",
    "save_overlay",
    "scatter_png",
    "unsupported",
]
