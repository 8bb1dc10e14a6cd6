"""The shared faces set (real PNG vs ai JPEG q75 with a watermark) must be flagged loudly."""

from __future__ import annotations

import pytest

from fakescope.data import audit_manifest, build_from_folders, join_attributes, split_manifest

pytestmark = pytest.mark.shared


def test_audit_flags_format_quality_and_watermark(shared_faces):
    frame = build_from_folders(str(shared_faces / "data_crossval"))
    report = audit_manifest(frame, max_per_class=150, seed=0)
    assert {"format", "jpeg_quality", "border_overlay"} <= set(report.shortcuts)
    checks = {c.name: c for c in report.checks}
    assert checks["format"].per_class == {"ai": "JPEG 100%", "real": "PNG 100%"}
    assert checks["jpeg_quality"].per_class["ai"] == "75 (all)"
    assert sum(w.startswith("SHORTCUT") for w in report.warnings) >= 3


def test_ffhq_attributes_join_and_split_without_leaks(shared_faces):
    frame = build_from_folders(str(shared_faces / "data_crossval"))
    frame = join_attributes(frame, str(shared_faces / "ffhq_attributes.csv"))
    real = frame[frame["label"] == "real"]
    assert real["gender"].notna().mean() > 0.95
    split = split_manifest(frame.sample(400, random_state=0), seed=0)
    assert split.groupby("split").size().to_dict().keys() == {"train", "val", "test"}


def test_the_faces_shortcut_is_flagged_inside_its_source_after_merging_lfw_and_the_2022_renders(shared_faces, tmp_path):
    """LFW's JPEG reals and the renders' PNG fakes average the faces' PNG/JPEG split out over the merged set."""
    import pandas as pd

    from fakescope.data import build_from_csv

    shared = shared_faces.parent
    others = [(p, "real", "lfw") for p in sorted((shared / "real-lfw").glob("*.jpg"))[:300]]
    others += [(p, "ai", "renders-2022") for p in sorted((shared / "fake-text2image-2022").glob("*/*.png"))]
    if len(others) < 400:
        pytest.skip(f"real-lfw or fake-text2image-2022 missing beside {shared_faces}")
    listing = tmp_path / "others.csv"
    pd.DataFrame(others, columns=["path", "label", "source"]).to_csv(listing, index=False)
    faces = build_from_folders(str(shared_faces / "data_crossval"), source="ffhq").groupby("label").head(150)
    report = audit_manifest(pd.concat([faces, build_from_csv(str(listing))], ignore_index=True), max_per_class=10_000)
    assert {check.name: check.level for check in report.checks}["format"] != "SHORTCUT"
    assert {"format@ffhq", "jpeg_quality@ffhq"} <= set(report.shortcuts)
