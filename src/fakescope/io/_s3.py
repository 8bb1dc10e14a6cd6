"""S3 backend (boto3): AWS or any S3-compatible server named by `AWS_ENDPOINT_URL(_S3)`.

Throttling (503 SlowDown), 5xx answers and dropped connections are retried by botocore (`standard`
mode unless `AWS_RETRY_MODE` or the profile's `retry_mode` names another), `MAX_ATTEMPTS` attempts in
all unless `AWS_MAX_ATTEMPTS` or the profile's `max_attempts` sets the number; a connection that breaks
while an object's body is read fetches it again (`BODY_ATTEMPTS`). One that outlasts them raises
`StorageBusyError` (a `StorageUnavailableError`: the storage, not the file, failed; a scan records it as transient).
"""

from __future__ import annotations

import datetime
import email.utils
import io
import os
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from fakescope.errors import NoSuchFileError, NoSuchFolderError, StorageBusyError, StorageError, StorageUnavailableError
from fakescope.io.storage import DOING, HEAD_BYTES, normalise_suffixes

_REFUSED_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", *_REFUSED_CREDENTIALS}
_MISSING_KEY = {"NoSuchKey", "404", "NotFound"}
_BUSY = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
         "TooManyRequestsException", "RequestThrottled", "ServiceUnavailable", "InternalError", "RequestTimeout"}

MAX_ATTEMPTS = 6
"""Attempts per request (the first and 5 retries, waits of up to 1, 2, 4, 8, 16 s) when the AWS configuration sets none."""
BODY_ATTEMPTS = 3
"""Times an object is fetched again when its connection breaks while its body is read."""
POOL_CONNECTIONS = 64
"""Connections kept open per client: decoding threads (`--workers`) beyond botocore's 10 would each open a new one."""
MULTIPART_BYTES = 64 * 2**20
"""A larger write is uploaded in parts of this size (one PUT takes at most 5 GiB; a part is retried alone)."""


