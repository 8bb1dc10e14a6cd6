"""int8 inference: the ONNX export statically quantized by onnxruntime, opt-in as `precision="int8"`.

Weights are int8 per output channel and activations uint8 with ranges taken (min-max) from
calibration tiles cut as the `Detector` cuts them (QDQ format, which onnxruntime fuses into int8
convolutions: VNNI instructions on x86). Weights use 7 of their 8 bits (`reduce_range`): an x86 CPU without VNNI
multiplies uint8 by int8 in pairs summed into int16, which saturates with full-range weights. Scores differ from fp32,
slightly on a CPU with VNNI and more without (docs/scale.md has the measured speed, AUC and P(ai) changes; loading an
int8 network on a CPU known to lack VNNI logs one warning), so it is never chosen by default. `export_int8` writes the
quantized network into the user cache beside the fp32 export, under a key of the weights' sha256
and the exporter and onnxruntime versions; `int8_network` loads it and refuses to run without it
(the calibration images must come from the user), so an export for other weights or versions is
never used.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fakescope.errors import ConfigError, ImageLoadError, StorageError
from fakescope.io import storage
from fakescope.models.bundle import LoadedModel
from fakescope.models.onnx import INPUT_NAME, OnnxNetwork, cached_path, onnx_network, onnx_target
from fakescope.models.tiling import make_tiles, normalize

CALIBRATION_TILES = 200
"""Tiles calibrated on by default: 200 tiles of data/default gave the AUC of fp32 (docs/scale.md)."""
_BATCH = 8

log = logging.getLogger(__name__)


QUANTIZATION = "qdq-u8s8-per-channel-reduce-range"
"""How `export_int8` quantizes, in the cache key: an export made otherwise (full-range weights, before 2026-11-28) is
not used."""


def int8_path(model: LoadedModel, cache: str | os.PathLike | None = None) -> Path:
    """Where the model's int8 export is cached: keyed by its weights, the exporter and onnxruntime versions and how it
    quantizes (`QUANTIZATION`)."""
    import onnxruntime

    return cached_path(model, cache, kind="int8", versions=f" ort={onnxruntime.__version__} {QUANTIZATION}")


def int8_network(model: LoadedModel, *, threads: int | None = None, cache: str | os.PathLike | None = None) -> OnnxNetwork:
    """The model's cached int8 network under onnxruntime.

    Raises:
        ConfigError: no int8 export of these weights (or of them under this torch, timm or onnxruntime) is cached.
    """
    network = OnnxNetwork(_cached_int8(model, cache), threads=threads)  # missing onnxruntime or export: said first
    if cpu_has_vnni() is False:
        log.warning(NO_VNNI)
    return network


VNNI_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
NO_VNNI = ("precision int8: this CPU has no VNNI instructions, so int8 scores drift further from fp32 (on one such CPU "
           "AUC 0.942 -> 0.934 and 9.5% of verdicts changed on the test split; docs/scale.md); fp32 is the safer choice")


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the x86 CPU has VNNI int8 instructions (`VNNI_FLAGS` in its Linux flags); None where that cannot be read
    (another OS, another architecture)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else not VNNI_FLAGS.isdisjoint(flags.partition(":")[2].split())


def int8_sha256(model: LoadedModel, cache: str | os.PathLike | None = None) -> str:
    """The sha256 of the model's int8 file: the one its network runs (a `Detector`'s at int8), else the cached one
    (`int8_network`'s). Another calibration gives another one.

    Raises:
        ConfigError: as `int8_network`.
    """
    import hashlib

    network = model.network if model.built else None
    path = network.path if isinstance(network, OnnxNetwork) and network.path else _cached_int8(model, cache)
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cached_int8(model: LoadedModel, cache: str | os.PathLike | None) -> Path:
    path = int8_path(model, cache)
    if not path.is_file():
        raise ConfigError(f"no int8 export of model {model.config.name!r} for these weights and versions; run "
                          "`fakescope export --onnx FILE --int8 --calibration DATA` (a manifest or an image folder) first")
    return path


def calibration_tiles(sources: Iterable[str], model: LoadedModel, count: int = CALIBRATION_TILES) -> np.ndarray:
    """Up to `count` normalised tiles of the crop size, cut from `sources` (local or remote, in their order) as the
    Detector cuts them.

    Unreadable images are skipped (a warning counts them).

    Raises:
        ConfigError: no source gave a tile.
    """
    from fakescope.io.image import load_image

    policy, tiles, skipped = model.config.input, [], 0
    crop = policy.crop_size
    for source in sources:
        try:
            data = storage.read_bytes(source) if storage.is_remote(source) else source
            cut = make_tiles(load_image(data, keep_bytes=False).image, policy).pixels
        except (ImageLoadError, StorageError):
            skipped += 1
            continue
        if cut.shape[-2:] == (crop, crop):  # an image smaller than a tile is whole, of its own size
            tiles.extend(normalize(cut, policy))
        if len(tiles) >= count:
            break
    if skipped:
        log.warning("int8 calibration: skipped %d unreadable image(s)", skipped)
    if not tiles:
        raise ConfigError(f"no calibration tiles: the images gave none of {crop}x{crop} px")
    return np.stack(tiles[:count])


def calibration_sources(data: str, *, seed: int = 0) -> list[str]:
    """Calibration images: a manifest's train and val rows, or a folder's images, in a seeded (deterministic) order.

    Raises:
        ConfigError: no images, or a folder under `data` that cannot be listed (calibrating without its images would
            go unsaid, as `dataset build` refuses it).
    """
    from fakescope.scale.scan import MANIFEST_SUFFIXES

    if data.lower().endswith(MANIFEST_SUFFIXES):
        from fakescope.data.manifest import read_rows

        rows = read_rows(data)
        uris = sorted(rows.loc[rows["split"].isin(["train", "val"]), "uri"])
        if not uris:
            raise ConfigError(f"{data}: no train or val rows to calibrate on")
    else:
        from fakescope.io.inputs import list_images, path_text

        if os.path.isfile(data):  # list_images would say only "a file, not a folder"
            raise ConfigError(f"{data}: a file, not a manifest ({', '.join(MANIFEST_SUFFIXES)}) or an image folder to "
                              "calibrate on")
        uris = list(list_images(data))
        if unlisted := next((uri for uri in uris if isinstance(uri, storage.UnlistedFolder)), None):  # a smaller set, unsaid
            raise ConfigError(f"{path_text(unlisted)}: {unlisted.reason}, so the calibration would miss them: make it "
                              "readable (or move it out) and export again")
        if not uris:
            raise ConfigError(f"{data}: no images to calibrate on")
    random.Random(seed).shuffle(uris)
    return uris


def export_int8(model: LoadedModel, data: str, target: str | os.PathLike | None = None, *,
                count: int = CALIBRATION_TILES, cache: str | os.PathLike | None = None) -> tuple[Path, np.ndarray]:
    """Quantize the model's ONNX export on `count` tiles of `data`'s images (`calibration_sources`, `calibration_tiles`)
    into the cache.

    With `target`, the int8 file is written there too. Returns the cached file and the calibration tiles.
    """
    import onnxruntime  # noqa: F401 - missing, the install hint comes before any image is read
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    target = None if target is None else onnx_target(target)  # refused before the calibration images are read
    tiles = calibration_tiles(calibration_sources(data), model, count)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT_NAME: tiles[i:i + _BATCH]} for i in range(0, len(tiles), _BATCH)])

        def get_next(self):
            return next(self.batches, None)

    fp32 = onnx_network(model, cache=cache).path
    if fp32 is None:
        raise StorageError("int8 export: the ONNX cache cannot be written")
    path = int8_path(model, cache)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        pre = Path(tmp, "pre.onnx")
        quant_pre_process(str(fp32), str(pre))
        quantize_static(str(pre), str(Path(tmp, "int8.onnx")), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
        quantized = Path(tmp, "int8.onnx").read_bytes()
        for out in [path] + ([target] if target is not None else []):
            storage.write_bytes(str(out), quantized)  # under a temporary name, renamed: never half a file
    return path, tiles
