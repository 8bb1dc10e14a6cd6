"""`Detector`: the one object every entry point (Python, CLI, REST, web) calls.

preprocess (`fakescope._preparation`: decode, evidence, tiles; in worker threads or processes) ->
device stage (plain JPEGs decoded and tiled on the device, when asked) -> `_forward` (the network,
batched across images) -> postprocess (calibration, fusion, plain results).
"""

from __future__ import annotations

import collections
import functools
import importlib.util
import logging
import math
import numbers
import os
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fakescope._preparation import (
    BusyStreak,
    ImageInput,
    Prepared,
    is_single,
    load_input,
    prepare_ahead,
    prepare_input,
    read_input,
)
from fakescope.detection import Detection, Evidence, logit
from fakescope.errors import (
    DEVICES,
    ConfigError,
    ImageLoadError,
    ModelLoadError,
    PluginError,
    UnknownModelError,
    UnscorableImages,
)
from fakescope.models.bundle import LoadedModel, load_model
from fakescope.models.calibration import apply_calibration
from fakescope.models.config import check_grid, check_precision
from fakescope.models.registry import check_logits
from fakescope.models.tiling import cut_tiles, make_tiles, normalize, tile_heatmap

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # torch loads where a network is built or run, or pixels go to a device: the onnx runtime on a cached
    import torch  # export needs none (detect starts in ~1 s instead of ~5)

_TILE_CHUNK_PIXELS = 2**26
"""Decoded pixels of one size stacked at once to cut their tiles together (192 MiB of RGB)."""


