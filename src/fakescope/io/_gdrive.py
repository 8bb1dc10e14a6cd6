"""Google Drive backend (Drive v3 through google-api-python-client).

`gdrive://FOLDER_ID/sub/path/name.png` names a file by its path below a Drive folder; a `/` within a
name (Drive allows it) is written `%2F`, as listings give it. Of several items of one name in a folder
(Drive allows that too) the oldest is the one read, written over and listed (the others with a warning); a folder
this process made where another made one of that name at the same moment is deleted while empty, so both write
into the oldest. Credentials:
a file named by `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key, or the authorized-user file
`gcloud auth application-default login` writes), an OAuth authorized-user token file named by
`FAKESCOPE_GDRIVE_TOKEN`, or Google's application-default credentials; a file that cannot be used is
named in the error, never quoted.
`FAKESCOPE_GDRIVE_ENDPOINT` (e.g. `http://127.0.0.1:8080`) points the client at another server.
Shortcuts are followed (each folder walked once); Google Docs Editors files have no bytes and are not listed.
Each storage object remembers the ids of the folders it found or made along paths, so a file costs one look-up
however deep it lies; where Drive answers 404 for a remembered id (the folder was deleted), they are forgotten and
the path walked again (a folder moved or trashed meanwhile still answers: its id is looked up again once it is
`FOLDER_TTL_S` old). Only folders that exist are remembered, never a name found missing, nor any file.
Rate limits, 5xx answers and dropped connections are retried `RETRIES` times by the client library, with
exponential backoff and a `googleapiclient.http` warning each; one that outlasts them raises
`StorageUnavailableError`, as the storage, not the file, failed. A server name that does not resolve (a mistyped
`FAKESCOPE_GDRIVE_ENDPOINT`) raises it at once, before the first request, where the client would retry it for a
minute; a temporary resolver failure is retried.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import mimetypes
import os
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fakescope.errors import StorageError, StorageUnavailableError
from fakescope.io.storage import DOING, normalise_suffixes

log = logging.getLogger(__name__)

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
GOOGLE_MIME_PREFIX = "application/vnd.google-apps."
"""Google Docs, Sheets, Drawings...: no bytes to download (`alt=media` is refused), so never listed."""
_FIELDS = "id,name,mimeType,shortcutDetails(targetId,targetMimeType)"
SCOPES = ["https://www.googleapis.com/auth/drive"]
RETRIES = 5
FOLDER_TTL_S = 60.0  # how long a folder's id is trusted without looking it up again
"""Times a request is sent again while Drive answers 429, 5xx or a 403 rate limit, or drops the connection."""
_RATE_LIMITS = {"userRateLimitExceeded", "rateLimitExceeded"}
_CHUNK = 256 * 1024
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}
_T = TypeVar("_T")


class _Gone(Exception):
    """Drive answered 404 for a folder id taken from the cache: the folder was deleted meanwhile."""


def _network() -> str:
    """What to check when Drive does not answer: the network, and the endpoint variable where one is set."""
    return "FAKESCOPE_GDRIVE_ENDPOINT and the network" if os.environ.get("FAKESCOPE_GDRIVE_ENDPOINT") else "the network"


def split_drive_uri(uri: str) -> tuple[str, list[str]]:
    """Split `gdrive://folder-id/a/b%2Fc` into `("folder-id", ["a", "b/c"])`: `%2F` is a `/` within a name."""
    rest = uri[len("gdrive://"):]
    folder_id, *parts = [p for p in rest.split("/") if p] or [""]
    if not folder_id:
        raise StorageError(f"no folder id in {uri!r}; expected gdrive://folder-id/path")
    return folder_id, [p.replace("%2F", "/").replace("%2f", "/") for p in parts]


def _part(name: str) -> str:
    """A Drive name as one URI path part (Drive names may hold `/`)."""
    return name.replace("/", "%2F")


def load_credentials() -> Any:
    """Credentials from the environment or Google's standard configuration, else `StorageUnavailableError`.

    `GOOGLE_APPLICATION_CREDENTIALS` may name any file Google's libraries take (a service account, an
    authorized user as `gcloud auth application-default login` writes...). Messages never quote a file.
    """
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError
    from google.oauth2 import credentials as user_credentials

    variable = next((v for v in ("GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN") if os.environ.get(v)), None)
    try:
        if variable == "FAKESCOPE_GDRIVE_TOKEN":
            return user_credentials.Credentials.from_authorized_user_file(os.environ[variable], scopes=SCOPES)
        return google.auth.default(scopes=SCOPES)[0]  # reads GOOGLE_APPLICATION_CREDENTIALS first
    except (OSError, ValueError, DefaultCredentialsError) as exc:
        if variable is None:
            raise StorageUnavailableError(
                "no usable Google Drive credentials: set GOOGLE_APPLICATION_CREDENTIALS (service account) "
                f"or FAKESCOPE_GDRIVE_TOKEN (OAuth token file) ({type(exc).__name__})"
            ) from None
        path = os.environ[variable]
        if not os.path.isfile(path):  # the value may be the secret itself (a pasted key or token): never shown
            raise StorageUnavailableError(f"cannot use {variable} as Google Drive credentials: it names no file") from None
        raise StorageUnavailableError(f"cannot use {path} (named by {variable}) as Google Drive credentials: "
                                      f"not a credentials file ({type(exc).__name__})") from None


def make_service(credentials: Any = None) -> Any:
    """Build a Drive v3 client offline from the bundled discovery document.

    `FAKESCOPE_GDRIVE_ENDPOINT` replaces the document's root URL, so API calls and media
    uploads (which `client_options.api_endpoint` would leave on https) both go there.
    """
    import google_auth_httplib2
    from googleapiclient.discovery import build_from_document
    from googleapiclient.discovery_cache import get_static_doc
    from googleapiclient.http import build_http

    credentials = credentials or load_credentials()
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=build_http())
    document = json.loads(get_static_doc("drive", "v3"))
    if endpoint := os.environ.get("FAKESCOPE_GDRIVE_ENDPOINT"):
        document["rootUrl"] = endpoint.rstrip("/") + "/"
        document["baseUrl"] = document["rootUrl"] + document["servicePath"]
    _check_resolves(document["rootUrl"])
    return build_from_document(document, http=http)


def _check_resolves(url: str) -> None:
    """Raise `socket.gaierror` where the server's name does not exist; a temporary failure is left to the retries."""
    try:
        socket.getaddrinfo(urllib.parse.urlsplit(url).hostname, None)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            raise


