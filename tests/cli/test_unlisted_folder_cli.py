"""A folder under a walked input that cannot be listed (permission denied) is a failure, as an unreadable file is: once it
was one `warning:` line and its images were left out unsaid (detect exited 0, scan recorded nothing for it)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

REASON = "cannot list this folder (Permission denied): its images are left out"
RUNTIME = "onnx" if importlib.util.find_spec("onnxruntime") else "torch"
"""The scans' runtime: onnx loads the bundled model in a second from the export `onnx_export` caches, where torch's
import and the network's build took some 8 s in each subprocess."""


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


@pytest.fixture(scope="module")
def onnx_export() -> str:
    """`RUNTIME`, with the bundled model's ONNX export cached (in this test session's cache, which the subprocesses
    inherit), here where torch is imported already."""
    if RUNTIME == "onnx":
        from fakescope import Detector

        Detector.load(device="cpu", runtime="onnx", provenance=False)
    return RUNTIME


def run(prefix: list[str], *args: str, cwd) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([*prefix, sys.executable, *args], capture_output=True, text=True, timeout=60, check=False,
                          cwd=cwd, env=env)


def test_detect_records_an_unlisted_folder_and_exits_1(photos, tmp_path):
    _folder, prefix = photos
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


def test_scan_records_the_folder_and_a_rerun_lists_it_again_once_readable(photos, tmp_path, onnx_export):
    folder, prefix = photos
    out = tmp_path / "results"
    scan = ("-m", "fakescope", "scan", "photos", "--out", str(out), "--no-provenance", "--runtime", onnx_export)
    first = run(prefix, *scan, cwd=tmp_path)
    assert first.returncode in (0, 1), first.stderr
    import pandas as pd

    from fakescope.scale import read_results

    rows = read_results(out).set_index("path")
    assert rows.loc[str(folder / "b"), "error"] == REASON
    assert rows.loc[str(folder / "b"), "error_kind"] == "permanent"  # as an unreadable file's: the rerun lists it anyway
    assert pd.isna(rows.loc[str(folder / "a" / "1.png"), "error"])
    (folder / "b").chmod(0o755)
    again = run(prefix, *scan, cwd=tmp_path)
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


RESCAN = """
import json, os, sys
import pandas as pd
from fakescope import Detector
from fakescope.scale import read_results, scan, scan_sources
detector, seen = Detector.load(provenance=False, runtime=sys.argv[1]), []
for step in sys.argv[3:]:  # each a scan run after b's permissions are set so (`empty`: 755, its files gone), of the
    mode, _, inputs = step.partition("@")  # inputs after an @, or else the common ones
    os.chmod("photos/b", 0o755 if mode == "empty" else int(mode, 8))
    if mode == "empty":
        os.remove("photos/b/2.png")
    scan(scan_sources((inputs or sys.argv[2]).split(",")), "results", detector)
    seen.append([sorted(read_results("results")["path"]), sorted(pd.read_parquet("results")["path"])])
print(json.dumps(seen))
"""


