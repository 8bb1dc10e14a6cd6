"""A small in-memory HTTP server speaking the Drive v3 subset the gdrive:// backend uses.

Endpoints: `files.list` (q with `in parents`, `name =`, `trashed = false`; pageSize (1-1000, default 100)/
pageToken paging, always in creation order, as `orderBy=createdTime` asks; at most `page_cap` items a page where
set, as Drive may answer fewer than pageSize; `nextPageToken` only where `fields` asks for it, as Drive does; 404
for a parent that does not exist), `files.get` (the plain `fields` listed, `trashed` among them; also in a batch, `POST /batch/drive/v3`, at most 100 a batch, counted as `calls["batch"]`) and with `alt=media` (403 `fileNotDownloadable` for Google Docs and shortcuts, as Drive
answers; a `Range: bytes=A-B` header answered 206 with that slice, or 416 for an empty file, as Drive does; the bytes
sent counted in `calls["downloaded_bytes"]`), `files.create` (folders), simple, multipart and resumable uploads for `files.create`/`files.update`,
`files.delete` (404 for a create into a folder that does not exist, as Drive answers); every file has a `createdTime` and a `modifiedTime` (a write's), by this server's clock, listed
and answered where `fields` names them, as is a file's `size` (a string, as Drive's).
Requests must carry `Authorization: Bearer <token>` (others get 401); `readonly_token` may
list and download but gets 403 `insufficientPermissions` on every write. `fail()` makes the next
requests of one kind answer an error (a rate limit, a 503), as Drive does under load.
"""

from __future__ import annotations

import datetime
import email
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

