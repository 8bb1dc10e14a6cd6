"""ONNX export and an onnxruntime-backed network the `Detector` can use in place of PyTorch.

The export traces `model.network` (`torch.onnx.export(..., dynamo=False)`: one self-contained
file, faster under onnxruntime than the dynamo exporter's) with dynamic batch, height and width,
so tiles and whole small images both run. timm's TF-style "same" convolutions (`Conv2dSame`: a
`Pad` computed from the input's size, then a `Conv`) are written as one `Conv` with
`auto_pad=SAME_UPPER`, the same padding (undilated ones: onnxruntime refuses it with dilation),
which keeps onnxruntime's blocked-layout convolutions in one chain (docs/scale.md). Exports are
cached in the user cache folder under a key made of the architecture, the sha256 of the weights and
the versions that shape the graph (torch, timm, opset, `GRAPH_VERSION`; an upgrade exports again),
and reused by every later load; a cached file onnxruntime cannot load is exported again, and a cache
that cannot be written (read-only, full) gives an export held in memory for this process, each with
a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fakescope.cache import cache_dir
from fakescope.errors import ConfigError, ModelLoadError, StorageError
from fakescope.io.storage import unwritable
from fakescope.models.bundle import LoadedModel, check_weights
from fakescope.models.registry import plugin_source

if TYPE_CHECKING:  # torch where a network is exported: running a cached export needs none
    import torch
    from torch import nn

OPSET = 17
GRAPH_VERSION = 3
"""Bumped when fakescope writes a different graph for the same network (2: same convolutions as one Conv;
3: dilated ones keep their Pad, as a cached export of 2 cannot run them)."""
INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
"""onnxruntime (1.29 on) uploads usage events to Microsoft from Linux and macOS too unless this is set before it starts:
set here, before any module imports it, so fakescope stays offline (an explicit `0` is kept)."""
os.environ.setdefault(TELEMETRY_ENV, "1")

log = logging.getLogger(__name__)


class OnnxNetwork:
    """Runs an exported network through onnxruntime; called like the `nn.Module` it replaces.

    Takes a float (N, 3, H, W) tensor and returns the (N,) logits as a CPU float tensor; `run` takes and returns
    numpy arrays (no torch needed).
    `threads` sets onnxruntime's intra-op threads (default: its own choice, one per core); idle,
    they sleep instead of spinning, which on a busy CPU took the cores from the decoding threads
    (docs/scale.md). `path` is the ONNX file, or its bytes for an export held in memory (`self.path`
    is then None).
    """

    def __init__(self, path: str | os.PathLike | bytes, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.path = None if isinstance(path, bytes) else Path(path)
        self.session = ort.InferenceSession(path if isinstance(path, bytes) else str(path), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.run(x.detach().cpu().float().numpy()))

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """(N,) float32 logits of float32 (N, 3, H, W) pixels."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def export_onnx(network: nn.Module, path: str | os.PathLike, *, tile_size: int = 112) -> Path:
    """Export a network to one ONNX file with dynamic batch and spatial axes; return its path.

    The file is written under a temporary name and renamed, so readers never see half a file. A network
    the exporter cannot express (an operator without an ONNX form) raises `ConfigError`; a path that
    cannot be written, `StorageError`.

    Example:
        >>> from fakescope.models import load_model                      # doctest: +SKIP
        >>> export_onnx(load_model().network, "detector.onnx")           # doctest: +SKIP
        PosixPath('detector.onnx')
    """
    path = onnx_target(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.tmp")  # created by the exporter: the umask's mode, not 0600
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _export(network, str(tmp), tile_size)
        os.replace(tmp, path)
    except FileExistsError as exc:  # mkdir's word for a file where the folder should be: "File exists"
        raise StorageError(f"cannot write {path}: {exc.filename} is a file, not a folder") from None
    except OSError as exc:  # a read-only or full disk, a file further up
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def onnx_target(path: str | os.PathLike) -> Path:
    """`path` as the local file an export is written to (a `file://` URI is one), checked before any work; another
    URI (s3://, gdrive://, https://) raises `ConfigError`, a path that cannot be written (a file where a folder above
    it goes, a folder that takes no new file) `StorageError`.

    `Path` would read `s3://b/x.onnx` as the local folders `s3:/b`, so the export would land there unannounced.
    """
    path = str(path).removeprefix("file://")
    if "://" in path:
        from fakescope.io.redact import shown_url

        raise ConfigError(f"{shown_url(path)}: an ONNX export is written to a local file; give a path, "
                          "then copy the file to storage")
    if why := unwritable(os.path.dirname(os.path.abspath(path))):
        raise StorageError(f"cannot write {path}: {why}")
    return Path(path)


def _export(network: nn.Module, target: str | io.BytesIO, tile_size: int) -> None:
    import onnx  # noqa: F401 - the exporter needs it; missing, it says so as ModuleNotFoundError, not a RuntimeError
    import torch

    from fakescope.models.same_padding import for_onnx

    network = for_onnx(network.eval())
    sample = torch.zeros(2, 3, tile_size, tile_size, device=next(network.parameters()).device)
    # when an operator fails, the exporter prints its whole IR graph (60+ lines) even unasked (torch forces
    # its log switch on): keep stdout for results, and leave the failure to the one-line ConfigError below
    torch._C._jit_set_onnx_log_output_stream("stderr")
    log, torch._C._jit_onnx_log = torch._C._jit_onnx_log, lambda *args: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
            # for_onnx reads sizes as ints: its Conv pads by itself. A plugin network's own warnings still show
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"fakescope\.models\.same_padding")
            # the exporter's note that it leaves a Slice with a step unfolded (spectral_lr's replicate pad): not a fault
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            torch.onnx.export(
                network, (sample,), target, dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
            )
    except torch.onnx.OnnxExporterError as exc:  # an operator the exporter cannot express
        raise ConfigError(f"{type(network).__name__} cannot be exported to ONNX: {str(exc).splitlines()[0]}") from None
    finally:
        torch._C._jit_onnx_log = log


