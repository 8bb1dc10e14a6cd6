"""A folder under a walked input that cannot be listed (permission denied) is a failure, as an unreadable file is: once it
was one `warning:` line and its images were left out unsaid (detect exited 0, scan recorded nothing for it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REASON = "cannot list this folder (Permission denied): its images are left out"


@pytest.fixture
def photos(tmp_path, image_factory):
    """photos/a/1.png and photos/b/2.png with b unlistable, and the command prefix under which b stays so (capsh dropping
    root's capabilities to read any folder)."""
    image_factory.file(tmp_path / "photos" / "a" / "1.png", seed=1)
    image_factory.file(tmp_path / "photos" / "b" / "2.png", seed=2)
    prefix = []
    if not os.geteuid():
        if not shutil.which("capsh"):
            pytest.skip("running as root without capsh: no way to make a folder refuse listing")
        prefix = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", 'exec "$0" "$@"']
    (tmp_path / "photos" / "b").chmod(0)
    yield tmp_path / "photos", prefix
    (tmp_path / "photos" / "b").chmod(0o755)


def run(prefix: list[str], *args: str, cwd) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([*prefix, sys.executable, *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=cwd, env=env)


def test_detect_records_an_unlisted_folder_and_exits_1(photos, tmp_path):
    folder, prefix = photos
    done = run(prefix, "-m", "fakescope", "detect", "photos", "-f", "jsonl", "--no-provenance", cwd=tmp_path)
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["path"], r.get("error"), r.get("error_kind")) for r in records] == [
        ("photos/a/1.png", None, None), ("photos/b", REASON, "permanent")]
    assert done.returncode == 1, done.stderr
    assert "warning" not in done.stderr


def test_predict_over_iter_sources_and_storage_listing(photos, tmp_path):
    """The Python API: the listing yields the folder in its images' place, and predict gives it an error Detection; a
    folder that cannot be listed at the top of a listing, or under a `**` glob, is one too."""
    folder, prefix = photos
    script = f"""
import json
from fakescope import Detector
from fakescope.io import iter_sources, storage
listed = list(storage.list_files({str(folder)!r}, suffixes=(".png",)))
top = list(storage.list_files({str(folder / 'b')!r}))
detections = Detector.load(provenance=False).predict(iter_sources("photos"))
print(json.dumps([listed, [type(u).__name__ for u in listed], top, [(d.source, d.error) for d in detections],
                  list(iter_sources("photos/**/*.png"))]))
"""
    done = run(prefix, "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed, kinds, top, detections, globbed = json.loads(done.stdout)
    assert (listed, kinds) == ([str(folder / "a" / "1.png"), str(folder / "b")], ["str", "UnlistedFolder"])
    assert top == [str(folder / "b")]
    assert detections == [["photos/a/1.png", None], ["photos/b", REASON]]
    assert globbed == ["photos/a/1.png", "photos/b"]


def test_scan_records_the_folder_and_a_rerun_lists_it_again_once_readable(photos, tmp_path):
    folder, prefix = photos
    out = tmp_path / "results"
    first = run(prefix, "-m", "fakescope", "scan", "photos", "--out", str(out), "--no-provenance", cwd=tmp_path)
    assert first.returncode in (0, 1), first.stderr
    import pandas as pd

    from fakescope.scale import read_results

    rows = read_results(out).set_index("path")
    assert rows.loc[str(folder / "b"), "error"] == REASON
    assert rows.loc[str(folder / "b"), "error_kind"] == "permanent"  # as an unreadable file's: the rerun lists it anyway
    assert pd.isna(rows.loc[str(folder / "a" / "1.png"), "error"])
    (folder / "b").chmod(0o755)
    again = run(prefix, "-m", "fakescope", "scan", "photos", "--out", str(out), "--no-provenance", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = read_results(out).set_index("path")
    assert pd.isna(rows.loc[str(folder / "b" / "2.png"), "error"])  # its images, scored once it could be listed


def test_dataset_build_refuses_an_unlisted_folder(tmp_path, image_factory, photos):
    folder, prefix = photos
    (folder / "a").rename(folder / "real")  # real/1.png, and b/ under fake/ below
    (folder / "fake").mkdir()
    (folder / "b").rename(folder / "fake" / "b")
    built = run(prefix, "-m", "fakescope", "dataset", "build", "photos", "--out", "manifest.csv", cwd=tmp_path)
    assert (built.returncode, built.stdout) == (2, ""), built.stderr
    assert built.stderr == (f"error: {folder / 'fake' / 'b'}: {REASON}, so the dataset would miss them: make it readable "
                            "(or move it out) and build again\n")
    assert not (tmp_path / "manifest.csv").exists()
    (folder / "fake" / "b").rename(folder / "b")  # for the fixture's chmod back
