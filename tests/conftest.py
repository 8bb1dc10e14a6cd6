"""Shared fixtures for the core suite: a tiny saved model, generated images, an offline HF cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

# As the `fakescope` command does: idle OpenMP threads sleep rather than spin. Set before torch loads, so the
# processes the tests start (torchrun ranks, Ray actors, recipe and benchmark scripts) inherit it too.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
from PIL import Image

TINY_MODEL_NAME = "test-tiny"
MAX_WORKERS = 4  # each worker loads torch and starts its own detectors, Ray and servers


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """With pytest-xdist, run on every CPU unless `-n` is given (`-n auto`, each test file on one worker unless
    `--dist` says otherwise, so its module fixtures start once); `-n 0` or `-p no:xdist` runs in this one process."""
    worker = hasattr(config, "workerinput")
    if config.pluginmanager.hasplugin("xdist") and not worker and config.option.numprocesses is None:
        config.option.numprocesses = "auto"
        config.option.dist = "loadfile" if config.option.dist == "no" else config.option.dist


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown under -p no:xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per CPU this process may use (not xdist's physical cores), at most MAX_WORKERS."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cpus, MAX_WORKERS)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread: on a shared 2-core machine two threads spin and run up to 100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """ONNX exports go to a folder of this session's, never into the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAKESCOPE_CACHE", str(tmp_path_factory.mktemp("fakescope-cache")))
        yield


@pytest.fixture(scope="session")
def taef2_random_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A taef2 weights folder (encoder and decoder .pth) with seeded random weights."""
    import torch

    from fakescope.generate.taef2 import TAEF2

    torch.manual_seed(1)
    model = TAEF2()
    folder = tmp_path_factory.mktemp("taef2-weights")
    torch.save(model.encoder.state_dict(), folder / "taef2_encoder.pth")
    torch.save(model.decoder.state_dict(), folder / "taef2_decoder.pth")
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved `test_tiny` model folder (64-px tiles, 2x2 grid, seeded random weights)."""
    import torch

    from fakescope.models import Calibration, InputPolicy, ModelConfig, create_model, save_model

    torch.manual_seed(0)
    network = create_model("test_tiny").eval()
    config = ModelConfig(
        name=TINY_MODEL_NAME,
        architecture="test_tiny",
        input=InputPolicy(crop_size=64, grid=2),
        calibration=Calibration("temperature", temperature=0.5, bias=0.0),
        threshold=0.5,
        band=(0.35, 0.65),
    )
    folder = tmp_path_factory.mktemp("models") / TINY_MODEL_NAME
    save_model(network, config, folder, card=f"# {TINY_MODEL_NAME}\n\nA random test model.\n")
    return folder


@pytest.fixture(scope="session")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder holding module `qa_plugin`, a model folder of its architecture saved by a process that imported it),
    made once per session (a new interpreter) for the plugin tests of tests/models and tests/scale, which only read it."""
    from plugin_helpers import save_plugin_model

    folder = tmp_path_factory.mktemp("plugin")
    return folder, save_plugin_model(folder)


class ImageFactory:
    """Makes small, textured, deterministic test images and their encodings."""

    def pil(self, size: tuple[int, int] = (96, 80), mode: str = "RGB", seed: int = 0) -> Image.Image:
        """A smooth colour gradient plus noise, `size` = (width, height), converted to `mode`."""
        w, h = size
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / max(w - 1, 1), yy * 255 / max(h - 1, 1), np.full((h, w), 128.0)], -1)
        pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels, "RGB")
        return image if mode == "RGB" else image.convert(mode)

    def encode(self, image: Image.Image, fmt: str = "PNG", **save) -> bytes:
        buf = io.BytesIO()
        image.save(buf, fmt, **save)
        return buf.getvalue()

    def bytes(self, fmt: str = "PNG", size: tuple[int, int] = (96, 80), seed: int = 0, **save) -> bytes:
        return self.encode(self.pil(size, seed=seed), fmt, **save)

    def file(self, path: Path, fmt: str = "PNG", size: tuple[int, int] = (96, 80), seed: int = 0, **save) -> Path:
        """Write an encoded image to `path` (any name: the suffix need not match `fmt`)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.bytes(fmt, size, seed, **save))
        return path


@pytest.fixture(scope="session")
def image_factory() -> ImageFactory:
    return ImageFactory()


@pytest.fixture
def hf_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache under a tmp HF_HOME, with the hub forced offline.

    huggingface_hub reads its environment once at import, so its constants are patched too.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for var, value in {"HF_HOME": home, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(var, str(value))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache
