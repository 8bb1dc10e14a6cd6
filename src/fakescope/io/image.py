"""Decode any supported image from bytes into an RGB PIL image, safely.

The format is sniffed from the bytes (never the file name). EXIF orientation is applied,
palette/alpha/CMYK/greyscale/16-bit inputs become 8-bit RGB, and decompression bombs or
absurd sizes are refused with an `ImageLoadError` naming the problem.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from fakescope._quiet import ignore_warning
from fakescope.errors import ImageLoadError, ImageTooLarge
from fakescope.io.fetch import fetch_url, is_url
from fakescope.io.storage import HEAD_BYTES, unlisted_reason

try:  # HEIC/HEIF (and AVIF on older Pillow) through pillow-heif
    import pillow_heif

    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a core dependency
    pillow_heif = None

MAX_PIXELS = 200_000_000
"""Refuse images above this many pixels (a 14k x 14k photo); Pillow's bomb check uses it too, inside `pixel_limit`."""
MIN_SIDE = 32
"""Images with a side under this are refused; 64x64 and above are always scored."""

ImageFile.LOAD_TRUNCATED_IMAGES = False
_limit_lock = threading.Lock()
_limit_users = 0
_host_limit: int | None = None

_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
)
_NETPBM = re.compile(rb"P[1-6]\s")
"""Netpbm's signature (PBM, PGM, PPM; ASCII or binary): `P`, the kind's digit, whitespace."""
T = TypeVar("T")
_TURNS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation to the turn that makes the image upright, as `ImageOps.exif_transpose` has it."""
_QUIET = (
    (rf"Image size \(\d+ pixels\) exceeds limit of {MAX_PIXELS} pixels", Image.DecompressionBombWarning, r"PIL\.Image$"),
    ("", UserWarning, r"PIL\.TiffImagePlugin$"),
)
"""(message, category, module) of the warnings `quiet_pillow` ignores."""
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP"})
_FTYP_BRANDS = {
    b"avif": "AVIF", b"avis": "AVIF",
    b"heic": "HEIF", b"heix": "HEIF", b"hevc": "HEIF", b"heim": "HEIF", b"heis": "HEIF",
    b"mif1": "HEIF", b"msf1": "HEIF",
}


def sniff_format(data: bytes) -> str | None:
    """Return the image format named by the leading bytes (`JPEG`, `PNG`, `WEBP`, ...) or None."""
    for magic, offset, name in _SIGNATURES:
        if data[offset:offset + len(magic)] == magic:
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if _NETPBM.match(data):
        return "PPM"
    if data[4:8] == b"ftyp":
        brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(len(data), 64), 4)]
        for brand in brands:
            if brand in _FTYP_BRANDS:
                return _FTYP_BRANDS[brand]
    return None


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image plus what the loader learned about the original bytes."""

    image: Image.Image
    format: str
    width: int
    height: int
    data: bytes | None = None
    """The original encoded bytes, kept for metadata and provenance checks."""
    frames: int = 1
    """Frames (or pages) in the file (`frame_count`): an animation's or a multi-page file's first one is the image."""


@contextlib.contextmanager
def pixel_limit() -> Iterator[None]:
    """Pillow's bomb limit (`Image.MAX_IMAGE_PIXELS`, process-wide) at `MAX_PIXELS` while fakescope decodes, the
    host's own value back once the last decode running in any thread ends: importing fakescope leaves it alone.
    Pillow's `DecompressionBombError` (a size over twice the limit) leaves the block as `_too_large_error`'s."""
    global _limit_users, _host_limit
    with _limit_lock:
        if not _limit_users:
            _host_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS
        _limit_users += 1
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise _too_large_error(exc) from None
    finally:
        with _limit_lock:
            _limit_users -= 1
            if not _limit_users:
                Image.MAX_IMAGE_PIXELS = _host_limit


def decode_image(data: bytes, *, keep_bytes: bool = True) -> LoadedImage:
    """Decode encoded image bytes into 8-bit RGB, applying EXIF orientation.

    Raises:
        ImageLoadError: empty or unrecognised bytes, a decompression bomb, a truncated
            or corrupt file, or an image with a side under `MIN_SIDE` pixels.
    """
    if not data:
        raise ImageLoadError("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageLoadError("not an image (unrecognised file signature)")
    with pixel_limit():  # frame_count seeks through frames: Pillow checks each one's size
        try:
            img = _tolerating_png_text(_open, data)
        except ImageLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
            raise corrupt_image_error(fmt, exc) from None
        rgb = _check_size(to_rgb(img))
        return LoadedImage(rgb, fmt, rgb.width, rgb.height, data if keep_bytes else None, frame_count(img))


def header_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding; Pillow's errors pass through, but for a size over
    twice `MAX_PIXELS` (`pixel_limit`'s `ImageTooLarge`).

    A PNG whose text or ICC chunks inflate past Pillow's caps is sized without them, as `decode_image` decodes it.
    """
    quiet_pillow()
    with pixel_limit():
        return _tolerating_png_text(lambda encoded: Image.open(io.BytesIO(encoded)).size, data)


def _tolerating_png_text(read: Callable[[bytes], T], data: bytes) -> T:
    """`read(data)`, or for a PNG whose text or ICC chunks Pillow refuses (inflating past its caps),
    `read` of the PNG without those chunks: the pixels need neither, and the metadata checks read the original."""
    try:
        return read(data)
    except ValueError as exc:
        if sniff_format(data) != "PNG" or "MAX_TEXT" not in str(exc):
            raise
        return read(_without_png_text(data))


def _open(data: bytes) -> Image.Image:
    """Open and decode the first frame, refusing declared sizes over `MAX_PIXELS` before decoding."""
    quiet_pillow()
    with pixel_limit():  # here, not only around the caller: its handler would take Pillow's bomb error for corruption
        img = _check_declared_size(Image.open(io.BytesIO(data)))
        img.seek(0)  # first frame of animations
        img.load()
    return img


def _check_declared_size(img: Image.Image) -> Image.Image:
    """`img`, unless its declared size is over `MAX_PIXELS`: checked before its pixels are decoded."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageTooLarge(f"image too large: {w}x{h} ({w * h:,} pixels) exceeds {MAX_PIXELS:,} pixels", pixels=w * h)
    return img


def _without_png_text(data: bytes) -> bytes:
    """The PNG without its text and ICC chunks (the metadata checks read the original bytes)."""
    kept, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        end = pos + 12 + length
        if data[pos + 4:pos + 8] not in _PNG_TEXT_CHUNKS:
            kept.append(data[pos:end])
        pos = end
    return b"".join(kept) + data[pos:]


def quiet_pillow() -> None:
    """Keep out of stderr Pillow's warnings about what fakescope reports itself: sizes past fakescope's own limit
    (`_open` refuses them), damaged EXIF (the metadata evidence names it). Idempotent.

    These are process-wide filter entries (`fakescope._quiet`: fakescope decodes on many threads at once,
    `data._parallel`, the server), scoped as narrowly as a filter allows (the bomb warning only where it names
    `MAX_PIXELS`, as inside `pixel_limit`: a host's warnings at its own limit still show; EXIF only from Pillow's TIFF
    module)."""
    for message, category, module in _QUIET:
        ignore_warning(message, category, module)


def upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF (or XMP) orientation says, as `ImageOps.exif_transpose` turns it; where that fails on
    damaged EXIF, turned by the orientation alone. An upright `img` is returned itself, not copied: callers convert it
    anyway. Every reader (decoding, manifests, dHash, audit) turns here."""
    method = _TURNS.get(orientation(img))
    if method is None:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - broken EXIF must not lose the pixels
        return img.transpose(method)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation `upright` applies (1 to 8); 1 where there is none or the EXIF cannot be read."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - damaged EXIF, whatever Pillow's parser raises for it
        return 1
    return value if value in _TURNS else 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) of `upright(img)` from the header alone: swapped where the orientation turns it a quarter."""
    width, height = img.size
    return (height, width) if orientation(img) in (5, 6, 7, 8) else (width, height)


def to_rgb(img: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy: EXIF orientation applied, alpha composited on white, 16-bit cut to its high byte."""
    quiet_pillow()
    source, img = img, upright(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img)
        img = Image.fromarray(_high_byte(arr, 16 if img.mode.startswith("I;16") or arr.max() > 255 else 8), "L")
    elif img.mode == "F":  # as float arrays are (`float_pixels`), clipped rather than refused: a file's own range
        arr = np.array(img, dtype=np.float32)  # a copy, scaled in place
        img = Image.fromarray(_scale_in_place(arr, 1.0 if arr.max() <= 1.0 else 255.0), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img.copy() if img is source else img  # an upright RGB `source`: nothing above copied it


def load_image(source: str | Path | bytes | Image.Image | np.ndarray, *, keep_bytes: bool = True) -> LoadedImage:
    """Load a path, encoded bytes, a PIL image or an HxWx3 / HxW uint8 array as RGB.

    Other arrays: floats as `float_pixels` says; uint16 (and larger integers over 255) as 16-bit, by `_high_byte`.

    Example:
        >>> load_image(Image.new("RGB", (64, 64))).width
        64
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), keep_bytes=keep_bytes)
    if isinstance(source, (str, Path)):
        return decode_image(_read_path(source), keep_bytes=keep_bytes)
    if isinstance(source, Image.Image):
        with pixel_limit():
            _check_declared_size(source)  # as a file's: a lazily opened bomb is refused undecoded, not called corrupt
            try:  # an image from `Image.open` is decoded only now
                source.load()
                rgb = to_rgb(source)
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken files
                raise corrupt_image_error(source.format or "PIL", exc) from None
            rgb = _check_size(rgb)
            return LoadedImage(rgb, source.format or "PIL", rgb.width, rgb.height, None, frame_count(source))
    if isinstance(source, np.ndarray):
        return LoadedImage(*_from_array(source))
    raise ImageLoadError(f"cannot read an image from {type(source).__name__}")


def frame_count(img: Image.Image) -> int:
    """An animation's frames or a file's pages; 1 for a camera JPEG's MPO extension (its other images are previews
    or depth maps of the one photo) and where the frames after the first cannot be counted (a truncated file)."""
    try:  # Pillow walks the frames to count them: a damaged one raises what its decoder raises
        return 1 if img.format == "MPO" else getattr(img, "n_frames", 1)
    except Exception:  # noqa: BLE001
        return 1


def _too_large_error(exc: Image.DecompressionBombError) -> ImageTooLarge:
    """The error `pixel_limit` raises for an image whose declared size Pillow's bomb check refused (over twice
    `MAX_PIXELS`), naming that size."""
    declared = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow: "Image size (N pixels) exceeds limit ..."
    pixels = int(declared[1]) if declared else None
    size = f"{pixels:,} pixels" if pixels else "its declared size"
    return ImageTooLarge(f"image too large: {size} exceeds {MAX_PIXELS:,} pixels", pixels=pixels)


def corrupt_image_error(fmt: str, exc: Exception) -> ImageLoadError:
    """The error for a file Pillow failed on, on one line (decoders' messages may span lines or name a BytesIO)."""
    reason = "cannot identify image file" if isinstance(exc, Image.UnidentifiedImageError) else " ".join(str(exc).split())
    return ImageLoadError(f"corrupt or unsupported {fmt} image: {reason}")


def float_pixels(arr: np.ndarray) -> np.ndarray:
    """Float pixels (finite) as uint8, by one rule: values all within [0, 1] are scaled by 255, else values within
    [0, 255] are taken as they are; either way rounded to the nearest level (half up), so `rgb / 255` gives back `rgb`.
    Any value below 0 or above 255 (a normalized tensor's) is refused in one line rather than clipped.
    """
    low, high = float(arr.min()), float(arr.max())
    if low < 0.0 or high > 255.0:
        raise ImageLoadError(f"float array values span [{low:g}, {high:g}]: give pixels in [0, 1] (scaled by 255) "
                             "or [0, 255], not normalized values")
    return _scaled(arr, 1.0 if high <= 1.0 else 255.0)


def _high_byte(arr: np.ndarray, bits: int) -> np.ndarray:
    """Integer pixels of `bits` bits (8 or 16; clipped to that range) as uint8, by their high byte: as Pillow takes a
    16-bit RGB PNG's or TIFF's, so a 16-bit greyscale file and an array decode as an RGB one of the same values does,
    and an 8-bit value widened either way (v * 257 or v << 8) comes back as it was. One copy of `arr`'s type."""
    narrowed = np.clip(arr, 0, min((1 << bits) - 1, np.iinfo(arr.dtype).max))  # an int8's own top is under 255
    narrowed >>= bits - 8
    return narrowed.astype(np.uint8)


def _scaled(arr: np.ndarray, peak: float) -> np.ndarray:
    """`arr` * 255 / `peak` (`_scale_in_place`) through one float32 copy (float64 temporaries took 28 bytes a pixel of
    a float image)."""
    return _scale_in_place(arr.astype(np.float32), peak)


def _scale_in_place(scaled: np.ndarray, peak: float) -> np.ndarray:
    """A float32 array * 255 / `peak`, rounded half up and clipped to uint8; `scaled` itself is overwritten."""
    if peak != 255.0:
        scaled *= np.float32(255.0 / peak)
    scaled += np.float32(0.5)
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def _check_size(img: Image.Image) -> Image.Image:
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"image too small: {img.width}x{img.height} (minimum side {MIN_SIDE} px)")
    return img


