"""The Drive v3 client: credentials from the environment, and one client per thread and process."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.parse
from typing import Any

from fakescope.errors import StorageUnavailableError

SCOPES = ["https://www.googleapis.com/auth/drive"]
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


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


def credentials_origin() -> str:
    """Where the credentials come from, for an error: the variable and the file it names (never its value otherwise)."""
    for variable in ("GOOGLE_APPLICATION_CREDENTIALS", "FAKESCOPE_GDRIVE_TOKEN"):
        if value := os.environ.get(variable):
            return f"{value} (named by {variable})" if os.path.isfile(value) else variable
    return "Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS and FAKESCOPE_GDRIVE_TOKEN are unset)"


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


class DriveClient:
    """Holds the Drive client: the one given, else one built per thread and process from the environment."""

    def __init__(self, service: Any = None):
        self._service = service
        self._credentials: Any = None
        self._lock = threading.Lock()
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
