"""Find the shortcuts that make a detector worthless: properties that tell the classes apart without content.

Each image is inspected for its container format, JPEG quality (estimated from the quantisation
tables), size and aspect, bits per pixel and metadata (EXIF, XMP, PNG text, C2PA). Every property
is compared between `real` and `ai`: one that separates them is reported as a shortcut, in plain
words, with what to do about it. Watermarks are found on each class's average image: content
averages out while a fixed overlay in the bottom-right border (where generator sites stamp their
names) keeps its edges, so that strip's high-frequency energy, relative to the rest of the
average image, is compared between the classes (an average needs numbers: a watermark on every ai
image reads as a SHORTCUT from about 150 images per class, 0.52 separability at 40). Where the
manifest mixes sources, each source holding both classes (`MIN_PER_SOURCE` of each inspected; the
sample is drawn per source and class, so a small source gets them where it has them, and a note
names the sources with fewer) is compared on its own too, and a SHORTCUT there is reported as
`<check>@<source>`: one inside a source (the faces' PNG reals and JPEG fakes) can average out over
the whole set (with JPEG LFW reals and PNG renders), yet a detector still learns it. Content is checked through the
manifest's sources (`source`, over every row naming one): reals and fakes from different sources (LFW photos, artistic
renders) can be told apart by what they show, not how they were made; names alone cannot say whether two sources
show the same content, so this check warns (a possible shortcut) and never fails `--strict`. A pair or an
identical file spread over several splits (leakage) is reported too, and so are near copies (the
same image re-encoded or resized) in different splits, found by `dataset split`'s dHash (read from
the manifest's `dhash` column where it has one).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fakescope.data._parallel import map_images
from fakescope.data.manifest import validate_manifest
from fakescope.data.splits import check_distance, find_split_leaks
from fakescope.errors import FakescopeError
from fakescope.io import storage
from fakescope.io.image import check_signature

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

SHORTCUT = 0.8
"""Separability (0 = identical classes, 1 = perfectly split) at or above which a property is a shortcut."""
SUSPICIOUS = 0.5
"""Separability at or above which a property is reported as a possible shortcut."""
BORDER_SHARE = 0.06
"""Height share of the bottom strip checked for watermarks."""
MIN_PER_SOURCE = 10
"""Inspected images of each class a source needs for its own checks (fewer separate by chance)."""

_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])
_CATEGORICAL = {
    "format": "file format",
    "has_exif": "EXIF metadata",
    "has_xmp": "XMP metadata",
    "has_png_text": "PNG text chunks",
    "has_c2pa": "C2PA content credentials",
}
_NUMERIC = {
    "jpeg_quality": "JPEG quality (100 = not JPEG-compressed)",
    "width": "image width",
    "height": "image height",
    "aspect": "aspect ratio",
    "bits_per_pixel": "bits per pixel (file size)",
}
_BORDER = "border_overlay"
_BORDER_DESCRIPTION = "a fixed overlay in the bottom-right border (a watermark)"
CONTENT = "source"
"""The check of where each class's images come from: sources that hold one class let content (photos vs artistic
renders) tell the classes apart."""
_THUMB = 128
_ADVICE = {
    "format": "decode both classes and re-encode them identically before training or evaluating",
    "jpeg_quality": "send both classes through the same JPEG re-encoding (and JPEG augmentation)",
    "bits_per_pixel": "re-encode both classes identically so file size carries no label",
    "width": "resize or crop both classes to the same sizes",
    "height": "resize or crop both classes to the same sizes",
    "aspect": "crop both classes to the same aspect ratio",
    _BORDER: f"crop the bottom {BORDER_SHARE:.0%} of every image in both classes",
    CONTENT: "draw both classes from the same sources (ai images made from the real ones, named in source_uri) or "
             "report results per source; the per-source checks (check@source) compare like with like",
}
_METADATA_ADVICE = "strip metadata from both classes (provenance checks belong to the detector, not the classifier)"


@dataclass(frozen=True)
class Check:
    """One property compared between classes."""

    name: str
    description: str
    per_class: dict[str, str]
    separability: float
    """0 when the classes look alike, 1 when the property alone splits them perfectly."""
    level: str
    """`ok`, `possible shortcut` or `SHORTCUT`."""


@dataclass(frozen=True)
class AuditReport:
    """What `audit_manifest` found: class counts, every check, and warnings in plain words."""

    counts: dict[str, int]
    inspected: dict[str, int]
    checks: list[Check]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    """Pairs or identical files spread over several splits (also among `warnings`, with advice)."""

    @property
    def shortcuts(self) -> list[str]:
        """Names of the properties flagged as shortcuts."""
        return [c.name for c in self.checks if c.level == "SHORTCUT"]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return asdict(self) | {"shortcuts": self.shortcuts}


def estimate_jpeg_quality(tables: dict[int, Any]) -> int:
    """IJG quality (1-100) whose scaled standard luminance table best matches table 0 in total.

    Sums are compared, so the table's coefficient order (zigzag or natural) does not matter.
    """
    observed = float(np.sum(np.asarray(list(tables[0]), dtype=np.float64)))
    best, best_gap = 100, float("inf")
    for quality in range(1, 101):
        scale = 5000 / quality if quality < 50 else 200 - 2 * quality
        table = np.clip((_IJG_LUMA * scale + 50) // 100, 1, 255)
        gap = abs(table.sum() - observed)
        if gap < best_gap:
            best, best_gap = quality, gap
    return best


def inspect_image(data: bytes, name: str = "", decoded: Image.Image | None = None) -> dict[str, Any]:
    """Measure the shortcut-prone properties of one encoded image (see the module docstring).

    `decoded` is `data` as `fakescope.io.image.decode_image` decoded it (upright 8-bit RGB): for an RGB or greyscale
    file its grey thumbnail is the file's own, so the pixels are not decoded again (only the header is read).
    """
    from PIL import Image

    from fakescope.io.image import pixel_limit, sniff_format, upright

    with pixel_limit(), Image.open(io.BytesIO(data)) as image:
        fmt = sniff_format(data) or (image.format or "UNKNOWN")
        reuse = decoded is not None and image.mode in ("RGB", "L")  # RGB -> L gives back an L file's own levels
        turned = decoded if reuse else upright(image)  # as decoding turns it: sizes and thumbnails as the detector sees them
        width, height = turned.size
        quality = estimate_jpeg_quality(image.quantization) if fmt == "JPEG" and getattr(image, "quantization", None) else 100
        # a PNG's EXIF and text may follow its pixels (Pillow decodes them to get there): looked for where such chunks are
        tagged = fmt != "PNG" or any(kind in data for kind in _PNG_METADATA)
        text = getattr(image, "text", None) if fmt == "PNG" and tagged else None
        info = {
            "format": fmt,
            "jpeg_quality": quality,
            "width": width,
            "height": height,
            "aspect": round(width / height, 3),
            "bits_per_pixel": 8 * len(data) / (width * height),
            "has_exif": tagged and len(image.getexif()) > 0,
            "has_xmp": b"http://ns.adobe.com/xap/1.0/" in data or "xmp" in image.info or "XML:com.adobe.xmp" in image.info,
            "has_png_text": bool(text),
            "has_c2pa": b"c2pa" in data and (b"jumb" in data or b"caBX" in data),
            "thumbnail": np.asarray(turned.convert("L").resize((_THUMB, _THUMB)), dtype=np.float32),
        }
    suffix = os.path.splitext(name)[1].lower()  # Pillow's own suffixes: .jpe, .pgm, .heic (pillow-heif's) included
    info["extension_mismatch"] = len(suffix) > 1 and Image.registered_extensions().get(suffix) != fmt
    return info


_PNG_METADATA = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")
"""The PNG chunks Pillow reads EXIF (also as a text chunk's raw profile, or XMP's orientation) and text from."""


@dataclass
class Inspections:
    """The inspections of the images an audit takes (`wanted`: its sample's uris, `AuditSample.rows`), made as another
    pass reads them (`evaluate` and `evaluate-logo` as they score): `audit_drawn` reads none of those in `found` (None:
    unreadable). Kept with its thumbnail as 8-bit grey (what the float one holds), 16 KiB an image."""

    wanted: frozenset[str] = frozenset()
    found: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def add(self, uri: str, data: bytes | None, decoded: Image.Image | None = None) -> None:
        """Keep the inspection of a wanted `uri` not yet inspected from its bytes `data` (None: unreadable) and, where
        decoding took them, its pixels `decoded` (`inspect_image`); None where it fails, as an audit reading it would find."""
        if uri in self.wanted and uri not in self.found:
            info = None if data is None else _inspected(lambda: inspect_image(data, uri, decoded))
            self.found[uri] = info and {**info, "thumbnail": info["thumbnail"].astype(np.uint8)}


def _inspected(inspect: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """`inspect()`, or None where the image cannot be read or inspected."""
    try:
        return inspect()
    except (FakescopeError, OSError, ValueError):  # FakescopeError: also over 2x MAX_PIXELS (`pixel_limit`)
        return None


@dataclass(frozen=True)
class AuditSample:
    """A checked manifest (`frame`) and the rows of it an audit inspects (`rows`), as `draw_sample` draws them."""

    frame: pd.DataFrame
    rows: pd.DataFrame


def draw_sample(frame: pd.DataFrame, max_per_class: int | None = 1000, seed: int = 0) -> AuditSample:
    """`frame`, checked (`validate_manifest`), and its rows to inspect: about `max_per_class` per class (all where None),
    drawn per (source, label), in proportion to its size but at least `MIN_PER_SOURCE` (or `max_per_class`, if
    smaller) from each that has them, so every source can be checked on its own."""
    frame = validate_manifest(frame)
    return AuditSample(frame, frame if max_per_class is None else _sample(frame, max_per_class, seed))


def audit_manifest(frame: pd.DataFrame, *, max_per_class: int | None = 1000, seed: int = 0, workers: int = 8,
                   progress: bool = False, max_distance: int = 4, inspections: Inspections | None = None) -> AuditReport:
    """Inspect about `max_per_class` images per class (`draw_sample`) and report every property that separates them
    (`audit_drawn`).

    Example:
        >>> report = audit_manifest(read_manifest("faces.parquet"))  # doctest: +SKIP
        >>> report.shortcuts  # doctest: +SKIP
        ['format', 'jpeg_quality', 'bits_per_pixel']
    """
    return audit_drawn(draw_sample(frame, max_per_class, seed), workers=workers, progress=progress,
                       max_distance=max_distance, inspections=inspections)


def audit_drawn(drawn: AuditSample, *, workers: int = 8, progress: bool = False, max_distance: int = 4,
                inspections: Inspections | None = None) -> AuditReport:
    """Inspect the rows of `drawn` and report every property that separates their classes.

    `progress` counts the images inspected on stderr. Every split image of `drawn.frame` is checked for leaks: images
    whose dHashes differ in at most `max_distance` bits (-1: off) are near copies, as `split_manifest` has it.
    `inspections`, if given, supplies the inspections of the images it `found`: they are not read.
    """
    check_distance(max_distance)
    frame, sample = drawn.frame, drawn.rows
    counts = {label: int(n) for label, n in frame["label"].value_counts().sort_index().items()}
    measured, sums = _inspect_all(sample, workers, progress, inspections)
    inspected = {label: int(n) for label, n in measured["label"].value_counts().sort_index().items()}
    notes = []
    if len(measured) < len(sample):
        notes.append(f"{len(sample) - len(measured)} image(s) could not be read and were left out")
    found = find_split_leaks(frame, max_distance=max_distance, workers=workers, progress=progress)
    leaks = [f"leak: {problem}; `fakescope dataset split` keeps related images in one split" for problem in found]
    if set(inspected) != {"real", "ai"}:
        nothing = f"only {', '.join(inspected)} images" if inspected else "no image could be read"
        return AuditReport(counts, inspected, [], [f"{nothing}: nothing to compare", *leaks], notes, found)
    checks = _checks(measured, sums) + _content_check(frame)
    checks += _source_checks(measured, sums, {c.name: c.level for c in checks})
    notes += _unchecked_sources(frame, measured)
    warnings = [_warning(check) for check in checks if check.level != "ok"] + leaks
    mismatched = measured.groupby("label")["extension_mismatch"].mean()
    for label, share in mismatched.items():
        if share > 0:
            notes.append(f"{share:.0%} of {label} files have an extension that does not match their content")
    if max(counts.values()) > 1.5 * min(counts.values()):
        notes.append(f"classes are unbalanced ({', '.join(f'{k}: {v}' for k, v in counts.items())})")
    return AuditReport(counts, inspected, checks, warnings, notes, found)


def _sample(frame: pd.DataFrame, max_per_class: int, seed: int) -> pd.DataFrame:
    """A seeded sample of each (label, source): its share of `max_per_class`, but no fewer than `MIN_PER_SOURCE`."""
    import pandas as pd

    sizes = frame["label"].value_counts()
    floor = min(MIN_PER_SOURCE, max_per_class)
    parts = []
    for (label, _), group in frame.groupby(["label", "source"], sort=True):
        take = min(len(group), max(floor, math.ceil(max_per_class * len(group) / sizes[label])))
        parts.append(group.sample(take, random_state=seed) if take < len(group) else group)
    return pd.concat(parts)


def _inspect_all(sample: pd.DataFrame, workers: int, progress: bool, inspections: Inspections | None = None
                 ) -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    """One row of properties per readable image, and the sum of its (source, label)'s thumbnails (summed as read, not
    kept); the images `inspections` found are not read."""
    import pandas as pd

    def one(uri: str) -> dict[str, Any] | None:
        return _inspected(lambda: inspect_image(storage.read_bytes(uri, check=check_signature), uri))

    known = inspections.found if inspections is not None else {}
    fresh = [uri for uri in dict.fromkeys(sample["uri"]) if uri not in known]
    found = dict(zip(fresh, map_images(one, fresh, workers=workers, progress=progress, desc="audit")))
    rows, sums = [], {}
    for uri, label, source in zip(sample["uri"], sample["label"], sample["source"]):
        info = found[uri] if uri in found else known[uri]
        if info is not None:
            row = {"label": label, "source": source, **info}
            key = (source, label)
            sums[key] = sums.get(key, 0) + row.pop("thumbnail").astype(np.float32, copy=False)
            rows.append(row)
    measured = pd.DataFrame(rows) if rows else pd.DataFrame({"label": [], "source": []})
    return measured, sums


def _checks(measured: pd.DataFrame, sums: dict[tuple[str, str], np.ndarray]) -> list[Check]:
    """Every property compared between the classes of `measured`, the border on the average of `sums` over its sources."""
    counts = measured["label"].value_counts()
    sources = set(measured["source"])
    averages = {label: sum(total for (source, of), total in sums.items() if of == label and source in sources) / n
                for label, n in counts.items()}
    return ([_categorical_check(measured, name) for name in _CATEGORICAL]
            + [_numeric_check(measured, name) for name in _NUMERIC] + [_border_check(averages)])


def _source_checks(measured: pd.DataFrame, sums: dict[tuple[str, str], np.ndarray], overall: dict[str, str]) -> list[Check]:
    """SHORTCUT verdicts within each named source holding `MIN_PER_SOURCE` of both classes, where the whole set's is milder."""
    if measured["source"].nunique() < 2:
        return []
    found = []
    for source, group in measured[measured["source"] != ""].groupby("source"):
        if set(group["label"]) == {"real", "ai"} and group["label"].value_counts().min() >= MIN_PER_SOURCE:
            found += [replace(check, name=f"{check.name}@{source}", description=f"{check.description} within source {source}")
                      for check in _checks(group, sums) if check.level == "SHORTCUT" and overall[check.name] != "SHORTCUT"]
    return found


