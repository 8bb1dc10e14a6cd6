"""What the benchmarks share: the line naming the machine their figures come from, the one-line
refusal when an optional dependency is missing (before anything is timed), and option types that
refuse a bad value in one usage line (a missing file or folder included)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path


def machine(device: str = "cpu") -> str:
    """CPUs this process may use (of the machine's), load average, torch's threads and the device, as one line."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = f"machine: {cpus} of {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    torch = sys.modules.get("torch")  # not imported here: the scripts that time fresh processes leave it out
    if torch is not None:
        line += f", torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
        if device.startswith("cuda") and torch.cuda.is_available():
            device = f"{device} ({torch.cuda.get_device_name()})"
    wait = os.environ.get("OMP_WAIT_POLICY")
    return line + f", device {device}" + (f", OMP_WAIT_POLICY={wait}" if wait else "")


def require(script: str, *modules: str, why: str = "") -> None:
    """Exits in one line when one of `modules` cannot be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"{script} needs {' and '.join(missing)}{' ' + why if why else ''}: pip install {' '.join(missing)}")


def size(text: str) -> str:
    """An argparse type: WIDTHxHEIGHT in positive pixels, returned as `WxH`."""
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 512x384") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be positive")
    return f"{width}x{height}"


def counts(text: str) -> list[int]:
    """An argparse type: comma-separated positive integers ('' for none)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated whole numbers, e.g. 1,2") from None
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 1")
    return values


def folder(text: str) -> Path:
    """An argparse type: an existing folder (one under ../shared/data, the project's data, is said to be absent)."""
    if not Path(text).is_dir():
        shared = " (../shared/data, the project's data, is not here: give a folder of images)" if "shared/data" in text else ""
        raise argparse.ArgumentTypeError(f"{text!r}: no such folder{shared}")
    return Path(text)


def file(text: str) -> str:
    """An argparse type: an existing file."""
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    return text
