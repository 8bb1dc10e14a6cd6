"""Explanations written to files: heatmap overlays per image, the embedding report, report figures.

Outputs go to a local folder or a storage URI (`fakescope.io.storage`), except
`report_figures`, whose PNGs the evaluation report embeds from a local folder.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fakescope.data.manifest import check_rows, warn_repeated_uris
from fakescope.detector import NO_FINITE_SCORE, Detector
from fakescope.errors import ConfigError, FakescopeError, ImageLoadError
from fakescope.explain.cam import class_activation_map
from fakescope.explain.embedding import (
    MIN_IMAGES,
    Clusters,
    Embedder,
    Extremes,
    Thumbnails,
    cluster_purity,
    embed_images,
    mosaic_png,
    named_values,
    project_umap,
    scatter_png,
)
from fakescope.explain.overlay import save_overlay
from fakescope.io import storage
from fakescope.io.fetch import is_url, shown_source, source_stem
from fakescope.io.image import load_source
from fakescope.io.inputs import path_text
from fakescope.io.storage import require_out_folder
from fakescope.models.bundle import LoadedModel, load_model
from fakescope.train.augment import neutralize, recipe_preprocessing
from fakescope.train.dataset import read_source

log = logging.getLogger(__name__)

METHOD_TITLES = {"tiles": "per-tile P(ai)", "gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "cam": "CAM"}
DEFAULT_METHODS = tuple(METHOD_TITLES)


@dataclass(frozen=True)
class ExplainedImage:
    """One image's overlays: which PNG each method wrote, and why any method was skipped."""

    source: str
    probability: float
    verdict: str
    files: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def overlay_name(source: str) -> str:
    """The name of `source`'s overlays: its `source_stem`, `-`, and 8 hex digits of the sha256 of the source as named (a
    local file's absolute path, an http(s) URL as `shown_source` names it, a storage URI as given), so that images of one
    file name never share overlays, in one run or two, and an image keeps its overlays' name from run to run."""
    named = shown_source(source) if is_url(source) or storage.is_remote(source) else os.path.abspath(source.removeprefix("file://"))
    return f"{source_stem(source)}-{hashlib.sha256(os.fsencode(named)).hexdigest()[:8]}"


def overlay_file(out: str, name: str, method: str) -> str:
    """Where `explain_image` writes the `method` overlay of the image named `name` (`gradcam++` as `gradcampp`)."""
    return storage.join(out, f"{name}_{method.replace('+', 'p')}.png")


def explain_image(detector: Detector, source: str, out: str, *, methods: tuple[str, ...] = DEFAULT_METHODS,
                  name: str | None = None) -> ExplainedImage:
    """Score `source` and write `<out>/<name>_<method>.png` overlays (`name` by default `overlay_name(source)`), the
    score in each caption. Existing files of those names are replaced.

    `tiles` paints each tile's calibrated P(ai); the CAM methods show where the evidence lies.
    A method the architecture does not allow (CAM without a linear head), or whose map holds NaN or
    infinite values, is skipped, with its reason.

    Raises:
        ImageLoadError, StorageError: The image cannot be read, or read but not scored (too long and thin to tile).
    """
    unknown = sorted(set(methods) - set(METHOD_TITLES))
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)}; expected {', '.join(METHOD_TITLES)}")
    loaded = load_source(source)  # read once: a URL or bucket object fetched twice could be two images
    image, detection = loaded.image, detector.predict(loaded, heatmap="tiles" in methods)
    if detection.error is not None and not detection.error.startswith(NO_FINITE_SCORE):  # read, not scored: too thin to tile
        raise ImageLoadError(detection.error)
    shown = shown_source(source)  # a signed URL without its signature or password, in the caption
    name = name or overlay_name(source)
    files, skipped = {}, {}
    for method in methods:
        try:
            heat = detection.heatmap if method == "tiles" else class_activation_map(detector.torch_model, image, method)
        except ConfigError as exc:
            skipped[method] = str(exc)
            continue
        if heat is None or not np.isfinite(heat).all():  # NaN tiles fail the detection (no map); drawn, NaN reads as no evidence
            skipped[method] = f"{detector.name}: the {method} map is not finite (the network gave NaN or infinite values)"
            continue
        caption = (f"{path_text(os.path.basename(shown))}: P(ai) = {detection.probability:.3f} ({detection.verdict})\n"
                   f"{METHOD_TITLES[method]}, model {detector.name}")
        scale = "P(ai) of each tile" if method == "tiles" else "relative evidence of ai"
        files[method] = save_overlay(overlay_file(out, name, method), image, heat, caption, scale_label=scale)
    return ExplainedImage(source, detection.probability, detection.verdict, files, skipped)


