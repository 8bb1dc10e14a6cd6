"""Generated image folders, a plain and a declared-ai image, a shared bundled-model detector, a folder that takes no
more files, a shared local Ray and the columns of an older version's results, for the scale tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from fakescope.scale.records import ADDED_COLUMNS, SCHEMA

SIZES = [(300, 200), (90, 70), (256, 256), (400, 120), (150, 333), (64, 64)]


def _write_images(folder: Path) -> Path:
    """Six noise images (JPEG and PNG, some smaller than a tile), a nested one and a broken file, in `folder`."""
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i, (w, h) in enumerate(SIZES):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        image.save(folder / (f"img{i}.jpg" if i % 2 else f"img{i}.png"))
    Image.fromarray(rng.integers(0, 256, (120, 130, 3), dtype=np.uint8)).save(folder / "nested" / "deep.jpg", quality=80)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """`_write_images` in a folder of this test's."""
    return _write_images(tmp_path / "images")


@pytest.fixture(scope="module")
def module_image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`_write_images` in a folder shared by a module's tests, which only read it."""
    return _write_images(tmp_path_factory.mktemp("module") / "images")


@pytest.fixture
def caveat_images(image_factory, tmp_path: Path) -> list[str]:
    """A plain PNG (a pixel-only verdict) and an A1111-declared one (ai by its metadata), as in the detect CLI test."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a castle, Steps: 20, Sampler: Euler a")
    return [str(image_factory.file(tmp_path / "caveat" / "plain.png", seed=4)),
            str(image_factory.file(tmp_path / "caveat" / "declared.png", seed=4, pnginfo=info))]


@pytest.fixture(scope="session")
def older_schema() -> pa.Schema:
    """The results columns a fakescope before `caveat` and `error_kind` (`ADDED_COLUMNS`) wrote: `SCHEMA` without both."""
    return pa.schema([f for f in SCHEMA if f.name not in ADDED_COLUMNS])


@pytest.fixture(scope="session")
def detector():
    from fakescope.detector import Detector

    return Detector.load(device="cpu", batch_size=4, workers=2, provenance=False)


@pytest.fixture(autouse=True)
def onnx_cache(tmp_path_factory, monkeypatch):
    """Keep ONNX exports out of the user's cache (one folder per test session)."""
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def full_folder(tmp_path):
    """A results folder that takes no new file, and a function that frees it: read-only for a user, a full
    64 KiB tmpfs for root (who may write to a read-only folder)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if os.geteuid():
        folder.chmod(0o555)
        yield folder, "Permission denied", lambda: folder.chmod(0o755)
        folder.chmod(0o755)
        return
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True, check=False).returncode:
        pytest.skip("running as root without the right to mount a tmpfs: no way to make a folder refuse files")
    try:
        with contextlib.suppress(OSError), open(folder / ".filler", "wb") as filler:  # hidden: no other file in --out
            filler.write(bytes(1 << 20))
        yield folder, "No space left on device", (folder / ".filler").unlink
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture(scope="module")
def _ray_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The working folder of the shared local Ray's workers; the Ray is shut down when the module's tests are done."""
    ray = pytest.importorskip("ray")
    yield tmp_path_factory.mktemp("ray-home")
    ray.shutdown()


@pytest.fixture
def local_ray(_ray_home: Path) -> str:
    """The GCS address of a local loopback Ray (2 + 1 CPUs), started as `ray_scan` starts one (10-20 s) and kept
    for the module's tests that do not test Ray's own start-up: `ray_scan` joins it and leaves it running.
    Its workers work in a folder of their own, not in the tests' working folder."""
    import ray

    from fakescope.scale.ray_scan import _connect

    if not ray.is_initialized():
        with contextlib.chdir(_ray_home):
            assert _connect(None, 2, 200 * 2**20)
    return ray.get_runtime_context().gcs_address


@pytest.fixture
def no_local_ray() -> None:
    """No Ray in this process (the shared one is shut down): for tests of what a call that starts Ray does."""
    ray = pytest.importorskip("ray")
    ray.shutdown()