class Detector:
    """Score images: calibrated P(ai), a verdict, the evidence behind it and an optional heatmap.

    `Detector.load(name_or_path, ...)` loads a model and builds one; the constructor takes a loaded
    `LoadedModel` (`fakescope.models.load_model`) and the same options.

    `grid` overrides the model's tile grid (at most grid x grid tiles per image): fewer tiles run
    faster and see less of a large image (docs/scale.md has the measured trade-off). `threads`
    sets the CPU threads of inference (the onnxruntime session's; for torch, the process's).
    `precision="bf16"` and `compile=True` speed up the torch runtime on GPUs and on CPUs with bf16
    instructions (`fakescope.models.acceleration`; both need `runtime` torch or auto). `precision="int8"`
    runs the onnx runtime on a quantized export made beforehand (`fakescope.models.quantize`; `runtime`
    onnx or auto, on the CPU): faster on CPUs, with slightly different scores (docs/scale.md). `runtime` left
    unset means torch, or onnx for int8.
    `batch_size` counts tiles per forward pass. `workers` threads decode ahead of the network (0: inline);
    `processes=True` makes them processes instead, free of Python's GIL: faster on many cores (a
    GPU scan), at the cost of starting them on each `predict`/`stream` call; an input that crashes
    its worker process becomes an error record instead of ending the run. `decode="device"` decodes
    plain JPEGs on the inference device (nvJPEG on CUDA; `fakescope.io.device_jpeg`) and cuts
    their tiles and reads their watermark there, leaving the workers only file reading and header
    checks; other inputs keep the host decoder. nvJPEG's pixels differ slightly from libjpeg's, and
    so do the scores (measured on an H100: mean |change in P(ai)| 0.008, 1% of verdicts changed,
    docs/scale.md), so the host decoder, which every CPU run and the training used, is the default.

    Threads may share one detector for `predict`, `stream` and `explain` (every method), each call its own results and
    its own count of busy storage reads in a row.

    Example:
        >>> detector = Detector.load()                     # bundled default model, offline
        >>> result = detector.predict("examples/coffee.jpg")
        >>> result.verdict, round(result.probability, 2)
        ('real', 0.16)
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        workers: int = 0,
        processes: bool = False,
        provenance: bool = True,
        threshold: float | None = None,
        runtime: str | None = None,
        grid: int | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        compile: bool = False,  # noqa: A002 - torch's own word
        decode: str = "host",
    ):
        if not isinstance(model, LoadedModel):  # a name or path: what `load` takes
            raise TypeError(f"Detector takes a LoadedModel, not {model!r}; "
                            f"load a model name or path with Detector.load({model!r})")
        if decode not in ("host", "device"):
            raise ConfigError(f"unknown decode {decode!r}; use host or device")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be within [0, 1], got {threshold}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number at least 1, got {batch_size!r}")
        if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 0:  # not joblib's -1
            raise ConfigError(f"workers must be a whole number at least 0 (0 decodes inline), got {workers!r}")
        if str(device) != "cpu":  # the CPU is named without torch
            import torch

            device = torch.device(device)
        self._device, self._device_type = device, str(device).partition(":")[0]
        self.decode = decode
        if decode == "device" and self._device_type != "cuda":  # the CLI prints it as one `warning:` line
            log.warning(f"decode device: nvJPEG needs a CUDA device and inference runs on {device}, so JPEGs are decoded "
                        "on the host")
        self._lookahead = 1 if self._device_type == "cuda" else 0  # batches queued on the device before reading one
        check_precision(precision)
        self.precision = precision
        self._torch_model = with_grid(model, grid)  # its torch network serves Grad-CAM on any runtime (built when asked)
        self.model, self.runtime = _with_runtime(self._torch_model, runtime, self._device_type, threads,
                                                 precision=precision, compile=compile)
        self.batch_size = int(batch_size)
        self.workers, self.processes = int(workers), processes
        self._busy = threading.local()  # each thread's `BusyStreak`, across its calls (`_busy_streak`)
        self.provenance = provenance
        if provenance:  # a bad trust list fails here, not as an error record on every signed image
            from fakescope.forensics.content_credentials import trust_anchors_from_env

            trust_anchors_from_env()
        self.threshold = model_threshold(model, threshold)
        self.band = _shift_band(model.config.band, model.config.threshold, self.threshold)
        self._network = self.model.network
        if self.runtime == "torch":  # channels_last: a faster forward pass on CPU and CUDA (docs/scale.md)
            import torch

            from fakescope.models.acceleration import inference_network, input_dtype

            self.model.network.to(memory_format=torch.channels_last)
            self._network = inference_network(self.model.network, self.device, precision=precision, compile=compile)
            self._input_dtype = input_dtype(precision)

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: str = "auto",
        progress: bool | None = None,
        **kwargs: Any,
    ) -> Detector:
        """Load a bundled model name, a local model path or `hf://owner/name` (default: the bundled model).

        `progress`: show a Hub download's progress bars on stderr (default: when stderr is a terminal).

        `runtime="onnx"` (or `precision="int8"`) runs the network through onnxruntime on the CPU (`auto` then means `cpu`);
        `runtime="auto"` picks onnx on the CPU when onnxruntime is installed and the network exports,
        else torch.
        """
        onnx = kwargs.get("runtime") == "onnx" or kwargs.get("precision") == "int8"
        device = "cpu" if (onnx or not gpu_driver_present()) and str(device) == "auto" else device
        resolved = "cpu" if str(device) == "cpu" else resolve_device(device)  # the CPU: no torch to load
        # lazy: the torch runtime builds the network in the constructor; onnx finds a cached export without it
        return cls(load_model(name_or_path, device=resolved, lazy=True, progress=progress), device=resolved, **kwargs)

    @functools.cached_property
    def device(self) -> torch.device:
        """The inference device (as torch names it: the first ask loads torch, which the onnx runtime runs without;
        built once, not per batch)."""
        import torch

        return torch.device(self._device)

    @property
    def name(self) -> str:
        return self.model.config.name

    @property
    def torch_model(self) -> LoadedModel:
        """The model on its PyTorch network whatever the runtime: Grad-CAM and embeddings need its gradients."""
        return self._torch_model

    def __repr__(self) -> str:
        policy = self.model.config.input
        return (f"Detector({self.name!r}, device='{self._device}', runtime={self.runtime!r}, threshold={self.threshold:g}, "
                f"band=({self.band[0]:g}, {self.band[1]:g}), grid={policy.grid}, crop_size={policy.crop_size}, "
                f"provenance={self.provenance})")

    def predict(self, inputs: ImageInput | Iterable[ImageInput], *, heatmap: bool = False) -> Detection | list[Detection]:
        """Score one input (returns a `Detection`) or many (any iterable, an array of paths too; returns a list, in order).

        The list holds every result (about 2 KB each, more with heatmaps) until it returns: for a long or endless
        run, `stream` hands each result over as it comes, keeping only a few batches of inputs in memory.

        Inputs are paths (local, storage URIs or http(s) URLs, fetched as `fakescope.io.fetch.fetch_url` says),
        encoded bytes, binary file objects (read to their end; streams too), PIL images, uint8 arrays or tensors
        (HxWx3, 3xHxW or HxW; floats all within [0, 1] scaled by 255, else taken as 0-255, both rounded; others refused:
        `fakescope.io.image.float_pixels`), or a `LoadedImage` from `decode_image` (not decoded again;
        its kept bytes give the provenance evidence that encoded bytes give). Anything else (an int, a dict) is one
        input whose error names these. A bad input, or one the model gives a NaN or infinite score, yields a
        `Detection` with `error` set; it never stops the batch (a folder is one, naming `fakescope.io.iter_sources`, which
        lists its images as the CLI does); a storage read throttled past its retries is one, `transient`.
        An unreachable storage (or missing credentials) is no input's fault: it raises `StorageUnavailableError`, as do
        busy reads in a row (`fakescope._preparation.BUSY_READS_PER_WORKER` per worker, counted across the calling thread's
        calls; another thread's reads neither add to them nor reset them).
        """
        if is_single(inputs):
            return next(self.stream([inputs], heatmap=heatmap))
        return list(self.stream(inputs, heatmap=heatmap))

    __call__ = predict

    def stream(self, inputs: ImageInput | Iterable[ImageInput], *, heatmap: bool = False) -> Iterator[Detection]:
        """Lazily score an iterable of any length (one input: one result), decoding ahead in `workers` threads
        (processes with `processes=True`; `fakescope._preparation.prepare_ahead`).

        On CUDA the next batch is queued on the device before this one's results are read, so the
        GPU works while the host finishes results and gathers the following batch.
        """
        if is_single(inputs):  # not a path's characters, nor the bytes of an image, one by one
            inputs = [inputs]
        prepared = prepare_ahead(inputs, policy=self.model.config.input, provenance=self.provenance, model=self.name,
                                 threshold=self.threshold, defer_jpegs=self.decode == "device", workers=self.workers,
                                 processes=self.processes, batch_size=self.batch_size, busy=self._busy_streak())
        launched = collections.deque()
        while batch := _take_tiles(prepared, self.batch_size):
            launched.append(self._launch(batch))
            if len(launched) > self._lookahead:
                yield from self._finish(*launched.popleft(), heatmap)
        while launched:
            yield from self._finish(*launched.popleft(), heatmap)

    def _busy_streak(self) -> BusyStreak:
        """This thread's storage reads in a row busy past their retries, counted across its calls (a Ray actor's
        batches): another thread's reads neither add to it nor reset it."""
        if (streak := getattr(self._busy, "streak", None)) is None:
            streak = self._busy.streak = BusyStreak()
        return streak

    def explain(self, image: ImageInput, method: str = "tiles") -> np.ndarray:
        """A heatmap (H x W floats in [0, 1]) of where the model sees AI traces.

        `tiles` paints each tile's calibrated P(ai); `gradcam`, `gradcam++` and `cam` show the
        model's relative evidence at feature-map resolution (see `fakescope.explain.cam`).
        """
        if not is_single(image):
            raise ImageLoadError(f"explain takes one image, not a {type(image).__name__}; call it once per image")
        if method != "tiles":
            from fakescope.explain.cam import METHODS, class_activation_map

            if method not in METHODS:
                raise ConfigError(f"unknown explanation method {method!r}; expected one of tiles, {', '.join(METHODS)}")
            return class_activation_map(self.torch_model, load_input(image, read_input(image), keep_bytes=False).image, method)
        detection = self.predict(image, heatmap=True)
        if detection.error:
            raise ImageLoadError(detection.error)  # as the other methods raise it
        return detection.heatmap

    def predict_logits(self, images: Iterable[Image.Image]) -> np.ndarray:
        """Raw (uncalibrated) image logits, the mean of tile logits; for training and evaluation.

        Raises:
            UnscorableImages: an image cannot be tiled (too long and thin to upscale to a tile): nothing is returned;
                its `scores` hold every image's logit in order, NaN at those in its `reasons`.
        """
        policy = self.model.config.input
        tile_sets, reasons = {}, {}
        for i, image in enumerate(images):
            try:
                tile_sets[i] = make_tiles(image, policy).pixels
            except ImageLoadError as exc:
                reasons[i] = exc.reason
        logits, done = self._forward(list(tile_sets.values()))
        if done is not None:
            done.synchronize()
        scored = _tile_means(logits)[1]
        if not reasons:
            return scored
        out = np.full(len(tile_sets) + len(reasons), np.nan, dtype=scored.dtype)
        out[list(tile_sets)] = scored
        raise UnscorableImages(reasons, out)

    # -- stages ---------------------------------------------------------------------------

    def _decode_on_device(self, batch: list[Prepared | Detection]) -> list[Prepared | Detection]:
        """Decode the batch's deferred JPEGs on the device, cut their tiles and read their watermarks there.

        Images of one size are tiled together (a few device operations per size, not per image).
        A JPEG the device cannot decode (or decodes to another size) goes through the host path instead.
        """
        waiting = [i for i, p in enumerate(batch) if isinstance(p, Prepared) and p.jpeg is not None]
        if not waiting:
            return batch
        import torch

        from fakescope.io.device_jpeg import decode_jpegs

        items = [batch[i] for i in waiting]
        decoded = decode_jpegs([p.jpeg for p in items], [(p.width, p.height) for p in items], self.device)
        by_size: dict[tuple[int, int], list[tuple[Prepared, torch.Tensor]]] = {}
        for i, p, pixels in zip(waiting, items, decoded):
            if pixels is None or tuple(pixels.shape[1:]) != (p.height, p.width):
                batch[i] = replace(prepare_input(0, p.jpeg, policy=self.model.config.input, provenance=self.provenance,
                                            model=self.name, threshold=self.threshold), source=p.source)
                continue
            by_size.setdefault((p.height, p.width), []).append((p, pixels))
        if self.provenance:  # read_watermarks batches same-sized images within its own memory bound
            from fakescope.forensics import collect_watermarks

            decoded_ok = [pair for group in by_size.values() for pair in group]
            for (p, _), evidence in zip(decoded_ok, collect_watermarks([pixels for _, pixels in decoded_ok])):
                p.evidence.append(evidence)
        crop = self.model.config.input.crop_size
        for (height, width), group in by_size.items():  # same size, same boxes: tiled together, in bounded chunks
            step = max(1, _TILE_CHUNK_PIXELS // (height * width))
            for chunk in (group[k:k + step] for k in range(0, len(group), step)):
                tiles = cut_tiles(torch.stack([pixels for _, pixels in chunk]), chunk[0][0].tiles.boxes, crop)
                for (p, _), own in zip(chunk, tiles):
                    p.tiles, p.jpeg = replace(p.tiles, pixels=own), None
        return batch

    def _launch(self, batch: list[Prepared | Detection]) -> tuple[list, list[Prepared], list[torch.Tensor], Any]:
        """Queue a batch's device work: decoding (when asked), the network, the copy of its logits back."""
        batch = self._decode_on_device(batch)
        ready = [p for p in batch if isinstance(p, Prepared)]
        return batch, ready, *self._forward([p.tiles.pixels for p in ready])

    def _finish(self, batch: list, ready: list[Prepared], logits: list[torch.Tensor], done: Any,
                heatmap: bool) -> Iterator[Detection]:
        """Wait for a launched batch's logits, then yield its results in input order."""
        if done is not None:
            done.synchronize()
        per_image, image_logits = _tile_means(logits)  # the whole batch in a few numpy calls
        pixel_ps = apply_calibration(self.model.config.calibration, image_logits).tolist()
        results = iter(self._postprocess(p, l, pixel_p, heatmap) for p, l, pixel_p in zip(ready, per_image, pixel_ps))
        for item in batch:
            yield next(results) if isinstance(item, Prepared) else item

    def _forward(self, tile_sets: list[np.ndarray | torch.Tensor]) -> tuple[list[np.ndarray | torch.Tensor], Any]:
        """Per-image tile logits on the host; equal-sized tiles go through the network together.

        On CUDA the logits are copied back asynchronously: read them after the returned event (None elsewhere).
        """
        if self.runtime == "torch":
            return self._forward_torch(tile_sets)
        out: list[np.ndarray | None] = [None] * len(tile_sets)
        net, policy, arch, step = self._network, self.model.config.input, self.model.config.architecture, self.batch_size * 4
        for indices in _by_shape(tile_sets).values():  # all on the host: numpy, as onnxruntime takes them
            x = normalize(np.concatenate([np.asarray(tile_sets[i]) for i in indices]), policy)
            logits = np.concatenate([check_logits(net.run(chunk), len(chunk), arch)
                                     for chunk in np.split(x, range(step, len(x), step))])
            for i, part in zip(indices, np.split(logits, np.cumsum([len(tile_sets[i]) for i in indices])[:-1])):
                out[i] = part
        return out, None

    def _forward_torch(self, tile_sets: list[np.ndarray | torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
        import torch

        tile_sets = [torch.from_numpy(t) if isinstance(t, np.ndarray) else t for t in tile_sets]  # host tiles: shared
        out: list[torch.Tensor | None] = [None] * len(tile_sets)
        net, policy = self._network, self.model.config.input
        with torch.inference_mode():
            for indices in _by_shape(tile_sets).values():
                indices.sort(key=lambda i: tile_sets[i].is_cpu)  # tiles cut on the device first, then the host's in one copy
                parts = [tile_sets[i] for i in indices if not tile_sets[i].is_cpu]
                if on_host := [tile_sets[i] for i in indices if tile_sets[i].is_cpu]:
                    parts.append(torch.cat(on_host).to(self.device, non_blocking=True))
                x = parts[0] if len(parts) == 1 else torch.cat(parts)
                x = normalize(x, policy).to(self._input_dtype).contiguous(memory_format=torch.channels_last)
                arch = self.model.config.architecture
                logits = torch.cat([check_logits(net(chunk), len(chunk), arch) for chunk in x.split(self.batch_size * 4)])
                logits = logits.float().to("cpu", non_blocking=True)
                for i, part in zip(indices, logits.split([len(tile_sets[i]) for i in indices])):
                    out[i] = part
        if self._device_type != "cuda":
            return out, None
        done = torch.cuda.Event()
        done.record()
        return out, done

    def _postprocess(self, p: Prepared, tile_logits: np.ndarray, pixel_p: float, heatmap: bool) -> Detection:
        """One result from an image's tile logits and its calibrated pixel P(ai)."""
        from fakescope.forensics import fuse

        config = self.model.config
        if not math.isfinite(pixel_p):  # an overflowing model scored nothing: an error record, as evaluate counts it
            return Detection.failed(p.source, f"{NO_FINITE_SCORE} ({pixel_p})", config.name, self.threshold)
        frames = f" of the first of {p.frames} frames" if p.frames > 1 else ""  # an animation: not the rest
        pixel = Evidence("pixel", pixel_p, f"{config.name}: calibrated P(ai) over {len(tile_logits)} tile(s){frames}")
        fused = fuse(pixel_p, p.evidence, self.threshold, self.band)
        hm = None
        if heatmap:
            hm = tile_heatmap(p.tiles, apply_calibration(config.calibration, tile_logits))
        return Detection(
            source=p.source,
            probability=fused.probability,
            verdict=fused.verdict,
            threshold=self.threshold,
            model=config.name,
            evidence=(pixel, *p.evidence),
            decided_by=fused.decided_by,
            reason=fused.reason,
            caveat=fused.caveat,
            width=p.width,
            height=p.height,
            format=p.format,
            heatmap=hm,
        )


RUNTIMES = ("torch", "onnx", "auto")
NO_FINITE_SCORE = "the model gave no finite score"
"""How a `Detection` the network scored NaN or infinite begins its `error` (an image read and tiled, unlike others)."""


def check_runtime(runtime: str) -> None:
    """Refuse a runtime name other than `RUNTIMES` in one line (`ConfigError`)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES[:-1])} or {RUNTIMES[-1]}")


GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")
"""On Linux, CUDA (or ROCm, or WSL's CUDA) needs one of these: without any, `auto` is the CPU, known without
importing torch (4 of the 5 s a CPU detect took to start)."""


def gpu_driver_present() -> bool:
    """False only on Linux with no GPU driver file (`GPU_DRIVER_FILES`); elsewhere torch is asked."""
    return not sys.platform.startswith("linux") or any(os.path.exists(path) for path in GPU_DRIVER_FILES)


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` picks CUDA when available; anything else is passed to `torch.device` and must be usable here.

    Raises:
        ConfigError: the name is no device, or this machine has none of that kind.
    """
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:  # torch's message lists every device type it knows, most of them unusable here
        raise ConfigError(f"invalid device {device!r}: use {DEVICES}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available")
    if resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)
        except Exception:  # noqa: BLE001 - torch raises RuntimeError, NotImplementedError, AssertionError... per backend
            raise ConfigError(f"device {str(device)!r} is not available on this machine") from None
    return resolved


def model_threshold(model: LoadedModel, threshold: float | None) -> float:
    """The threshold a detector on `model` labels at: `threshold`, else the model's own."""
    return float(model.config.threshold if threshold is None else threshold)  # np.float32 is no JSON


def with_grid(model: LoadedModel, grid: int | None) -> LoadedModel:
    """The model with its input policy's tile grid replaced (unchanged when `grid` is None)."""
    if grid is None:
        return model
    config = model.config
    return replace(model, config=replace(config, input=replace(config.input, grid=check_grid(grid))))


def _with_runtime(
    model: LoadedModel, runtime: str | None, device_type: str, threads: int | None, *, precision: str = "fp32",
    compile: bool = False,  # noqa: A002 - torch's own word
) -> tuple[LoadedModel, str]:
    """The model and the runtime it runs on: itself for `torch`, a copy on its cached ONNX export for `onnx`
    (its int8 export for `precision="int8"`).

    `auto` means onnx on the CPU when onnxruntime is installed and the export succeeds (a warning
    says why not otherwise), and torch everywhere else or when bf16 or compile is asked for; int8 is onnx's only.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if runtime is None:  # unset: torch, but int8 has only onnx
        runtime = "onnx" if precision == "int8" else "torch"
    check_runtime(runtime)
    if precision == "int8":
        if runtime == "torch" or compile:
            raise ConfigError("precision int8 runs on the onnx runtime; use runtime 'onnx' or 'auto', without compile")
        runtime = "onnx"
    torch_only = precision == "bf16" or compile
    if runtime == "onnx" and device_type != "cpu":
        raise ConfigError("the onnx runtime runs on the CPU; use device 'cpu' or runtime 'torch'")
    if runtime == "onnx" and torch_only:
        raise ConfigError("precision bf16 and compile run on the torch runtime; use runtime 'torch' or 'auto'")
    if runtime == "auto" and not torch_only and device_type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        try:
            return _onnx_model(model, threads), "onnx"
        except (ModelLoadError, UnknownModelError, PluginError):  # the torch network cannot be built either
            raise
        except Exception as exc:  # noqa: BLE001 - any export failure falls back to the torch network
            warnings.warn(f"runtime auto: ONNX export failed ({type(exc).__name__}: {exc}); using torch", stacklevel=3)
    if runtime == "onnx":
        return _onnx_model(model, threads, int8=precision == "int8"), "onnx"
    if threads:
        import torch

        torch.set_num_threads(threads)
    return model, "torch"


def _onnx_model(model: LoadedModel, threads: int | None, *, int8: bool = False) -> LoadedModel:
    if int8:
        from fakescope.models.quantize import int8_network

        return model.with_network(int8_network(model, threads=threads))
    from fakescope.models.onnx import onnx_network

    return model.with_network(onnx_network(model, threads=threads))


def _shift_band(band: tuple[float, float], old: float, new: float) -> tuple[float, float]:
    """Move the uncertain band with a user-chosen threshold by the same shift in log-odds (3 decimals, unless they
    would round an end to 0 or 1).

    A shift in probability would push an end to 0 or 1 (threshold 0.9: band [0.7, 1.0), where no image
    is ever `ai`); in log-odds both ends stay inside (0, 1) and the band keeps its width in odds.
    """
    if new == old:
        return band
    shift = logit(new) - logit(old)
    lower, upper = (_rounded_inside(1.0 / (1.0 + math.exp(-logit(p) - shift))) for p in band)
    return min(lower, new), max(upper, new)


def _rounded_inside(p: float) -> float:
    """`p` to 3 decimals where that stays inside (0, 1); else as it is (threshold 0.999: the band's top 0.99957)."""
    rounded = round(p, 3)
    return rounded if 0.0 < rounded < 1.0 else p


def _by_shape(tile_sets: list[np.ndarray | torch.Tensor]) -> dict[tuple[int, int], list[int]]:
    """The positions of the tile sets of each tile height and width."""
    by_shape: dict[tuple[int, int], list[int]] = {}
    for i, tiles in enumerate(tile_sets):
        by_shape.setdefault(tuple(tiles.shape[-2:]), []).append(i)
    return by_shape


def _tile_means(logits: list[np.ndarray | torch.Tensor]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each image's tile logits as numpy (from host tensors or arrays), and their means (float64), with one copy for the
    whole batch."""
    if not logits:
        return [], np.zeros(0)
    sizes = np.array([len(t) for t in logits])
    flat = np.concatenate([np.asarray(t) for t in logits]).astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.split(flat, starts[1:]), np.add.reduceat(flat, starts) / sizes


def _take_tiles(prepared: Iterator[Prepared | Detection], budget: int) -> list[Prepared | Detection]:
    """Take items until their tiles fill one forward batch; failed items ride along free, but
    count toward the same number of items, so a long run of them still comes out in batches."""
    batch, tiles = [], 0
    for item in prepared:
        batch.append(item)
        tiles += len(item.tiles.boxes) if isinstance(item, Prepared) else 0
        if tiles >= budget or len(batch) >= budget:
            break
    return batch
