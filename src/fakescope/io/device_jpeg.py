"""JPEG decoding on the inference device (nvJPEG on CUDA, through torchvision), batched.

Only plain JPEGs go there: YCbCr or greyscale, 8-bit, Huffman-coded, no EXIF rotation,
complete (ending in an EOI marker). Everything else keeps the host decoder (`fakescope.io.image`), which applies EXIF
orientation and CMYK conversion and names what is wrong with a broken file; a JPEG the device
fails to decode goes back to it too.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from fakescope._quiet import ignore_warning
from fakescope.io.image import sniff_format
from fakescope.io.jpeg_markers import read_header

if TYPE_CHECKING:  # torch where JPEGs are decoded: the workers' header checks (`device_jpeg_size`) need none
    import torch

MAX_CHUNK_PIXELS = 2**28
"""Pixels decoded at once (768 MiB of RGB): bounds device memory whatever the image sizes."""

_DEPRECATED = ("The image decoding and encoding capabilities of TorchVision are deprecated", DeprecationWarning,
               r"torchvision\.io\.image\Z")
"""torchvision's deprecation of its decoders (moving to TorchCodec), which `decode_jpeg` gives on every call: (message,
category, module) to ignore."""


def device_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG the device decoder takes as it is; None for anything else.

    Walks the marker segments only (no pixels), so it is cheap enough for the decoding workers.
    """
    if sniff_format(data) != "JPEG" or not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    header = read_header(data)
    if header is None or header.orientation != 1 or header.rgb_coded:
        return None
    frame = header.frame
    if frame.precision != 8 or frame.components not in (1, 3) or not frame.width or not frame.height:
        return None
    return frame.width, frame.height


def decode_jpegs(encoded: Sequence[bytes], sizes: Sequence[tuple[int, int]], device: torch.device,
                 *, max_pixels: int = MAX_CHUNK_PIXELS) -> Iterator[torch.Tensor | None]:
    """Decode JPEGs of the given (width, height) on `device`, in order, a chunk at a time.

    Yields (3, H, W) uint8 RGB pixels, or None for a JPEG the device could not decode.
    """
    import torch

    chunk, pixels = [], 0
    for data, (width, height) in zip(encoded, sizes, strict=True):
        if chunk and pixels + width * height > max_pixels:
            yield from _decode_chunk(chunk, device)
            chunk, pixels = [], 0
        chunk.append(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        pixels += width * height
    if chunk:
        yield from _decode_chunk(chunk, device)


def _decode_chunk(chunk: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """One batched decode call; when it fails, each JPEG alone, so one bad file costs only itself."""
    import torch

    if device.type != "cuda":
        return _decode_each(chunk, device)
    # torchvision's CUDA decoder allocates its outputs on the current stream but writes them from a
    # stream of its own without waiting for the current one: handed a block that queued kernels
    # still read (the caching allocator reuses freed blocks at once), it would overwrite their
    # input (pytorch/vision#9606). So it allocates on a stream of ours that runs nothing else, and
    # record_stream keeps each output from going back to that stream's pool before the kernels
    # queued on the consumer's stream have used it.
    consumer, stream = torch.cuda.current_stream(device), _decode_stream(device)
    with torch.cuda.stream(stream):
        decoded = _decode_each(chunk, device)
    consumer.wait_stream(stream)
    for pixels in decoded:
        if pixels is not None:
            pixels.record_stream(consumer)
    return decoded


def _decode_each(chunk: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    from torchvision.io import ImageReadMode, decode_jpeg

    ignore_warning(*_DEPRECATED)  # nvJPEG chosen on purpose; one filter entry, as threads sharing a detector decode at once
    try:
        return decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        pass
    decoded = []
    for data in chunk:
        try:
            decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            decoded.append(None)
    return decoded


@functools.cache
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    import torch

    return torch.cuda.Stream(device)
