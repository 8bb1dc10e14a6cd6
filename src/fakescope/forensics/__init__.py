"""Forensic evidence beyond pixels: C2PA content credentials, metadata, invisible watermarks.

`collect_evidence` runs the checkers over one image; `fuse` combines their records with the
calibrated pixel score into a verdict that names the evidence that decided it.
docs/forensics.md documents every rule and each watermark's measured fragility.
"""

from fakescope._lazy import lazy_attributes as _lazy_attributes
from fakescope.forensics.collect import EVIDENCE_KINDS, collect_evidence, collect_watermarks
from fakescope.forensics.content_credentials import TRUST_ANCHORS_ENV, check_c2pa
from fakescope.forensics.fusion import Fused, fuse
from fakescope.forensics.metadata import check_metadata

_WATERMARK = ("KNOWN_MARKS", "check_watermark", "read_watermark", "read_watermarks")
# the watermark reader: loaded on first use, so the C2PA and metadata checks start in a fraction of a second
__getattr__, __dir__ = _lazy_attributes(__name__, dict.fromkeys(_WATERMARK, "watermark"))

__all__ = [
    "EVIDENCE_KINDS", "KNOWN_MARKS", "TRUST_ANCHORS_ENV", "Fused",
    "check_c2pa", "check_metadata", "check_watermark", "collect_evidence", "fuse",
    "collect_watermarks", "read_watermark", "read_watermarks",
]
