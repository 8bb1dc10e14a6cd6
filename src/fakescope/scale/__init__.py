"""Scale: resumable Parquet scans of many images, in one process or on Ray."""

from fakescope.scale.records import read_results
from fakescope.scale.scan import ScanSummary, scan, scan_sources

__all__ = ["ScanSummary", "read_results", "scan", "scan_sources"]
