"""What `pip install fakescope` gets: an sdist and the wheel built from it, not an editable checkout."""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

import fakescope

pytestmark = pytest.mark.slow  # builds an sdist and a wheel: about 10 s
pytest.importorskip("setuptools.build_meta", reason="builds with the environment's setuptools (no network); not installed")

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "fakescope/weights/fakescope-default/"
BUILD = "import sys; from setuptools import build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"


def _build(kind: str, source: Path, out: Path) -> Path:
    """Build an sdist or a wheel of `source` into `out` with setuptools' PEP 517 backend (no network)."""
    done = subprocess.run([sys.executable, "-c", BUILD, f"build_{kind}", str(out)], cwd=source, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.splitlines()[-1]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> tuple[list[str], zipfile.ZipFile]:
    """The sdist's member names and the wheel built from the unpacked sdist, as pip builds one."""
    tmp = tmp_path_factory.mktemp("packaging")
    checkout = tmp / "checkout"  # a copy, so the build leaves no build/ or egg-info in the repo
    for name in ("src", "tests"):  # tests/: setuptools' defaults would ship some of them
        shutil.copytree(REPO / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "MANIFEST.in", "LICENSE", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    sdist = _build("sdist", checkout, tmp)
    with tarfile.open(sdist) as tar:
        names = [m.name.partition("/")[2] for m in tar.getmembers() if m.isfile()]
        tar.extractall(tmp / "unpacked", filter="data")
    wheel = _build("wheel", tmp / "unpacked" / sdist.name.removesuffix(".tar.gz"), tmp)
    return names, zipfile.ZipFile(wheel)


def test_the_sdist_holds_the_package_and_licence_but_no_tests(archives):
    names, _ = archives
    assert {"LICENSE", "README.md", "pyproject.toml", "src/fakescope/py.typed", f"src/{BUNDLE}model.safetensors"} <= set(names)
    outside = [n for n in names if not n.startswith(("src/", "PKG-INFO", "setup.cfg"))]
    assert outside == ["LICENSE", "MANIFEST.in", "README.md", "pyproject.toml"]


def test_the_wheel_ships_the_bundled_model_as_real_files_and_py_typed(archives):
    _, wheel = archives
    sizes = {i.filename: i.file_size for i in wheel.infolist()}
    card = (REPO / "src" / BUNDLE / "MODEL_CARD.md").read_bytes()
    assert wheel.read(f"{BUNDLE}MODEL_CARD.md") == card  # the repo's top-level MODEL_CARD.md is a symlink to it
    assert sizes[f"{BUNDLE}model.safetensors"] == (REPO / "src" / BUNDLE / "model.safetensors").stat().st_size
    assert f"{BUNDLE}config.json" in sizes and "fakescope/py.typed" in sizes and "fakescope/serve/webapp.py" in sizes
    assert {n.partition("/")[0] for n in sizes} == {"fakescope", f"fakescope-{fakescope.__version__}.dist-info"}
    assert sum(sizes.values()) < 20_000_000


def test_the_wheel_metadata_has_the_packages_version_licence_and_entry_point(archives):
    _, wheel = archives
    info = f"fakescope-{fakescope.__version__}.dist-info/"
    meta = email.message_from_bytes(wheel.read(f"{info}METADATA"))
    assert meta["Version"] == fakescope.__version__ and meta["License-Expression"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    assert {"Typing :: Typed", "Operating System :: OS Independent", "Programming Language :: Python :: 3.11",
            "Topic :: Scientific/Engineering :: Image Recognition"} <= set(meta.get_all("Classifier"))
    assert "image forensics" in meta["Keywords"].split(",")
    assert {"torch==2.14.1", "torchvision==0.29.1"} <= set(meta.get_all("Requires-Dist"))
    assert meta.get_all("License-File") == ["LICENSE"] and f"{info}licenses/LICENSE" in wheel.namelist()
    assert "fakescope = fakescope.cli:main" in wheel.read(f"{info}entry_points.txt").decode()


SCORE = ("from PIL import Image; import fakescope; d = fakescope.Detector.load(device='cpu', runtime='torch', provenance=False); "
         "r = d.predict(Image.new('RGB', (256, 256), (120, 80, 40))); print(d.torch_model.location, r.verdict, r.error)")


def test_the_wheel_installed_alone_in_a_fresh_venv_runs_its_cli_api_and_bundled_model(archives, tmp_path):
    """The installed wheel, not a checkout: `fakescope --version`, `fakescope.Detector` and a detection by the bundled model.

    The venv has no system site-packages and gets the wheel with --no-deps; the dependencies come from this test's
    environment through a .pth line (no network), which adds that folder but not its editable-install hook.
    """
    _, wheel = archives
    venv.create(tmp_path / "venv", with_pip=False)
    bin_dir = tmp_path / "venv" / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: object) -> str:
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout.strip()

    run(sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--no-deps", "--no-index", "-q", wheel.filename)
    site = Path(run(bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert run(bin_dir / "fakescope", "--version") == f"fakescope {fakescope.__version__}"
    assert run(bin_dir / "python", "-c", "import fakescope; print(fakescope.__file__, fakescope.Detector)") == \
        f"{site / 'fakescope' / '__init__.py'} <class 'fakescope.detector.Detector'>"
    assert json.loads(run(bin_dir / "fakescope", "models", "info"))["location"] == str(site / BUNDLE.rstrip("/"))
    assert (site / BUNDLE / "model.safetensors").stat().st_size < 20_000_000
    location, verdict, error = run(bin_dir / "python", "-c", SCORE).split()
    assert (location, error) == (str(site / BUNDLE.rstrip("/")), "None") and verdict in ("ai", "real", "uncertain")
