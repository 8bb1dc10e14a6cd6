"""`Detector`: the one object every entry point (Python, CLI, REST, web) calls.

preprocess (decode, evidence, tiles; in worker threads or processes) -> device stage (plain JPEGs
decoded and tiled on the device, when asked) -> `_forward` (the network, batched across images) ->
postprocess (calibration, fusion, plain results).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import itertools
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from fakescope.detection import Detection, Evidence
from fakescope.errors import (
    ConfigError,
    FakescopeError,
    ImageLoadError,
    ModelLoadError,
    PluginError,
    StorageUnavailableError,
    UnknownModelError,
)
from fakescope.io import shared_slots
from fakescope.io.device_jpeg import decode_jpegs, device_jpeg_size
from fakescope.io.image import MAX_PIXELS, LoadedImage, decode_image, load_image, read_source
from fakescope.io.shared_slots import SharedSlots, affordable_slots
from fakescope.models.acceleration import inference_network, input_dtype
from fakescope.models.bundle import LoadedModel, load_model
from fakescope.models.calibration import apply_calibration
from fakescope.models.config import InputPolicy
from fakescope.models.registry import check_logits
from fakescope.models.tiling import Tiles, cut_tiles, make_tiles, normalize, tile_boxes, tile_heatmap

ImageInput = str | os.PathLike | bytes | BinaryIO | Image.Image | np.ndarray | torch.Tensor | LoadedImage
_TILE_CHUNK_PIXELS = 2**26
"""Decoded pixels of one size stacked at once to cut their tiles together (192 MiB of RGB)."""
_MAX_CHUNK = 16
"""Most inputs a decoding worker takes at once (fewer when the decode-ahead window is short)."""
_NO_PIXELS = torch.empty(0, dtype=torch.uint8)  # tiles not cut yet (left in a shared slot, or for the device)


@dataclass
class _Prepared:
    """One decoded input, ready for the network (small: the decoded image itself is dropped)."""

    source: str
    width: int
    height: int
    format: str
    tiles: Tiles
    evidence: list[Evidence]
    in_slot: tuple[int, ...] | None = None  # (T, h, w, 3) when a worker process left the tiles in a shared slot
    jpeg: bytes | None = None  # a plain JPEG left for the device to decode and tile (tiles.pixels then empty)


class Detector:
    """Score images: calibrated P(ai), a verdict, the evidence behind it and an optional heatmap.

    `grid` overrides the model's tile grid (at most grid x grid tiles per image): fewer tiles run
    faster and see less of a large image (docs/scale.md has the measured trade-off). `threads`
    sets the CPU threads of inference (the onnxruntime session's; for torch, the process's).
    `precision="bf16"` and `compile=True` speed up the torch runtime on GPUs and on CPUs with bf16
    instructions (`fakescope.models.acceleration`; both need `runtime` torch or auto).
    `batch_size` counts tiles per forward pass. `workers` threads decode ahead of the network;
    `processes=True` makes them processes instead, free of Python's GIL: faster on many cores (a
    GPU scan), at the cost of starting them on each `predict`/`stream` call; an input that crashes
    its worker process becomes an error record instead of ending the run. `decode="device"` decodes
    plain JPEGs on the inference device (nvJPEG on CUDA; `fakescope.io.device_jpeg`) and cuts
    their tiles and reads their watermark there, leaving the workers only file reading and header
    checks; other inputs keep the host decoder. nvJPEG's pixels differ slightly from libjpeg's, and
    so do the scores (measured on an H100: mean |change in P(ai)| 0.008, 1% of verdicts changed,
    docs/scale.md), so the host decoder, which every CPU run and the training used, is the default.

    Example:
        >>> detector = Detector.load()                     # bundled default model, offline
        >>> result = detector.predict("photo.jpg")         # doctest: +SKIP
        >>> result.verdict, round(result.probability, 3)   # doctest: +SKIP
        ('real', 0.041)
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
        runtime: str = "torch",
        grid: int | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        compile: bool = False,  # noqa: A002 - torch's own word
        decode: str = "host",
    ):
        if decode not in ("host", "device"):
            raise ConfigError(f"unknown decode {decode!r}; use host or device")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be within [0, 1], got {threshold}")
        if not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number at least 1, got {batch_size!r}")
        self.device = torch.device(device)
        self.decode = decode
        self._lookahead = 1 if self.device.type == "cuda" else 0  # batches queued on the device before reading one
        self.precision, self._input_dtype = precision, input_dtype(precision)
        fast = precision != "fp32" or compile
        self._explained = _with_grid(model, grid)  # its torch network serves Grad-CAM on any runtime (built when asked)
        self.model, self.runtime = _with_runtime(self._explained, runtime, self.device, threads, torch_only=fast)
        self.batch_size = int(batch_size)
        self.workers, self.processes = workers, processes
        self.provenance = provenance
        if provenance:  # a bad trust list fails here, not as an error record on every signed image
            from fakescope.forensics.content_credentials import trust_anchors_from_env

            trust_anchors_from_env()
        self.threshold = float(model.config.threshold if threshold is None else threshold)  # np.float32 is no JSON
        self.band = _shift_band(model.config.band, model.config.threshold, self.threshold)
        self._network = self.model.network
        if self.runtime == "torch":  # channels_last: a faster forward pass on CPU and CUDA (docs/scale.md)
            self.model.network.to(memory_format=torch.channels_last)
            self._network = inference_network(self.model.network, self.device, precision=precision, compile=compile)

    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        device: str = "auto",
        **kwargs: Any,
    ) -> Detector:
        """Load a bundled model name, a local model path or `hf://owner/name` (default: the bundled model).

        `runtime="onnx"` runs the network through onnxruntime on the CPU (`auto` then means `cpu`);
        `runtime="auto"` picks onnx on the CPU when onnxruntime is installed and the network exports,
        else torch.
        """
        resolved = resolve_device("cpu" if kwargs.get("runtime") == "onnx" and device == "auto" else device)
        # lazy: the torch runtime builds the network in the constructor; onnx finds a cached export without it
        return cls(load_model(name_or_path, device=resolved, lazy=True), device=resolved, **kwargs)

    @property
    def name(self) -> str:
        return self.model.config.name

    @property
    def torch_model(self) -> LoadedModel:
        """The model on its PyTorch network whatever the runtime: Grad-CAM and embeddings need its gradients."""
        return self._explained

    def __repr__(self) -> str:
        policy = self.model.config.input
        return (f"Detector({self.name!r}, device='{self.device}', runtime={self.runtime!r}, threshold={self.threshold:g}, "
                f"band=({self.band[0]:g}, {self.band[1]:g}), grid={policy.grid}, crop_size={policy.crop_size}, "
                f"provenance={self.provenance})")

    def predict(self, inputs: ImageInput | Iterable[ImageInput], *, heatmap: bool = False) -> Detection | list[Detection]:
        """Score one input (returns a `Detection`) or many (any iterable, an array of paths too; returns a list, in order).

        Inputs are paths (local or storage URIs), encoded bytes, binary file objects (read to
        their end; streams too), PIL images, uint8 arrays or tensors (HxWx3, 3xHxW or HxW; floats
        in [0, 1] are scaled), or a `LoadedImage` from `decode_image` (not decoded again; its
        kept bytes give the provenance evidence that encoded bytes give).
        A bad input yields a `Detection` with `error` set; it never stops the batch. An unreachable
        storage (or missing credentials) is no input's fault: it raises `StorageUnavailableError`.
        """
        if _is_single(inputs):
            return next(self.stream([inputs], heatmap=heatmap))
        return list(self.stream(inputs, heatmap=heatmap))

    __call__ = predict

    def stream(self, inputs: ImageInput | Iterable[ImageInput], *, heatmap: bool = False) -> Iterator[Detection]:
        """Lazily score an iterable of any length (one input: one result), decoding ahead in `workers` threads.

        On CUDA the next batch is queued on the device before this one's results are read, so the
        GPU works while the host finishes results and gathers the following batch.
        """
        if _is_single(inputs):  # not a path's characters, nor the bytes of an image, one by one
            inputs = [inputs]
        prepared, launched = self._prepare_all(inputs), collections.deque()
        while batch := _take_tiles(prepared, self.batch_size):
            launched.append(self._launch(batch))
            if len(launched) > self._lookahead:
                yield from self._finish(*launched.popleft(), heatmap)
        while launched:
            yield from self._finish(*launched.popleft(), heatmap)

    def explain(self, image: ImageInput, method: str = "tiles") -> np.ndarray:
        """A heatmap (H x W floats in [0, 1]) of where the model sees AI traces.

        `tiles` paints each tile's calibrated P(ai); `gradcam`, `gradcam++` and `cam` show the
        model's relative evidence at feature-map resolution (see `fakescope.explain.cam`).
        """
        if not _is_single(image):
            raise ImageLoadError(f"explain takes one image, not a {type(image).__name__}; call it once per image")
        if method != "tiles":
            from fakescope.explain.cam import METHODS, class_activation_map

            if method not in METHODS:
                raise ConfigError(f"unknown explanation method {method!r}; expected one of tiles, {', '.join(METHODS)}")
            return class_activation_map(self.torch_model, _load(image, _read(image), keep_bytes=False).image, method)
        detection = self.predict(image, heatmap=True)
        if detection.error:
            raise ImageLoadError(detection.error)  # as the other methods raise it
        return detection.heatmap

    def predict_logits(self, images: Iterable[Image.Image]) -> np.ndarray:
        """Raw (uncalibrated) image logits, the mean of tile logits; for training and evaluation."""
        policy = self.model.config.input
        logits, done = self._forward([make_tiles(im, policy).pixels for im in images])
        if done is not None:
            done.synchronize()
        return _tile_means(logits)[1]

    # -- stages ---------------------------------------------------------------------------

    def _prepare_all(self, inputs: Iterable[ImageInput]) -> Iterator[_Prepared | Detection]:
        policy = self.model.config.input
        prepare = partial(_prepare, policy=policy, provenance=self.provenance, model=self.name, threshold=self.threshold,
                          defer_jpegs=self.decode == "device")
        numbered = enumerate(inputs)
        if self.workers <= 0:
            yield from itertools.starmap(prepare, numbered)
            return
        ahead = max(self.batch_size, 4 * self.workers)  # images decoded ahead while the network runs
        with contextlib.ExitStack() as stack:
            slots = None
            if self.processes:  # tiles come back through shared memory, not the pool's pipe, when it has room
                slot_bytes = policy.grid**2 * 3 * policy.crop_size**2
                if (count := affordable_slots(ahead, slot_bytes)) >= 2 * self.workers:
                    slots, ahead = stack.enter_context(SharedSlots(count, slot_bytes)), count
                else:
                    warnings.warn("too little free shared memory (/dev/shm) for the decoding processes' tiles: "
                                  "they come back through a pipe, which is slower", stacklevel=3)
            new_pool = partial(_new_pool, self.processes, slots)
            pool, pending, in_flight = new_pool(self.workers), collections.deque(), 0
            stack.callback(lambda: pool.shutdown(cancel_futures=True))  # a consumer that stops early cancels the queue
            size = max(1, min(_MAX_CHUNK, ahead // (4 * self.workers)))  # inputs per task: less hand-over per input
            while True:
                while in_flight < ahead and (chunk := list(itertools.islice(numbered, min(size, ahead - in_flight)))):
                    tasks = [(ix, slots.take() if slots is not None else None) for ix in chunk]
                    pending.append((tasks, pool.submit(_prepare_chunk, prepare, tasks)))
                    in_flight += len(tasks)
                if not pending:
                    return
                tasks, future = pending.popleft()
                in_flight -= len(tasks)
                try:
                    results = future.result()
                except BrokenProcessPool:  # a worker died: retry its inputs one by one, the others in a new pool
                    pool.shutdown(cancel_futures=True)
                    results = [self._prepare_alone(new_pool, prepare, ix, slot) for ix, slot in tasks]
                    pool = new_pool(self.workers)
                    pending = collections.deque((t, pool.submit(_prepare_chunk, prepare, t)) for t, _ in pending)
                except StorageUnavailableError:  # the storage, not an input: stop without trying it again here
                    raise
                except Exception:  # noqa: BLE001 - an input no process can take (a PIL image failing to load): here
                    results = [prepare(*ix, slot=slot) for ix, slot in tasks]
                for (_, slot), result in zip(tasks, results):
                    yield _collect(result, slot, slots)

    def _prepare_alone(self, new_pool: Callable, prepare: Callable, ix: tuple[int, ImageInput],
                       slot: int | None) -> _Prepared | Detection:
        """Prepare one input in a process of its own; an error record if it kills that one too."""
        with new_pool(1) as pool:
            try:
                return pool.submit(prepare, *ix, slot=slot).result()
            except BrokenProcessPool:
                message = "decoding this input crashed its worker process"
                return Detection.failed(_describe(ix[1], ix[0]), message, self.name, self.threshold)

    def _decode_on_device(self, batch: list[_Prepared | Detection]) -> list[_Prepared | Detection]:
        """Decode the batch's deferred JPEGs on the device, cut their tiles and read their watermarks there.

        Images of one size are tiled together (a few device operations per size, not per image).
        A JPEG the device cannot decode (or decodes to another size) goes through the host path instead.
        """
        waiting = [i for i, p in enumerate(batch) if isinstance(p, _Prepared) and p.jpeg is not None]
        items = [batch[i] for i in waiting]
        decoded = decode_jpegs([p.jpeg for p in items], [(p.width, p.height) for p in items], self.device)
        by_size: dict[tuple[int, int], list[tuple[_Prepared, torch.Tensor]]] = {}
        for i, p, pixels in zip(waiting, items, decoded):
            if pixels is None or tuple(pixels.shape[1:]) != (p.height, p.width):
                batch[i] = replace(_prepare(0, p.jpeg, policy=self.model.config.input, provenance=self.provenance,
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

    def _launch(self, batch: list[_Prepared | Detection]) -> tuple[list, list[_Prepared], list[torch.Tensor], Any]:
        """Queue a batch's device work: decoding (when asked), the network, the copy of its logits back."""
        batch = self._decode_on_device(batch)
        ready = [p for p in batch if isinstance(p, _Prepared)]
        return batch, ready, *self._forward([p.tiles.pixels for p in ready])

    def _finish(self, batch: list, ready: list[_Prepared], logits: list[torch.Tensor], done: Any,
                heatmap: bool) -> Iterator[Detection]:
        """Wait for a launched batch's logits, then yield its results in input order."""
        if done is not None:
            done.synchronize()
        per_image, image_logits = _tile_means(logits)  # the whole batch in a few numpy calls
        pixel_ps = apply_calibration(self.model.config.calibration, image_logits).tolist()
        results = iter(self._postprocess(p, l, pixel_p, heatmap) for p, l, pixel_p in zip(ready, per_image, pixel_ps))
        for item in batch:
            yield next(results) if isinstance(item, _Prepared) else item

    @torch.inference_mode()
    def _forward(self, tile_sets: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.cuda.Event | None]:
        """Per-image tile logits on the host; equal-sized tiles go through the network together.

        On CUDA the logits are copied back asynchronously: read them after the returned event.
        """
        out: list[torch.Tensor | None] = [None] * len(tile_sets)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, tiles in enumerate(tile_sets):
            by_shape.setdefault(tuple(tiles.shape[-2:]), []).append(i)
        net, policy = self._network, self.model.config.input
        for indices in by_shape.values():
            indices.sort(key=lambda i: tile_sets[i].is_cpu)  # tiles cut on the device first, then the host's in one copy
            parts = [tile_sets[i] for i in indices if not tile_sets[i].is_cpu]
            if on_host := [tile_sets[i] for i in indices if tile_sets[i].is_cpu]:
                parts.append(torch.cat(on_host).to(self.device, non_blocking=True))
            x = parts[0] if len(parts) == 1 else torch.cat(parts)
            x = normalize(x, policy)
            if self.runtime == "torch":
                x = x.to(self._input_dtype).contiguous(memory_format=torch.channels_last)
            arch = self.model.config.architecture
            logits = torch.cat([check_logits(net(chunk), len(chunk), arch) for chunk in x.split(self.batch_size * 4)])
            logits = logits.float().to("cpu", non_blocking=True)
            for i, part in zip(indices, logits.split([len(tile_sets[i]) for i in indices])):
                out[i] = part
        if self.device.type != "cuda":
            return out, None
        done = torch.cuda.Event()
        done.record()
        return out, done

    def _postprocess(self, p: _Prepared, tile_logits: np.ndarray, pixel_p: float, heatmap: bool) -> Detection:
        """One result from an image's tile logits and its calibrated pixel P(ai)."""
        from fakescope.forensics import fuse

        config = self.model.config
        pixel = Evidence("pixel", pixel_p, f"{config.name}: calibrated P(ai) over {len(tile_logits)} tile(s)")
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
            width=p.width,
            height=p.height,
            format=p.format,
            heatmap=hm,
        )


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` picks CUDA when available; anything else is passed to `torch.device` and must be usable here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise FakescopeError(f"invalid device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise FakescopeError("device 'cuda' requested but no CUDA device is available")
    if resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)
        except Exception:  # torch raises RuntimeError, NotImplementedError, AssertionError... per backend
            raise FakescopeError(f"device {str(device)!r} is not available on this machine") from None
    return resolved


def _with_grid(model: LoadedModel, grid: int | None) -> LoadedModel:
    """The model with its input policy's tile grid replaced (unchanged when `grid` is None)."""
    if grid is None:
        return model
    if not isinstance(grid, numbers.Integral) or grid < 1:
        raise ConfigError(f"grid must be a whole number at least 1, got {grid!r}")
    config = model.config
    return replace(model, config=replace(config, input=replace(config.input, grid=int(grid))))


def _with_runtime(
    model: LoadedModel, runtime: str, device: torch.device, threads: int | None, *, torch_only: bool = False
) -> tuple[LoadedModel, str]:
    """The model and the runtime it runs on: itself for `torch`, a copy on its cached ONNX export for `onnx`.

    `auto` means onnx on the CPU when onnxruntime is installed and the export succeeds (a warning
    says why not otherwise), and torch everywhere else or when `torch_only` (bf16 or compile asked for).
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if runtime not in ("torch", "onnx", "auto"):
        raise ConfigError(f"unknown runtime {runtime!r}; use torch, onnx or auto")
    if runtime == "onnx" and device.type != "cpu":
        raise ConfigError("the onnx runtime runs on the CPU; use device 'cpu' or runtime 'torch'")
    if runtime == "onnx" and torch_only:
        raise ConfigError("precision bf16 and compile run on the torch runtime; use runtime 'torch' or 'auto'")
    if runtime == "auto" and not torch_only and device.type == "cpu" and importlib.util.find_spec("onnxruntime") is not None:
        try:
            return _onnx_model(model, threads), "onnx"
        except (ModelLoadError, UnknownModelError, PluginError):  # the torch network cannot be built either
            raise
        except Exception as exc:  # noqa: BLE001 - any export failure falls back to the torch network
            warnings.warn(f"runtime auto: ONNX export failed ({type(exc).__name__}: {exc}); using torch", stacklevel=3)
    if runtime == "onnx":
        return _onnx_model(model, threads), "onnx"
    if threads:
        torch.set_num_threads(threads)
    return model, "torch"


def _onnx_model(model: LoadedModel, threads: int | None) -> LoadedModel:
    from fakescope.models.onnx import onnx_network

    return model.with_network(onnx_network(model, threads=threads))


def _shift_band(band: tuple[float, float], old: float, new: float) -> tuple[float, float]:
    """Move the uncertain band with a user-chosen threshold by the same shift in log-odds (3 decimals).

    A shift in probability would push an end to 0 or 1 (threshold 0.9: band [0.7, 1.0), where no image
    is ever `ai`); in log-odds both ends stay inside (0, 1) and the band keeps its width in odds.
    """
    if new == old:
        return band

    def logit(p: float) -> float:
        p = min(max(p, 1e-6), 1.0 - 1e-6)
        return math.log(p / (1.0 - p))

    shift = logit(new) - logit(old)
    lower, upper = (round(1.0 / (1.0 + math.exp(-logit(p) - shift)), 3) for p in band)
    return min(lower, new), max(upper, new)


def _prepare(index: int, item: ImageInput, *, policy: InputPolicy, provenance: bool, model: str, threshold: float,
             defer_jpegs: bool = False, slot: int | None = None) -> _Prepared | Detection:
    """Decode one input, collect its provenance evidence and cut its tiles (runs in a worker).

    With `defer_jpegs`, a plain JPEG is only read and checked (`_deferred`), for the device to decode.
    In a worker process given a shared `slot`, the tiles go there (when they fit) instead of back
    through the pool's pipe.
    """
    source = _describe(item, index)
    try:
        data = _read(item)
        if defer_jpegs and data is not None and (deferred := _deferred(source, data, policy, provenance)):
            return deferred
        loaded = _load(item, data)
        tiles = make_tiles(loaded.image, policy)
    except StorageUnavailableError:  # not this input's fault: the caller stops (a scan resumes from here)
        raise
    except FakescopeError as exc:  # the record names the source: its error does not again
        return Detection.failed(source, exc.reason, model, threshold)
    evidence = []
    if provenance:
        from fakescope.forensics import collect_evidence

        evidence = collect_evidence(loaded.data, loaded.image)
    prepared = _Prepared(source, loaded.width, loaded.height, loaded.format, tiles, evidence)
    if slot is not None:
        nhwc = tiles.pixels.permute(0, 2, 3, 1).numpy()  # the layout make_tiles cut them in: contiguous
        if shared_slots.write(slot, nhwc):
            prepared.tiles, prepared.in_slot = replace(tiles, pixels=_NO_PIXELS), nhwc.shape
    return prepared


def _prepare_chunk(prepare: Callable, tasks: list[tuple[tuple[int, ImageInput], int | None]]) -> list[_Prepared | Detection]:
    """`prepare` for consecutive (numbered input, slot) tasks: one hand-over to and from a worker for all of them."""
    return [prepare(*ix, slot=slot) for ix, slot in tasks]


def _deferred(source: str, data: bytes, policy: InputPolicy, provenance: bool) -> _Prepared | None:
    """A plain JPEG at least a tile in each side, with its byte-level evidence, waiting for the device; else None."""
    size = device_jpeg_size(data)
    if size is None or min(size) < policy.crop_size or size[0] * size[1] > MAX_PIXELS:
        return None  # the host path: upscaling, or its error message
    width, height = size
    evidence = []
    if provenance:
        from fakescope.forensics import collect_evidence

        evidence = collect_evidence(data, None, kinds=("c2pa", "metadata"))  # the watermark needs the pixels
    tiles = Tiles(_NO_PIXELS, tile_boxes(height, width, policy), (height, width))
    return _Prepared(source, width, height, "JPEG", tiles, evidence, jpeg=data)


def _collect(result: _Prepared | Detection, slot: int | None, slots: SharedSlots | None) -> _Prepared | Detection:
    """Take a prepared input's tiles out of its shared slot, and free the slot (no slot: no slots)."""
    if slot is None:
        return result
    if isinstance(result, _Prepared) and result.in_slot is not None:
        pixels = torch.from_numpy(slots.read(slot, result.in_slot)).permute(0, 3, 1, 2)
        result.tiles, result.in_slot = replace(result.tiles, pixels=pixels), None
    else:
        slots.release(slot)
    return result


def _new_pool(processes: bool, slots: SharedSlots | None, workers: int) -> ThreadPoolExecutor | ProcessPoolExecutor:
    if not processes:
        return ThreadPoolExecutor(workers)
    attach = None if slots is None else (slots.name, slots.slot_bytes)
    return ProcessPoolExecutor(workers, initializer=_init_worker_process, initargs=(attach,))


def _init_worker_process(slots: tuple[str, int] | None) -> None:
    """One torch thread per decoding process (a forked child entering its parent's OpenMP pool hangs); attach the slots."""
    torch.set_num_threads(1)
    if slots is not None:
        shared_slots.attach(*slots)


def _tile_means(logits: list[torch.Tensor]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each image's tile logits as numpy, and their means (float64), with one copy for the whole batch."""
    if not logits:
        return [], np.zeros(0)
    sizes = np.array([len(t) for t in logits])
    flat = torch.cat(logits).numpy().astype(np.float64)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return np.split(flat, starts[1:]), np.add.reduceat(flat, starts) / sizes


def _take_tiles(prepared: Iterator[_Prepared | Detection], budget: int) -> list[_Prepared | Detection]:
    """Take items until their tiles fill one forward batch; failed items ride along free, but
    count toward the same number of items, so a long run of them still comes out in batches."""
    batch, tiles = [], 0
    for item in prepared:
        batch.append(item)
        tiles += len(item.tiles.boxes) if isinstance(item, _Prepared) else 0
        if tiles >= budget or len(batch) >= budget:
            break
    return batch


def _load(item: ImageInput, data: bytes | None, *, keep_bytes: bool = True) -> LoadedImage:
    """Decode the input's bytes (from `_read`), or take an in-memory image as it is when it has none."""
    if data is not None:
        return decode_image(data, keep_bytes=keep_bytes)
    if isinstance(item, LoadedImage):  # decoded by the caller, who may show it too
        return item
    if isinstance(item, torch.Tensor):  # as its array (on the host; bf16 has no numpy type)
        item = item.detach().cpu()
        item = (item.float() if item.is_floating_point() else item).numpy()
    return load_image(item, keep_bytes=keep_bytes)


def _read(item: ImageInput) -> bytes | None:
    """The encoded bytes of a path, URI, bytes or file object input; None for decoded images (PIL, arrays)."""
    if isinstance(item, (str, os.PathLike)):
        return read_source(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if _is_file(item):
        if isinstance(item, io.TextIOBase):
            raise ImageLoadError("a file object opened in text mode; open it in binary mode ('rb')")
        try:
            return bytes(item.read())
        except (OSError, ValueError) as exc:  # a closed file raises ValueError
            raise ImageLoadError(f"cannot read the file object: {exc}") from None
    return None


def _describe(item: ImageInput, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return str(os.fspath(item))  # a plain str, from numpy's str_ too
    if _is_file(item) and isinstance(name := getattr(item, "name", None), str):
        return name  # a file from open(): its path
    return f"<{type(item).__name__} #{index}>"


def _is_file(item: Any) -> bool:
    return callable(getattr(item, "read", None))


_SINGLE = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, torch.Tensor, LoadedImage)


def _is_single(inputs: Any) -> bool:
    """One input, not an iterable of them; an array of strings (paths, say from numpy or pandas) is many."""
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OSU":
        return False
    return isinstance(inputs, _SINGLE) or _is_file(inputs)