class Head(NamedTuple):
    """An object's ETag and last change, and the S3 server's clock when it answered (to age the object by)."""

    etag: str
    modified: datetime.datetime
    server_now: datetime.datetime


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into `(bucket, key)`; the key may be empty."""
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri!r}; expected s3://bucket/prefix")
    return bucket, key


def make_client(**kwargs: Any) -> Any:
    """Build a boto3 S3 client from the environment and the standard AWS configuration."""
    import boto3
    import botocore.session
    from botocore.config import Config

    core = botocore.session.Session()  # reads the environment and the profile
    retries = None  # the configuration's own attempts and mode
    if core.get_config_variable("max_attempts") is None:
        retries = {"total_max_attempts": MAX_ATTEMPTS, "mode": core.get_config_variable("retry_mode")}
    variable = _endpoint_variable()
    endpoint = os.environ.get(variable)
    if endpoint and not endpoint.lower().startswith(("http://", "https://")):  # botocore: a traceback
        raise StorageUnavailableError(f"the S3 endpoint in {variable} must be a URL such as http://host:port "
                                      "(it has no http:// or https://)")
    config = Config(
        retries=retries,
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=POOL_CONNECTIONS,
    )
    kwargs.setdefault("endpoint_url", endpoint)
    return boto3.session.Session(botocore_session=core).client("s3", config=config, **kwargs)


class S3Storage:
    """Objects in S3 buckets; `page_size` is the number of keys asked for per listing request.

    Args:
        client: A boto3 S3 client to reuse; built from the environment when omitted (then once
            per process: a forked decoding process must not share its parent's connections).
        page_size: Keys per `ListObjectsV2` page (at most 1000).
    """

    def __init__(self, client: Any = None, *, page_size: int = 1000):
        self.page_size = page_size
        self._given = client
        self._built: tuple[int, Any] | None = None  # (process id, client)

    @property
    def client(self) -> Any:
        if self._given is not None:
            return self._given
        built = self._built
        if built is None or built[0] != os.getpid():
            built = self._built = (os.getpid(), make_client())
        return built[1]

    def read_bytes(self, uri: str, *, check: Callable[[bytes], None] | None = None) -> bytes:
        bucket, key = split_s3_uri(uri)
        from botocore.exceptions import HTTPClientError, IncompleteReadError

        with _translated_errors("read", uri, bucket):
            for attempt in range(1, BODY_ATTEMPTS + 1):  # botocore retries the request, not reading its body
                body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
                try:
                    head = body.read(HEAD_BYTES)
                    if check:
                        _checked(body, head, check)
                    return head + body.read()
                except (HTTPClientError, IncompleteReadError):
                    if attempt == BODY_ATTEMPTS:
                        raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3_uri(uri)
        if not key or key.endswith("/"):
            raise StorageError("names a bucket or folder, not a file to write", source=uri)
        with _translated_errors("write", uri, bucket):
            if len(data) <= MULTIPART_BYTES:
                self.client.put_object(Bucket=bucket, Key=key, Body=data)
                return
            from boto3.s3.transfer import TransferConfig

            parts = TransferConfig(multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES)
            self.client.upload_fileobj(io.BytesIO(data), bucket, key, Config=parts)

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3_uri(uri)
        from botocore.exceptions import ClientError

        if key and not key.endswith("/"):
            try:
                with _translated_errors("check", uri, bucket):
                    self.client.head_object(Bucket=bucket, Key=key)
                return True
            except StorageError as exc:
                if not isinstance(exc.__cause__, ClientError) or _code(exc.__cause__) not in _MISSING_KEY:
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            with _translated_errors("list", uri, bucket):
                page = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) == "NoSuchBucket":
                return False
            raise
        return page.get("KeyCount", 0) > 0

    def head(self, uri: str) -> Head:
        """The object's `Head`; `StorageError("no such file")` where there is none."""
        bucket, key = split_s3_uri(uri)
        with _translated_errors("check", uri, bucket):
            answer = self.client.head_object(Bucket=bucket, Key=key)
        server_now = email.utils.parsedate_to_datetime(answer["ResponseMetadata"]["HTTPHeaders"]["date"])
        return Head(answer["ETag"], answer["LastModified"], server_now)

    def size(self, uri: str) -> int:
        bucket, key = split_s3_uri(uri)
        with _translated_errors("check", uri, bucket):
            return self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]

    def put_if_absent(self, uri: str, data: bytes) -> str | None:
        """Write a small object only where none exists (`If-None-Match: *`): its ETag, or None where one exists."""
        return self._on_condition("write", uri, lambda bucket, key: self.client.put_object(
            Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")["ETag"])

    def put_if_match(self, uri: str, data: bytes, etag: str) -> str | None:
        """Replace the object only while its ETag is `etag`: the new ETag, or None where it changed or is gone."""
        return self._on_condition("write", uri, lambda bucket, key: self.client.put_object(
            Bucket=bucket, Key=key, Body=data, IfMatch=etag)["ETag"])

    def remove(self, uri: str) -> None:
        bucket, key = split_s3_uri(uri)
        with _translated_errors("write", uri, bucket):
            self.client.delete_object(Bucket=bucket, Key=key)  # S3 answers a missing key with success

    def delete_if_match(self, uri: str, etag: str) -> bool:
        """Delete the object only while its ETag is `etag`; False where it changed."""
        return self._on_condition("write", uri, lambda bucket, key: self.client.delete_object(
            Bucket=bucket, Key=key, IfMatch=etag)) is not None

    def _on_condition(self, action: str, uri: str, call: Callable[[str, str], Any]) -> Any:
        """`call(bucket, key)`'s answer, or None where S3 refused its precondition (412)."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            with _translated_errors(action, uri, bucket):
                return call(bucket, key)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in ("PreconditionFailed", "412"):
                return None
            raise

    def list_files(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[str]:
        return (listed for listed, _ in self.list_sizes(uri, suffixes=suffixes, recursive=recursive))

    def list_sizes(
        self, uri: str, *, suffixes: tuple[str, ...] | None = None, recursive: bool = True
    ) -> Iterator[tuple[str, int | None]]:
        bucket, key = split_s3_uri(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        return self._pages(uri, bucket, prefix, normalise_suffixes(suffixes), recursive)

    def _pages(
        self, uri: str, bucket: str, prefix: str, suffixes: tuple[str, ...] | None, recursive: bool
    ) -> Iterator[tuple[str, int | None]]:
        """Each object's URI and size (`ListObjectsV2`'s `Size`), a page at a time."""
        request = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": min(self.page_size, 1000)}
        if not recursive:
            request["Delimiter"] = "/"
        while True:
            with _translated_errors("list", uri, bucket):
                page = self.client.list_objects_v2(**request)
            for item in sorted(page.get("Contents", ()), key=lambda item: item["Key"]):
                key = item["Key"]
                if key.endswith("/"):
                    continue
                if suffixes is None or key.lower().endswith(suffixes):
                    yield f"s3://{bucket}/{key}", item.get("Size")
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]


def _checked(body: Any, head: bytes, check: Callable[[bytes], None]) -> None:
    """`check(head)`; where it refuses the object, the connection is closed with the rest of the body unread."""
    try:
        check(head)
    except BaseException:
        body.close()
        raise


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _endpoint_variable() -> str:
    return "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"


def _unreachable(doing: str, uri: str) -> str:
    """Why S3 did not answer, in one line: the endpoint's host:port (never a user:password in it) and what to check."""
    variable = _endpoint_variable()
    host = urllib.parse.urlsplit(os.environ.get(variable, "")).netloc.rpartition("@")[2]
    where, check = (f"the endpoint {host}", f"{variable} and the network") if host else ("AWS's S3 endpoint", "the network")
    return f"S3 unreachable: no answer from {where} while {doing} {uri}; check {check}"


def _no_bucket(bucket: str) -> str:
    """Why a bucket was not found, naming the server asked (never a user:password in it) and what to check."""
    variable = _endpoint_variable()
    host = urllib.parse.urlsplit(os.environ.get(variable, "")).netloc.rpartition("@")[2]
    where = f"on the endpoint {host} ({variable})" if host else f"on AWS ({variable} unset)"
    return f"s3 bucket {bucket!r} does not exist {where}; check the bucket name in the URI, or the endpoint"


def _unusable_setup() -> tuple[type, ...]:
    from botocore import exceptions

    names = ("ConfigParseError", "CredentialRetrievalError", "InvalidConfigError", "NoAuthTokenError",
             "SSOError", "TokenRetrievalError", "UnknownCredentialError", "RefreshWithMFAUnsupportedError")
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


class _translated_errors:
    """Turn botocore errors into a one-line `StorageError` (kept as `__cause__`, never showing keys)."""

    def __init__(self, action: str, uri: str, bucket: str):
        self.action, self.uri, self.bucket = action, uri, bucket

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, StorageError):
            return False
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            IncompleteReadError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        error = StorageError  # StorageUnavailableError where the storage, not the file, failed
        source = None  # the URI, where this file's own error could become its record: the message leaves it out
        doing = DOING[self.action]
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code == "NoSuchBucket":
                message = _no_bucket(self.bucket)
                if self.action == "list":  # a missing folder, told apart (an empty prefix lists nothing)
                    error = NoSuchFolderError
            elif code in _REFUSED_CREDENTIALS:  # every other file would be refused too, not just this one
                message = (f"S3 refused the AWS credentials ({code}) while {doing} {self.uri}; check AWS_ACCESS_KEY_ID "
                           "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a session token may have expired)")
                error = StorageUnavailableError
            elif code in _DENIED:
                message, source = f"access denied to {self.action} (check the AWS credentials)", self.uri
            elif code in _MISSING_KEY:
                raise NoSuchFileError("no such file", source=self.uri) from exc
            elif code in _BUSY or _status(exc) == 429 or _status(exc) >= 500:
                message = (f"S3 busy: it still answered {code or _status(exc)} after retrying while {doing} {self.uri}; "
                           "try again later")
                error = StorageBusyError
            else:
                message, source = f"cannot {self.action}: S3 error {code or 'unknown'}", self.uri
        elif isinstance(exc, NoCredentialsError):
            message = (f"no AWS credentials for S3 while {doing} {self.uri}; set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
            error = StorageUnavailableError
        elif isinstance(exc, (ProfileNotFound, PartialCredentialsError)):  # they name a profile or variable, no value
            message = f"unusable AWS credentials for S3 while {doing} {self.uri}: {exc}"
            error = StorageUnavailableError
        elif isinstance(exc, _unusable_setup()):  # their messages may quote a credential process's output: not shown
            message = (f"unusable AWS configuration or credentials for S3 ({type(exc).__name__}) while {doing} {self.uri}; "
                       "check AWS_PROFILE and the AWS config and credentials files")
            error = StorageUnavailableError
        elif isinstance(exc, BotoConnectionError):  # also a connect timeout
            message = _unreachable(doing, self.uri)
            error = StorageUnavailableError
        elif isinstance(exc, (HTTPClientError, IncompleteReadError)):  # a read timeout, a connection dropped mid-answer
            message = (f"the connection to S3 broke ({type(exc).__name__}) while {doing} {self.uri}; "
                       "check the network and try again")
            error = StorageBusyError
        elif isinstance(exc, BotoCoreError):
            message, source = f"cannot {self.action}: {type(exc).__name__}", self.uri
        else:
            return False
        raise error(message, source=source) from exc
