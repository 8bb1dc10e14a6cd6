"""Explanations: where a model sees ai traces in an image, and how it arranges a data set.

Needs the `explain` extra (matplotlib, umap-learn); Grad-CAM and Grad-CAM++ also need pytorch-grad-cam,
installed with `pip install --no-deps grad-cam ttach` (its declared dependencies pull in GUI OpenCV).
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes

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

# torch, matplotlib and the training code load with the names that need them, not with the package
__getattr__, __dir__ = _lazy_attributes(__name__, {
    "METHODS": "cam",
    "class_activation_map": "cam",
    "feature_layer": "cam",
    "unsupported": "cam",
    "Clusters": "embedding",
    "cluster_purity": "embedding",
    "embed_images": "embedding",
    "mosaic_png": "embedding",
    "project_umap": "embedding",
    "scatter_png": "embedding",
    "overlay_png": "overlay",
    "save_overlay": "overlay",
    "DEFAULT_METHODS": "report",
    "EmbeddingReport": "report",
    "ExplainedImage": "report",
    "embedding_report": "report",
    "explain_image": "report",
    "report_figures": "report",
})