def _content_check(frame: pd.DataFrame) -> list[Check]:
    """How far the classes' sources differ, over every row that names one (none unless both classes do): the same
    measure as the format's, from the manifest alone. Never more than a possible shortcut: a source's name does not say
    what its images show (FFHQ faces and StyleGAN2 faces are two sources of one content)."""
    named = frame[frame["source"] != ""]
    if named["label"].nunique() < 2:
        return []
    check = _categorical_check(named, CONTENT, "the images' source (its content: photos vs artistic renders, one subject "
                                               "vs another)")
    return [replace(check, level="possible shortcut" if check.separability >= SUSPICIOUS else "ok")]


def _unchecked_sources(frame: pd.DataFrame, measured: pd.DataFrame) -> list[str]:
    """A note naming the sources with both classes that `_source_checks` skipped: under `MIN_PER_SOURCE` of one inspected."""
    if measured["source"].nunique() < 2:
        return []
    both = frame[frame["source"] != ""].groupby("source")["label"].nunique().loc[lambda n: n == 2].index
    seen = measured.groupby(["source", "label"]).size().unstack(fill_value=0).reindex(index=both, columns=["real", "ai"],
                                                                                      fill_value=0)
    small = seen[seen.min(axis=1) < MIN_PER_SOURCE]
    if small.empty:
        return []
    listed = ", ".join(f"{source} ({row['real']} real, {row['ai']} ai)" for source, row in small.iterrows())
    return [f"source(s) too small to check alone, under {MIN_PER_SOURCE} inspected images of a class: {listed} "
            f"(fewer in the manifest, unreadable, or --max-per-class under {MIN_PER_SOURCE})"]


