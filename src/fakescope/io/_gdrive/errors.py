"""Drive, HTTP and auth errors as one-line `StorageError`s that say whether the file or the storage failed."""

from __future__ import annotations

import os
import re
import socket
import traceback
from typing import Any

from fakescope.errors import NoSuchFileError, StorageBusyError, StorageError, StorageUnavailableError
from fakescope.io._gdrive.calls import RETRIES
from fakescope.io._gdrive.client import credentials_origin
from fakescope.io.storage import DOING

_RATE_LIMITS = {"userRateLimitExceeded", "rateLimitExceeded"}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
"""A reason as Drive gives one."""
_CODE = re.compile(r"([a-z_]{1,64}):")
"""An OAuth error code (`invalid_grant`) at the start of google-auth's `RefreshError` text."""


def _network() -> str:
    """What to check when Drive does not answer: the network, and the endpoint variable where one is set."""
    return "FAKESCOPE_GDRIVE_ENDPOINT and the network" if os.environ.get("FAKESCOPE_GDRIVE_ENDPOINT") else "the network"


def _transient(exc: Any) -> bool:
    """A rate limit (429, or 403 `userRateLimitExceeded`/`rateLimitExceeded`) or a 5xx."""
    status = int(exc.resp.status)
    return status == 429 or status >= 500 or (status == 403 and _reason(exc) in _RATE_LIMITS)


def _reason(exc: Any) -> str:
    """The `reason` of Drive's first error detail (`notFound`, `rateLimitExceeded`...), else '', also for one that is
    no plain word: a proxy's text, which may echo the request's access token."""
    details = getattr(exc, "error_details", None)
    if isinstance(details, list) and details and isinstance(details[0], dict):
        reason = str(details[0].get("reason", ""))
        return reason if _WORD.fullmatch(reason) else ""
    return ""


def _connecting(exc: BaseException) -> bool:
    """Whether `exc` came from opening the connection (httplib2's `connect`, its TLS handshake included): a timeout there
    is no answer at all, one after it a server too slow to answer (each took the client's whole timeout, 60 s)."""
    return any(frame.f_code.co_name == "connect" for frame, _ in traceback.walk_tb(exc.__traceback__))


class translated_errors:
    """Turn Drive/HTTP/auth errors into a one-line `StorageError`, never echoing tokens."""

    def __init__(self, action: str, uri: str):
        self.action, self.uri = action, uri

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, (StorageError, GeneratorExit)):
            return False
        from google.auth.exceptions import GoogleAuthError, TransportError
        from googleapiclient.errors import HttpError
        from httplib2 import ServerNotFoundError

        error = StorageError  # StorageUnavailableError where the storage, not the file, failed
        source = None  # the URI, where this file's own error could become its record: the message leaves it out
        doing = DOING[self.action]
        if isinstance(exc, HttpError) and _transient(exc):
            message = (f"Google Drive busy: it still answered HTTP {exc.resp.status} ({_reason(exc) or 'busy'}) after {RETRIES} "
                       f"retries while {doing} {self.uri}; try again later")
            error = StorageBusyError
        elif isinstance(exc, ConnectionResetError):  # the client retried it as it retries a busy answer
            message = f"Google Drive dropped the connection after {RETRIES} retries while {doing} {self.uri}; try again later"
            error = StorageBusyError
        elif isinstance(exc, TimeoutError) and not _connecting(exc):  # retried as the client retries a busy answer
            message = f"Google Drive did not answer in time after {RETRIES} retries while {doing} {self.uri}; try again later"
            error = StorageBusyError
        elif isinstance(exc, HttpError):
            status = int(exc.resp.status)
            if status == 404:
                message, source = "no such file or folder", self.uri
                if self.action == "read":  # the file was deleted since its path was looked up
                    error = NoSuchFileError
            elif status in (401, 403):
                message = f"access denied to {self.action} (check the Google credentials: {credentials_origin()})"
                source = self.uri
            else:
                message, source = f"cannot {self.action}: Drive returned HTTP {status}", self.uri
        elif isinstance(exc, TransportError):
            message = f"Google Drive or its token server unreachable while {doing} {self.uri}; check {_network()}"
            error = StorageUnavailableError
        elif isinstance(exc, GoogleAuthError):  # a token that could not be renewed (expired, revoked): every file fails
            code = _CODE.match(str(exc.args[0]) if exc.args else "")
            message = (f"Google refused to renew the token of {credentials_origin()}"
                       f"{f' ({code.group(1)})' if code else ''} while {doing} {self.uri}: it is expired or revoked; "
                       "make a new one")
            error = StorageUnavailableError
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
