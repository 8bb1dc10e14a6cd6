"""Paths below a Drive folder: the remembered folder ids, finding or making folders, and paged listings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fakescope.io._gdrive.calls import Gone, checked, execute
from fakescope.io._gdrive.client import DriveClient
from fakescope.io._gdrive.items import FIELDS, FOLDER_MIME, followed, oldest_first, quoted, split_drive_uri

log = logging.getLogger(__name__)

FOLDER_TTL_S = 60.0  # how long a folder's id is trusted without looking it up again
_T = TypeVar("_T")


class DriveFolders(DriveClient):
    """Resolves paths to Drive items, remembering the ids of the folders found or made along them."""

    def __init__(self, service: Any = None, *, page_size: int = 1000):
        super().__init__(service)
        self.page_size = page_size
        self._folder_lock = threading.Lock()  # one find-or-create of a folder at a time: no twin folders
        # (folder id, *names) -> (the id of that folder, found or made; when it was): an id older than folder_ttl_s is
        # looked up again, so a folder another client trashed or moved is not written into for longer than that
        self._folders: dict[tuple[str, ...], tuple[str, float]] = {}
        self.folder_ttl_s = FOLDER_TTL_S

    def _resolve(self, uri: str) -> dict[str, str] | None:
        folder_id, parts = split_drive_uri(uri)
        if not parts:
            return {"id": folder_id, "name": "", "mimeType": FOLDER_MIME}
        return self._in_folder(folder_id, parts[:-1], lambda parent, cached: self._find_child(parent, parts[-1], cached))

    def _in_folder(self, root: str, names: list[str], action: Callable[[str, bool], _T], *, make: bool = False
                   ) -> _T | None:
        """`action(id, cached)` on the folder `root/names` (made where missing when `make`), None where it is missing.

        `cached` says the id came from the cache: `action` raises `Gone` where Drive answers 404 for it, and the
        cache is then dropped and the path walked again.
        """
        while True:
            try:
                parent, cached = self._folder(root, names, make)
                return None if parent is None else action(parent, cached)
            except Gone:
                self._folders.clear()

    def _folder(self, root: str, names: list[str], make: bool) -> tuple[str | None, bool]:
        """The id of the folder `root/names` (made where missing when `make`), else None, and whether it was cached."""
        parent, cached = root, False
        for depth, name in enumerate(names, 1):
            key = (root, *names[:depth])
            known = self._known(key)
            if known is None:
                known = self._child_folder(parent, name, cached, key) if make else self._find_folder(parent, name, cached)
                if known is None:
                    return None, False
                self._folders[key] = (known, time.monotonic())
                parent, cached = known, False
            else:
                parent, cached = known, True
        return parent, cached

    def _known(self, key: tuple[str, ...]) -> str | None:
        """The remembered id of the folder at `key`, unless it is older than `folder_ttl_s`."""
        known = self._folders.get(key)
        return known[0] if known is not None and time.monotonic() - known[1] < self.folder_ttl_s else None

    def _find_folder(self, parent: str, name: str, cached: bool) -> str | None:
        item = self._find_child(parent, name, cached)
        return item["id"] if item is not None and item["mimeType"] == FOLDER_MIME else None

    def _find_child(self, parent: str, name: str, cached: bool = False) -> dict[str, str] | None:
        """The oldest live file named `name` in folder `parent` (of two made in one millisecond, the lower id); None
        also when `parent` does not exist (404), unless its id was `cached` (`Gone`)."""
        found = self._list_named(parent, name, f"files({FIELDS},createdTime,size)", cached)
        return followed(min(found, key=oldest_first)) if found else None

    def _list_named(self, parent: str, name: str, fields: str, cached: bool) -> list[dict[str, str]] | None:
        """All the live files named `name` in folder `parent` (every page), oldest first; None where `parent` does not
        exist (404), `Gone` where its id was `cached`."""
        from googleapiclient.errors import HttpError

        query = f"'{quoted(parent)}' in parents and name = '{quoted(name)}' and trashed = false"
        try:
            return [item for page in self._listing(query, fields, self.page_size, cached) for item in page]
        except HttpError as exc:
            if int(exc.resp.status) == 404:
                return None
            raise

    def _child_folder(self, parent: str, name: str, cached: bool, key: tuple[str, ...]) -> str:
        """The folder `name` in `parent` (whose path is `key`), made if missing; Drive would take a second one of
        the same name."""
        with self._folder_lock:
            if known := self._known(key):  # made by another thread meanwhile
                return known
            existing = self._find_child(parent, name, cached)
            if existing is not None:
                return existing["id"]
            body = {"name": name, "mimeType": FOLDER_MIME, "parents": [parent]}
            made = checked(self.service.files().create(body=body, fields="id", supportsAllDrives=True), cached)["id"]
            return self._oldest_folder(parent, name, made)

    def _oldest_folder(self, parent: str, name: str, made: str) -> str:
        """The oldest folder `name` in `parent`, just after this run made `made` there.

        Another machine may have made one at the same moment (Drive takes both): every run then uses the oldest, so
        all meet in one folder, and deletes its own where that is younger and still empty.
        """
        from googleapiclient.errors import HttpError

        found = self._list_named(parent, name, "files(id,mimeType,createdTime)", False) or []
        folders = sorted((f for f in found if f["mimeType"] == FOLDER_MIME), key=lambda f: (f["createdTime"], f["id"]))
        oldest = folders[0]["id"] if folders else made
        if oldest != made and next(iter(self._children(made, page_size=1)), None) is None:
            log.info("folder %r was made at the same moment by another run too: using the older one", name)
            try:
                execute(self.service.files().delete(fileId=made, supportsAllDrives=True))
            except HttpError as exc:
                if int(exc.resp.status) != 404:
                    raise
        return oldest

    def _children(self, folder_id: str, page_size: int) -> Iterator[dict[str, str]]:
        for page in self._pages(folder_id, page_size):
            yield from page

    def _pages(self, folder_id: str, page_size: int) -> Iterator[list[dict[str, str]]]:
        """The items directly in `folder_id`, a page at a time, with the size Drive records (a file's only)."""
        return self._listing(f"'{quoted(folder_id)}' in parents and trashed = false", f"files({FIELDS},size)", page_size)

    def _listing(self, query: str, fields: str, page_size: int, cached: bool = False
                 ) -> Iterator[list[dict[str, str]]]:
        """Every page `files.list` answers for `query`, oldest first: Drive may answer fewer than `page_size` items (even
        none) with a `nextPageToken`, so all are followed. Drive's 404 for a `cached` folder id raises `Gone`."""
        files = self.service.files()
        request = files.list(q=query, fields=f"nextPageToken,{fields}", pageSize=page_size, orderBy="createdTime",
                             supportsAllDrives=True, includeItemsFromAllDrives=True)
        while request is not None:
            response = checked(request, cached)
            yield response.get("files", [])
            request = files.list_next(request, response)