FOLDER_MIME = "application/vnd.google-apps.folder"
SHORTCUT_MIME = "application/vnd.google-apps.shortcut"
DOC_MIME = "application/vnd.google-apps.document"
DRIVE_TOKEN = "fakescope-test-token"
DRIVE_READONLY_TOKEN = "fakescope-readonly-token"
DRIVE_REFRESH_TOKEN = "fakescope-refresh-token"
"""The refresh token `POST /token` (this server's OAuth token endpoint) renews into `DRIVE_TOKEN`; any other is revoked."""
_CLAUSE = re.compile(r"""'((?:[^'\\]|\\.)*)' in parents|name = '((?:[^'\\]|\\.)*)'|trashed = false""")


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _now() -> str:
    """This server's clock as Drive writes times (RFC 3339, UTC, milliseconds)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_token_file(path: Path, token: str) -> Path:
    """An OAuth authorized-user file whose access token is valid for centuries (no refresh call)."""
    path.write_text(json.dumps({
        "type": "authorized_user", "token": token, "refresh_token": "unused-refresh", "client_id": "test-client",
        "client_secret": "test-secret", "expiry": "2999-01-01T00:00:00Z",
    }))
    return path


class DriveServer:
    """Serve an in-memory Drive on 127.0.0.1 at a free port; `root_id` is an empty folder to start from."""

    def __init__(self, token: str, readonly_token: str):
        self.token = token
        self.readonly_token = readonly_token
        self.root_id = "root-folder"
        self.stall_s = 0.5
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.reset()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        """Forget every file and counter; keep one empty root folder."""
        with self._lock:
            self.files = {self.root_id: {"id": self.root_id, "name": "root", "mimeType": FOLDER_MIME, "parents": []}}
            self.contents: dict[str, bytes] = {}
            self.sessions: dict[str, dict] = {}
            self.faults: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
            self.page_cap: int | None = None
            self.calls.clear()

    def add(self, name: str, parent: str, data: bytes | None = None, *, mime: str | None = None,
            trashed: bool = False, target: str | None = None) -> str:
        """Create a file (or a folder when `data` is None, a shortcut to `target`) directly; returns its id."""
        with self._lock:
            file_id = f"id{next(self._ids)}"
            mime = mime or (SHORTCUT_MIME if target else FOLDER_MIME if data is None else "application/octet-stream")
            now = _now()
            item = {"id": file_id, "name": name, "mimeType": mime, "parents": [parent], "trashed": trashed,
                    "createdTime": now, "modifiedTime": now}
            if target is not None:
                item["shortcutDetails"] = {"targetId": target, "targetMimeType": self.files[target]["mimeType"]}
            self.files[file_id] = item
            if data is not None:
                self.contents[file_id] = data
            return file_id

    def fail(self, kind: str, status: int, reason: str, times: int = 1) -> None:
        """Answer the next `times` requests of `kind` (`list`, `download`, `batch`, `upload` or only upload `chunk`s)
        with this error; status 0 drops the connection instead, or with reason `stall` first keeps it silent for
        `stall_s` seconds (a client's read timeout)."""
        with self._lock:
            self.faults[kind] += [(status, reason)] * times

    def take_fault(self, kind: str) -> tuple[int, str] | None:
        with self._lock:
            return self.faults[kind].pop(0) if self.faults[kind] else None

    def query(self, q: str) -> list[dict] | None:
        """Files matching `q`, by id; None when its parent does not exist."""
        parents = names = None
        live = "trashed = false" in q
        for match in _CLAUSE.finditer(q):
            if match.group(1) is not None:
                parents = _unquote(match.group(1))
            elif match.group(2) is not None:
                names = _unquote(match.group(2))
        with self._lock:
            if parents is not None and parents not in self.files:
                return None
            found = [f for f in self.files.values()
                     if (parents is None or parents in f["parents"]) and (names is None or f["name"] == names)
                     and not (live and f["trashed"])]
        return found


def _make_handler(drive: DriveServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def _send(self, status: int, body: bytes = b"", kind: str = "application/json", headers=()) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict, headers=()) -> None:
            self._send(status, json.dumps(payload).encode(), headers=headers)

        def _error(self, status: int, reason: str) -> None:
            if status == 0:  # a dropped connection: no answer at all
                if reason == "stall":
                    time.sleep(drive.stall_s)
                self.close_connection = True
                return
            self._json(status, {"error": {"code": status, "message": reason, "errors": [{"reason": reason}]}})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorised(self, write: bool = False) -> bool:
            auth = self.headers.get("Authorization")
            if auth == f"Bearer {drive.token}" or (auth == f"Bearer {drive.readonly_token}" and not write):
                return True
            self._body()
            if auth == f"Bearer {drive.readonly_token}":
                self._error(403, "insufficientPermissions")
            else:
                self._error(401, "authError")
            return False

        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if not self._authorised():
                return
            if url.path == "/drive/v3/files":
                drive.calls["list"] += 1
                if fault := drive.take_fault("list"):
                    return self._error(*fault)
                found = drive.query(params.get("q", ""))
                if found is None:
                    return self._error(404, "notFound")
                start = int(params.get("pageToken") or 0)
                size = int(params.get("pageSize") or 100)
                if not 1 <= size <= 1000:
                    return self._error(400, "invalid")
                size = min(size, drive.page_cap or size)
                keys = ("id", "name", "mimeType", "shortcutDetails", *_asked(params, "createdTime", "modifiedTime"))
                page = [{k: f[k] for k in keys if k in f} for f in found[start:start + size]]
                if _asked(params, "size"):  # blobs only, as Drive answers
                    for item in page:
                        if item["id"] in drive.contents:
                            item["size"] = str(len(drive.contents[item["id"]]))
                payload = {"files": page}
                if start + size < len(found) and ("fields" not in params or _asked(params, "nextPageToken")):
                    payload["nextPageToken"] = str(start + size)
                return self._json(200, payload)
            match = re.fullmatch(r"/drive/v3/files/([^/]+)", url.path)
            if match and params.get("alt") != "media":  # files.get: the fields asked for, a file's size (a string)
                drive.calls["get"] += 1
                return self._json(*_metadata(drive, match.group(1), params))
            if match and params.get("alt") == "media":
                drive.calls["download"] += 1
                if fault := drive.take_fault("download"):
                    return self._error(*fault)
                if drive.files.get(match.group(1), {}).get("mimeType", "").startswith("application/vnd.google-apps."):
                    return self._error(403, "fileNotDownloadable")
                data = drive.contents.get(match.group(1))
                if data is None:
                    return self._error(404, "notFound")
                ranged = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if ranged and not data:
                    return self._send(416, headers=[("Content-Range", "bytes */0")])
                if ranged:
                    start, end = int(ranged[1]), min(int(ranged[2]), len(data) - 1)
                    drive.calls["downloaded_bytes"] += end + 1 - start
                    return self._send(206, data[start:end + 1], "application/octet-stream",
                                      [("Content-Range", f"bytes {start}-{end}/{len(data)}")])
                drive.calls["downloaded_bytes"] += len(data)
                return self._send(200, data, "application/octet-stream")
            self._error(404, "notFound")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            if url.path == "/token":  # as oauth2.googleapis.com/token answers a refresh
                drive.calls["refresh"] += 1
                form = {k: v[-1] for k, v in parse_qs(self._body().decode()).items()}
                if form.get("grant_type") == "refresh_token" and form.get("refresh_token") == DRIVE_REFRESH_TOKEN:
                    return self._json(200, {"access_token": drive.token, "expires_in": 3600, "token_type": "Bearer"})
                return self._json(400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
            if url.path == "/batch/drive/v3":
                if self._authorised():
                    self._batch()
                return
            if not self._authorised(write=True):
                return
            self._write(url, file_id=None)

        def _batch(self) -> None:
            """A batch of `files.get` calls (multipart/mixed of `application/http` parts), answered part for part."""
            drive.calls["batch"] += 1
            body = self._body()
            if fault := drive.take_fault("batch"):
                return self._error(*fault)
            if (parts := _batch_parts(self.headers["Content-Type"], body)) is None or len(parts) > 100:
                return self._error(400, "badRequest")  # Drive takes at most 100 calls a batch
            answers = []
            for content_id, request in parts:
                target = urlparse(request.split(" ", 2)[1])
                match = re.fullmatch(r"/drive/v3/files/([^/]+)", target.path)
                status, payload = (_metadata(drive, match.group(1), {k: v[-1] for k, v in parse_qs(target.query).items()})
                                   if match else (404, {"error": {"code": 404, "message": "notFound"}}))
                answers.append(f"--batch_answer\r\nContent-Type: application/http\r\nContent-ID: <response-{content_id}>"
                               f"\r\n\r\nHTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                               f"Content-Type: application/json\r\n\r\n{json.dumps(payload)}\r\n")
            self._send(200, ("".join(answers) + "--batch_answer--\r\n").encode(), "multipart/mixed; boundary=batch_answer")

        def do_DELETE(self) -> None:
            match = re.fullmatch(r"/drive/v3/files/([^/]+)", urlparse(self.path).path)
            if not self._authorised(write=True):
                return
            with drive._lock:
                found = match and drive.files.pop(match.group(1), None)
                if found:
                    drive.contents.pop(match.group(1), None)
            if not found:
                return self._error(404, "notFound")
            self._send(204)

        def do_PATCH(self) -> None:
            url = urlparse(self.path)
            match = re.fullmatch(r"/(?:upload/)?drive/v3/files/([^/]+)", url.path)
            if not self._authorised(write=True):
                return
            if not match or match.group(1) not in drive.files:
                self._body()
                return self._error(404, "notFound")
            self._write(url, file_id=match.group(1))

        def do_PUT(self) -> None:
            url = urlparse(self.path)
            session = drive.sessions.get(parse_qs(url.query).get("upload_id", [""])[0])
            if not self._authorised(write=True):
                return
            if session is None:
                self._body()
                return self._error(404, "notFound")
            chunk = self._body()
            if fault := drive.take_fault("chunk") or drive.take_fault("upload"):
                return self._error(*fault)
            drive.calls["resumable_chunk"] += 1
            session["data"] += chunk
            total = self.headers.get("Content-Range", "").rpartition("/")[2]
            if total == "*" or len(session["data"]) < int(total):
                held = len(session["data"])  # Drive names no range while it holds nothing
                return self._send(308, headers=[("Range", f"bytes=0-{held - 1}")] if held else [])
            self._json(200, self._store(session["meta"], session["data"], session["file_id"], session["fields"]))

        def _write(self, url, file_id: str | None) -> None:
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = self._body()
            if fault := drive.take_fault("upload"):
                return self._error(*fault)
            upload = params.get("uploadType")
            if upload == "multipart":
                drive.calls["multipart"] += 1
                meta, data = _split_multipart(self.headers["Content-Type"], body)
                if file_id is None and _orphan(drive, meta):
                    return self._error(404, "notFound")
                return self._json(200, self._store(meta, data, file_id, params.get("fields", "")))
            if upload == "media":
                drive.calls["media"] += 1
                return self._json(200, self._store({"name": "untitled"}, body, file_id, params.get("fields", "")))
            if upload == "resumable":
                drive.calls["resumable_start"] += 1
                if file_id is None and _orphan(drive, json.loads(body or b"{}")):
                    return self._error(404, "notFound")
                session_id = f"s{next(drive._ids)}"
                drive.sessions[session_id] = {"meta": json.loads(body or b"{}"), "data": b"", "file_id": file_id,
                                              "fields": params.get("fields", "")}
                location = f"{drive.url}{url.path}?uploadType=resumable&upload_id={session_id}"
                return self._send(200, headers=[("Location", location)])
            drive.calls["create"] += 1
            if file_id is None and _orphan(drive, json.loads(body or b"{}")):
                return self._error(404, "notFound")
            return self._json(200, self._store(json.loads(body or b"{}"), None, file_id, params.get("fields", "")))

        def _store(self, meta: dict, data: bytes | None, file_id: str | None, fields: str = "") -> dict:
            if file_id is not None:
                drive.contents[file_id] = data or b""
                drive.files[file_id]["modifiedTime"] = _now()
            else:
                parent = (meta.get("parents") or [drive.root_id])[0]
                file_id = drive.add(meta["name"], parent, data if meta.get("mimeType") != FOLDER_MIME else None)
            times = _asked({"fields": fields}, "createdTime", "modifiedTime")
            return {"id": file_id, **{k: drive.files[file_id][k] for k in times}}

    return Handler


def _metadata(drive: DriveServer, file_id: str, params: dict) -> tuple[int, dict]:
    """`files.get`'s answer: the plain `fields` asked for of a file (its size a string, as Drive's), else 404."""
    found = drive.files.get(file_id)
    if found is None:
        return 404, {"error": {"code": 404, "message": "notFound", "errors": [{"reason": "notFound"}]}}
    item = {**found, **({"size": str(len(drive.contents[found["id"]]))} if found["id"] in drive.contents else {})}
    return 200, {k: item[k] for k in params.get("fields", "id,name,mimeType").split(",") if k in item}


def _batch_parts(content_type: str, body: bytes) -> list[tuple[str, str]] | None:
    """(Content-ID, request line) of each part of a batch's multipart/mixed body; None where it is none."""
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not message.is_multipart():
        return None
    return [(part["Content-ID"].strip("<>"), part.get_payload().lstrip().split("\n", 1)[0].strip())
            for part in message.get_payload()]


def _orphan(drive: DriveServer, meta: dict) -> bool:
    """Whether a new file's parent does not exist."""
    return (meta.get("parents") or [drive.root_id])[0] not in drive.files


def _asked(params: dict, *names: str) -> tuple[str, ...]:
    """Those of `names` the request's `fields` asks for."""
    return tuple(name for name in names if name in params.get("fields", ""))


def _split_multipart(content_type: str, body: bytes) -> tuple[dict, bytes]:
    """Return (metadata, media) from a multipart/related body; binary parts are kept byte for byte."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
    payloads = []
    for part in body.split(b"--" + boundary)[1:-1]:
        part = part.removeprefix(b"\r\n").removeprefix(b"\n")
        ends = [(part.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if part.find(sep) >= 0]
        start, sep = min(ends)
        payload = part[start + len(sep):]
        payloads.append(payload[:-2] if payload.endswith(b"\r\n") else payload[:-1])
    return json.loads(payloads[0]), payloads[1]