def rescan(prefix: list[str], runtime: str, inputs: str, *modes: str, cwd) -> list:
    """`RESCAN`'s rows after each run: those `read_results` reads, and those `pandas.read_parquet` does."""
    done = run(prefix, "-c", RESCAN, runtime, inputs, *modes, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("modes", [["0", "0", "755"], ["755", "0", "0", "755"]], ids=["unlisted-first", "scored-before"])
def test_a_scan_rerun_drops_the_folders_row_once_it_lists_the_folder(photos, tmp_path, modes, onnx_export):
    """The folder's error row names no image, so no row of its path replaces it: a rerun that lists the folder drops it,
    from `read_results` and from the parts, also when its images were scored before (the rerun skips them); a rerun
    while it cannot be listed keeps it, also when it is newer than its images' rows."""
    folder, prefix = photos
    a, b, b2 = str(folder / "a" / "1.png"), str(folder / "b"), str(folder / "b" / "2.png")
    expected = {"0": [a, b], "755": [a, b2]}
    if modes[0] == "755":
        expected["0"] = [a, b, b2]
    assert rescan(prefix, onnx_export, "photos", *modes, cwd=tmp_path) == [[expected[mode]] * 2 for mode in modes]


def test_a_rerun_drops_the_row_of_a_folder_it_lists_holding_no_image(photos, tmp_path, onnx_export):
    """No row of an image replaces it, yet the folder was listed: it kept its row, which said its images were left out."""
    folder, prefix = photos
    a, b = str(folder / "a" / "1.png"), str(folder / "b")
    assert rescan(prefix, onnx_export, "photos", "0", "empty", cwd=tmp_path) == [[[a, b]] * 2, [[a]] * 2]


def test_a_file_named_below_an_execute_only_folder_is_scored_and_the_walk_still_reports_the_folder(photos, tmp_path,
                                                                                                      onnx_export):
    """`photos photos/b/2.png` with b execute-only: the named file opens, the walk cannot list b. The file's row, later
    than b's, hid b's row from `read_results`, and the rerun dropped it from the parts, as if b had been listed."""
    folder, prefix = photos
    a, b, b2 = str(folder / "a" / "1.png"), str(folder / "b"), str(folder / "b" / "2.png")
    assert rescan(prefix, onnx_export, "photos,photos/b/2.png", "111", "111", "755", cwd=tmp_path) == [
        [[a, b, b2]] * 2, [[a, b, b2]] * 2, [[a, b2]] * 2]


def test_a_file_named_below_a_folder_readable_again_leaves_its_row_while_its_other_images_have_none(
        photos, tmp_path, image_factory, onnx_export):
    """`scan photos`, b unlisted; b made readable, `scan photos/b/3.png` dropped b's row as if it had listed b, though
    b/2.png was never scored. The row goes with the run that lists b."""
    folder, prefix = photos
    (folder / "b").chmod(0o755)
    image_factory.file(folder / "b" / "3.png", seed=3)
    a, b, b2, b3 = (str(folder / name) for name in ("a/1.png", "b", "b/2.png", "b/3.png"))
    assert rescan(prefix, onnx_export, "photos", "0", "755@photos/b/3.png", "755", cwd=tmp_path) == [
        [[a, b]] * 2, [[a, b, b3]] * 2, [[a, b2, b3]] * 2]


@pytest.mark.parametrize("pattern", ["photos/*/*.png", "photos/[ab]/*", "*/b/*.png"])
def test_a_glob_without_double_star_reports_a_folder_it_cannot_list(photos, tmp_path, pattern):
    """Python's glob leaves a folder it cannot list out unsaid; a glob that reaches it lists it, as `**` does."""
    _folder, prefix = photos
    done = run(prefix, "-c", f"from fakescope.io import iter_sources; print(list(iter_sources({pattern!r})))", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = eval(done.stdout)
    assert listed[-1] == "photos/b" and listed[:-1] == ["photos/a/1.png"] * ("/b/" not in pattern)


def test_a_glob_naming_a_file_below_an_execute_only_folder_yields_the_file(photos, tmp_path):
    """b execute-only: a file the pattern names below it opens, as Python's glob finds it; the folder was reported in its
    place. A wildcard below b still needs b listed: b is reported then, as where b cannot even be entered."""
    folder, prefix = photos
    (folder / "b").chmod(0o111)
    patterns = ["photos/*/2.png", "*/[b]/2.png", "photos/*/3.png", "photos/*/*.png"]
    done = run(prefix, "-c", f"from fakescope.io import iter_sources; print([list(iter_sources(p)) for p in {patterns!r}])",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert eval(done.stdout) == [["photos/b/2.png"], ["photos/b/2.png"], [], ["photos/a/1.png", "photos/b"]]
    (folder / "b").chmod(0)
    done = run(prefix, "-c", "from fakescope.io import iter_sources; print(list(iter_sources('photos/*/2.png')))", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "['photos/b']\n"), done.stderr


def test_a_glob_reports_no_folder_it_does_not_reach(photos, tmp_path):
    _folder, prefix = photos
    done = run(prefix, "-c", "from fakescope.io import iter_sources; print(list(iter_sources('photos/a*/*.png')))",
               cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "['photos/a/1.png']\n"), done.stderr


def test_export_int8_refuses_calibration_images_with_a_folder_it_cannot_list(photos, tmp_path):
    _folder, prefix = photos
    done = run(prefix, "-m", "fakescope", "export", "--onnx", "model.onnx", "--int8", "--calibration", "photos",
               cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (f"error: photos/b: {REASON}, so the calibration would miss them: make it readable (or move "
                           "it out) and export again\n")
    assert not (tmp_path / "model.onnx").exists()
