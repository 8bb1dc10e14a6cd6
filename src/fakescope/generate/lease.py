"""A lease on an `s3://` output folder, so that two machines never pay into one `--out` at once.

The lease is one object, `<out>/.fakescope-lease.json`, made with S3's conditional write (`If-None-Match: *`):
only one run can make it. Its holder rewrites it every quarter of `seconds` (`If-Match` its own ETag) and deletes
it at the end. A run that finds one not rewritten for `seconds` by the S3 server's clock, or made by a process of
this machine that no longer runs (its holder died), takes it over, again conditionally. Other outputs are not
leased: a local one is held by its ledger's lock, and Google Drive has no conditional writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time

from fakescope.errors import StorageError
from fakescope.io import storage

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
        self.store = storage.get_storage(self.uri)
        self._acquire()
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease (still ours only); an S3 failure leaves it to expire.

        Safe to call whenever: before `acquire`, or after one a Ctrl-C cut short (nothing held, or not yet renewed).
        """
        if self._etag is None:
            return
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        if self.lost is None:
            with contextlib.suppress(StorageError):
                self.store.delete_if_match(self.uri, self._etag)
        self._etag = None

    def check(self) -> None:
        """Raise `StorageError` if the lease was lost (taken over after this run could not renew it): pay for no more."""
        if self.lost:
            raise StorageError(self.lost)

    def _acquire(self) -> None:
        if self._put():  # the run's first look at `out`
            return
        try:
            head = self.store.head(self.uri)
            body = self.store.read_bytes(self.uri)
        except StorageError:  # released meanwhile: try once more to make it
            if self._put():
                return
            raise
        try:
            holder = json.loads(body)
        except ValueError:  # damaged: its age still frees it
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        age = (head.server_now - head.modified).total_seconds()
        if (age >= self.seconds or _dead_here(holder)) and self._put(head.etag):  # its holder died
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
                if not self._put(self._etag):
                    self.lost = f"the lease on {self.uri} was taken over by another run: this run stopped paying"
                    return
                renewed = time.monotonic()
            except StorageError as exc:  # unreachable for now: once the lease may have expired, stop paying
                if time.monotonic() - renewed >= self.seconds:
                    self.lost = f"the lease on {self.uri} could not be renewed: {exc}"
                    return

    def _put(self, etag: str | None = None) -> bool:
        """Make the lease (or, given its `etag`, rewrite it); False where S3 refused the precondition."""
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "seconds": self.seconds}).encode()
        if etag is None:
            written = self.store.put_if_absent(self.uri, body)
        else:
            written = self.store.put_if_match(self.uri, body, etag)
        if written is None:
            return False
        self._etag = written
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
