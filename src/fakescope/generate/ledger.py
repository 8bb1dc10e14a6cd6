"""A SQLite job ledger that makes paid generation runs resumable and idempotent.

Each job is one billable image: key = (input sha256, mode, model, params hash, index). A job
moves `pending -> running -> done` (or `failed`). It is marked `running`, with the price it is sent at, *before*
its request is sent; the response bytes, once they decode as an image, are written to a spool file
(fsynced) before anything else, and the output URI is recorded with `done` afterwards. On
resume, `done` jobs are skipped while the output folder holds their output, whole (the runner lists it once and
reads each local output's first and last bytes, a remote one's size from that listing); one deleted, damaged or left in
another folder
since is made, and paid for, again.

Crash between the server's response and the ledger write, or an output that could not be
written (the job is then `failed`, its cost counted): if the spool file exists, the job is finished
from it without a new request (nothing lost, nothing paid twice), its cost counted at that price. Without a spool
file the crash hit while the request was in flight (or its answer timed out or broke off: a lost answer), and whether
the server billed it is unknowable: the attempt counts as maybe billed, at the price it was sent at, in `spent` and in
every budget. At-least-once (the runner's default) sends it again, moving the lost attempt's price to `lost`, so it may
pay twice for at most `concurrency` images per crash and both attempts count; at-most-once leaves it `running` and
skips it, so it may lose at most that many paid images but never pays twice.

The ledger is the machine's record of billing (spend, spooled answers, requests in flight); the output
folder is the record of what was made: `run_openai` takes a job whose image `--out` already holds as done
without a request, so a rerun on another machine (a fresh ledger) pays nothing for it either.

One run at a time: a run opens its ledger with `claim=True`, an exclusive lock on `<path>.lock`
until it closes, so a second run on the same ledger stops at once instead of paying again for
the jobs the first has in flight.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from fakescope.errors import StorageError
from fakescope.io.inputs import path_text

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
LEDGER_FORMAT = 1
"""The ledger layout this fakescope writes and reads, as SQLite's `user_version`: 0 (a ledger made before it) becomes 1
once its missing columns are added; a newer one (columns an older reader would leave out of spend) is refused."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    source_sha256 TEXT NOT NULL,
    mode TEXT NOT NULL,
    model TEXT NOT NULL,
    params_hash TEXT NOT NULL,
    idx INTEGER NOT NULL,
    state TEXT NOT NULL,
    output TEXT,
    cost REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    row TEXT,
    updated REAL NOT NULL,
    usage TEXT,
    price REAL,
    params TEXT,
    lost REAL NOT NULL DEFAULT 0
)
"""


def job_key(source_sha256: str, mode: str, model: str, params_hash: str, index: int) -> str:
    """The identity of one billable image."""
    return f"{source_sha256}:{mode}:{model}:{params_hash}:{index}"


def spool_folder(ledger: Path) -> Path:
    """Where the ledger at `ledger` parks its jobs' response bytes until each is `done`."""
    return ledger.with_name(ledger.name + ".spool")


def spool_file(ledger: Path, key: str) -> Path:
    """Where the ledger at `ledger` parks the response bytes of job `key` (read without opening it)."""
    return spool_folder(ledger) / (key.replace(":", "_") + ".bin")


@dataclass(frozen=True)
class JobRecord:
    """One ledger row."""

    key: str
    source: str
    source_sha256: str
    mode: str
    model: str
    params_hash: str
    index: int
    state: str
    output: str | None
    cost: float
    attempts: int
    error: str | None
    row: str | None
    """The manifest row of a done job, as JSON."""
    usage: str | None = None
    """The token usage the API reported for the job's image, as JSON (GPT image models)."""
    price: float | None = None
    """The USD per image its cost was counted at, or its request was sent at while in flight; None where no price was
    known (0 is an explicit one: free)."""
    params: str | None = None
    """The parameters of the run that registered it (`OpenAIImagesConfig.params()`), as JSON; None in older ledgers."""
    lost: float = 0.0
    """USD of its earlier attempts whose answer never came (a crash, a timeout, a broken connection), resent since:
    they may have been billed. `cost` holds the billed ones only; 0 in older ledgers."""

    @property
    def paid(self) -> bool:
        """Whether its image was (or may have been) paid for: done, in flight, billed for an image that was lost, or
        sent by an attempt whose answer was lost."""
        return self.state in (DONE, RUNNING) or self.cost > 0 or self.lost > 0

    def maybe_billed(self, price: float) -> float:
        """USD its attempts whose answer never came may have cost: `lost`, and while `running` the attempt in flight at
        the price it was sent at (`price` where the ledger has none: an older version's)."""
        in_flight = (self.price if self.price is not None else price) if self.state == RUNNING else 0.0
        return self.lost + in_flight


