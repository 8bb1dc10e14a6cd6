"""Two runs (two machines: two ledgers) into one remote --out, as the S3 and Drive lease tests both play them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import StorageError
from fakescope.generate.lease import LEASE_NAME, Lease

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from openai_server import ImagesAPIServer  # noqa: E402


def two_runs_into_one_output(root: str, cache: Path, monkeypatch, *, after_refusal: Callable[[], None] = lambda: None):
    """A run paying into `root`/fakes from `root`/photos is held after its first image; a second run (another ledger)
    must be refused at once, sending nothing; the first is then killed, and a third run on its machine takes its lease
    over and finishes. Returns the third run's result and the Images API server (stopped)."""
    monkeypatch.setenv("FAKESCOPE_CACHE", str(cache / "cache"))
    out = f"{root}/fakes"
    args = ["generate", "openai", f"{root}/photos", "--out", out, "--model", "dall-e-2", "--size", "256x256",
            "--concurrency", "1", "--max-retries", "0"]
    server = ImagesAPIServer(api_key="sk-lease").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-lease")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    try:
        server.hold_after = 1  # one image made and written, the next request held unanswered
        first = subprocess.Popen([sys.executable, "-c", "from fakescope.cli import app; app()", *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server.wait_held(first, billed=1, held=1)
        monkeypatch.setenv("FAKESCOPE_CACHE", str(cache / "elsewhere"))  # another machine: a ledger of its own
        second = CliRunner().invoke(app, args)
        assert second.exit_code == 2 and len(server.requests) == 2, second.output  # it sent nothing
        assert second.stderr.startswith(f"error: another run (host {socket.gethostname()}, process {first.pid}) is "
                                        f"writing into {out} (its lease .fakescope-lease.json was renewed "), second.stderr
        after_refusal()
        first.send_signal(signal.SIGKILL)
        first.wait()
        server.hold_after = None
        server.release.set()
        third = CliRunner().invoke(app, args)  # a dead run's lease is taken over at once on its own machine
    finally:
        server.stop()
    assert third.exit_code == 0 and "done 3, already done 1," in third.stdout, third.output
    assert server.billable == 4 == len(set(server.paid))
    return third, server


def stops_paying_once_taken_over(lease: Lease, out: str) -> None:
    """Within 10 s the renewal finds the lease another run's, and `check` (the runner asks before each request) says so."""
    deadline = time.monotonic() + 10
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(StorageError, match=f"^the lease on {out}/{LEASE_NAME} was taken over by another run"):
        lease.check()
