"""One error hierarchy: every leaf also inherits the builtin it resembles."""

from __future__ import annotations

import difflib

DEVICES = "cpu, cuda, cuda:N, mps or auto"
"""The device names every entry point accepts, as a bad name's error and each `--device` help list them."""


class FakescopeError(Exception):
    """Base of every error fakescope raises on purpose; its message is one clean line.

    With `source` (the file or URI at fault), the message reads `<source>: <reason>`; `reason` is the
    message without it, for a record that names the source in a field of its own.
    """

    def __init__(self, reason: str = "", *, source: str | None = None):
        super().__init__(f"{source}: {reason}" if source else reason)
        self.reason, self.source = reason, source

    def __reduce__(self):  # through a process pool: `source` is no positional argument
        return (_rebuild, (type(self), self.reason, self.source)) if self.source else super().__reduce__()


class ImageLoadError(FakescopeError, ValueError):
    """An input could not be read as an image (corrupt, unsupported, too large, too small)."""


class ImageTooLarge(ImageLoadError):
    """An image declaring more pixels than a limit allows; `pixels` is that size, where its header told it."""

    def __init__(self, reason: str = "", *, source: str | None = None, pixels: int | None = None):
        super().__init__(reason, source=source)
        self.pixels = pixels


class UnscorableImages(ImageLoadError):
    """Images of a batch that were read but cannot be scored (too long and thin to upscale to a tile, too large to
    re-encode): `reasons` maps their places in the batch to why; `scores` holds the batch's scores, NaN at those."""

    def __init__(self, reasons: dict[int, str], scores):
        first = min(reasons)
        super().__init__(f"{len(reasons)} image(s) cannot be scored (image {first}: {reasons[first]})")
        self.reasons, self.scores = reasons, scores


class StorageError(FakescopeError, OSError):
    """A storage location could not be listed, read or written."""


class StorageUnavailableError(StorageError):
    """The storage itself failed (unreachable, no credentials), not one file: a scan stops instead of
    recording an error row for every file it could not reach."""


class NoSuchFolderError(StorageError):
    """A folder to list does not exist (a local folder, a Drive folder, an S3 bucket; an S3 prefix holding nothing lists
    nothing): told apart from a listing's other failures, so a caller that takes a missing folder as empty asks nothing
    before listing it."""


class NoSuchFileError(StorageError):
    """A file to read does not exist (a local file, an S3 object, a Drive file): told apart from a read's other failures,
    so a caller that takes a missing file as none yet (a manifest) reads it without asking first whether it exists."""


class StorageBusyError(StorageUnavailableError):
    """One request failed in a way that may pass (throttled, a 5xx, a connection dropped mid-answer) after the storage
    layer's own retries: a scan records that file as a transient error, which a rerun tries again, until several come in
    a row (`fakescope._preparation.BusyStreak`); a write stops."""


class UnknownModelError(FakescopeError, KeyError):
    """A model (or architecture) name is neither registered nor a path."""

    def __init__(self, name: str, known: list[str], kind: str = "model", hint: str = ""):
        close = difflib.get_close_matches(name, known, n=3)
        known_hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(sorted(known))}"
        super().__init__(f"unknown {kind} {name!r}{known_hint}{hint}")

    def __str__(self) -> str:  # KeyError would add quotes
        return self.args[0]


class ModelLoadError(FakescopeError, OSError):
    """A model directory or file exists but cannot be loaded."""


class ConfigError(FakescopeError, ValueError):
    """A configuration file or option is invalid."""


class PluginError(ConfigError):
    """A module named in FAKESCOPE_PLUGINS (architectures of your own) could not be imported."""


class NotFittedError(FakescopeError, ValueError, AttributeError):
    """An estimator was used before `fit`."""


def first_line(exc: BaseException) -> str:
    """A foreign error's message in one line: an `OSError`'s `strerror` (the caller names the file), else its first
    non-blank line (torch's and builders' messages span lines), else the name of its type."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def reason_about(exc: BaseException, source: str) -> str:
    """`exc`'s message for a line that already names `source`: without it where the error names it too."""
    return exc.reason if isinstance(exc, FakescopeError) and exc.source == source else str(exc)


def _rebuild(cls: type[FakescopeError], reason: str, source: str | None) -> FakescopeError:
    return cls(reason, source=source)