def _quote(name: str) -> str:
    return name.replace("\\", "\\\\").replace("'", "\\'")


class DriveStorage:
    """Files below Google Drive folders, addressed by path.

    Args:
        service: A Drive v3 client to reuse; built from the environment when omitted.
        page_size: Files asked for per `files.list` request (every listing is read to its last page).
        resumable_threshold: Uploads of at least this many bytes use the resumable protocol
            (in 256 KiB chunks); smaller ones one multipart request.
    """

    def __init__(self, service: Any = None, *, page_size: int = 1000, resumable_threshold: int = 5 * 2**20):
        self.page_size = page_size
        self.resumable_threshold = resumable_threshold
        self._service = service
        self._credentials: Any = None
        self._lock = threading.Lock()
        self._folder_lock = threading.Lock()  # one find-or-create of a folder at a time: no twin folders
        # (folder id, *names) -> (the id of that folder, found or made; when it was): an id older than folder_ttl_s is
        # looked up again, so a folder another client trashed or moved is not written into for longer than that
        self._folders: dict[tuple[str, ...], tuple[str, float]] = {}
        self.folder_ttl_s = FOLDER_TTL_S
        self._local = threading.local()

    @property
    def service(self) -> Any:
        """The client given, else one per thread and process: an httplib2 connection must not be shared."""
        if self._service is not None:
            return self._service
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            with self._lock:
                self._credentials = self._credentials or load_credentials()
            local.service, local.pid = make_service(self._credentials), os.getpid()
        return local.service

    def read_bytes(self, uri: str) -> bytes:
        with _translated_errors("read", uri):
            item = self._resolve(uri)
            if item is None:
                raise StorageError("no such file", source=uri)
            if item["mimeType"] == FOLDER_MIME:
                raise StorageError("a folder, not a file", source=uri)
            if item["mimeType"].startswith(GOOGLE_MIME_PREFIX):
                raise StorageError(f"a Google Docs Editors file ({item['mimeType']}), which has no bytes to read", source=uri)
            return _execute(self.service.files().get_media(fileId=item["id"], supportsAllDrives=True))

    def write_bytes(self, uri: str, data: bytes) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        folder_id, parts = split_drive_uri(uri)
        if not parts:
            raise StorageError("names a folder, not a file to write", source=uri)
        mime = mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
        resumable = len(data) >= self.resumable_threshold
        media = MediaIoBaseUpload(io.BytesIO(data), mimetype=mime, chunksize=_CHUNK, resumable=resumable)
        with _translated_errors("write", uri):
            found = self._in_folder(folder_id, parts[:-1], lambda parent, cached: (
                parent, self._find_child(parent, parts[-1], cached)), make=True)
            assert found is not None  # made where missing
            parent, existing = found
            files = self.service.files()
            if existing is not None:
                _execute(files.update(fileId=existing["id"], media_body=media, supportsAllDrives=True))
            else:
                body = {"name": parts[-1], "parents": [parent]}
                _execute(files.create(body=body, media_body=media, fields="id", supportsAllDrives=True))

    def create_twin(self, uri: str, data: bytes) -> tuple[str, datetime.datetime]:
        """Write `data` as a new file at `uri`, beside any file of that name (Drive keeps both; `write_bytes` would
        write over the oldest): its id and creation time, by Drive's clock."""
        from googleapiclient.http import MediaIoBaseUpload

        folder_id, parts = split_drive_uri(uri)

        def create(parent: str, cached: bool) -> dict[str, str]:
            media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/octet-stream")
            return _checked(self.service.files().create(body={"name": parts[-1], "parents": [parent]}, media_body=media,
                                                        fields="id,createdTime", supportsAllDrives=True), cached)

        with _translated_errors("write", uri):
            made = self._in_folder(folder_id, parts[:-1], create, make=True)
        assert made is not None  # made where missing
        return made["id"], _time(made["createdTime"])

    def twins(self, uri: str) -> list[dict[str, Any]]:
        """The live files named as `uri` (its oldest first): `id`, and `createdTime`, `modifiedTime` by Drive's clock."""
        folder_id, parts = split_drive_uri(uri)
        with _translated_errors("list", uri):
            found = self._in_folder(folder_id, parts[:-1], lambda parent, cached: self._list_named(
                parent, parts[-1], "files(id,createdTime,modifiedTime)", cached)) or []
        items = [{**item, "createdTime": _time(item["createdTime"]), "modifiedTime": _time(item["modifiedTime"])}
                 for item in found]
        return sorted(items, key=_oldest_first)

    def read_id(self, file_id: str, uri: str) -> bytes:
        """The bytes of the file `file_id` (one of `uri`'s twins)."""
        with _translated_errors("read", uri):
            return _execute(self.service.files().get_media(fileId=file_id, supportsAllDrives=True))

    def rewrite_id(self, file_id: str, uri: str, data: bytes) -> datetime.datetime | None:
        """Write `data` over the file `file_id` (one of `uri`'s twins): its new `modifiedTime`, or None where it is gone."""
        from googleapiclient.errors import HttpError
        from googleapiclient.http import MediaIoBaseUpload

        media = MediaIoBaseUpload(io.BytesIO(data), mimetype="application/octet-stream")
        with _translated_errors("write", uri):
            try:
                return _time(_execute(self.service.files().update(
                    fileId=file_id, media_body=media, fields="modifiedTime", supportsAllDrives=True))["modifiedTime"])
            except HttpError as exc:
                if int(exc.resp.status) == 404:
                    return None
                raise

    def delete_id(self, file_id: str, uri: str) -> None:
        """Delete the file `file_id` (one of `uri`'s twins) for good; one gone already is no error."""
        from googleapiclient.errors import HttpError

        with _translated_errors("write", uri):
            try:
                _execute(self.service.files().delete(fileId=file_id, supportsAllDrives=True))
            except HttpError as exc:
                if int(exc.resp.status) != 404:
                    raise

    def remove(self, uri: str) -> None:
        """Delete the file `uri` resolves to (the oldest of its name) for good; a folder is refused."""
        with _translated_errors("check", uri):
            item = self._resolve(uri)
        if item is not None and item["mimeType"] == FOLDER_MIME:
            raise StorageError("a folder, not a file", source=uri)
        if item is not None:
            self.delete_id(item["id"], uri)

    def exists(self, uri: str) -> bool:
        with _translated_errors("check", uri):
            item = self._resolve(uri)
            if item is None:
                return False
            if item["mimeType"] != FOLDER_MIME:
                return True
            return next(iter(self._children(item["id"], page_size=1)), None) is not None

    def list_files(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[str]:
        with _translated_errors("list", uri):
            item = self._resolve(uri)
        if item is None or item["mimeType"] != FOLDER_MIME:
            raise StorageError("no such folder", source=uri)
        return self._walk(uri.rstrip("/"), item["id"], normalise_suffixes(suffixes), recursive, {item["id"]})

    def _walk(
        self, uri: str, folder_id: str, suffixes: tuple[str, ...] | None, recursive: bool, seen: set[str]
    ) -> Iterator[str]:
        """Files below `folder_id`; shortcuts are followed, each folder walked once (a shortcut may loop).

        Of twins (one name, one folder) only the oldest is listed: the one a path resolves to.
        """
        subfolders, names = [], set()
        with _translated_errors("list", uri):
            for page in self._pages(folder_id, self.page_size):
                for item in sorted(map(_followed, page), key=lambda f: f["name"]):
                    if item["name"] in names:
                        log.warning("%s/%s: Drive holds another item of this name there; only the oldest is used",
                                    uri, _part(item["name"]))
                        continue
                    names.add(item["name"])
                    if item["mimeType"] == FOLDER_MIME:
                        subfolders.append(item)
                    elif item["mimeType"].startswith(GOOGLE_MIME_PREFIX):
                        continue
                    elif suffixes is None or item["name"].lower().endswith(suffixes):
                        yield f"{uri}/{_part(item['name'])}"
        if recursive:
            for folder in sorted(subfolders, key=lambda f: f["name"]):
                if folder["id"] not in seen:
                    seen.add(folder["id"])
                    yield from self._walk(f"{uri}/{_part(folder['name'])}", folder["id"], suffixes, recursive, seen)

    def _resolve(self, uri: str) -> dict[str, str] | None:
        folder_id, parts = split_drive_uri(uri)
        if not parts:
            return {"id": folder_id, "name": "", "mimeType": FOLDER_MIME}
        return self._in_folder(folder_id, parts[:-1], lambda parent, cached: self._find_child(parent, parts[-1], cached))

    def _in_folder(self, root: str, names: list[str], action: Callable[[str, bool], _T], *, make: bool = False
                   ) -> _T | None:
        """`action(id, cached)` on the folder `root/names` (made where missing when `make`), None where it is missing.

        `cached` says the id came from the cache: `action` raises `_Gone` where Drive answers 404 for it, and the
        cache is then dropped and the path walked again.
        """
        while True:
            try:
                parent, cached = self._folder(root, names, make)
                return None if parent is None else action(parent, cached)
            except _Gone:
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
        also when `parent` does not exist (404), unless its id was `cached` (`_Gone`)."""
        found = self._list_named(parent, name, f"files({_FIELDS},createdTime)", cached)
        return _followed(min(found, key=_oldest_first)) if found else None

    def _list_named(self, parent: str, name: str, fields: str, cached: bool) -> list[dict[str, str]] | None:
        """All the live files named `name` in folder `parent` (every page), oldest first; None where `parent` does not
        exist (404), `_Gone` where its id was `cached`."""
        from googleapiclient.errors import HttpError

        query = f"'{_quote(parent)}' in parents and name = '{_quote(name)}' and trashed = false"
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
            made = _checked(self.service.files().create(body=body, fields="id", supportsAllDrives=True), cached)["id"]
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
                _execute(self.service.files().delete(fileId=made, supportsAllDrives=True))
            except HttpError as exc:
                if int(exc.resp.status) != 404:
                    raise
        return oldest

    def _children(self, folder_id: str, page_size: int) -> Iterator[dict[str, str]]:
        for page in self._pages(folder_id, page_size):
            yield from page

    def _pages(self, folder_id: str, page_size: int) -> Iterator[list[dict[str, str]]]:
        return self._listing(f"'{_quote(folder_id)}' in parents and trashed = false", f"files({_FIELDS})", page_size)

    def _listing(self, query: str, fields: str, page_size: int, cached: bool = False
                 ) -> Iterator[list[dict[str, str]]]:
        """Every page `files.list` answers for `query`, oldest first: Drive may answer fewer than `page_size` items (even
        none) with a `nextPageToken`, so all are followed. Drive's 404 for a `cached` folder id raises `_Gone`."""
        files = self.service.files()
        request = files.list(q=query, fields=f"nextPageToken,{fields}", pageSize=page_size, orderBy="createdTime",
                             supportsAllDrives=True, includeItemsFromAllDrives=True)
        while request is not None:
            response = _checked(request, cached)
            yield response.get("files", [])
            request = files.list_next(request, response)


def _oldest_first(item: dict[str, Any]) -> tuple:
    """Files of one name in the order every run sees: by `createdTime`, and of two made in one millisecond, by id."""
    return item["createdTime"], item["id"]


def _time(text: str) -> datetime.datetime:
    """A Drive time (RFC 3339, `Z`) as an aware datetime."""
    return datetime.datetime.fromisoformat(text)


def _followed(item: dict[str, Any]) -> dict[str, Any]:
    """A shortcut as its target (under the shortcut's name); anything else as it is."""
    target = item.get("shortcutDetails")
    if item["mimeType"] != SHORTCUT_MIME or not target:
        return item
    return {"id": target["targetId"], "name": item["name"], "mimeType": target["targetMimeType"]}


def _execute(request: Any) -> Any:
    """`request.execute`, whose client retries transient answers and dropped connections (`RETRIES` times).

    The client does not retry a resumable upload's chunk whose connection dropped or timed out: that upload
    goes on here, from the bytes Drive holds, with the client's backoff (random up to 2, 4, 8... s).
    """
    attempt = 0
    while True:
        try:
            return request.execute(num_retries=RETRIES)
        except (ConnectionError, TimeoutError) as exc:
            attempt += 1
            if request.resumable_uri is None or attempt > RETRIES:
                raise
            delay = random.random() * 2**attempt
            log.info("Google Drive dropped an upload (%s); retry %d of %d in %.1f s from the bytes it holds",
                     type(exc).__name__, attempt, RETRIES, delay)
            time.sleep(delay)


def _checked(request: Any, cached: bool) -> Any:
    """`_execute(request)` on a folder whose id may be `cached`: Drive's 404 for such an id raises `_Gone`."""
    from googleapiclient.errors import HttpError

    try:
        return _execute(request)
    except HttpError as exc:
        if cached and int(exc.resp.status) == 404:
            raise _Gone from exc
        raise


def _transient(exc: BaseException) -> bool:
    """A rate limit (429, or 403 `userRateLimitExceeded`/`rateLimitExceeded`), a 5xx or a dropped connection."""
    from googleapiclient.errors import HttpError

    if isinstance(exc, ConnectionResetError):
        return True
    if not isinstance(exc, HttpError):
        return False
    status = int(exc.resp.status)
    return status == 429 or status >= 500 or (status == 403 and _reason(exc) in _RATE_LIMITS)


def _reason(exc: Any) -> str:
    """The `reason` of Drive's first error detail (`notFound`, `rateLimitExceeded`...), else ''."""
    details = getattr(exc, "error_details", None)
    if isinstance(details, list) and details and isinstance(details[0], dict):
        return str(details[0].get("reason", ""))
    return ""


def _answer(exc: BaseException) -> str:
    status = getattr(getattr(exc, "resp", None), "status", None)
    return f"HTTP {status}" if status is not None else type(exc).__name__


class _translated_errors:
    """Turn Drive/HTTP/auth errors into a one-line `StorageError`, never echoing tokens."""

    def __init__(self, action: str, uri: str):
        self.action, self.uri = action, uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, (StorageError, GeneratorExit)):
            return False
        from google.auth.exceptions import GoogleAuthError, TransportError
        from googleapiclient.errors import HttpError
        from httplib2 import ServerNotFoundError

        error = StorageError  # StorageUnavailableError where the storage, not the file, failed
        source = None  # the URI, where this file's own error could become its record: the message leaves it out
        doing = DOING[self.action]
        if isinstance(exc, HttpError) and _transient(exc):
            message = (f"Google Drive busy: it still answered {_answer(exc)} ({_reason(exc) or 'busy'}) after {RETRIES} "
                       f"retries while {doing} {self.uri}; try again later")
            error = StorageUnavailableError
        elif isinstance(exc, HttpError):
            status = int(exc.resp.status)
            if status == 404:
                message, source = "no such file or folder", self.uri
            elif status in (401, 403):
                message, source = f"access denied to {self.action} (check the Google credentials)", self.uri
            else:
                message, source = f"cannot {self.action}: Drive returned HTTP {status}", self.uri
        elif isinstance(exc, TransportError):
            message = f"Google Drive or its token server unreachable while {doing} {self.uri}; check {_network()}"
            error = StorageUnavailableError
        elif isinstance(exc, GoogleAuthError):
            message, source = f"access denied to {self.action}: Google credentials were refused", self.uri
        elif isinstance(exc, (socket.gaierror, ServerNotFoundError)):
            message = (f"Google Drive unreachable: its server name does not resolve while {doing} {self.uri}; "
                       f"check {_network()}")
            error = StorageUnavailableError
        elif isinstance(exc, OSError):
            message = f"Google Drive unreachable ({type(exc).__name__}) while {doing} {self.uri}; check {_network()}"
            error = StorageUnavailableError
        else:
            return False
        raise error(message, source=source) from exc
