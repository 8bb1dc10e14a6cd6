"""A Hugging Face Hub on loopback: the endpoints `HfApi.create_repo/create_commit` and `snapshot_download` call.

Files are committed inline (every upload mode is `regular`) and each commit gets a new sha; a commit
that writes the file named by `reject` is refused with 422, as the Hub refuses a commit it finds invalid.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HubState:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, list[str]] = {}
        self.reject: str | None = None
        self.tokens: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    endpoint: str

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode())

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.state.tokens.append(self.headers.get("Authorization", ""))
        body = self._body()
        if self.path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            self.state.repos.setdefault(repo, {})
            self.state.commits.setdefault(repo, [])
            return self._json(200, {"url": f"{self.endpoint}/{repo}"})
        if self.path == "/api/validate-yaml":
            return self._json(200, {})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/preupload/[^/]+", self.path):
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/commit/[^/?]+", self.path):
            repo = match.group(1)
            files = {item["value"]["path"]: base64.b64decode(item["value"]["content"])
                     for item in map(json.loads, body.splitlines()) if item["key"] == "file"}
            if self.state.reject in files:
                return self._json(422, {"error": f"{self.state.reject} is invalid"})
            self.state.repos[repo].update(files)
            sha = hashlib.sha1(json.dumps(sorted(self.state.repos[repo])).encode() + body).hexdigest()
            self.state.commits[repo].append(sha)
            return self._json(200, {"commitUrl": f"{self.endpoint}/{repo}/commit/{sha}", "commitOid": sha})
        self._json(404, {"error": f"no route {self.path}"})

    def do_GET(self):  # noqa: N802
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/?]+).*", self.path):
            repo, revision = match.groups()
            if not self.state.commits.get(repo):  # the Hub's codes, which huggingface_hub turns into its error classes
                return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            if revision not in ("main", *self.state.commits[repo]):
                return self._send(404, b'{"error": "Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"})
            files = [{"rfilename": name} for name in sorted(self.state.repos[repo])]
            return self._json(200, {"id": repo, "sha": self.state.commits[repo][-1], "siblings": files, "private": False})
        if match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/[^/?]+(\?.*)?", self.path):
            files = self.state.repos.get(match.group(1), {})
            return self._json(200, [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                                    for name, data in sorted(files.items())])
        if match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", self.path):
            repo, _, name = match.groups()
            data = self.state.repos.get(repo, {}).get(name)
            if data is None:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
            return self._send(200, data, {"X-Repo-Commit": self.state.commits[repo][-1],
                                          "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, "application/octet-stream")
        self._json(404, {"error": f"no route {self.path}"})

    do_HEAD = do_GET


def start_hub() -> tuple[ThreadingHTTPServer, HubState, str]:
    """Serve a fresh hub on a free loopback port; returns (server, state, endpoint). Call server.shutdown() after."""
    state = HubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = type("Handler", (_Handler,), {"state": state, "endpoint": endpoint})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state, endpoint