class Ledger:
    """Thread-safe job ledger in one SQLite file (WAL journal); spool files live in `<path>.spool/`.

    With `claim=True` the ledger is held for one run until `close` (`StorageError` if another run holds it).

    Example:
        >>> ledger = Ledger("/tmp/fakescope-demo.sqlite")  # doctest: +SKIP
        >>> ledger.get("abc:variation:dall-e-2:0f:0")       # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, claim: bool = False):
        self.path = Path(path)
        self.spool_dir = spool_folder(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open job ledger {self.path}: {exc}") from exc
        try:
            _prepare(self._db)
            self.spool_dir.mkdir(exist_ok=True)  # once the ledger opened: one that cannot leaves nothing beside it
        except (OSError, sqlite3.Error) as exc:
            self._db.close()  # a file that is no SQLite database is not held open
            raise StorageError(f"cannot open job ledger {self.path}: {exc}") from exc
        self._lock = threading.Lock()
        self._claim = None
        if claim:
            try:
                self._claim = _hold(self.path)
            except StorageError:
                self._db.close()
                raise

    def close(self) -> None:
        """Close the database and let go of the run's claim."""
        self._db.close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> JobRecord | None:
        """The row for `key`, or None if the job was never seen."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE key = ?", (key,)).fetchone()
        return JobRecord(*row) if row else None

    def add(self, key: str, source: str, source_sha256: str, mode: str, model: str, params_hash: str, index: int,
            params: dict | None = None) -> None:
        """Register a job as `pending` unless it is already known (a non-UTF-8 `source` is kept escaped), with the
        `params` its key hashes."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO jobs (key, source, source_sha256, mode, model, params_hash, idx, state, updated,"
                " params) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, path_text(source), source_sha256, mode, model, params_hash, index, PENDING, time.time(),
                 json.dumps(params, sort_keys=True) if params is not None else None),
            )

    def mark_running(self, key: str, price: float | None = None) -> None:
        """Record that a request is about to be sent (committed before it goes out), at `price` per image (kept unless
        None), so a later run that finds its answer spooled counts it at the price it was sent at. An earlier attempt
        still `running` lost its answer: its price moves to `lost` (maybe billed)."""
        self._update(key, f"state = ?, attempts = attempts + 1, error = NULL, {_LOSE}, price = COALESCE(?, price)",
                     (RUNNING, price, price))

    def record_usage(self, key: str, usage: dict | None) -> None:
        """Keep the token usage of a job's answer (written right after its spool file, so a recovery has it)."""
        if usage is not None:
            self._update(key, "usage = ?", (json.dumps(usage, sort_keys=True),))

    def mark_done(self, key: str, output: str, cost: float, row: dict, price: float | None = None, *,
                  answered: bool = True) -> None:
        """Record the output URI and manifest row, add the image's estimated cost (counted at `price` per image, kept
        unless None), then drop the spool file. `answered=False`: the image was not its request's answer (found made
        elsewhere), so an attempt still `running` lost its answer and moves to `lost`."""
        lose = f"{_LOSE}, " if not answered else ""
        self._update(key, f"state = ?, output = ?, cost = cost + ?, row = ?, error = NULL, {lose}price = COALESCE(?, price)",
                     (DONE, output, cost, json.dumps(row), *((price,) if not answered else ()), price))
        self.spool_path(key).unlink(missing_ok=True)

    def mark_failed(self, key: str, error: str, cost: float = 0.0, price: float | None = None) -> None:
        """Record a failure, adding `cost` (at `price`, kept unless None) where the API billed an image that was lost;
        failed jobs are tried again."""
        self._update(key, "state = ?, error = ?, cost = cost + ?, price = COALESCE(?, price)",
                     (FAILED, error[:500], cost, price))

    def jobs(self, state: str | None = None) -> Iterator[JobRecord]:
        """All rows, optionally only those in one state, in insertion order."""
        query = f"SELECT {_COLUMNS} FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY rowid"
        with self._lock:
            rows = self._db.execute(query, (state,) if state else ()).fetchall()
        return (JobRecord(*row) for row in rows)

    def spent(self) -> float:
        """Estimated cost (USD) of every image billed (done or lost) or maybe billed (`maybe_billed`, at the price each
        was sent at; 0 where none is recorded), over all the runs that used this ledger."""
        return sum(record.cost + record.maybe_billed(0.0) for record in self.jobs())

    def spool_path(self, key: str) -> Path:
        """Where the response bytes of job `key` are parked until the job is `done`."""
        return spool_file(self.path, key)

    def write_spool(self, key: str, data: bytes) -> None:
        """Durably park a response (write, fsync, rename) before any other bookkeeping."""
        final = self.spool_path(key)
        temp = final.with_suffix(".part")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, final)

    def read_spool(self, key: str) -> bytes | None:
        """The parked response of job `key`, or None."""
        path = self.spool_path(key)
        return path.read_bytes() if path.is_file() else None

    def _update(self, key: str, assignments: str, values: tuple) -> None:
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {assignments}, updated = ? WHERE key = ?", (*values, time.time(), key))