@dataclass(frozen=True)
class EmbeddingReport:
    """Per-image features, scores, UMAP coordinates and clusters, and the figures drawn from them."""

    table: pd.DataFrame
    clusters: Clusters
    figures: list[tuple[str, str]]
    extremes: dict[int, Image.Image] = field(default_factory=dict)
    """Table row -> decoded image, of each label's `extremes` top- and lowest-scored rows (see `embedding_report`)."""


def embedding_report(
    model: LoadedModel,
    rows: pd.DataFrame,
    out: str,
    *,
    color_by: tuple[str, ...] = ("label", "generator"),
    clusters: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_thumbnails: int = 400,
    extremes: int = 0,
    read: Callable[[str], Image.Image] = read_source,
) -> EmbeddingReport:
    """Embed manifest rows (at least `uri` and `label`), project them with UMAP, cluster them, write the results under `out`.

    Writes `embeddings.parquet` (the rows plus probability, embedding, umap_x, umap_y, cluster,
    error), `clusters.csv`, one `umap_<column>.png` per `color_by` column that has two or more
    values (`label` always), and `umap_mosaic.png` (up to `max_thumbnails` images, drawn with `seed`).

    Args:
        read: Decodes a `uri` into the RGB image embedded and drawn (default: as stored).
        extremes: Keep the decoded images of each label's that many top- and lowest-scored rows as they are embedded
            (`EmbeddingReport.extremes`), to draw them without reading them again.
        clusters: k for k-means; default: the number of distinct labels. Purity is measured on labels
            (of a set of one label it is 1 whatever the features hold, which is logged as a warning).

    Raises:
        ModuleNotFoundError: umap-learn is not installed, before any image is read.

    Example:
        >>> report = embedding_report(load_model("runs/x/model"), read_manifest("m.parquet"), "out/")  # doctest: +SKIP
        >>> report.clusters.purity  # doctest: +SKIP
        0.97
    """
    run = _EmbeddingRun(model, rows, out, color_by=color_by, clusters=clusters, seed=seed, max_thumbnails=max_thumbnails,
                        extremes=extremes)
    return run.finish(embed_images(model, run.rows, batch_size=batch_size, read=read, thumbnails=run.thumbnails,
                                   extremes=run.extremes))


class _EmbeddingRun:
    """`embedding_report` in two steps, for images embedded elsewhere: the checks, then `finish` of their table."""

    def __init__(self, model: LoadedModel, rows: pd.DataFrame, out: str, *, color_by: tuple[str, ...] = ("label", "generator"),
                 clusters: int | None = None, seed: int = 0, max_thumbnails: int = 400, extremes: int = 0):
        require_out_folder(out)
        import umap  # noqa: F401 - missing: said before every image is embedded, not after (and nothing written)

        rows = check_rows(rows, "the rows to embed", split_required=False)  # `fake` is ai; absent source, generator: empty
        warn_repeated_uris(rows, "the manifest", "embedded")
        missing = [c for c in color_by if c not in rows.columns]
        if missing:
            raise ConfigError(f"no column(s) {', '.join(missing)} to colour by; the manifest has {', '.join(rows.columns)}")
        self.model, self.rows, self.out, self.color_by, self.clusters, self.seed = model, rows, out, color_by, clusters, seed
        self.thumbnails = Thumbnails(len(rows), max_thumbnails, seed=seed)  # kept as embedded: a URL or bucket object read once
        self.extremes = Extremes(rows["label"], extremes)

    def finish(self, table: pd.DataFrame) -> EmbeddingReport:
        """Project, cluster and draw the embedded rows (`embed_images`' table of `self.rows`)."""
        model, out, seed = self.model, self.out, self.seed
        ok = table["error"].isna().to_numpy()
        if ok.sum() < MIN_IMAGES:
            first = ""
            if not ok.all():
                uri, error = table.loc[~ok, ["uri", "error"]].iloc[0]
                first = f"; first unreadable: {error if uri in error else f'{path_text(shown_source(uri))}: {error}'}"
            raise ConfigError(f"UMAP needs at least {MIN_IMAGES} readable images, got {ok.sum()} of {len(ok)}{first}")
        features = np.stack(table.loc[ok, "embedding"].tolist())
        labels = table.loc[ok, "label"].fillna("").astype(str)
        if labels.nunique() < 2:
            log.warning("every embedded image is labelled %r: label purity is 1 whatever the features hold", labels.iloc[0])
        k = self.clusters or max(2, labels.nunique())
        found = cluster_purity(features, table.loc[ok, "label"], k, seed=seed)  # before UMAP: a k too large fails fast
        coords = project_umap(features, seed=seed)
        table.loc[ok, "umap_x"], table.loc[ok, "umap_y"] = coords[:, 0], coords[:, 1]
        table.loc[ok, "cluster"] = found.assignments
        table["cluster"] = table["cluster"].astype("Int64")

        storage.write_bytes(storage.join(out, "embeddings.parquet"), _parquet(table))
        storage.write_bytes(storage.join(out, "clusters.csv"), found.table.to_csv(index=False).encode())
        valid = table[ok].reset_index(drop=True)
        figures = []
        for column in dict.fromkeys(("label", *self.color_by)):
            if column == "label" or len(named_values(valid[column])) > 1:
                uri = storage.join(out, f"umap_{_slug(column)}.png")
                title = f"{model.config.name}: UMAP of penultimate features by {column} (n={len(valid)})"
                storage.write_bytes(uri, scatter_png(coords, valid[column].rename(column), title))
                figures.append((f"UMAP by {column}", uri))
        small = self.thumbnails.kept()
        sample = np.searchsorted(np.flatnonzero(ok), list(small))  # rows of the table -> rows of `valid`
        correct = (valid["probability"].to_numpy() >= model.config.threshold) == (valid["label"] == "ai").to_numpy()
        title = (f"{model.config.name}: UMAP thumbnails ({len(sample)} of {len(valid)}); "
                 f"k-means k={k}, label purity {found.purity:.2f}")
        uri = storage.join(out, "umap_mosaic.png")
        storage.write_bytes(uri, mosaic_png(coords[sample], list(small.values()), correct[sample], title))
        figures.append(("UMAP thumbnail mosaic (green: correct, red: wrong)", uri))
        return EmbeddingReport(table, found, figures, self.extremes.kept())


