"""The image pixel limit shared by the REST API (`--max-pixels`) and the web app (`FAKESCOPE_MAX_PIXELS`), the
free space an anonymous web app's saves leave (`fakescope app --min-free-mb`, `FAKESCOPE_APP_MIN_FREE_MB`), and the
most files a form may carry (`fakescope serve --max-files`), how long a stopping server waits for its generation jobs
(`--shutdown-grace-s`), and `BodyBudget`, the request-body bytes the REST API
holds at once (`fakescope serve --max-body-memory-mb`), with `Held`, one request's share of it."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import partial

from fakescope.errors import ConfigError, ImageLoadError, ImageTooLarge

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "FAKESCOPE_MAX_PIXELS"
DEFAULT_MIN_FREE_MB = 1024
MIN_FREE_ENV = "FAKESCOPE_APP_MIN_FREE_MB"
MULTIPART_MAX_FILES = 1000  # Starlette's `Request.form(max_files=...)`, as FastAPI parses every form
MULTIPART_OVERHEAD = 64 * 1024  # a form's boundaries and part headers, over its files' bytes
DEFAULT_MAX_BODY_MEMORY_MB = 2048
DEFAULT_SHUTDOWN_GRACE_S = 20.0
"""Seconds a stopping server gives its running generation jobs: below the 30 s after which Kubernetes kills it."""
HELD = "fakescope.held"
"""The ASGI scope key of a request's `Held` (set by `serve.gate.Gate`; a route reads `request.scope[HELD]`)."""
MEMORY_BUSY = "the server is busy: request bodies fill its memory for them ({:g} MB); try again shortly"


def checked_max_pixels(value: int) -> int:
    """`value` when it is a usable limit (1 to the detector's own `MAX_PIXELS`), else a one-line `ConfigError`."""
    from fakescope.io.image import MAX_PIXELS  # here: the CLI imports this module at startup, without Pillow

    if not 0 < value <= MAX_PIXELS:
        raise ConfigError(f"max_pixels must be in 1..{MAX_PIXELS:,}")
    return value


def env_max_pixels() -> int:
    """The limit in `FAKESCOPE_MAX_PIXELS` (as `fakescope app --max-pixels` sets it), else `DEFAULT_MAX_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        return checked_max_pixels(int(value.replace("_", "")))
    except ValueError:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value!r}: expected a whole number of pixels") from None


def check_image(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """Refuse non-images and images over `max_pixels` from the header alone (no decoding).

    Returns the format the bytes carry (`JPEG`, `PNG`, ...), the width and the height.

    Raises:
        ImageLoadError: empty bytes, no known image signature, a corrupt header, or too many pixels.
    """
    from fakescope.io.image import MAX_PIXELS, corrupt_image_error, header_size, sniff_format

    if not data:
        raise ImageLoadError("empty file: the upload has no bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageLoadError("not an image: the file's signature matches no supported format "
                             "(JPEG, PNG, WebP, GIF, BMP, TIFF, PPM, HEIF, AVIF)")
    try:
        width, height = header_size(data)
    except ImageTooLarge as exc:  # header_size's: Pillow refuses to open headers over twice `MAX_PIXELS`
        size = f"{exc.pixels:,} pixels, over {2 * MAX_PIXELS:,}" if exc.pixels else f"over {2 * MAX_PIXELS:,} pixels"
        raise ImageLoadError(f"image too large: {size}; the limit is {max_pixels:,}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise corrupt_image_error(fmt, exc) from None
    if width * height > max_pixels:
        raise ImageLoadError(f"image too large: {width}x{height} is {width * height:,} pixels; the limit is {max_pixels:,}")
    return fmt, width, height


def env_min_free_mb() -> int:
    """`FAKESCOPE_APP_MIN_FREE_MB` (as `fakescope app --min-free-mb` sets it), else `DEFAULT_MIN_FREE_MB`."""
    value = os.environ.get(MIN_FREE_ENV, "").strip()
    if not value:
        return DEFAULT_MIN_FREE_MB
    if not value.isdigit():
        raise ConfigError(f"{MIN_FREE_ENV}={value!r}: expected a whole number of MB")
    return int(value)


class BodyBudget:
    """The request-body bytes the server may hold at once (uploads, fetched image URLs, queued generation jobs' uploads):
    `take` them before they are read, `give` them back once they are not held.

    Thread-safe: a fetch thread or a generation worker gives its bytes back when it ends.
    """

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        """Hold `size` more bytes if they fit in the budget; False (nothing held) if not."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.held -= size

    def busy(self) -> str:
        """The 503 line for bytes that do not fit."""
        return MEMORY_BUSY.format(self.limit / 1024 / 1024)


class Held:
    """The bytes of a `BodyBudget` one request holds until it is answered (`serve.gate.Gate` gives them back then): its
    body's, and the images fetched for it."""

    def __init__(self, budget: BodyBudget):
        self.budget, self.bytes = budget, 0

    def take(self, size: int) -> bool:
        """Take `size` more bytes from the budget for this request if they fit; False (nothing taken) if not."""
        if not self.budget.take(size):
            return False
        self.bytes += size
        return True

    def keep(self, size: int) -> None:
        """Count `size` bytes already taken from the budget (a fetch's) as this request's."""
        self.bytes += size

    def pass_on(self, size: int) -> Callable[[], None]:
        """Stop counting up to `size` of this request's bytes, held on past its answer (by a queued generation job): the
        callable gives them back to the budget; call it once."""
        size = min(size, self.bytes)
        self.bytes -= size
        return partial(self.budget.give, size)

    def give_back(self) -> None:
        self.budget.give(self.bytes)
        self.bytes = 0