def load_source(source: str | os.PathLike, *, keep_bytes: bool = True) -> LoadedImage:
    """Load a local path, a `file://` path, a storage URI (`s3://`, `gdrive://`) or an http(s) URL.

    Raises:
        ImageLoadError: unreadable or not an image. StorageError: a remote read failed. FetchError: a URL's did.
    """
    return decode_image(read_source(source), keep_bytes=keep_bytes)


def read_source(source: str | os.PathLike) -> bytes:
    """The encoded bytes of a local path, a `file://` path, a storage URI or an http(s) URL (`fetch.fetch_url`),
    undecoded; a file or object whose leading bytes are no image signature is refused before the rest is read (a huge
    file named `.jpg` never fills memory). A URL's body, read whole within fetch's limit, is left to the decoder.

    Raises:
        ImageLoadError: a local file that cannot be read, or no image. StorageError: a remote read failed. FetchError: a
            URL was refused or could not be fetched.
    """
    text = os.fspath(source)
    if is_url(text):
        return fetch_url(text)
    if "://" in text and not text.startswith("file://"):
        from fakescope.io.storage import read_bytes

        return read_bytes(text, check=check_signature)
    return _read_path(text.removeprefix("file://"))


def check_signature(head: bytes) -> None:
    """Refuse a file whose leading bytes name no image format (an empty one is left to `decode_image`): the `check`
    of `storage.read_bytes` for a caller about to read an image."""
    if head and sniff_format(head) is None:
        raise ImageLoadError("not an image (unrecognised file signature)")