def report_figures(model_or_detector: Detector | LoadedModel | str | os.PathLike, manifest_df: pd.DataFrame,
                   out_dir: str | os.PathLike, *, seed: int = 0, examples: int = 4) -> list[tuple[str, Path]]:
    """The explanation figures for an evaluation report, as (title, PNG path) pairs.

    UMAP scatters (by label, and by source and by generator where there are several), the thumbnail mosaic, and
    Grad-CAM overlays of `examples` images: half the top-scored ai images (the top hits), half the most
    confident mistakes (the lowest-scored ai images, then the top-scored real ones), each titled and captioned with
    its label, source, pixel P(ai) and whether the threshold gets it right (a group short of images, as in a split of
    one label, leaves its share to the others). Each image goes through the model's
    recipe preprocessing first, as `fakescope.evaluate` scores it, so the maps are of what the report measured and the
    P(ai) shown is
    its `pixel_probability` (no provenance evidence); each is the image decoded as it was embedded, not read again (a
    URL read twice could give another image than the one scored). `ReportFigures` draws them from images decoded
    elsewhere (`fakescope.evaluate`'s scoring pass), each read once. Where the data
    or the model allow no figures (UMAP of fewer than 5 images; Grad-CAM of a model without convolutional
    features) there are none, with a warning. A uri the rows repeat is drawn once, without the warning that
    `fakescope.evaluate` already gives when it scores them.
    """
    figures = ReportFigures(model_or_detector, manifest_df, out_dir, seed=seed, examples=examples)
    for uri in figures.uris():
        try:
            figures.add(uri, figures.read(uri))
        except FakescopeError as exc:
            figures.fail(uri, exc.reason)
    return figures.draw()


