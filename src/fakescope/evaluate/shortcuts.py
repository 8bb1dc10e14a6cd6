"""The shortcut audit of the rows `evaluate` scores: what a model could score by without looking at content.

`audit_rows` runs `fakescope.data.audit_manifest`'s checks (`audit_drawn`) on the evaluated rows (a seeded sample of about
`max_per_class` per class, drawn once by `shortcut_sample`, which `evaluate` inspects as its scoring pass reads them:
each image is read once; split leaks, and sources that differ by class, are left to `fakescope dataset audit`,
the report's per-source results showing the latter) and says, per
property, whether the model's own recipe preprocessing (`neutralize`) or its decoding takes it away
before scoring. A flagged property that is not neutralized may be what the figures measure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fakescope.data.audit import BORDER_SHARE, CONTENT, AuditSample, Inspections, audit_drawn, draw_sample

if TYPE_CHECKING:
    import pandas as pd

    from fakescope.train.augment import AugmentConfig

AUDIT_WORKERS = 8
"""Threads reading the sampled images, as `fakescope dataset audit --workers` by default."""
_METADATA = ("has_exif", "has_xmp", "has_png_text", "has_c2pa")
_FILLED = {"pair_id": "", "split": "", "width": 0, "height": 0, "format": "", "sha256": ""}


def shortcut_sample(rows: pd.DataFrame, *, max_per_class: int = 1000, seed: int = 0) -> AuditSample:
    """The evaluated `rows` as a manifest and the seeded sample of them that `audit_rows` inspects (`draw_sample`)."""
    return draw_sample(_manifest(rows), max_per_class, seed)


def audit_rows(sample: AuditSample, recipe: AugmentConfig | None, provenance: bool, *, workers: int = AUDIT_WORKERS,
               progress: bool = False, inspections: Inspections | None = None) -> dict[str, Any]:
    """The `shortcuts` section of an evaluation of the rows `sample` was drawn from (`shortcut_sample`): images
    inspected, notes, and every check with its neutralization. `inspections` supplies those of images already read
    (`audit_drawn`): given all of `sample.rows`, it reads none.

    Each check has `name`, `description`, `separability`, `level` (`ok`, `possible shortcut`, `SHORTCUT`),
    `per_class`, `neutralized` (`yes`, `partly` or `no`) and `how` (why, in words); `flagged` names the checks
    not `ok` and not neutralized.
    """
    report = audit_drawn(sample, workers=workers, progress=progress, max_distance=-1, inspections=inspections)
    checks = []
    for check in (c for c in report.checks if c.name != CONTENT):  # content: the report's per-source results show it
        neutralized, how = neutralization(check.name.partition("@")[0], recipe, provenance)
        checks.append({"name": check.name, "description": check.description, "separability": check.separability,
                       "level": check.level, "per_class": check.per_class, "neutralized": neutralized, "how": how})
    notes = report.notes + ([] if checks else report.warnings)  # without checks, its warning says why
    flagged = [c["name"] for c in checks if c["level"] != "ok" and c["neutralized"] != "yes"]
    return {"inspected": report.inspected, "checks": checks, "flagged": flagged, "notes": notes}


def _manifest(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` as `draw_sample` takes them: each uri once, the manifest columns they lack filled in."""
    return rows.drop_duplicates("uri").assign(**{c: v for c, v in _FILLED.items() if c not in rows})


def neutralization(name: str, recipe: AugmentConfig | None, provenance: bool) -> tuple[str, str]:
    """Whether (`yes`, `partly`, `no`) and how the model's scoring takes property `name` away."""
    quality = recipe.base_jpeg_quality if recipe else None
    crop = recipe.bottom_crop if recipe else 0.0
    if not quality and name in ("format", "bits_per_pixel", "jpeg_quality"):
        return "no", "the recipe does not re-encode images"
    if name == "format":
        return "partly", (f"every image is re-encoded as JPEG quality {quality} before scoring; an earlier JPEG "
                          "compression still leaves traces that re-encoding does not erase")
    if name == "bits_per_pixel":
        return "partly", (f"every image is re-encoded as JPEG quality {quality} before scoring; the noise and "
                          "smoothness that file size also reflects remain")
    if name == "jpeg_quality":
        return "partly", (f"re-encoding as JPEG quality {quality} hides higher qualities, not the artifacts of "
                          "lower ones nor every trace of the first compression")
    if name in _METADATA:
        return ("no", "provenance evidence reads metadata and is fused into the final probability") if provenance \
            else ("yes", "the pixel model sees decoded pixels only, without metadata")
    if name == "border_overlay" and crop:
        return ("yes", f"the bottom {crop:.0%} of every image is cropped") if crop >= BORDER_SHARE else \
            ("partly", f"the bottom {crop:.0%} is cropped, less than the {BORDER_SHARE:.0%} strip checked")
    return "no", "the model's preprocessing does not change it"


def warning_lines(section: dict[str, Any] | None, where: str = "in the images scored") -> list[str]:
    """One line per flagged check of a `shortcuts` section, for the console; `where` names the images audited."""
    lines = []
    for check in (section or {}).get("checks", []):
        if check["name"] in section["flagged"]:
            partly = f"; only partly neutralized: {check['how']}" if check["neutralized"] == "partly" else ""
            lines.append(f"warning: {where}, {check['description']} alone separates real from ai "
                         f"({check['level']}, separability {check['separability']:.2f}{partly}): the figures may "
                         "measure it; see fakescope dataset audit")
    return lines
