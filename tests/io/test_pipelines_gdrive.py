"""Generation and dataset building with Google Drive on both ends, against the loopback Drive server."""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import StorageError
from fakescope.generate.lease import LEASE_NAME, Lease
from fakescope.io import storage

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from lease_race import stops_paying_once_taken_over, two_runs_into_one_output  # noqa: E402
from openai_server import ImagesAPIServer  # noqa: E402


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 30 + seed).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def test_openai_generation_into_new_drive_folders_makes_each_folder_once_and_reruns_anywhere_pay_nothing_twice(
    drive_env, tmp_path, monkeypatch
):
    root = f"gdrive://{drive_env.root_id}/set"
    for i in range(6):
        storage.write_bytes(f"{root}/real/{i}.png", _png(i))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))  # the ledger of a remote --out lives there
    server = ImagesAPIServer(api_key="sk-drive").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-drive")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = f"{root}/fake/dall-e-2"
    args = ["generate", "openai", f"{root}/real", "--out", out, "--model", "dall-e-2", "--size", "256x256", "-j", "4"]
    try:
        first = CliRunner().invoke(app, args)
        assert first.exit_code == 0, first.output
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0 and "done 0, already done 6" in again.output and server.billable == 6
        monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "elsewhere"))  # another machine: the ledger is not there
        elsewhere = CliRunner().invoke(app, args)
        assert elsewhere.exit_code == 0 and "done 0, already done 6" in elsewhere.output and server.billable == 6
    finally:
        server.stop()
    # 221 while every path walked its folders from the root, 81 since remembered; 122 while each rerun also asked the
    # size of every output it took as made, twice (its plan, its run); 89 since the listing of --out gives them; 79 since
    # listing --out asks nothing before (it asked whether --out exists: its folder looked up, and a 1-item page)
    assert drive_env.calls["list"] <= 79
    names = Counter((f["name"], tuple(f["parents"])) for f in drive_env.files.values())
    assert max(names.values()) == 1, [n for n, c in names.items() if c > 1]  # no twin folders or files
    manifest = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/manifest.csv")), keep_default_na=False)
    assert len(manifest) == 6 and all(uri.startswith(out + "/") for uri in manifest["uri"])

    built = tmp_path / "manifest.csv"
    result = CliRunner().invoke(app, ["dataset", "build", root, "--out", str(built)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(built, keep_default_na=False)
    assert Counter(frame["label"]) == {"ai": 6, "real": 6}


def test_taef2_from_and_into_drive_pairs_each_fake_with_its_real_and_a_rerun_makes_none(drive_env, taef2_random_weights):
    root = f"gdrive://{drive_env.root_id}/set"
    storage.write_bytes(f"{root}/real/a.png", _png(1))
    photo = io.BytesIO()
    Image.effect_noise((48, 40), 40).convert("RGB").save(photo, "JPEG", quality=80)
    storage.write_bytes(f"{root}/real/b.jpg", photo.getvalue())
    storage.write_bytes(f"{root}/real/broken.jpg", b"not an image")
    out = f"{root}/fake/taef2"
    args = ["generate", "taef2", f"{root}/real", "--out", out, "--weights", str(taef2_random_weights), "--device", "cpu"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1 and "2 images written, 1 unusable source(s) skipped" in first.output, first.output
    assert f"skipping {root}/real/broken.jpg: " in first.stderr and first.stderr.count("\n") == 1
    rows = pd.read_csv(io.BytesIO(storage.read_bytes(f"{out}/manifest.csv")), keep_default_na=False)
    by_source = rows.set_index("source_uri")
    assert sorted(by_source.index) == [f"{root}/real/a.png", f"{root}/real/b.jpg"]
    for source, fmt, size in ((f"{root}/real/a.png", "PNG", (64, 64)), (f"{root}/real/b.jpg", "JPEG", (48, 40))):
        fake = Image.open(io.BytesIO(storage.read_bytes(by_source.loc[source, "uri"])))
        assert (fake.format, fake.size) == (fmt, size) and by_source.loc[source, "format"] == fmt
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "0 images written, 2 already made, 1 unusable source(s) skipped" in again.output, \
        again.output


def _lease_files(drive) -> list[dict]:
    return [f for f in drive.files.values() if f["name"] == LEASE_NAME]


def test_two_runs_into_one_drive_output_are_kept_apart_by_its_lease(drive_env, tmp_path, monkeypatch):
    """Into one gdrive:// --out two machines (two ledgers) were not locked against each other: both paid."""
    root = f"gdrive://{drive_env.root_id}"
    for i in range(4):
        storage.write_bytes(f"{root}/photos/p{i}.png", _png(i))
    two_runs_into_one_output(root, tmp_path, monkeypatch,
                             after_refusal=lambda: _only_one(_lease_files(drive_env)))  # the second's own, deleted
    assert not _lease_files(drive_env)


def _only_one(files: list) -> None:
    assert len(files) == 1


def test_a_drive_lease_not_renewed_is_taken_over_and_its_holder_stops_paying_once_it_lost_it(drive_env):
    out = f"gdrive://{drive_env.root_id}/fakes"
    storage.write_bytes(f"{out}/{LEASE_NAME}", json.dumps({"host": "elsewhere", "pid": 1}).encode())  # a dead machine's
    with pytest.raises(StorageError, match=rf"^another run \(host elsewhere, process 1\) is writing into {out} "):
        Lease(out).acquire()  # renewed moments ago (by 120 s: a loaded machine's seconds would not free it)
    (dead,) = _lease_files(drive_env)  # the refused run's own, deleted
    with drive_env._lock:
        drive_env.files[dead["id"]]["modifiedTime"] = "2000-01-01T00:00:00.000Z"  # then not rewritten for years
    lease = Lease(out, seconds=2)
    lease.acquire()  # not rewritten for 2 s, by Drive's clock: deleted, the lease is this run's
    (mine,) = _lease_files(drive_env)
    with pytest.raises(StorageError, match="^another run"):
        Lease(out).acquire()  # a live holder: refused
    with drive_env._lock:
        del drive_env.files[mine["id"]]  # as a run that took it for a dead one's while this one could not renew it
    stops_paying_once_taken_over(lease, out)
    lease.release()
    assert not _lease_files(drive_env)


def test_a_drive_lease_reads_every_page_of_its_twins_listing(drive_env):
    """The lease files were listed from one page: where Drive answered a short one, a run saw only dead files, deleted
    them and failed ("the lease file this run made is gone"), never meeting the live holder listed after them."""
    out = f"gdrive://{drive_env.root_id}/fakes"
    storage.write_bytes(f"{out}/keep.txt", b"")
    folder = next(f["id"] for f in drive_env.files.values() if f["name"] == "fakes")
    dead = [drive_env.add(LEASE_NAME, folder, json.dumps({"host": "elsewhere", "pid": 1}).encode()) for _ in range(3)]
    with drive_env._lock:
        for file_id in dead:
            drive_env.files[file_id]["modifiedTime"] = "2000-01-01T00:00:00.000Z"  # let lapse long ago
    live = drive_env.add(LEASE_NAME, folder, json.dumps({"host": "elsewhere", "pid": 2}).encode())
    drive_env.page_cap = 2
    with pytest.raises(StorageError, match=rf"^another run \(host elsewhere, process 2\) is writing into {out} "):
        Lease(out).acquire()
    assert [f["id"] for f in _lease_files(drive_env)] == [live]  # the dead and the refused run's own deleted
    assert drive_env.calls["list"] >= 3


def test_of_runs_taking_a_drive_lease_at_the_same_moment_exactly_one_gets_it(drive_env):
    out = f"gdrive://{drive_env.root_id}/fakes"
    storage.write_bytes(f"{out}/keep.txt", b"")  # the folder exists: every run makes its lease file in it at once
    leases = [Lease(out) for _ in range(6)]

    def take(lease: Lease) -> bool:
        try:
            lease.acquire()
        except StorageError as exc:
            assert str(exc).startswith("another run"), exc
            return False
        return True

    with ThreadPoolExecutor(len(leases)) as pool:
        taken = list(pool.map(take, leases))
    try:
        assert sum(taken) == 1 and len(_lease_files(drive_env)) == 1  # the others deleted their own
    finally:
        for lease in leases:
            lease.release()
    assert not _lease_files(drive_env)


def test_an_output_that_is_a_drive_shortcut_to_nothing_or_to_an_empty_file_is_made_again(drive_env, tmp_path, monkeypatch):
    """A shortcut's size was unknown (None), so one in --out under an output's name was taken as made whatever its
    target: an empty one, a deleted or trashed one (the image lost, never made again)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.png").write_bytes(_png(i))
    monkeypatch.setenv("FAKESCOPE_CACHE", str(tmp_path / "cache"))
    server = ImagesAPIServer(api_key="sk-drive").start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-drive")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = f"gdrive://{drive_env.root_id}/fakes"
    args = ["generate", "openai", str(photos), "--out", out, "--model", "dall-e-2", "--size", "256x256"]
    try:
        assert CliRunner().invoke(app, args).exit_code == 0
        folder = next(f["id"] for f in drive_env.files.values() if f["name"] == "fakes")
        empty, gone = drive_env.add("empty.png", drive_env.root_id, b""), drive_env.add("gone.png", drive_env.root_id, b"x")
        outputs = sorted((f["name"], f["id"]) for f in drive_env.files.values() if f["parents"] == [folder]
                         and f["name"].endswith(".png"))
        for (name, file_id), target in zip(outputs, (empty, gone), strict=False):
            with drive_env._lock:
                del drive_env.files[file_id], drive_env.contents[file_id]
            drive_env.add(name, folder, target=target)
        with drive_env._lock:
            del drive_env.files[gone], drive_env.contents[gone]
        again = CliRunner().invoke(app, args)
        assert again.exit_code == 0 and "done 2, already done 1," in again.output, again.output
        assert server.billable == 5
    finally:
        server.stop()
    for name, _ in outputs:
        Image.open(io.BytesIO(storage.read_bytes(f"{out}/{name}"))).load()
