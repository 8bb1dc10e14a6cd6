"""`DriveStorage`: the `Storage` operations (read, write, remove, exists, list) on `gdrive://` paths."""

from __future__ import annotations

import io
import logging
import mimetypes
from collections.abc import Callable, Iterator
from typing import Any

from fakescope.errors import NoSuchFileError, NoSuchFolderError, StorageError
from fakescope.io._gdrive.calls import download, execute
from fakescope.io._gdrive.errors import translated_errors
from fakescope.io._gdrive.items import FOLDER_MIME, GOOGLE_MIME_PREFIX, followed, split_drive_uri, uri_part
from fakescope.io._gdrive.twins import DriveTwins
from fakescope.io.storage import normalise_suffixes

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
BATCH = 100
"""`files.get` calls a batch request carries at most (Drive's limit)."""


class DriveStorage(DriveTwins):
    """Files below Google Drive folders, addressed by path.

    Args:
        service: A Drive v3 client to reuse; built from the environment when omitted.
        page_size: Files asked for per `files.list` request (every listing is read to its last page).
        resumable_threshold: Uploads of at least this many bytes use the resumable protocol
            (in 256 KiB chunks); smaller ones one multipart request.
        download_chunk: Bytes a read asks for per (ranged) request: a read's `check` sees the first chunk's head
            before the rest is fetched, so a large non-image costs one chunk.
    """

    def __init__(self, service: Any = None, *, page_size: int = 1000, resumable_threshold: int = 5 * 2**20,
                 download_chunk: int = 8 * 2**20):
        super().__init__(service, page_size=page_size)
        self.resumable_threshold, self.download_chunk = resumable_threshold, download_chunk

    def read_bytes(self, uri: str, *, check: Callable[[bytes], None] | None = None) -> bytes:
        with translated_errors("read", uri):
            item = self._file(uri)
            if item["mimeType"].startswith(GOOGLE_MIME_PREFIX):
                raise StorageError(f"a Google Docs Editors file ({item['mimeType']}), which has no bytes to read", source=uri)
            return download(self.service.files().get_media(fileId=item["id"], supportsAllDrives=True),
                            self.download_chunk, check)

    def write_bytes(self, uri: str, data: bytes) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        folder_id, parts = split_drive_uri(uri)
        if not parts:
            raise StorageError("names a folder, not a file to write", source=uri)
        mime = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        resumable = len(data) >= self.resumable_threshold
        media = MediaIoBaseUpload(io.BytesIO(data), mimetype=mime, chunksize=_CHUNK, resumable=resumable)
        with translated_errors("write", uri):
            found = self._in_folder(folder_id, parts[:-1], lambda parent, cached: (
                parent, self._find_child(parent, parts[-1], cached)), make=True)
            assert found is not None  # made where missing
            parent, existing = found
            if existing is not None and self._target(existing) is None:  # a shortcut to nothing: the file replaces it
                self.delete_id(existing["shortcut"], uri)
                existing = None
            files = self.service.files()
            if existing is not None:
                execute(files.update(fileId=existing["id"], media_body=media, supportsAllDrives=True))
            else:
                body = {"name": parts[-1], "parents": [parent]}
                execute(files.create(body=body, media_body=media, fields="id", supportsAllDrives=True))

    def remove(self, uri: str) -> None:
        """Delete the file `uri` resolves to (the oldest of its name) for good; a folder is refused."""
        with translated_errors("check", uri):
            item = self._resolve(uri)
        if item is not None and item["mimeType"] == FOLDER_MIME:
            raise StorageError("a folder, not a file", source=uri)
        if item is not None:
            self.delete_id(item["id"], uri)

    def exists(self, uri: str) -> bool:
        """Whether `uri` names a file or a folder holding something; a shortcut whose target is gone (deleted, trashed)
        names none."""
        with translated_errors("check", uri):
            item = self._target(self._resolve(uri))
            if item is None:
                return False
            if item["mimeType"] != FOLDER_MIME:
                return True
            return next(iter(self._children(item["id"], page_size=1)), None) is not None

    def size(self, uri: str) -> int | None:
        """The size Drive records, a shortcut's target's (None for a Google Docs Editors file, which has none)."""
        with translated_errors("check", uri):
            item = self._file(uri)
        return int(item["size"]) if "size" in item else None

    def _file(self, uri: str) -> dict:
        """The item `uri` resolves to (a shortcut's live target, with its size), refused where there is none or it is a
        folder."""
        item = self._resolve(uri)
        if item is None:
            raise NoSuchFileError("no such file", source=uri)
        if (item := self._target(item)) is None:
            raise NoSuchFileError("no such file (a shortcut whose target was deleted or trashed)", source=uri)
        if item["mimeType"] == FOLDER_MIME:
            raise StorageError("a folder, not a file", source=uri)
        return item

    def _target(self, item: dict | None) -> dict | None:
        """A shortcut's target as it is now (one request: its size, whether it was trashed), None where it is gone;
        anything else as it is."""
        from googleapiclient.errors import HttpError

        if item is None or not item.get("shortcut"):
            return item
        request = self.service.files().get(fileId=item["id"], fields="id,mimeType,size,trashed", supportsAllDrives=True)
        try:
            target = execute(request)
        except HttpError as exc:
            if int(exc.resp.status) == 404:
                return None
            raise
        return None if target.get("trashed") else {**item, **target, "name": item["name"]}

    def list_files(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[str]:
        return (listed for listed, _ in self._list(uri, suffixes, recursive, sizes=False))

    def list_sizes(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[tuple[str, int | None]]:
        """Each file's URI and its size: the listing's, a shortcut's its target's (no page gives it, nor whether that
        is still there), asked for in batches (`_target_sizes`); None for one whose target is gone or went unanswered
        (`size` asks)."""
        return self._list(uri, suffixes, recursive, sizes=True)

    def _list(self, uri: str, suffixes: tuple[str, ...] | None, recursive: bool, sizes: bool
              ) -> Iterator[tuple[str, int | None]]:
        with translated_errors("list", uri):
            item = self._resolve(uri)
        if item is None:
            raise NoSuchFolderError("no such folder", source=uri)
        if item["mimeType"] != FOLDER_MIME:
            raise StorageError("a file, not a folder", source=uri)
        return self._walk(uri.rstrip("/"), item["id"], normalise_suffixes(suffixes), recursive, {item["id"]}, sizes)

    def _walk(
        self, uri: str, folder_id: str, suffixes: tuple[str, ...] | None, recursive: bool, seen: set[str], sizes: bool
    ) -> Iterator[tuple[str, int | None]]:
        """Files below `folder_id`, with their sizes (a shortcut's its target's where `sizes`, else None); shortcuts are
        followed, each folder walked once (a shortcut may loop).

        Of twins (one name, one folder) only the oldest is listed: the one a path resolves to.
        """
        subfolders, names = [], set()
        with translated_errors("list", uri):
            for page in self._pages(folder_id, self.page_size):
                files = []
                for item in sorted(map(followed, page), key=lambda f: f["name"]):
                    if item["name"] in names:
                        log.warning("%s/%s: Drive holds another item of this name there; only the oldest is used",
                                    uri, uri_part(item["name"]))
                        continue
                    names.add(item["name"])
                    if item["mimeType"] == FOLDER_MIME:
                        subfolders.append(item)
                    elif item["mimeType"].startswith(GOOGLE_MIME_PREFIX):
                        continue
                    elif suffixes is None or item["name"].lower().endswith(suffixes):
                        files.append(item)
                targets = self._target_sizes({item["id"] for item in files if item.get("shortcut")}) if sizes else {}
                for item in files:
                    yield f"{uri}/{uri_part(item['name'])}", int(item["size"]) if "size" in item else targets.get(item["id"])
        if recursive:
            for folder in sorted(subfolders, key=lambda f: f["name"]):
                if folder["id"] not in seen:
                    seen.add(folder["id"])
                    yield from self._walk(f"{uri}/{uri_part(folder['name'])}", folder["id"], suffixes, recursive, seen,
                                          sizes)

    def _target_sizes(self, ids: set[str]) -> dict[str, int]:
        """The sizes of the live files among `ids` (shortcuts' targets), asked for `BATCH` to a request (Drive's batch
        endpoint); one deleted, trashed or unanswered (an error, a batch refused) is left out, for `size` to ask."""
        from googleapiclient.errors import HttpError

        found: dict[str, int] = {}

        def keep(_: str, answer: dict | None, exc: Exception | None) -> None:
            if exc is None and answer and not answer.get("trashed") and "size" in answer:
                found[answer["id"]] = int(answer["size"])

        ordered = sorted(ids)
        for start in range(0, len(ordered), BATCH):
            batch = self.service.new_batch_http_request(callback=keep)
            for target in ordered[start:start + BATCH]:
                batch.add(self.service.files().get(fileId=target, fields="id,size,trashed", supportsAllDrives=True))
            try:
                batch.execute()
            except (HttpError, OSError) as exc:  # not a listing's failure: each size is asked for alone
                log.debug("Drive's batch of %d shortcut targets failed: %s", len(ordered[start:start + BATCH]), exc)
        return found
