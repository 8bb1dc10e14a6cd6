"""What a model's penultimate layer makes of a data set: features, a UMAP map, k-means clusters.

Each image goes through the model's own input policy (native-resolution tiles); its feature
vector is the mean of its tiles' pooled penultimate features, and its score the calibrated
mean of its tiles' logits, as the `Detector` computes it. Every random step takes a seed, so
the same model, rows and seed give the same numbers and pictures.
"""

from __future__ import annotations

import heapq
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageOps

from fakescope.data.manifest import as_missing
from fakescope.errors import ConfigError, FakescopeError
from fakescope.explain.cam import require_classifier
from fakescope.explain.overlay import figure_png
from fakescope.models.bundle import LoadedModel
from fakescope.models.calibration import apply_calibration
from fakescope.models.tiling import make_tiles, normalize
from fakescope.train.dataset import read_source

log = logging.getLogger(__name__)
CORRECT_COLOR, WRONG_COLOR = (40, 160, 60), (215, 40, 40)
MIN_IMAGES = 5
MAX_CATEGORIES = 20
"""Legend entries of a scatter: a column with more values draws its 18 most frequent and the rest as one grey
`(other: N values)`."""
OTHER = "(other:"
NONE = "(none)"
THUMB = 48
"""Side of a mosaic thumbnail, in pixels."""
MISSING_COLOUR = (0.6, 0.6, 0.6)
"""Points with no value, `(none)` in a legend."""
_GREYS = {10: (7,), 20: (14, 15)}
"""The greys of tab10 and tab20, left out beside `(other: ...)` and `(none)`."""


class Thumbnails:
    """A seeded sample of at most `size` of `n` rows' images, kept thumbnail-sized as they are embedded, so drawing
    them reads nothing again. The rows kept are those embedded whose place in a seeded permutation of `range(n)`
    comes first (with every row embedded: the first `size` of that permutation)."""

    def __init__(self, n: int, size: int, *, seed: int = 0, side: int = THUMB):
        self.size, self.side = size, side
        self._rank = np.argsort(np.random.default_rng(seed).permutation(n))
        self._kept: list[tuple[int, int, Image.Image]] = []  # (-rank, row, thumbnail): a heap of the latest-ranked first

    def small(self, image: Image.Image) -> Image.Image:
        """`image` as the mosaic draws it."""
        return ImageOps.fit(image, (self.side, self.side))

    def offer(self, row: int, thumbnail: Image.Image) -> None:
        """Keep an embedded row's thumbnail if it ranks among the `size` first so far."""
        item = (-int(self._rank[row]), row, thumbnail)
        if len(self._kept) < self.size:
            heapq.heappush(self._kept, item)
        elif item[0] > self._kept[0][0]:
            heapq.heapreplace(self._kept, item)

    def kept(self) -> dict[int, Image.Image]:
        """Row index -> thumbnail, in row order."""
        return {row: thumbnail for _, row, thumbnail in sorted(self._kept, key=lambda item: item[1])}


class Extremes:
    """The decoded images of each label's `size` top- and `size` lowest-scored rows, kept as they are embedded, so
    drawing them (`report_figures`' Grad-CAM examples) reads nothing again: a URL read twice could give another image.
    Ranked as `sort_values("probability", ascending=False, kind="stable")` ranks them (ties in row order), the lowest as
    that order reversed."""

    def __init__(self, labels: Sequence[str], size: int):
        self.labels, self.size = list(labels), size
        self._heaps: dict[tuple[str, bool], list[tuple[float, int, int, Image.Image]]] = {}  # the worst kept first

    def offer(self, row: int, probability: float, image: Image.Image) -> None:
        """Keep an embedded row's image while it ranks among its label's `size` top or lowest so far."""
        for top, key in ((True, (probability, -row)), (False, (-probability, row))):
            heap = self._heaps.setdefault((self.labels[row], top), [])
            (heapq.heappush if len(heap) < self.size else heapq.heappushpop)(heap, (*key, row, image))

    def kept(self) -> dict[int, Image.Image]:
        """Row index -> image."""
        return {row: image for heap in self._heaps.values() for *_, row, image in heap}


class Embedder:
    """`embed_images` fed one decoded image at a time (rows by their place in the `n` rows), in batches of about
    `batch_size` tiles in the order given: `add` each row's image or `fail` it, then `table` of the rows."""

    def __init__(self, model: LoadedModel, n: int, *, batch_size: int = 64, thumbnails: Thumbnails | None = None,
                 extremes: Extremes | None = None):
        require_classifier(model)
        if not hasattr(model.network, "backbone") and not hasattr(model.network, "embed"):
            raise ConfigError(f"{model.config.name}: embeddings need the network's embed (one vector per input), which "
                              f"{type(model.network).__name__} lacks")
        self.model, self.batch_size, self.thumbnails, self.extremes = model, batch_size, thumbnails, extremes
        self.embeddings, self.probabilities, self.errors = [None] * n, [np.nan] * n, [None] * n
        self._pending: list[tuple[int, torch.Tensor]] = []
        self._small: dict[int, Image.Image] = {}
        self._decoded: dict[int, Image.Image] = {}  # for `extremes`, until the batch is scored

    def add(self, i: int, image: Image.Image) -> None:
        """Embed row `i`'s image (with the next batch full).

        Raises:
            FakescopeError: the image cannot be cut into the model's tiles.
        """
        self._pending.append((i, torch.from_numpy(make_tiles(image, self.model.config.input).pixels)))
        if self.thumbnails is not None:
            self._small[i] = self.thumbnails.small(image)
        if self.extremes is not None:
            self._decoded[i] = image
        if sum(len(t) for _, t in self._pending) >= self.batch_size:
            self._flush()

    def fail(self, i: int, reason: str) -> None:
        """Row `i` has no image: why."""
        self.errors[i] = reason

    def table(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The rows (fresh index) plus `probability`, `embedding` and `error`, as `embed_images` returns them."""
        self._flush()
        return rows.reset_index(drop=True).assign(probability=self.probabilities, embedding=self.embeddings,
                                                  error=self.errors)

    def _flush(self) -> None:
        model = self.model
        for i, features, logits in _forward_tiles(model, self._pending, self.batch_size):
            if not (features.isfinite().all() and logits.isfinite().all()):  # k-means and UMAP would fail on the whole set
                self.errors[i] = f"{model.config.name} gave non-finite (NaN or infinite) features or logits for this image"
                continue
            self.embeddings[i] = features.mean(0).numpy().astype(np.float32)
            self.probabilities[i] = float(apply_calibration(model.config.calibration, np.array([logits.mean().item()]))[0])
            if self.thumbnails is not None:
                self.thumbnails.offer(i, self._small[i])
            if self.extremes is not None:
                self.extremes.offer(i, self.probabilities[i], self._decoded[i])
        self._pending.clear()
        self._small.clear()
        self._decoded.clear()


def embed_images(model: LoadedModel, rows: pd.DataFrame, *, batch_size: int = 64,
                 read: Callable[[str], Image.Image] = read_source, thumbnails: Thumbnails | None = None,
                 extremes: Extremes | None = None) -> pd.DataFrame:
    """Features and scores for every row of a manifest (at least a `uri` column), each image as `read` gives it;
    `thumbnails` and `extremes`, if given, keep their images of those embedded (rows by their place in `rows`).

    Returns:
        The rows (fresh index) plus `probability` (calibrated P(ai)), `embedding` (float32
        vector) and `error` (why an image could not be read, or that the model gave it NaN or
        infinite features or logits; its other two fields are empty).

    Example:
        >>> table = embed_images(load_model("fakescope-default"), read_manifest("m.parquet"))  # doctest: +SKIP
        >>> np.stack(table["embedding"]).shape  # doctest: +SKIP
        (200, 1280)
    """
    embedder = Embedder(model, len(rows), batch_size=batch_size, thumbnails=thumbnails, extremes=extremes)
    for i, uri in enumerate(rows["uri"]):
        try:
            embedder.add(i, read(uri))
        except FakescopeError as exc:
            embedder.fail(i, exc.reason)
    return embedder.table(rows)


def project_umap(features: np.ndarray, *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """A deterministic 2-D UMAP projection (N, 2) of (N, D) features."""
    import umap

    if len(features) < MIN_IMAGES:
        raise ConfigError(f"UMAP needs at least {MIN_IMAGES} images, got {len(features)}")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(features) - 1), min_dist=min_dist,
                        random_state=seed, init="spectral")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coords = reducer.fit_transform(np.asarray(features, np.float32)).astype(np.float32)
    for warning in caught:
        text = str(warning.message)
        if text.startswith("Spectral initialisation failed"):  # umap's five lines, advising jitter the user cannot add
            log.warning("UMAP's spectral start failed (many images have near-identical features); it started from "
                        "seeded random positions instead")
        elif not text.startswith("n_jobs value"):  # umap's note that a seed runs it on one thread
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return coords


@dataclass(frozen=True)
class Clusters:
    """k-means assignments and, per cluster, its size, majority value and purity."""

    assignments: np.ndarray
    table: pd.DataFrame
    purity: float
    """Share of all images that carry their cluster's majority value."""


def cluster_purity(features: np.ndarray, values: pd.Series, k: int, *, seed: int = 0) -> Clusters:
    """k-means on the features, scored by how pure each cluster is in `values` (e.g. labels)."""
    from sklearn.cluster import KMeans

    if k > len(features):
        raise ConfigError(f"k-means with k={k} clusters needs at least {k} images, got {len(features)}")
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # sklearn's own: two lines of its source on stderr
        warnings.simplefilter("ignore", ConvergenceWarning)
        assignments = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(features)
    if len(np.unique(assignments)) < k:
        log.warning("k-means found %d distinct cluster(s) of k=%d: many images have identical features",
                    len(np.unique(assignments)), k)
    values = pd.Series(values).reset_index(drop=True).fillna("").astype(str)
    rows = []
    for cluster in range(k):
        counts = values[assignments == cluster].value_counts()
        majority = counts.index[0] if len(counts) else ""
        rows.append({"cluster": cluster, "size": int(counts.sum()), "majority": majority,
                     "majority_count": int(counts.iloc[0]) if len(counts) else 0,
                     "purity": float(counts.iloc[0] / counts.sum()) if len(counts) else 0.0})
    table = pd.DataFrame(rows)
    return Clusters(assignments, table, float(table["majority_count"].sum() / len(values)))


def scatter_png(coords: np.ndarray, values: pd.Series, title: str) -> bytes:
    """UMAP points coloured by a column: a legend for categories, a colour bar for numbers; missing values (empty, or
    a `MISSING_MARKERS` one such as `No face detected`) grey, as `(none)`."""
    figure = Figure(figsize=(7, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    values = as_missing(pd.Series(values).reset_index(drop=True))  # `No face detected` is missing, as evaluate reads it
    if pd.api.types.is_numeric_dtype(values) and values.nunique() > 12:
        numbers = values.to_numpy(float)
        missing = np.isnan(numbers)  # matplotlib draws NaN colours transparent: the points would vanish
        if missing.any():
            axes.scatter(coords[missing, 0], coords[missing, 1], s=14, color=MISSING_COLOUR, label=f"{NONE} ({missing.sum()})")
            figure.legend(title=str(values.name), fontsize=8, markerscale=1.5, loc="outside right upper")
        shown = axes.scatter(coords[~missing, 0], coords[~missing, 1], c=numbers[~missing], cmap="viridis", s=14)
        figure.colorbar(shown, ax=axes, label=str(values.name))
    else:
        categories = drawn_categories(values)
        palette = _palette(sorted(categories.unique()))
        for name, colour in palette.items():
            mask = (categories == name).to_numpy()
            axes.scatter(coords[mask, 0], coords[mask, 1], s=14, color=colour, label=f"{name} ({mask.sum()})")
        figure.legend(title=str(values.name), fontsize=8, markerscale=1.5, loc="outside right upper")  # not over points
    axes.set_title(title, fontsize=10)
    axes.set_xlabel("UMAP 1")
    axes.set_ylabel("UMAP 2")
    return figure_png(figure)


def drawn_categories(values: pd.Series) -> pd.Series:
    """Each value as its legend entry; over `MAX_CATEGORIES`, the 18 most frequent (ties by name) and one `(other: ...)`."""
    if pd.api.types.is_float_dtype(values) and values.dropna().mod(1).eq(0).all():
        values = values.astype("Int64")  # glasses 1.0 -> 1, as evaluate prints them
    categories = values.astype(object).where(values.notna(), "").astype(str).replace("", NONE)
    counts = categories.value_counts()
    if len(counts) <= MAX_CATEGORIES:
        return categories
    kept = sorted(counts.index, key=lambda name: (-counts[name], name))[:MAX_CATEGORIES - len(_GREYS[20])]
    return categories.where(categories.isin(kept), f"{OTHER} {len(counts) - len(kept)} values)")


def named_values(values: pd.Series) -> list[str]:
    """The distinct values a scatter of `values` names (`glasses` 1.0 as `1`); a missing, empty or `MISSING_MARKERS`
    cell is none, as `fakescope evaluate` reads it, so `1` beside `No face detected` is one value."""
    return sorted(set(drawn_categories(as_missing(pd.Series(values)))) - {NONE})


def mosaic_png(coords: np.ndarray, images: list[Image.Image], correct: np.ndarray, title: str,
               *, thumb: int = THUMB, side: int = 1400) -> bytes:
    """Thumbnails placed at their UMAP coordinates, framed green when the model is right, red when wrong."""
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    low, high = coords.min(0), coords.max(0)
    span = np.where(high > low, high - low, 1.0)
    room = side - thumb - 8
    for (x, y), image, ok in zip(coords, images, correct):
        small = ImageOps.fit(image, (thumb, thumb))
        framed = ImageOps.expand(small, border=3, fill=CORRECT_COLOR if ok else WRONG_COLOR)
        left, top = (np.array([x, high[1] - y + low[1]]) - low) / span * room
        canvas.paste(framed, (int(left), int(top)))
    figure = Figure(figsize=(9, 9.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(canvas)
    axes.set_axis_off()
    axes.set_title(title, fontsize=10)
    rgb = [tuple(c / 255 for c in colour) for colour in (CORRECT_COLOR, WRONG_COLOR)]
    figure.legend(handles=[Patch(color=rgb[0], label=f"correct ({int(np.sum(correct))})"),  # outside: over the canvas it
                           Patch(color=rgb[1], label=f"wrong ({int(len(correct) - np.sum(correct))})")],  # hid thumbnails
                  loc="outside lower center", ncols=2, fontsize=8)
    return figure_png(figure)


@torch.inference_mode()
def _forward_tiles(model: LoadedModel, items: list[tuple[int, torch.Tensor]], batch_size: int):
    """Yield (row index, tile features, tile logits); equal-sized tiles go through together."""
    net, policy = model.network, model.config.input
    device = next(net.parameters()).device
    by_shape: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    for index, tiles in items:
        by_shape.setdefault(tuple(tiles.shape[-2:]), []).append((index, tiles))
    for group in by_shape.values():
        x = normalize(torch.cat([t for _, t in group]).to(device), policy)
        features, logits = [], []
        for chunk in x.split(batch_size):
            maps = net.forward_features(chunk)
            pooled = net.backbone.forward_head(maps, pre_logits=True) if hasattr(net, "backbone") else net.embed(chunk)
            features.append(pooled.float().cpu())
            logits.append(net.forward_head(maps).float().cpu())
        sizes = [len(t) for _, t in group]
        yield from zip((i for i, _ in group), torch.cat(features).split(sizes), torch.cat(logits).split(sizes))


def _palette(names: list[str]) -> dict[str, tuple[float, ...]]:
    """A colour per name; `(other: ...)` first (drawn under the rest) and `(none)` in greys no named value has."""
    from matplotlib import colormaps

    greys = {name: (0.8, 0.8, 0.8, 1.0) if name.startswith(OTHER) else (*MISSING_COLOUR, 1.0)
             for name in names if name.startswith(OTHER) or name == NONE}
    named = [name for name in names if name not in greys]
    cmap = colormaps["tab10" if len(named) <= 10 - len(_GREYS[10]) * bool(greys) else "tab20"]
    colours = [cmap(i) for i in range(cmap.N) if not greys or i not in _GREYS[cmap.N]]
    if len(colours) < len(named):  # 19 named values beside (none): one shares a grey rather than go undrawn
        colours = [cmap(i) for i in range(cmap.N)]
    return {**greys, **dict(zip(named, colours))}