def _hold(ledger: Path):
    """Take an exclusive, non-blocking lock on `<ledger>.lock` (released by `release()`, or when the process dies)."""
    from filelock import FileLock, Timeout

    lock = FileLock(ledger.with_name(ledger.name + ".lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StorageError(
            f"another run is using the job ledger {ledger}; wait for it to finish, or give this run another --out or --ledger"
        ) from None
    except OSError as exc:
        raise StorageError(f"cannot lock job ledger {ledger}: {exc}") from exc
    return lock


_COLUMNS = ("key, source, source_sha256, mode, model, params_hash, idx, state, output, cost, attempts, error, row, usage, "
            "price, params, lost")
_LOSE = f"lost = lost + CASE WHEN state = '{RUNNING}' THEN COALESCE(price, ?, 0) ELSE 0 END"
"""SQL (one parameter, the price to count where the row has none): an attempt still in flight lost its answer."""


def _prepare(db: sqlite3.Connection) -> None:
    """Set up a ledger's database: WAL, full syncs, the jobs table (an older ledger's gets its new columns, NULL), and
    `LEDGER_FORMAT` (a newer ledger is refused in one line)."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    if (version := _format(db)) > LEDGER_FORMAT:
        from fakescope import __version__

        raise StorageError(f"written by a newer fakescope (ledger format {version}; fakescope {__version__} reads "
                           f"{LEDGER_FORMAT}): upgrade fakescope")
    db.execute(_SCHEMA)
    if _missing_columns(db) or version < LEDGER_FORMAT:  # new, or older, and another process may be opening it too
        with db:
            db.execute("BEGIN IMMEDIATE")
            for column, kind in _missing_columns(db):
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")
            db.execute(f"PRAGMA user_version = {LEDGER_FORMAT}")


def _format(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def _missing_columns(db: sqlite3.Connection) -> list[tuple[str, str]]:
    """The (name, type) of the columns later versions added that the jobs table lacks."""
    columns = {column[1] for column in db.execute("PRAGMA table_info(jobs)")}
    added = (("usage", "TEXT"), ("price", "REAL"), ("params", "TEXT"), ("lost", "REAL NOT NULL DEFAULT 0"))
    return [(column, kind) for column, kind in added if column not in columns]