class ReportFigures:
    """`report_figures` of images read elsewhere: `add` each row's image as read and recipe-preprocessed (`read` does
    both) or `fail` it, by uri (a uri given again is passed over), then `draw`. Where the rows allow no figures (no
    `uri` column, say), the warning comes here, and `draw` returns none."""

    def __init__(self, model_or_detector: Detector | LoadedModel | str | os.PathLike, manifest_df: pd.DataFrame,
                 out_dir: str | os.PathLike, *, seed: int = 0, examples: int = 4):
        self.model, self.out, self.examples = _as_model(model_or_detector), Path(out_dir), examples
        recipe = recipe_preprocessing(self.model.config)
        self.read = (lambda uri: neutralize(read_source(uri), recipe)) if recipe else read_source
        self._run: _EmbeddingRun | None = None
        self._rows: dict[str, int] = {}  # uri -> its row, until added
        try:
            rows = manifest_df.drop_duplicates("uri") if "uri" in manifest_df else manifest_df  # no uri: the run says so
            run = _EmbeddingRun(self.model, rows, str(self.out), color_by=("label", "source", "generator"), seed=seed,
                                extremes=examples)  # the examples kept as scored: a URL read again could differ
            self._embedder = Embedder(self.model, len(run.rows), thumbnails=run.thumbnails, extremes=run.extremes)
        except ConfigError as exc:
            log.warning("the report has no explanation figures: %s", exc)
            return
        self._run, self._rows = run, {uri: i for i, uri in enumerate(run.rows["uri"])}

    def uris(self) -> list[str]:
        """The uris to add, each once."""
        return list(self._rows)

    def add(self, uri: str, image: Image.Image) -> None:
        """Embed `uri`'s image, decoded and recipe-preprocessed.

        Raises:
            FakescopeError: the image cannot be cut into the model's tiles.
        """
        if (i := self._rows.get(uri)) is not None:
            self._embedder.add(i, image)
            del self._rows[uri]

    def fail(self, uri: str, reason: str) -> None:
        """`uri` could not be read: why."""
        if (i := self._rows.pop(uri, None)) is not None:
            self._embedder.fail(i, reason)

    def draw(self) -> list[tuple[str, Path]]:
        """The figures, as (title, PNG path) pairs, written under `out_dir`."""
        if self._run is None:
            return []
        model, out, examples = self.model, self.out, self.examples
        try:
            report = self._run.finish(self._embedder.table(self._run.rows))
        except ConfigError as exc:
            log.warning("the report has no explanation figures: %s", exc)
            return []
        figures = [(title, Path(uri)) for title, uri in report.figures]
        for n, (group, row) in enumerate(_examples(report.table, examples)):
            image = report.extremes[row.Index]
            try:
                heat = class_activation_map(model, image, "gradcam")
            except ConfigError as exc:  # features no module produces (spectral_lr): the UMAP figures stay
                log.warning("the report has no Grad-CAM figures: %s", exc)
                break
            name = os.path.basename(shown_source(row.uri))  # a signed URL without its signature
            source = "(none)" if pd.isna(row.source) or row.source == "" else row.source
            verdict = {(True, True): "hit", (True, False): "missed", (False, True): "false alarm", (False, False): "right"}[
                (row.label == "ai", row.probability >= model.config.threshold)]
            caption = (f"{name}: label {row.label}, source {source}, pixel P(ai) = {row.probability:.3f} ({verdict})\n"
                       f"Grad-CAM of a {group} image, model {model.config.name}")
            path = out / "heatmaps" / f"{n:02d}_{source_stem(row.uri)}_gradcam.png"
            save_overlay(str(path), image, heat, caption)
            figures.append((f"Grad-CAM, {group} ({verdict}): {row.label} image {name}, source {source}, "
                            f"pixel P(ai) = {row.probability:.3f}", path))
        return figures


def _examples(table: pd.DataFrame, examples: int) -> list[tuple[str, tuple]]:
    """(group, row) of the images to draw: `examples - examples // 2` top-scored ai, then the lowest-scored ai and
    the top-scored real images (half the rest each, ai first); an image in two groups is drawn once. A group short
    of images (a split of one label has no real, or no ai) leaves its share to the others, mistakes first."""
    scored = table[table["error"].isna()].sort_values("probability", ascending=False, kind="stable")
    ai, real = scored[scored["label"] == "ai"], scored[scored["label"] == "real"]
    mistakes = examples // 2
    groups = [("top-scored ai", ai, examples - mistakes), ("lowest-scored ai", ai[::-1], mistakes - mistakes // 2),
              ("top-scored real", real, mistakes // 2)]
    picks, seen = [], set()

    def take(group: str, rows: pd.DataFrame, until: int) -> None:
        for index, row in zip(rows.index, rows.itertuples()):
            if len(picks) >= until:
                return
            if index not in seen:
                seen.add(index)
                picks.append((group, row))

    for group, rows, share in groups:
        take(group, rows, len(picks) + share)
    for group, rows, _ in groups[1:] + groups[:1]:
        take(group, rows, examples)
    return picks


def _as_model(model: Detector | LoadedModel | str | os.PathLike) -> LoadedModel:
    if isinstance(model, Detector):
        return model.torch_model
    if isinstance(model, LoadedModel):
        return model
    return load_model(model)


def _parquet(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "column"
