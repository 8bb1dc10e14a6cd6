"""`import fakescope`, `import fakescope.cli` and `fakescope --help` load none of the heavy libraries (start-up latency)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "torchvision", "timm", "numpy", "PIL", "pandas", "pyarrow", "sklearn", "ray", "boto3", "openai",
         "googleapiclient", "streamlit", "fastapi", "matplotlib", "umap", "c2pa", "onnxruntime", "huggingface_hub")


def _imported(*args: str) -> set[str]:
    """Top-level packages a fresh interpreter imports running `python -X importtime ARGS`."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    return {name.partition(".")[0] for name in lines}


@pytest.mark.parametrize("args", [("-c", "import fakescope"), ("-c", "import fakescope.cli"),
                                  ("-m", "fakescope", "--help")], ids=["fakescope", "fakescope.cli", "--help"])
def test_start_up_imports_no_heavy_library(args):
    imported = _imported(*args)
    assert "fakescope" in imported  # the probe saw the package itself load
    assert sorted(imported.intersection(HEAVY)) == []


def test_listing_and_reading_scan_results_need_no_torch():
    """`fakescope.scale`'s listing and result readers (resume, `read_results`) loaded torch through a type annotation:
    about 470 MB more at their peak in benchmarks/scan_resume.py."""
    imported = _imported("-c", "from fakescope.scale import read_results, scan_sources")
    assert "fakescope" in imported and "torch" not in imported


def test_forensics_loads_no_torch():
    """The C2PA and metadata checks (worker processes, `detect`'s evidence) loaded torch through the watermark reader,
    most of their start-up time; the reader now reads host pixels in numpy, and loads torch only for a tensor."""
    imported = _imported("-c", "from fakescope.forensics import check_c2pa, check_metadata, collect_evidence, fuse, "
                               "read_watermark, check_watermark")
    assert "fakescope" in imported and "torch" not in imported


def test_models_info_reads_the_config_without_torch():
    """`fakescope models info` (and `load_model(lazy=True)`, `resolve_model`) read a config: torch loads when a network is
    built, not on `import fakescope.models`."""
    imported = _imported("-m", "fakescope", "models", "info")
    assert "fakescope" in imported and "torch" not in imported


def test_models_list_reads_the_registry_without_torch_or_numpy():
    """`fakescope models list` loaded torch (1.3 s) through the built-in architectures' modules, which registered them
    on import, and numpy and scipy through the calibration; the zoo is now declared as data (`fakescope.models.zoo`)."""
    imported = _imported("-m", "fakescope", "models", "list")
    assert "fakescope" in imported and not imported & {"torch", "numpy", "scipy"}


def test_the_stage_packages_import_their_names_on_first_use():
    """`fakescope.evaluate`, `.explain` and `.train` imported torch and scikit-learn with the package, so importing any
    of their submodules (`fakescope.evaluate.metrics`, say) loaded the evaluator and the trainer too."""
    imported = _imported("-c", "import fakescope.evaluate, fakescope.explain, fakescope.train")
    assert "fakescope" in imported and not imported & {"torch", "sklearn", "pandas", "matplotlib"}
