"""Datasets: manifests of real and ai images, how they are built, split without leakage, audited and exported."""

from fakescope.data.attributes import join_attributes
from fakescope.data.audit import AuditReport, Check, audit_manifest, inspect_image
from fakescope.data.balance import balance_manifest
from fakescope.data.build import build_from_csv, build_from_ffhq_json, build_from_folders
from fakescope.data.export import LAYOUTS, export_manifest, layout_for
from fakescope.data.manifest import (
    LABELS,
    MANIFEST_COLUMNS,
    SPLITS,
    describe_image,
    read_manifest,
    read_rows,
    validate_manifest,
    write_manifest,
)
from fakescope.data.merge import merge_manifests
from fakescope.data.splits import find_leaks, group_related, split_manifest

__all__ = [
    "MANIFEST_COLUMNS", "LABELS", "SPLITS", "describe_image", "read_manifest", "read_rows", "validate_manifest",
    "write_manifest",
    "build_from_folders", "build_from_ffhq_json", "build_from_csv", "join_attributes", "balance_manifest",
    "merge_manifests", "split_manifest", "group_related", "find_leaks",
    "audit_manifest", "inspect_image", "AuditReport", "Check",
    "export_manifest", "LAYOUTS", "layout_for",
]
