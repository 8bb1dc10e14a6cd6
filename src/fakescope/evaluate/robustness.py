"""Robustness sweep: the same images after the edits they meet in the wild, scored again.

Each perturbation is a named function from an RGB image to an RGB image, applied to the
decoded original before the model's own preprocessing. The sweep reports AUC (and more) per
perturbation and its drop from the clean score; provenance evidence plays no part, since
re-encoding strips metadata anyway.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from fakescope.errors import UnscorableImages
from fakescope.evaluate.metrics import binary_metrics
from fakescope.train.augment import jpeg, reencode

Perturbation = Callable[[Image.Image], Image.Image]
Scorer = Callable[[list[Image.Image]], np.ndarray]
CLEAN = "clean"


def resize(image: Image.Image, scale: float) -> Image.Image:
    """Bicubic resize by `scale` (each side at least 1 pixel)."""
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


def blur(image: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation `sigma` pixels."""
    return image.filter(ImageFilter.GaussianBlur(sigma))


def center_crop(image: Image.Image, fraction: float) -> Image.Image:
    """The central `fraction` of each side."""
    w, h = max(1, round(image.width * fraction)), max(1, round(image.height * fraction))
    left, top = (image.width - w) // 2, (image.height - h) // 2
    return image.crop((left, top, left + w, top + h))


def shift(image: Image.Image, pixels: int) -> Image.Image:
    """Drop `pixels` rows and columns at the top left: any 8 x 8 JPEG grid no longer lines up with the tiles."""
    return image.crop((pixels, pixels, image.width, image.height))


def webp(image: Image.Image, quality: int) -> Image.Image:
    """Encode and decode as lossy WebP at `quality`."""
    return reencode(image, "WEBP", quality=quality)


def screenshot(image: Image.Image) -> Image.Image:
    """What a screenshot of a displayed image looks like: 0.8x bilinear resize, gamma 1.1, PNG."""
    small = image.resize((max(1, round(image.width * 0.8)), max(1, round(image.height * 0.8))), Image.Resampling.BILINEAR)
    table = [round(255.0 * (i / 255.0) ** (1 / 1.1)) for i in range(256)] * 3
    return reencode(small.point(table), "PNG")


PERTURBATIONS: dict[str, Perturbation] = {
    "jpeg_q95": lambda im: jpeg(im, 95),
    "jpeg_q85": lambda im: jpeg(im, 85),
    "jpeg_q70": lambda im: jpeg(im, 70),
    "jpeg_q50": lambda im: jpeg(im, 50),
    "resize_0.5x": lambda im: resize(im, 0.5),
    "resize_0.75x": lambda im: resize(im, 0.75),
    "resize_1.5x": lambda im: resize(im, 1.5),
    "blur_sigma1": lambda im: blur(im, 1.0),
    "center_crop_50": lambda im: center_crop(im, 0.5),
    "shift_3px": lambda im: shift(im, 3),
    "screenshot": screenshot,
    "webp_q80": lambda im: webp(im, 80),
}
"""The default sweep, in report order."""


def perturbed_scores(images: list[Image.Image], scorer: Scorer, names: list[str] | None = None,
                     errors: list[tuple[int, str, str]] | None = None) -> dict[str, np.ndarray]:
    """Score `images` after each named perturbation: `{name: P(ai) per image}`.

    An image a perturbation cannot be applied to (wider than WebP's 16,383 px, say), or whose edit `scorer` cannot
    score (it raises `UnscorableImages` naming it: halved, a strip too long and thin to upscale to a tile), scores NaN
    there, and `errors`, when given, receives `(image index, name, message)` for it.

    Raises:
        KeyError: a name that is not in `PERTURBATIONS`.
    """
    chosen = list(PERTURBATIONS) if names is None else names
    out = {}
    for name in chosen:
        perturb, edited, done = PERTURBATIONS[name], [], []
        for i, image in enumerate(images):
            try:
                edited.append(perturb(image))
                done.append(i)
            except (ValueError, OSError) as exc:
                if errors is not None:
                    errors.append((i, name, str(exc)))
        probs = np.full(len(images), np.nan)
        if edited:
            try:
                probs[done] = scorer(edited)
            except UnscorableImages as exc:  # edited too small or thin to tile, say: NaN there
                probs[done] = exc.scores
                if errors is not None:
                    errors += [(done[j], name, reason) for j, reason in sorted(exc.reasons.items())]
        out[name] = probs
    return out


_ROW_METRICS = ("auc", "ap", "accuracy", "recall", "false_positive_rate", "eer", "auc_drop", "recall_drop")


def robustness_table(labels: np.ndarray, scores: dict[str, np.ndarray], threshold: float = 0.5) -> list[dict]:
    """One row per entry of `scores` (which must include `clean`): AUC, AP, accuracy, recall, EER and drops.

    Every row measures the same images: those with a score (not NaN) in every entry. `auc_drop` is
    clean AUC minus this AUC (positive = worse); `recall_drop` likewise. Recall is NaN without ai
    images, the false-positive rate without real ones.
    """
    kept = np.all([np.isfinite(v) for v in scores.values()], axis=0)
    if not kept.any():
        return [{"perturbation": name, "n": 0, **dict.fromkeys(_ROW_METRICS, float("nan"))} for name in scores]
    labels, scores = np.asarray(labels)[kept], {k: np.asarray(v)[kept] for k, v in scores.items()}
    clean = binary_metrics(labels, scores[CLEAN], threshold)
    rows = []
    for name, probs in scores.items():
        m = clean if name == CLEAN else binary_metrics(labels, probs, threshold)
        rows.append({
            "perturbation": name,
            "n": m["n"],
            "auc": m["auc"],
            "ap": m["ap"],
            "accuracy": m["accuracy"],
            "recall": m["recall"],
            "false_positive_rate": _false_positive_rate(m["confusion"]),
            "eer": m["eer"],
            "auc_drop": clean["auc"] - m["auc"],
            "recall_drop": clean["recall"] - m["recall"],
        })
    return rows


def _false_positive_rate(confusion: list[list[int]]) -> float:
    """Share of real images called ai; NaN without real images."""
    (tn, fp), _ = confusion
    return fp / (tn + fp) if tn + fp else float("nan")
