"""Local-folder backend: plain paths and `file://` URIs."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from fakescope.errors import NoSuchFileError, NoSuchFolderError, StorageError
from fakescope.io.storage import HEAD_BYTES, UnlistedFolder, normalise_suffixes, unlisted_reason

_FILE_PREFIX = "file://"
log = logging.getLogger(__name__)


def _read_umask() -> int:
    """The process umask, from /proc where it can be read without changing it for other threads."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
        return umask


_UMASK = _read_umask()
_TEMPORARY = re.compile(r"\.[a-z0-9_]{8}\.part")
"""The names of `open_write`'s temporary files (`tempfile.mkstemp`'s, with its prefix and suffix)."""


def _path_of(uri: str) -> str:
    return uri.removeprefix(_FILE_PREFIX)


def _error(action: str, uri: str, exc: OSError) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return NoSuchFileError("no such file or folder", source=uri)
    if isinstance(exc, NotADirectoryError) and action == "read":  # a file where a folder of its path goes: none there
        return NoSuchFileError("no such file (a part of its path is a file)", source=uri)
    if isinstance(exc, PermissionError):
        if action == "read" and os.path.isdir(_path_of(uri)):  # an `UnlistedFolder` read as a file (`generate`'s source)
            return StorageError(unlisted_reason(exc), source=uri)
        return StorageError(f"permission denied to {action}", source=uri)
    if isinstance(exc, IsADirectoryError):
        return StorageError("a folder, not a file", source=uri)
    return StorageError(f"cannot {action}: {exc.strerror or exc}", source=uri)


class LocalStorage:
    """Files on this machine; writes go to a temporary file first and are renamed into place.

    Written files get the permissions the umask gives any new file (0644 under the usual 022),
    not the temporary file's private 0600.
    """

    def read_bytes(self, uri: str, *, check: Callable[[bytes], None] | None = None) -> bytes:
        try:
            with open(_path_of(uri), "rb") as fh:
                head = fh.read(HEAD_BYTES)
                if check:
                    check(head)
                return head + fh.read()
        except OSError as exc:
            raise _error("read", uri, exc) from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.open_write(uri) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[BinaryIO]:
        """A file streaming to a temporary file beside `uri`, renamed into place when the block ends without error."""
        path = _path_of(uri)
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        except OSError as exc:
            raise _error("write", uri, exc) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
                yield fh
            os.replace(tmp, path)
        except BaseException as exc:
            os.unlink(tmp)
            if isinstance(exc, OSError) and not isinstance(exc, StorageError):  # not a read failing in the block
                raise _error("write", uri, exc) from None
            raise

    def remove(self, uri: str) -> None:
        try:
            os.remove(_path_of(uri))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _error("write", uri, exc) from None

    def exists(self, uri: str) -> bool:
        path = _path_of(uri)
        if not os.path.isdir(path):
            return os.path.isfile(path)
        try:
            with os.scandir(path) as entries:
                return any(entries)
        except OSError:  # there, but cannot be listed: its listing says so (`UnlistedFolder`)
            return True

    def size(self, uri: str) -> int:
        """A file's size; a folder is refused as the remote backends refuse one (its entry's size is no file's)."""
        try:
            info = os.stat(_path_of(uri))
        except OSError as exc:
            raise _error("read", uri, exc) from None
        if stat.S_ISDIR(info.st_mode):
            raise StorageError("a folder, not a file", source=uri)
        return info.st_size

    def list_files(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[str]:
        root = _path_of(uri)
        if os.path.isfile(root):
            raise StorageError("a file, not a folder", source=uri)
        if not os.path.isdir(root):
            raise NoSuchFolderError("no such folder", source=uri)
        return self._walk(uri, root, normalise_suffixes(suffixes), recursive)

    def list_sizes(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[tuple[str, int | None]]:
        """`list_files`' paths, without sizes: a walk gives none (`size` asks at no request)."""
        return ((path, None) for path in self.list_files(uri, suffixes=suffixes, recursive=recursive))

    @staticmethod
    def _walk(uri: str, root: str, suffixes: tuple[str, ...] | None, recursive: bool) -> Iterator[str]:
        prefix = _FILE_PREFIX if uri.startswith(_FILE_PREFIX) else ""
        failed: list[OSError] = []
        for folder, dirs, files in walk(root, failed.append):
            yield from unlisted(failed, prefix)
            if not recursive:
                dirs.clear()
            for name in sorted(files):
                if name.startswith(".") and name.endswith(".part"):
                    continue
                if suffixes is None or name.lower().endswith(suffixes):
                    yield prefix + os.path.join(folder, name)
        yield from unlisted(failed, prefix)


def remove_stale_temporaries(uri: str, seconds: float) -> int:
    """Remove the temporary files `open_write` left directly in folder `uri` (a killed writer's, never renamed into
    place) unchanged for over `seconds`, a live writer's being newer; how many. Other files, such as another program's
    `.part` file, are kept; one that cannot be removed is left."""
    removed, now = 0, time.time()
    try:
        with os.scandir(_path_of(uri)) as entries:
            stale = [entry.path for entry in entries if _TEMPORARY.fullmatch(entry.name)
                     and entry.is_file(follow_symlinks=False) and now - entry.stat(follow_symlinks=False).st_mtime > seconds]
    except OSError:
        return 0
    for path in stale:
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed += 1
    return removed


def walk(root: str, onerror: Callable[[OSError], None]) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk` top-down, folders sorted, into symlinked folders too, each folder once and never into one of its own
    ancestors (a link loop); a folder that cannot be listed (`root` too) goes to `onerror` (in walk order, before the
    next folder is yielded), not into a silent gap."""
    seen = {os.path.realpath(root)}
    for folder, dirs, files in os.walk(root, onerror=onerror, followlinks=True):
        here = os.path.realpath(folder)
        dirs[:] = [name for name in sorted(dirs) if _first_visit(os.path.realpath(os.path.join(folder, name)), here, seen)]
        yield folder, dirs, files


def _first_visit(real: str, parent: str, seen: set[str]) -> bool:
    """True for a folder (its real path) not walked yet that is no ancestor of `parent` (where a link to it sits)."""
    if real in seen or parent == real or parent.startswith(real.rstrip(os.sep) + os.sep):  # commonpath: ValueError across drives
        return False
    seen.add(real)
    return True


def unlisted(failed: list[OSError], prefix: str = "") -> Iterator[UnlistedFolder]:
    """The folders `walk` could not list so far (emptying `failed`), each an `UnlistedFolder`; one removed since its
    parent was listed is a warning instead: no image of it is left to score."""
    for exc in failed:
        if isinstance(exc, FileNotFoundError):
            log.warning("cannot list %s: %s; its images are left out", exc.filename, exc.strerror or exc)
        else:
            yield UnlistedFolder(prefix + exc.filename, unlisted_reason(exc))
    failed.clear()
