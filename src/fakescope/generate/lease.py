"""A lease on an `s3://` output folder, so that two machines never pay into one `--out` at once.

The lease is one object, `<out>/.fakescope-lease.json`, made with S3's conditional write (`If-None-Match: *`):
only one run can make it. Its holder rewrites it every quarter of `seconds` (`If-Match` its own ETag) and deletes
it at the end. A run that finds one not rewritten for `seconds` by the S3 server's clock, or made by a process of
this machine that no longer runs (its holder died), takes it over, again conditionally. Other outputs are not
leased: a local one is held by its ledger's lock, and Google Drive has no conditional writes.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import os
import socket
import threading
import time

from fakescope.errors import StorageError
from fakescope.io import storage
from fakescope.io._s3 import _code, _translated_errors, split_s3_uri

LEASE_NAME = ".fakescope-lease.json"
LEASE_SECONDS = 120.0
"""How long a lease lasts unrenewed: a killed run's `--out` is free again this long after it died."""


class Lease:
    """`out`'s lease, held from `acquire` to `release` (nothing is held for an output that is not `s3://`)."""

    def __init__(self, out: str, seconds: float = LEASE_SECONDS):
        self.out, self.uri, self.seconds = out, storage.join(out, LEASE_NAME), seconds
        self.lost: str | None = None
        self._etag: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="fakescope-lease", daemon=True)

    def acquire(self) -> None:
        """Take the lease and keep it renewed.

        Raises:
            StorageError: another run holds it (one line naming that run's host and process), or S3 failed.
        """
        if storage.scheme_of(self.out) != "s3":
            return
        self.bucket, self.key = split_s3_uri(self.uri)
        self.client = storage.get_storage(self.uri).client
        self._acquire()
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease (still ours only); an S3 failure leaves it to expire."""
        if self._etag is None:
            return
        self._stop.set()
        self._thread.join()
        if self.lost is None:
            with contextlib.suppress(StorageError):
                self._put(delete=True)
        self._etag = None

    def check(self) -> None:
        """Raise `StorageError` if the lease was lost (taken over after this run could not renew it): pay for no more."""
        if self.lost:
            raise StorageError(self.lost)

    def _acquire(self) -> None:
        if self._put(action="check", IfNoneMatch="*"):  # the run's first look at `out`
            return
        try:
            with _translated_errors("check", self.out, self.bucket):
                head = self.client.head_object(Bucket=self.bucket, Key=self.key)
                body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except StorageError:  # released meanwhile: try once more to make it
            if self._put(action="check", IfNoneMatch="*"):
                return
            raise
        try:
            holder = json.loads(body)
        except ValueError:  # damaged: its age still frees it
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        now = email.utils.parsedate_to_datetime(head["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (now - head["LastModified"]).total_seconds()
        if (age >= self.seconds or _dead_here(holder)) and self._put(IfMatch=head["ETag"]):  # its holder died
            return
        raise StorageError(
            f"another run (host {holder.get('host')}, process {holder.get('pid')}) is writing into {self.out} (its lease "
            f"{LEASE_NAME} was renewed {age:.0f} s ago); wait for it to finish, or give this run another --out (a lease "
            f"not renewed for {self.seconds:.0f} s is taken over)"
        )

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.seconds / 4):
            try:
                if not self._put(IfMatch=self._etag):
                    self.lost = f"the lease on {self.uri} was taken over by another run: this run stopped paying"
                    return
                renewed = time.monotonic()
            except StorageError as exc:  # unreachable for now: once the lease may have expired, stop paying
                if time.monotonic() - renewed >= self.seconds:
                    self.lost = f"the lease on {self.uri} could not be renewed: {exc}"
                    return

    def _put(self, delete: bool = False, action: str = "write", **condition: str) -> bool:
        """Write (or delete) the lease on `condition`; False where S3 refused the precondition."""
        from botocore.exceptions import ClientError

        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "seconds": self.seconds}).encode()
        try:
            with _translated_errors(action, self.out, self.bucket):
                if delete:
                    self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=self._etag)
                else:
                    self._etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, **condition)["ETag"]
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) in ("PreconditionFailed", "412"):
                return False
            raise
        return True


def _dead_here(holder: dict) -> bool:
    """Whether the lease was made by a process of this machine that no longer runs (a killed run, resumed here)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
