"""The web app's root folder: every server-side path it writes or reads (dataset folder, reports) lies under it.

The app has no login, so a visitor's typed path must not reach the rest of the server's files or its storage
credentials: `confined` refuses URIs (`s3://...`) and any path that resolves (symlinks followed) outside the root.
`RootFolder` then reads and writes what `confined` allowed without trusting the path again: every folder from the
root down is opened from the one above it without following symlinks, so a symlink swapped in after the check
(a local user racing the app) is refused instead of followed out of the root. A hard link cannot be told from the
file it shares, so a file with more than one link is never read (`exists` refuses it alike); a write never goes
through one either (it renames a temporary file over the name, so the other links keep the old contents).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from fakescope.errors import ConfigError, StorageError
from fakescope.io._local import _UMASK, _error

ROOT_ENV = "FAKESCOPE_APP_ROOT"
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def app_root(root: str | Path | None = None) -> Path:
    """`root` (default `FAKESCOPE_APP_ROOT`, else the current folder) resolved; not an existing folder: `ConfigError`."""
    folder = Path(root or os.environ.get(ROOT_ENV) or Path.cwd()).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"the app's root {folder} is not a folder")
    return folder


def confined(path: str | Path, root: Path) -> Path:
    """`path` (`~` is the home folder; relative to `root`) resolved; refused unless it lies under `root`."""
    text = str(path).strip()
    if "://" in text:
        raise ConfigError(f"{text}: the web app reads and writes local folders under {root} only")
    resolved = (root / Path(text).expanduser()).resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(f"{text} is outside the app's folder {root} (fakescope app --root)")
    return resolved


class RootFolder:
    """Reads and writes files under `root` as the `fakescope.io.storage` functions do (paths, `StorageError`s),
    safe against symlinks swapped in: a path is `confined` first, then walked from the root with no symlink followed
    (one met answers `ConfigError`); files are read only when regular with one link, and written through a temporary file renamed
    into place."""

    def __init__(self, root: Path, *, min_free_mb: int = 0, max_read_mb: float | None = None) -> None:
        """`min_free_mb`: a write that would leave less free on its file system is refused (`StorageError`);
        `max_read_mb`: so is a read of a larger file (a visitor naming a huge file must not fill the memory)."""
        self.root = root
        self.min_free_mb = min_free_mb
        self.max_read_mb = max_read_mb

    def read_bytes(self, path: str | Path) -> bytes:
        """The file's bytes (a FIFO, device or file with other hard links is refused: `StorageError`)."""
        target = self._file(path)
        with self._folder(target.parent, str(path), "read") as folder, self._wrapped("read", str(path)):
            fd = os.open(target.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
            with open(fd, "rb") as fh:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    raise StorageError("not a regular file", source=str(path))
                _refuse_linked(info, str(path))
                if self.max_read_mb is None:
                    return fh.read()
                limit = int(self.max_read_mb * 2**20)
                data = fh.read(limit + 1)  # the size as read: the file may grow after a stat
                if len(data) > limit:
                    raise StorageError(f"too large to open here (the limit is {self.max_read_mb:g} MB)",
                                       source=str(path))
                return data

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        """Write the whole file, creating its folders under the root."""
        target = self._file(path)
        with self._folder(target.parent, str(path), "write", create=True) as folder, self._wrapped("write", str(path)):
            space = os.fstatvfs(folder)
            if space.f_bavail * space.f_frsize - len(data) < self.min_free_mb * 2**20:
                raise StorageError(f"not written: it would leave less than {self.min_free_mb} MB free on the app's disk "
                                   "(fakescope app --min-free-mb)", source=str(path))
            part = f".{target.name}.{secrets.token_hex(4)}.part"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666 & ~_UMASK,
                         dir_fd=folder)
            try:
                with open(fd, "wb") as fh:
                    fh.write(data)
                os.replace(part, target.name, src_dir_fd=folder, dst_dir_fd=folder)  # a link there is replaced, not followed
            except BaseException:
                os.unlink(part, dir_fd=folder)
                raise

    def remove(self, path: str | Path) -> None:
        """Delete the file; one missing already is no error."""
        target = self._file(path)
        with (self._folder(target.parent, str(path), "write") as folder, self._wrapped("write", str(path)),
              contextlib.suppress(FileNotFoundError)):
            os.unlink(target.name, dir_fd=folder)

    def exists(self, path: str | Path) -> bool:
        """Whether a regular file is there (reached without symlinks).

        Raises:
            StorageError: it has other hard links, as `read_bytes` refuses it: neither present (a caller would fail to
                read it) nor absent (a caller would write a new one over it, as over a manifest, and lose its rows).
        """
        try:
            target = self._file(path)
            with self._folder(target.parent, str(path), "read") as folder:
                info = os.stat(target.name, dir_fd=folder, follow_symlinks=False)
        except (StorageError, FileNotFoundError):
            return False
        if stat.S_ISREG(info.st_mode):
            _refuse_linked(info, str(path))
        return stat.S_ISREG(info.st_mode)

    def _file(self, path: str | Path) -> Path:
        """`path` `confined` under the root; the root itself is no file (`StorageError`)."""
        target = confined(path, self.root)
        if target == self.root:
            raise StorageError("not a regular file: the app's folder itself", source=str(path))
        return target

    @contextlib.contextmanager
    def _folder(self, folder: Path, shown: str, action: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of `folder` (under the root), each folder on the way opened (made if `create`) from the one
        above it, never through a symlink."""
        with self._wrapped(action, shown):
            fd = os.open(self.root, _FOLDER)
        try:
            for name in folder.relative_to(self.root).parts:
                with self._wrapped(action, shown):
                    if create:
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(name, dir_fd=fd)
                    inner = _open_folder(name, fd)
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _wrapped(self, action: str, shown: str) -> Iterator[None]:
        """An `OSError` inside as the storage layer words it (`<path>: cannot write: ...`); a symlink met, as outside."""
        try:
            yield
        except StorageError:
            raise
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(f"{shown} is outside the app's folder {self.root}: a symlink on its way changed "
                                  "after it was checked") from None
            raise _error(action, shown, exc) from None


def _refuse_linked(info: os.stat_result, shown: str) -> None:
    """A file with other hard links is never read: they may lie outside the app's folder (`StorageError`)."""
    if info.st_nlink > 1:
        raise StorageError("not read: the file has other hard links, which may lie outside the app's folder", source=shown)


def _open_folder(name: str, parent: int) -> int:
    """A descriptor of the folder `name` in `parent`; a symlink there: `ELOOP` (Linux says `ENOTDIR`)."""
    try:
        return os.open(name, _FOLDER, dir_fd=parent)
    except NotADirectoryError:
        if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise
