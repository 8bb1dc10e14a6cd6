"""One small interface over local folders, S3 buckets and Google Drive folders.

URIs: plain paths or `file://...`, `s3://bucket/prefix/key` and `gdrive://folder-id/sub/path`.
Credentials come only from the environment, a `.env` file (read once, never overriding the
environment) or the standard AWS/Google configuration, and never appear in messages.

Example:
    >>> from fakescope.io import storage
    >>> storage.write_bytes("/tmp/fakescope-demo/a.txt", b"hi")
    >>> list(storage.list_files("/tmp/fakescope-demo", suffixes=(".txt",)))
    ['/tmp/fakescope-demo/a.txt']
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol, Self, runtime_checkable

from fakescope.errors import ConfigError, StorageError

REMOTE_SCHEMES = ("s3", "gdrive")
DOING = {"read": "reading", "write": "writing", "check": "checking", "list": "listing"}
"""A backend's actions as its outage messages word them (`S3 unreachable: ... while reading s3://...`)."""
HEAD_BYTES = 64
"""Leading bytes a read hands its `check` before reading the rest (an image's signature fits in them)."""

_dotenv_lock = threading.Lock()
_dotenv_loaded = False


class UnlistedFolder(str):
    """A local folder under a listing that could not be listed (permission denied), yielded by `list_files` in its place
    so that a caller reports it instead of leaving its images out unsaid; `reason` says why, for a one-line error."""

    reason: str

    def __new__(cls, uri: str, reason: str) -> Self:
        folder = super().__new__(cls, uri)
        folder.reason = reason
        return folder

    def __reduce__(self):  # to a worker process: the reason as it was
        return UnlistedFolder, (str(self), self.reason)


def unlisted_reason(exc: OSError) -> str:
    """Why a folder that cannot be listed gives no images, as its error record says."""
    return f"cannot list this folder ({exc.strerror or exc}): its images are left out"


@runtime_checkable
class Storage(Protocol):
    """What every backend offers; each method takes a full URI of its own scheme."""

    def read_bytes(self, uri: str, *, check: Callable[[bytes], None] | None = None) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...

    def exists(self, uri: str) -> bool: ...

    def size(self, uri: str) -> int | None: ...

    def remove(self, uri: str) -> None: ...

    def list_files(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[str]: ...

    def list_sizes(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[tuple[str, int | None]]: ...


def scheme_of(uri: str) -> str:
    """Return `file`, `s3` or `gdrive` for a URI; plain paths are `file`."""
    if "://" not in uri:
        return "file"
    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("file", *REMOTE_SCHEMES):
        return scheme
    from fakescope.io.redact import shown_url  # a URL's password or signed query stays out of the message

    raise StorageError(f"unsupported storage scheme {scheme!r} in {shown_url(uri)!r}; use a path, s3:// or gdrive://")


def is_remote(uri: str) -> bool:
    """True for `s3://` and `gdrive://` URIs, False for local paths and `file://`."""
    return scheme_of(uri) in REMOTE_SCHEMES


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a path or URI with `/`, keeping the scheme.

    Example:
        >>> join("s3://bucket/data", "real", "0001.png")
        's3://bucket/data/real/0001.png'
    """
    if scheme_of(uri) == "file" and "://" not in uri:
        return os.path.join(uri, *parts)
    result = uri
    for part in parts:
        part = part.strip("/")
        if part:
            result = result.rstrip("/") + "/" + part if not result.endswith("://") else result + part
    return result


def absolute(uri: str) -> str:
    """A plain local path made absolute, so a manifest naming it works from any folder; URIs stay as they are."""
    return uri if "://" in uri else os.path.abspath(uri)


def unwritable(folder: str) -> str | None:
    """Why local `folder` takes no new file (it, or the nearest path above it where it is still to be made, is a file or
    a folder this process may not write in), checked before any work; None when it may, and for remote folders
    (unchecked)."""
    if is_remote(folder):
        return None
    from fakescope.io.inputs import path_text  # a name that is not UTF-8, shown as any output shows it

    path = os.path.abspath(folder.removeprefix("file://"))
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        return f"{path_text(path)} is a file, not a folder"
    return None if os.access(path, os.W_OK | os.X_OK) else f"no permission to write in {path_text(path)}"


def require_out_folder(out: str) -> None:
    """Refuse, before any work, a local `out` that is a file or takes no new file (read-only): writing into it fails
    only after every image is done.

    Raises:
        ConfigError: `out` is an existing file, or this process may not write in it.
    """
    from fakescope.io.inputs import path_text  # a name that is not UTF-8, shown as any output shows it

    local = out.removeprefix("file://")
    if not is_remote(out) and os.path.exists(local) and not os.path.isdir(local):
        raise ConfigError(f"{path_text(out)} is a file, not a folder to write into")
    if why := unwritable(out):
        raise ConfigError(f"cannot write into {path_text(out)}: {why}")


def get_storage(uri: str) -> Storage:
    """Return the backend that serves `uri`; clients are built once and reused.

    The cached S3 and Drive clients are keyed by the endpoint and credential settings in the
    environment (`s3_settings`), so changing them (as tests do) yields a fresh client.
    """
    scheme = scheme_of(uri)
    if scheme == "file":
        return _local_storage()
    load_env_file()
    if scheme == "s3":
        return _s3_storage(s3_settings())
    keys = ("FAKESCOPE_GDRIVE_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN")
    return _gdrive_storage(tuple(os.environ.get(k) for k in keys))


def read_bytes(uri: str, *, check: Callable[[bytes], None] | None = None) -> bytes:
    """Read a whole file; a missing file raises `NoSuchFileError`, denied access `StorageError`.

    `check` gets the first `HEAD_BYTES` first: what it raises stops the read there (local files and S3 objects are
    not read further; a Drive file after its first ranged chunk, `DriveStorage.download_chunk` bytes).
    """
    return get_storage(uri).read_bytes(uri, check=check)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file, creating parent folders; local writes are atomic (temp file + rename)."""
    get_storage(uri).write_bytes(uri, data)


@contextlib.contextmanager
def open_write(uri: str) -> Iterator[BinaryIO]:
    """A binary file whose contents become `uri` when the block ends without error.

    Local files stream to disk (a temporary file, renamed into place); remote ones are held in
    memory and written whole at the end.
    """
    if not is_remote(uri):
        with _local_storage().open_write(uri) as fh:
            yield fh
        return
    buffer = io.BytesIO()
    yield buffer
    write_bytes(uri, buffer.getvalue())


def remove(uri: str) -> None:
    """Delete a file; one missing already is no error."""
    get_storage(uri).remove(uri)


def exists(uri: str) -> bool:
    """True if `uri` names an existing file or a non-empty folder/prefix."""
    return get_storage(uri).exists(uri)


def size(uri: str) -> int | None:
    """A file's size in bytes, asked of its storage without reading it (one request where remote); None where the
    storage does not say. A missing file or a folder raises `StorageError`."""
    return get_storage(uri).size(uri)


def list_files(uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True) -> Iterator[str]:
    """Yield the full URI (or path) of every file under `uri`.

    Args:
        uri: A folder, prefix or Drive folder.
        suffixes: Keep only names ending with one of these (case-insensitive, e.g. `(".png", ".jpg")`).
        recursive: Descend into sub-folders; otherwise list only the folder's own files.

    Names are sorted within each listing page; remote listings are paged transparently. A missing folder (an S3
    bucket; a prefix holding nothing lists nothing) raises `NoSuchFolderError`, a file `StorageError`. A local folder
    that cannot be listed (`uri` itself or one below it; permission denied) is yielded in its place, whatever `suffixes`,
    as an `UnlistedFolder`; one removed while the walk reached it is a warning (no image of it is left to score).
    """
    return get_storage(uri).list_files(uri, suffixes=suffixes, recursive=recursive)


def list_sizes(uri: str, *, suffixes: tuple[str, ...] | None = None,
               recursive: bool = True) -> Iterator[tuple[str, int | None]]:
    """`list_files`'s files, each with the size in bytes its listing gave, in the same requests: an S3 object's, a Drive
    file's; None where the listing gives none (a Drive shortcut; a local folder's, which `size` reads at no request)."""
    return get_storage(uri).list_sizes(uri, suffixes=suffixes, recursive=recursive)


def normalise_suffixes(suffixes: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Lower-case suffixes with a leading dot, for backends to match names against."""
    if suffixes is None:
        return None
    return tuple(s.lower() if s.startswith(".") else "." + s.lower() for s in suffixes)


def load_env_file() -> None:
    """Read `.env` from the working directory upwards once, never overriding the environment."""
    global _dotenv_loaded
    with _dotenv_lock:
        if _dotenv_loaded:
            return
        _dotenv_loaded = True
        try:
            from dotenv import find_dotenv, load_dotenv
        except ImportError:  # python-dotenv is a core dependency; tolerate its absence
            return
        path = find_dotenv(usecwd=True)
        if path:
            load_dotenv(path, override=False)


def s3_settings() -> tuple[str | None, ...]:
    """The environment an S3 client is built from, as its cache key: the secret key and session token by
    their SHA-256 only, so a changed secret yields a fresh client while the cache keeps no secret."""
    keys = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_DEFAULT_REGION")
    secrets = (os.environ.get(k) for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
    return (*(os.environ.get(k) for k in keys), *(s and hashlib.sha256(s.encode()).hexdigest() for s in secrets))


@functools.cache
def _local_storage() -> Storage:
    from fakescope.io._local import LocalStorage

    return LocalStorage()


@functools.lru_cache(maxsize=8)
def _s3_storage(settings: tuple[str | None, ...]) -> Storage:
    from fakescope.io._s3 import S3Storage

    return S3Storage()


@functools.lru_cache(maxsize=8)
def _gdrive_storage(settings: tuple[str | None, ...]) -> Storage:
    from fakescope.io._gdrive import DriveStorage

    return DriveStorage()