def _border_check(averages: dict[str, np.ndarray]) -> Check:
    ratios = {label: _border_ratio(average) for label, average in sorted(averages.items())}
    low, high = sorted(ratios.values())
    separability = min(1.0, high / max(low, 1e-6) - 1)
    per_class = {label: f"border/rest edge energy {ratio:.2f} on the average image" for label, ratio in ratios.items()}
    return Check(_BORDER, _BORDER_DESCRIPTION, per_class, round(separability, 3), _level(separability))


def _border_ratio(average: np.ndarray) -> float:
    """Mean |Laplacian| of the bottom-right border strip over that of the rest of an average image."""
    laplacian = np.abs(4 * average[1:-1, 1:-1] - average[:-2, 1:-1] - average[2:, 1:-1]
                       - average[1:-1, :-2] - average[1:-1, 2:])
    rows = max(2, round(laplacian.shape[0] * BORDER_SHARE))
    strip = laplacian[-rows:, laplacian.shape[1] // 2:]
    return float(strip.mean() / (laplacian[:-rows].mean() + 1e-6))


def _level(separability: float) -> str:
    if separability >= SHORTCUT:
        return "SHORTCUT"
    return "possible shortcut" if separability >= SUSPICIOUS else "ok"


def _categorical_check(measured: pd.DataFrame, name: str, description: str | None = None) -> Check:
    """How far the classes' shares of the values of column `name` differ (total variation), described as
    `_CATEGORICAL` does unless `description` says otherwise."""
    shares = {label: group[name].astype(str).value_counts(normalize=True) for label, group in measured.groupby("label")}
    values = sorted(set(shares["real"].index) | set(shares["ai"].index))
    distance = 0.5 * sum(abs(shares["real"].get(v, 0.0) - shares["ai"].get(v, 0.0)) for v in values)
    per_class = {label: ", ".join(f"{_shown(v)} {_percent(s)}" for v, s in share.head(3).items())
                 for label, share in shares.items()}
    return Check(name, description or _CATEGORICAL[name], per_class, round(float(distance), 3), _level(distance))


def _numeric_check(measured: pd.DataFrame, name: str) -> Check:
    real = measured.loc[measured["label"] == "real", name].to_numpy(dtype=np.float64)
    ai = measured.loc[measured["label"] == "ai", name].to_numpy(dtype=np.float64)
    separability = abs(2 * _auc(real, ai) - 1)
    per_class = {label: _summary(values) for label, values in (("ai", ai), ("real", real))}
    return Check(name, _NUMERIC[name], per_class, round(float(separability), 3), _level(separability))


def _auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Probability that a random positive exceeds a random negative (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([negatives, positives]))
    n_neg, n_pos = len(negatives), len(positives)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def _summary(values: np.ndarray) -> str:
    low, median, high = np.percentile(values, [10, 50, 90])
    if values.min() == values.max():
        return f"{_number(median)} (all)"
    return f"median {_number(median)} (10-90%: {_number(low)}-{_number(high)})"


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 or value == int(value) else f"{value:.2f}"


def _percent(share: float) -> str:
    """`37%`; a share that rounds to 0% or 100% but is not is `<1%` or `>99%` (one EXIF file in 1,000 is not none)."""
    shown = f"{share:.0%}"
    return "<1%" if shown == "0%" and share > 0 else ">99%" if shown == "100%" and share < 1 else shown


def _shown(value: str) -> str:
    return {"True": "yes", "False": "no"}.get(value, value)


def _warning(check: Check) -> str:
    advice = _ADVICE.get(check.name.partition("@")[0], _METADATA_ADVICE)  # `format@lfw`: within a source
    sides = "; ".join(f"{label}: {summary}" for label, summary in sorted(check.per_class.items(), reverse=True))
    return (f"{check.level}: {check.description} separates real from ai "
            f"(separability {check.separability:.2f}; {sides}). A detector can score by this alone; {advice}.")
