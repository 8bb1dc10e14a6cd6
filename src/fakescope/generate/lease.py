"""A lease on an `s3://` or `gdrive://` output folder, so that two machines never pay into one `--out` at once.

On S3 the lease is one object, `<out>/.fakescope-lease.json`, made with S3's conditional write (`If-None-Match: *`):
only one run can make it. Its holder rewrites it every quarter of `seconds` (`If-Match` its own ETag) and deletes
it at the end. A run that finds one not rewritten for `seconds` by the S3 server's clock, or made by a process of
this machine that no longer runs (its holder died), takes it over, again conditionally.

Google Drive has no conditional writes but keeps several files of one name in a folder: each run makes its own
`.fakescope-lease.json` there, then lists them all, oldest first. The oldest live one holds the lease; a run whose
own is not it deletes its own and stops. One not rewritten for `seconds` by Drive's clock, or made by a dead process
of this machine, is deleted on the way. The holder rewrites its own every quarter of `seconds` and lists them again:
where its own is gone, or an older live one shows up, it stops paying. This is as safe as Drive's listing is
consistent (a file made a moment ago that a listing does not show yet could let two runs in).

A local `--out` is not leased: it is held by its ledger's lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time

from fakescope.errors import StorageError, StorageUnavailableError
from fakescope.io import storage
from fakescope.io.redact import hide_secrets

LEASE_NAME = ".fakescope-lease.json"
LEASE_SECONDS = 120.0
"""How long a lease lasts unrenewed: a killed run's `--out` is free again this long after it died."""


class Lease:
    """`out`'s lease, held from `acquire` to `release` (nothing is held for a local output)."""

    def __init__(self, out: str, seconds: float = LEASE_SECONDS):
        self.out, self.uri, self.seconds = out, storage.join(out, LEASE_NAME), seconds
        self.lost: str | None = None
        self._etag: str | None = None
        self._id: str | None = None
        """The Drive file id of this run's own lease file."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="fakescope-lease", daemon=True)

    def acquire(self) -> None:
        """Take the lease and keep it renewed.

        Raises:
            StorageError: another run holds it (one line naming that run's host and process), or the storage failed.
        """
        scheme = storage.scheme_of(self.out)
        if scheme not in ("s3", "gdrive"):
            return
        self.store = storage.get_storage(self.uri)
        if scheme == "s3":
            self._acquire_s3()
        else:
            self._acquire_drive()
        self._thread.start()

    def release(self) -> None:
        """Stop renewing and delete the lease (on S3 while still ours; on Drive this run's own file); a storage failure
        leaves it to expire.

        Safe to call whenever: before `acquire`, or after one a Ctrl-C cut short (nothing held, or not yet renewed).
        """
        if self._etag is None and self._id is None:
            return
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
        with contextlib.suppress(StorageError):
            if self._id is not None:  # this run's own file, held or not
                self.store.delete_id(self._id, self.uri)
            elif self.lost is None:
                self.store.delete_if_match(self.uri, self._etag)
        self._etag = self._id = None

    def check(self) -> None:
        """Raise `StorageError` if the lease was lost (taken over after this run could not renew it): pay for no more."""
        if self.lost:
            raise StorageError(self.lost)

    def _acquire_s3(self) -> None:
        """Make the lease object, or take over one whose holder died; else raise naming its holder."""
        if self._put():  # the run's first look at `out`
            return
        try:
            head = self.store.head(self.uri)
            body = self.store.read_bytes(self.uri)
        except StorageError:  # released meanwhile: try once more to make it
            if self._put():
                return
            raise
        holder, age = _holder(body), (head.server_now - head.modified).total_seconds()
        if self._dead(holder, age) and self._put(head.etag):
            return
        raise self._held(holder, age)

    def _dead(self, holder: dict, age: float) -> bool:
        """Whether a lease `age` seconds old was let lapse, or made by a process of this machine that no longer runs."""
        return age >= self.seconds or _dead_here(holder)

    def _held(self, holder: dict, age: float) -> StorageError:
        return StorageError(
            f"another run (host {holder.get('host')}, process {holder.get('pid')}) is writing into {self.out} (its lease "
            f"{LEASE_NAME} was renewed {age:.0f} s ago); wait for it to finish, or give this run another --out (a lease "
            f"not renewed for {self.seconds:.0f} s is taken over)"
        )

    def _acquire_drive(self) -> None:
        """Make this run's own lease file; delete it and raise naming the holder where an older live one is listed."""
        self._id, now = self.store.create_twin(self.uri, self._body())
        try:
            older = self._older_live(now)
        except BaseException:
            self.release()
            raise
        if older is not None:
            self.release()
            raise self._held(*older)

    def _older_live(self, now: datetime.datetime) -> tuple[dict, float] | None:
        """(holder, age) of the oldest live Drive lease file made before this run's own, deleting dead ones on the way;
        None where there is none. Raises `StorageError` where this run's own is not listed (deleted as dead)."""
        for twin in self.store.twins(self.uri):
            if twin["id"] == self._id:
                return None
            age = (now - twin["modifiedTime"]).total_seconds()
            try:
                body = self.store.read_id(twin["id"], self.uri)
            except StorageUnavailableError:
                raise
            except StorageError:  # deleted meanwhile: its age still frees it
                body = b""
            if not self._dead(holder := _holder(body), age):
                return holder, age
            self.store.delete_id(twin["id"], self.uri)  # its holder died
        raise StorageError(f"the lease file this run made, {self.uri}, is gone (taken for a dead run's): try again")

    def _renew(self) -> None:
        renewed = time.monotonic()
        while not self._stop.wait(self.seconds / 4):
            try:
                if not self._renewed():
                    self.lost = f"the lease on {self.uri} was taken over by another run: this run stopped paying"
                    return
                renewed = time.monotonic()
            except StorageError as exc:  # unreachable for now: once the lease may have expired, stop paying
                if time.monotonic() - renewed >= self.seconds:
                    self.lost = f"the lease on {self.uri} could not be renewed: {hide_secrets(str(exc))}"
                    return
            except Exception as exc:  # noqa: BLE001 - anything else ended the renewal: stop paying, never pay unleased
                self.lost = f"the lease on {self.uri} could not be renewed: {type(exc).__name__}: {hide_secrets(str(exc))}"
                return

    def _renewed(self) -> bool:
        """Rewrite this run's lease: False where another run has it now."""
        if self._id is None:
            return self._put(self._etag)
        now = self.store.rewrite_id(self._id, self.uri, self._body())
        try:
            return now is not None and self._older_live(now) is None
        except StorageUnavailableError:  # an outage is retried
            raise
        except StorageError:  # its own file gone is a loss
            return False

    def _body(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "seconds": self.seconds}).encode()

    def _put(self, etag: str | None = None) -> bool:
        """Make the lease (or, given its `etag`, rewrite it); False where S3 refused the precondition."""
        body = self._body()
        if etag is None:
            written = self.store.put_if_absent(self.uri, body)
        else:
            written = self.store.put_if_match(self.uri, body, etag)
        if written is None:
            return False
        self._etag = written
        return True


def _holder(body: bytes) -> dict:
    """Who a lease file names (host, pid); {} where it is damaged (its age still frees it)."""
    try:
        holder = json.loads(body)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


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