def _read_path(source: str | Path) -> bytes:
    """A regular file's bytes; a pipe or device (which would block or never end) is refused unread, and a file
    whose leading bytes name no image format after reading only those."""
    if not os.fspath(source):  # Path("") is the current folder
        raise ImageLoadError("empty path")
    if "\0" in os.fspath(source):  # open would raise ValueError, which stopped a batch
        raise ImageLoadError("not a file name: it holds a NUL byte")
    path = Path(source)
    try:  # opened without blocking (a FIFO waits for a writer otherwise), then checked on the open file: no race
        with open(path, "rb", opener=_nonblocking) as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # a folder: open raised IsADirectoryError
                raise ImageLoadError("not a regular file (a pipe, socket or device)", source=str(path))
            head = fh.read(HEAD_BYTES)
            check_signature(head)
            return head + fh.read()
    except IsADirectoryError:
        raise ImageLoadError("is a directory; list its images first, as the CLI does: fakescope.io.iter_sources(folder)",
                             source=str(path)) from None
    except FileNotFoundError:
        raise ImageLoadError("no such file", source=str(path)) from None
    except OSError as exc:
        if path.is_dir():  # an `UnlistedFolder` (listed in its images' place), or a folder named that cannot be opened
            raise ImageLoadError(unlisted_reason(exc), source=str(path)) from None
        raise ImageLoadError(str(exc.strerror or exc), source=str(path)) from None


def _nonblocking(path: str, flags: int) -> int:
    """`open`'s own flags (binary on Windows, where a bare `os.open` reads text) with `O_NONBLOCK` where there is one."""
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _from_array(arr: np.ndarray) -> tuple[Image.Image, str, int, int, None]:
    if arr.dtype.kind not in "biuf":  # strings, objects, complex numbers
        raise ImageLoadError(f"array of dtype {arr.dtype} is not an image")
    if arr.size == 0:
        raise ImageLoadError(f"array of shape {arr.shape} is empty")
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageLoadError("array holds NaN or infinite values")
    if arr.dtype.kind == "f":
        arr = float_pixels(arr)
    elif arr.dtype.kind in "ui" and arr.dtype != np.uint8:  # 16-bit as Pillow's modes are (`to_rgb`): uint16 always
        arr = _high_byte(arr, 16 if arr.dtype == np.uint16 or arr.max() > 255 else 8)
    elif arr.dtype.kind == "b":  # a mask: black and white
        arr = arr.astype(np.uint8) * np.uint8(255)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageLoadError(f"array of shape {arr.shape} is not an image")
    img = _check_size(to_rgb(Image.fromarray(arr)))
    return img, "array", img.width, img.height, None
