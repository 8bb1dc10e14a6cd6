"""Score many uploads through one `Detector`, a batch of decoded images at a time, within a pixel limit."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import TypeVar

from PIL import Image

from fakescope.detection import Detection
from fakescope.detector import Detector
from fakescope.errors import FakescopeError
from fakescope.io.image import decode_image
from fakescope.serve.limits import check_image

T = TypeVar("T")


def pixel_batches(sized: Iterable[tuple[T, int]], budget: int) -> Iterator[list[T]]:
    """Consecutive items, grouped so that each group's pixel counts total at most `budget` (a larger item goes alone)."""
    batch: list[T] = []
    total = 0
    for item, pixels in sized:
        if batch and total + pixels > budget:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += pixels
    if batch:
        yield batch


def score_uploads(detector: Detector, uploads: list[tuple[str, bytes]], max_pixels: int, *,
                  heatmap: bool = False) -> Iterator[tuple[int, Detection, Image.Image | None]]:
    """(index, detection named after the upload, decoded image or None) for each upload, as each batch is scored.

    Headers are checked first: a non-image or an image over `max_pixels` gets a failed detection
    saying why. The others are decoded a batch at a time (at most `max_pixels` pixels in all) and
    scored with one `detector.predict` call per batch; a caller that keeps no decoded image keeps
    at most one batch in memory.
    """
    sized = []
    for index, (name, data) in enumerate(uploads):
        try:
            _, width, height = check_image(data, max_pixels)
        except FakescopeError as exc:
            yield index, Detection.failed(name, str(exc), detector.name, detector.threshold), None
            continue
        sized.append((index, width * height))
    for batch in pixel_batches(sized, max_pixels):
        decoded = {}
        for index in batch:
            name, data = uploads[index]
            try:
                decoded[index] = decode_image(data)
            except FakescopeError as exc:
                yield index, Detection.failed(name, str(exc), detector.name, detector.threshold), None
        detections = detector.predict(list(decoded.values()), heatmap=heatmap) if decoded else []
        for (index, loaded), detection in zip(decoded.items(), detections):
            yield index, dataclasses.replace(detection, source=uploads[index][0]), loaded.image
