"""A real `fakescope scan` process killed with SIGKILL mid-run, then rerun: every input scored exactly once."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fakescope.scale.records import SCHEMA, part_files, read_results
from fakescope.scale.scan import recover_journals


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_scan_killed_mid_run_resumes_with_each_input_once_and_one_table(image_folder, tmp_path):
    images = sorted(p for p in image_folder.rglob("*") if p.suffix in (".jpg", ".png") and p.name != "broken.jpg")
    links = tmp_path / "links"
    links.mkdir()
    uris = []
    for i in range(240):  # distinct paths (symlinks kept), a missing and a broken file among every 8
        uri = links / f"{i:03d}{images[i % len(images)].suffix}"
        if i % 8 == 3:
            uri = links / f"missing{i:03d}.jpg"
        elif i % 8 == 5:
            uri.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        else:
            uri.symlink_to(images[i % len(images)])
        uris.append(str(uri))
    pd.DataFrame({"uri": uris}).to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "res.parquet"
    argv = [sys.executable, "-m", "fakescope", "scan", str(tmp_path / "m.csv"), "--out", str(out), "--no-provenance",
            "--device", "cpu", "-b", "4", "-j", "1", "--rows-per-part", "12"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as first:
        while not part_files(out) and first.poll() is None:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL, "the scan finished before it was killed"
    shutil.copytree(out, tmp_path / "as-left")
    recover_journals(tmp_path / "as-left")  # what the rerun does first: the rows on disk when it was killed
    saved = len(read_results(tmp_path / "as-left"))
    assert 12 <= saved < len(uris)
    again = subprocess.run(argv, capture_output=True, text=True, timeout=500, check=False)
    assert again.returncode == 1, again.stderr  # the missing and broken files
    assert again.stdout.startswith(f"scanned {len(uris) - saved}  failed ")  # nothing written before is redone
    assert f"skipped (done before) {saved}  -> " in again.stdout
    rows = read_results(out)
    assert sorted(rows["path"]) == sorted(uris) and list(rows.columns) == SCHEMA.names  # each once, none lost
    bad = {u for i, u in enumerate(uris) if i % 8 in (3, 5)}
    assert set(rows.loc[rows["error"].notna(), "path"]) == bad and rows["score"].notna().sum() == len(uris) - len(bad)
    table = ds.dataset(out, format="parquet").to_table()  # the folder as one dataset: every part of one schema
    assert table.schema == SCHEMA and table.num_rows == len(uris)
    assert {tuple(pq.read_schema(p).names) for p in part_files(out)} == {tuple(SCHEMA.names)}
    assert len(pd.read_parquet(out)) == len(uris) and not list(out.glob("_*"))