def onnx_network(model: LoadedModel, *, threads: int | None = None, cache: str | os.PathLike | None = None) -> OnnxNetwork:
    """The model's network under onnxruntime, exporting it once into the cache when needed.

    A cached file onnxruntime cannot load (truncated by a crash, say) is exported again; a cache
    that cannot be written gives an export held in memory. Each says so in one warning. Weights that are not
    the ones their config.json records are refused (`ModelLoadError`), as when the network is built.
    """
    path = cached_path(model, cache)
    if path.is_file():
        try:
            return OnnxNetwork(path, threads=threads)
        except ImportError:  # onnxruntime missing: no export would help
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors (InvalidProtobuf, Fail...) share no base but Exception
            log.warning("%s: cached ONNX export unreadable (%s); exporting it again", path, str(exc).splitlines()[0])
    try:
        export_onnx(model.network, path, tile_size=model.config.input.crop_size)
    except StorageError as exc:
        log.warning("ONNX cache: %s; exporting into memory for this run", exc)
        buffer = io.BytesIO()
        _export(model.network, buffer, model.config.input.crop_size)
        return OnnxNetwork(buffer.getvalue(), threads=threads)
    return OnnxNetwork(path, threads=threads)


def cached_path(model: LoadedModel, cache: str | os.PathLike | None = None, *, kind: str = "",
                versions: str = "") -> Path:
    """Where an export of the model is cached (`.onnx`, or `.{kind}.onnx` for another kind of export): keyed by its
    weights, the exporter's versions and `versions` (what else that kind depends on).

    Weights that are not the ones their config.json records are refused (`ModelLoadError`), as when the network is
    built: a cached export is found without building it.
    """
    if model.weights is not None and not model.built:
        check_weights(model.weights, model.config)
    key = hashlib.sha256(f"{exporter_versions()}{versions}:{weights_key(model)}".encode()).hexdigest()
    return Path(cache or cache_dir("onnx")) / f"{model.config.architecture}-{key[:16]}{f'.{kind}' if kind else ''}.onnx"


def exporter_versions() -> str:
    """The versions an export depends on besides the weights: torch's exporter, timm's networks, the opset (the
    installed distributions' versions: read without importing torch)."""
    return f"torch={_version('torch')} timm={_version('timm')} opset={OPSET} graph={GRAPH_VERSION}"


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "none"


def weights_key(model: LoadedModel) -> str:
    """sha256 over the architecture (with its kwargs and, for one of your own, the source of the module
    registering it) and every weight tensor's name and bytes.

    Read from the model's safetensors file when it has one (the same tensors its network loads),
    so a cached export is found without building the network.
    """
    h = hashlib.sha256(json.dumps([model.config.architecture, model.config.architecture_kwargs], sort_keys=True).encode())
    h.update(plugin_source(model.config.architecture))
    if model.weights is not None and not model.built:
        state = {name: tensor["data"] for name, tensor in _file_tensors(model.weights)}
    else:  # built: torch is loaded
        import torch

        state = {name: tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                 for name, tensor in model.network.state_dict().items()}
    for name, data in sorted(state.items()):
        h.update(name.encode())
        h.update(data)
    return h.hexdigest()


def _file_tensors(weights: Path) -> list[tuple[str, dict]]:
    """Each tensor's name and its dtype, shape and raw bytes (`data`), as the file holds them (no torch needed)."""
    from safetensors import SafetensorError, deserialize

    try:
        return deserialize(weights.read_bytes())
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"{weights}: unreadable weights ({exc})") from None
