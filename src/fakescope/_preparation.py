"""The preprocess stage of `Detector`: each input read, decoded, checked for provenance and cut into tiles.

`prepare_ahead` runs `prepare_input` over the inputs in decoding threads or processes, ahead of the
network; what comes back, a `Prepared` (or a failed `Detection`), is small enough to hand over. The
other helpers tell what an input is (`is_single`, `describe_input`) and turn it into bytes
(`read_input`) and pixels (`load_input`).
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, Union

import numpy as np
from PIL import Image

from fakescope.detection import Detection, Evidence
from fakescope.errors import FakescopeError, ImageLoadError, StorageBusyError, StorageUnavailableError
from fakescope.io import shared_slots
from fakescope.io.device_jpeg import device_jpeg_size
from fakescope.io.fetch import TransientFetchError, shown_source
from fakescope.io.image import MAX_PIXELS, LoadedImage, decode_image, load_image, read_source
from fakescope.io.shared_slots import SharedSlots, affordable_slots
from fakescope.models.config import InputPolicy
from fakescope.models.tiling import Tiles, make_tiles, tile_boxes

if TYPE_CHECKING:  # a tensor input can only come from a caller that loaded torch: preparing inputs needs none
    import torch

ImageInput = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray, "torch.Tensor", LoadedImage]

ACCEPTED = ("an input is a path, storage URI or http(s) URL, bytes, a binary file object, a PIL image, a numpy array "
            "or torch tensor, or a LoadedImage")
"""What `Detector.predict` takes, as the error for anything else says it."""
_MAX_CHUNK = 16
"""Most inputs a decoding worker takes at once (fewer when the decode-ahead window is short)."""
BUSY_READS_PER_WORKER = 4
"""Storage reads in a row per decoding worker (at least one) that may stay busy past their retries before the run stops
as an outage. The reads in flight at one moment (one per worker) can all meet one burst of throttling: a few such bursts
become transient rows, while a store failing every read stops after about four retry periods (each busy read having
outlasted its own retries: up to half a minute on S3; on Drive a minute of backoff where it answers busy, ~7 minutes
where it does not answer in time: 6 tries of the client's 60 s timeout plus that backoff)."""
NO_PIXELS = np.empty(0, dtype=np.uint8)  # tiles not cut yet (left in a shared slot, or for the device)


@dataclass
class Prepared:
    """One decoded input, ready for the network (small: the decoded image itself is dropped)."""

    source: str
    width: int
    height: int
    format: str
    tiles: Tiles
    evidence: list[Evidence]
    in_slot: tuple[int, ...] | None = None  # (T, h, w, 3) when a worker process left the tiles in a shared slot
    jpeg: bytes | None = None  # a plain JPEG left for the device to decode and tile (tiles.pixels then empty)
    frames: int = 1  # an animation's frames (or a file's pages): only the first was decoded


@dataclass
class BusyRead:
    """An input whose storage read stayed busy past its retries: its transient `detection`, and the error's `message`."""

    detection: Detection
    message: str


class BusyStreak:
    """Storage reads in a row that stayed busy (`BusyRead`), none read between; a `Detector` keeps one per calling thread,
    across its calls."""

    def __init__(self) -> None:
        self.count = 0

    def check(self, result: Prepared | Detection | BusyRead, limit: int) -> Prepared | Detection:
        """The result, a busy read's transient record; the `limit`-th busy read in a row raises `StorageUnavailableError`."""
        if not isinstance(result, BusyRead):
            self.count = 0
            return result
        self.count += 1
        if self.count < limit:
            return result.detection
        self.count = 0
        raise StorageUnavailableError(f"{result.message} ({limit} reads in a row failed so; a scan rerun resumes)")


def prepare_input(index: int, item: ImageInput, *, policy: InputPolicy, provenance: bool, model: str,
                  threshold: float, defer_jpegs: bool = False, slot: int | None = None) -> Prepared | Detection | BusyRead:
    """Decode one input, collect its provenance evidence and cut its tiles (runs in a worker).

    With `defer_jpegs`, a plain JPEG is only read and checked (`defer_jpeg`), for the device to decode.
    In a worker process given a shared `slot`, the tiles go there (when they fit) instead of back
    through the pool's pipe.
    """
    source = describe_input(item, index)
    try:
        data = read_input(item)
        if defer_jpegs and data is not None and (deferred := defer_jpeg(source, data, policy, provenance)):
            return deferred
        loaded = load_input(item, data)
        pixels = np.array(loaded.image)  # out of PIL once, for the tiles and the watermark alike
        tiles = make_tiles(pixels, policy)
    except StorageBusyError as exc:  # this read may pass (throttled, a 5xx, a dropped connection): a rerun tries again
        return BusyRead(Detection.failed(source, exc.reason, model, threshold, transient=True), str(exc))
    except StorageUnavailableError:  # not this input's fault: the caller stops (a scan resumes from here)
        raise
    except FakescopeError as exc:  # the record names the source: its error does not again
        return Detection.failed(source, exc.reason, model, threshold, transient=isinstance(exc, TransientFetchError))
    evidence = []
    if provenance:
        from fakescope.forensics import collect_evidence

        evidence = collect_evidence(loaded.data, pixels.transpose(2, 0, 1))
    prepared = Prepared(source, loaded.width, loaded.height, loaded.format, tiles, evidence, frames=loaded.frames)
    if slot is not None:
        nhwc = tiles.pixels.transpose(0, 2, 3, 1)  # the layout make_tiles cut them in: contiguous
        if shared_slots.write(slot, nhwc):
            prepared.tiles, prepared.in_slot = replace(tiles, pixels=NO_PIXELS), nhwc.shape
    return prepared


def prepare_chunk(prepare: Callable,
                  tasks: list[tuple[tuple[int, ImageInput], int | None]]) -> list[Prepared | Detection | BusyRead]:
    """`prepare` for consecutive (numbered input, slot) tasks: one hand-over to and from a worker for all of them."""
    return [prepare(*ix, slot=slot) for ix, slot in tasks]


def defer_jpeg(source: str, data: bytes, policy: InputPolicy, provenance: bool) -> Prepared | None:
    """A plain JPEG at least a tile in each side, with its byte-level evidence, waiting for the device; else None."""
    size = device_jpeg_size(data)
    if size is None or min(size) < policy.crop_size or size[0] * size[1] > MAX_PIXELS:
        return None  # the host path: upscaling, or its error message
    width, height = size
    evidence = []
    if provenance:
        from fakescope.forensics import collect_evidence

        evidence = collect_evidence(data, None, kinds=("c2pa", "metadata"))  # the watermark needs the pixels
    tiles = Tiles(NO_PIXELS, tile_boxes(height, width, policy), (height, width))
    return Prepared(source, width, height, "JPEG", tiles, evidence, jpeg=data)


def collect_tiles(result: Prepared | Detection | BusyRead, slot: int | None,
                  slots: SharedSlots | None) -> Prepared | Detection | BusyRead:
    """Take a prepared input's tiles out of its shared slot, and free the slot (no slot: no slots)."""
    if slot is None:
        return result
    if isinstance(result, Prepared) and result.in_slot is not None:
        pixels = slots.read(slot, result.in_slot).transpose(0, 3, 1, 2)
        result.tiles, result.in_slot = replace(result.tiles, pixels=pixels), None
    else:
        slots.release(slot)
    return result


def new_pool(processes: bool, slots: SharedSlots | None, workers: int) -> ThreadPoolExecutor | ProcessPoolExecutor:
    """`workers` decoding threads, or processes attached to the shared `slots` (when there are any)."""
    if not processes:
        return ThreadPoolExecutor(workers)
    attach = None if slots is None else (slots.name, slots.slot_bytes)
    return ProcessPoolExecutor(workers, initializer=_init_worker_process, initargs=(attach,))


def _init_worker_process(slots: tuple[str, int] | None) -> None:
    """One torch thread per decoding process (a forked child entering its parent's OpenMP pool hangs; torch is set when
    the parent had loaded it, else OpenMP's variable holds for a later import); attach the slots.
    A terminal's Ctrl-C reaches the whole process group: it is the parent's to handle (each worker printed a traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if slots is not None:
        shared_slots.attach(*slots)


def prepare_ahead(inputs: Iterable[ImageInput], *, policy: InputPolicy, provenance: bool, model: str, threshold: float,
                  defer_jpegs: bool, workers: int, processes: bool, batch_size: int,
                  busy: BusyStreak | None = None) -> Iterator[Prepared | Detection]:
    """`prepare_input` over `inputs`, in order, decoding ahead in `workers` threads or processes (none: here).

    Processes hand their tiles back through shared memory when /dev/shm has room; an input that
    kills its process is retried alone, and becomes an error record if it kills that one too. A storage read busy past
    its retries is a transient record, but `BUSY_READS_PER_WORKER` x `workers` (at least 1) of them in a row (`busy`,
    counted on from earlier calls) raise `StorageUnavailableError`, after the reads already under way have finished.
    """
    prepare = partial(prepare_input, policy=policy, provenance=provenance, model=model, threshold=threshold,
                      defer_jpegs=defer_jpegs)
    numbered = enumerate(inputs)
    busy, limit = busy or BusyStreak(), BUSY_READS_PER_WORKER * max(1, workers)
    if workers <= 0:
        for ix in numbered:
            yield busy.check(prepare(*ix), limit)
        return
    ahead = max(batch_size, 4 * workers)  # images decoded ahead while the network runs
    with contextlib.ExitStack() as stack:
        slots = None
        if processes:  # tiles come back through shared memory, not the pool's pipe, when it has room
            slot_bytes = policy.grid**2 * 3 * policy.crop_size**2
            if (count := affordable_slots(ahead, slot_bytes)) >= 2 * workers:
                slots, ahead = stack.enter_context(SharedSlots(count, slot_bytes)), count
            else:
                warnings.warn("too little free shared memory (/dev/shm) for the decoding processes' tiles: "
                              "they come back through a pipe, which is slower", stacklevel=3)
        make_pool = partial(new_pool, processes, slots)
        pool, pending, in_flight = make_pool(workers), collections.deque(), 0
        stack.callback(lambda: pool.shutdown(cancel_futures=True))  # a consumer that stops early cancels the queue
        size = max(1, min(_MAX_CHUNK, ahead // (4 * workers)))  # inputs per task: less hand-over per input
        while True:
            while in_flight < ahead and (chunk := list(itertools.islice(numbered, min(size, ahead - in_flight)))):
                tasks = [(ix, slots.take() if slots is not None else None) for ix in chunk]
                pending.append((tasks, pool.submit(prepare_chunk, prepare, tasks)))
                in_flight += len(tasks)
            if not pending:
                return
            tasks, future = pending.popleft()
            in_flight -= len(tasks)
            try:
                results = future.result()
            except BrokenProcessPool:  # a worker died: retry its inputs one by one, the others in a new pool
                pool.shutdown(cancel_futures=True)
                results = [_prepare_alone(make_pool, prepare, ix, slot, model, threshold) for ix, slot in tasks]
                pool = make_pool(workers)
                pending = collections.deque((t, pool.submit(prepare_chunk, prepare, t)) for t, _ in pending)
            except StorageUnavailableError:  # the storage, not an input: stop without trying it again here
                raise
            except Exception:  # noqa: BLE001 - an input no process can take (a PIL image failing to load): here
                results = [prepare(*ix, slot=slot) for ix, slot in tasks]
            for (_, slot), result in zip(tasks, results):
                yield busy.check(collect_tiles(result, slot, slots), limit)


def _prepare_alone(make_pool: Callable, prepare: Callable, ix: tuple[int, ImageInput], slot: int | None, model: str,
                   threshold: float) -> Prepared | Detection | BusyRead:
    """Prepare one input in a process of its own; an error record if it kills that one too."""
    with make_pool(1) as pool:
        try:
            return pool.submit(prepare, *ix, slot=slot).result()
        except BrokenProcessPool:
            message = "decoding this input crashed its worker process"
            return Detection.failed(describe_input(ix[1], ix[0]), message, model, threshold)


def load_input(item: ImageInput, data: bytes | None, *, keep_bytes: bool = True) -> LoadedImage:
    """Decode the input's bytes (from `read_input`), or take an in-memory image as it is when it has none."""
    if data is not None:
        return decode_image(data, keep_bytes=keep_bytes)
    if isinstance(item, LoadedImage):  # decoded by the caller, who may show it too
        return item
    if _is_tensor(item):  # as its array (on the host; bf16 has no numpy type)
        item = item.detach().cpu()
        item = (item.float() if item.is_floating_point() else item).numpy()
    if not isinstance(item, (Image.Image, np.ndarray)):
        raise ImageLoadError(f"cannot read an image from {type(item).__name__}; {ACCEPTED}")
    return load_image(item, keep_bytes=keep_bytes)


def read_input(item: ImageInput) -> bytes | None:
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


def describe_input(item: ImageInput, index: int) -> str:
    """The `source` of an input's result: its path, a file object's name, else its type and position.

    An http(s) URL is named without its user info (a password) and query (a signed URL's signature): `shown_source`.
    """
    if isinstance(item, (str, os.PathLike)):
        text = str(os.fspath(item))  # a plain str, from numpy's str_ too
        return shown_source(text)
    if _is_file(item) and isinstance(name := getattr(item, "name", None), str):
        return name  # a file from open(): its path
    return f"<{type(item).__name__} #{index}>"


def _is_file(item: Any) -> bool:
    return callable(getattr(item, "read", None))


def _is_tensor(item: Any) -> bool:
    """A torch tensor, told without loading torch: no tensor exists before torch is loaded (nor while another thread is
    still importing it: its module is in `sys.modules` before `Tensor` is set)."""
    return isinstance(item, getattr(sys.modules.get("torch"), "Tensor", ()))


_SINGLE = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray, LoadedImage)


def is_single(inputs: Any) -> bool:
    """One input, not an iterable of them; an array of strings (paths, say from numpy or pandas) is many.

    Anything not iterable (an int, None), or a mapping (not its keys as paths), is one input too: one result, whose
    `error` names the inputs it takes.
    """
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "OSU":
        return False
    return (isinstance(inputs, _SINGLE) or _is_tensor(inputs) or _is_file(inputs) or not isinstance(inputs, Iterable)
            or isinstance(inputs, Mapping))
