"""The local scan engine: rows, error rows, resuming, crash recovery, manifests and the CLI."""

from __future__ import annotations

import json
import os
import re
import stat
import time

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from manifest_helpers import not_a_manifest
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.errors import ConfigError, StorageError
from fakescope.io.inputs import iter_sources
from fakescope.scale.records import (
    SCHEMA,
    detections_to_table,
    drop_superseded,
    part_files,
    read_folder,
    read_results,
    write_part,
)
from fakescope.scale.scan import ScanSummary, _PartWriter, scan, scan_sources


def test_scan_writes_one_row_per_source_matching_predict(image_folder, tmp_path, detector):
    sources = list(scan_sources([str(image_folder)]))
    summary = scan(sources, tmp_path / "out", detector)
    assert (summary.scanned, summary.failed, summary.skipped) == (8, 1, 0)
    assert list(scan_sources(str(image_folder))) == list(iter_sources(str(image_folder))) == sources  # one input, not
    # one per character: "photos/" was read as "p", "h", ... and "/", which walked the whole file system
    rows = read_results(tmp_path / "out")
    assert list(rows.columns) == SCHEMA.names
    assert rows["path"].tolist() == sources
    expected = {d.source: d.to_dict() for d in detector.predict(sources)}
    for row in rows.to_dict("records"):
        want = expected[row["path"]]
        if want.get("error"):
            assert row["error"] == want["error"] and pd.isna(row["score"])
            continue
        assert row["score"] == want["score"] and row["label"] == want["label"]
        assert (row["width"], row["height"], row["format"]) == (want["width"], want["height"], want["format"])
        assert json.loads(row["evidence"]) == [{**e, "score": round(e["score"], 6)} for e in want["evidence"]]
        assert pd.isna(row["error"])


def test_reading_results_from_no_folder_is_an_error_not_an_empty_table(tmp_path, detector):
    with pytest.raises(StorageError, match=r"typo\.parquet: no such results folder"):
        read_results(tmp_path / "typo.parquet")  # a mistyped name, not a scan that found nothing
    scan([], tmp_path / "empty", detector)
    assert read_results(tmp_path / "empty").empty


def test_rerun_skips_done_sources_and_adds_only_new_ones(image_folder, tmp_path, detector):
    sources = list(scan_sources([str(image_folder)]))
    first = scan(sources[:3], tmp_path / "out", detector)
    again = scan(sources, tmp_path / "out", detector)
    assert (first.scanned, again.scanned, again.skipped) == (3, 5, 3)
    rows = read_results(tmp_path / "out")
    assert sorted(rows["path"]) == sorted(sources)
    assert scan(sources, tmp_path / "out", detector).scanned == 0


def test_a_rerun_with_another_model_is_refused_rather_than_skipping_the_first_models_rows(image_folder, tmp_path, detector):
    """A rerun into a folder another model wrote skipped every path in it, leaving the first model's scores as the answer."""
    import shutil

    from fakescope.models.bundle import BUNDLED_DIR

    scan(scan_sources([str(image_folder)]), tmp_path / "out", detector)
    renamed = tmp_path / "renamed"
    shutil.copytree(BUNDLED_DIR / "fakescope-default", renamed, ignore=shutil.ignore_patterns("MODEL_CARD.md"))
    config = json.loads((renamed / "config.json").read_text())
    (renamed / "config.json").write_text(json.dumps({**config, "name": "renamed"}))
    parts = part_files(tmp_path / "out")
    result = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(tmp_path / "out"), "--model", str(renamed),
                                      "--device", "cpu", "--no-provenance", "--runtime", "torch"])
    assert result.exit_code == 2 and result.output == (
        f"error: {tmp_path / 'out'} was scored with --model fakescope-default, not --model renamed: a rerun skips the "
        "images it holds, so resume it with the folder's settings or give these settings a new --out\n")
    assert part_files(tmp_path / "out") == parts
    assert scan(scan_sources([str(image_folder)]), tmp_path / "out", detector).skipped == 8  # the same model resumes


def test_a_rerun_at_another_threshold_is_refused_rather_than_mixing_labels(image_folder, tmp_path, detector):
    """A rerun with another --threshold skipped the rows it held and labelled the rest at the new one: one column of
    labels at two thresholds."""
    sources = list(scan_sources([str(image_folder)]))
    scan(sources[:4], tmp_path / "out", detector)
    parts = part_files(tmp_path / "out")
    result = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(tmp_path / "out"), "--threshold", "0.9",
                                      "--device", "cpu", "--no-provenance", "--runtime", "torch"])
    was = f"{detector.threshold:g}"
    assert result.exit_code == 2 and result.output == (
        f"error: {tmp_path / 'out'} was scored with --threshold {was}, not --threshold 0.9: a rerun skips the images it "
        "holds, so resume it with the folder's settings or give these settings a new --out\n")
    assert part_files(tmp_path / "out") == parts
    assert scan(sources, tmp_path / "out", detector).skipped == 4  # the same threshold resumes
    assert read_results(tmp_path / "out")["threshold"].unique().tolist() == [detector.threshold]


def test_a_folder_written_before_scoring_records_is_still_refused_another_threshold_or_model(image_folder, tmp_path,
                                                                                             detector):
    """Parts without the `Scoring` record are checked on their rows' model and threshold, in the same words as
    parts with one (they said `holds labels at threshold ...` and `give this threshold its own --out`)."""
    from dataclasses import replace

    from fakescope.scale.records import read_folder
    from fakescope.scale.scoring import Scoring

    sources = list(scan_sources([str(image_folder)]))
    scan(sources[:4], tmp_path / "out", detector)
    for part in part_files(tmp_path / "out"):  # as an older fakescope wrote it: no metadata
        pq.write_table(pq.read_table(part).replace_schema_metadata(None), part)
    scoring = Scoring.of(detector)
    assert len(read_folder(tmp_path / "out", scoring).done) == 4
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'out'))} was scored with --threshold "
                                          rf"{detector.threshold:g}, not --threshold 0.9: a rerun skips the images it "
                                          "holds, so resume it with the folder's settings or give these settings a new "
                                          "--out$"):
        read_folder(tmp_path / "out", replace(scoring, threshold=0.9))
    with pytest.raises(ConfigError, match=rf"was scored with --model {re.escape(detector.name)}, not --model renamed: "):
        read_folder(tmp_path / "out", replace(scoring, model="renamed", weights_sha256="other"))


@pytest.mark.parametrize("kwargs", [{}, {"threshold": 0.3, "grid": 2, "provenance": False, "precision": "bf16",
                                     "batch_size": 4}])
def test_a_ray_scans_planned_scoring_is_what_its_actors_detectors_record(kwargs):
    """`Scoring.planned` restated `Detector`'s defaults (provenance on, fp32, the model's threshold and grid)."""
    from fakescope.detector import Detector
    from fakescope.models import load_model
    from fakescope.scale.scoring import Scoring

    model = load_model(None, lazy=True)
    assert Scoring.planned(model, **kwargs) == Scoring.of(Detector(load_model(None, device="cpu"), **kwargs))
    with pytest.raises(ConfigError, match="grid must be a whole number from 1 to"):  # in the driver, not in each actor
        Scoring.planned(model, grid=0)


def test_a_rerun_with_other_scoring_settings_is_refused_and_one_with_other_speed_settings_resumes(image_folder, tmp_path,
                                                                                                 detector):
    """A rerun with another --grid, --provenance or --precision added rows scored differently to the folder; the
    runtime (torch and onnx agree within 1e-4) is not a scoring setting."""
    sources = list(scan_sources([str(image_folder)]))
    out = tmp_path / "out"
    scan(sources[:4], out, detector)  # grid 3, no provenance, fp32, torch
    parts = part_files(out)
    base = ["scan", str(image_folder), "--out", str(out), "--device", "cpu"]
    runner = CliRunner()
    refused = runner.invoke(app, [*base, "--grid", "2", "--runtime", "torch"])
    assert refused.exit_code == 2 and refused.output == (
        f"error: {out} was scored with --grid 3 --no-provenance, not --grid 2 --provenance: "
        "a rerun skips the images it holds, so resume it with the folder's settings or give these settings a new --out\n")
    assert part_files(out) == parts
    resumed = runner.invoke(app, [*base, "--no-provenance", "--runtime", "torch", "-j", "1", "-b", "3", "--progress"])
    failed = sum(s.endswith("broken.jpg") for s in sources[4:])
    assert resumed.exit_code == failed and f"scanned 4  failed {failed}  skipped (done before) 4" in resumed.output
    assert len(read_results(out)) == 8


def test_a_retrained_model_that_keeps_its_name_is_refused(tiny_model_dir, image_folder, tmp_path):
    """A model retrained under the same name (other weights, another sha256) scored new rows into the folder."""
    import torch

    from fakescope.detector import Detector
    from fakescope.models import create_model, load_model, save_model

    torch.manual_seed(1)
    retrained = tmp_path / "retrained"
    new = save_model(create_model("test_tiny").eval(), load_model(tiny_model_dir).config, retrained)
    sources = list(scan_sources([str(image_folder)]))
    kwargs = dict(device="cpu", provenance=False, runtime="torch")
    first = Detector.load(tiny_model_dir, **kwargs)
    scan(sources[:2], tmp_path / "out", first)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'out'))} was scored with weights sha256 "
                                          rf"{first.model.config.weights_sha256[:12]}, not weights sha256 {new.weights_sha256[:12]}: "):
        scan(sources, tmp_path / "out", Detector.load(retrained, **kwargs))
    assert scan(sources[:3], tmp_path / "out", Detector.load(tiny_model_dir, **{**kwargs, "runtime": "onnx"})).skipped == 2
    assert scan(sources, tmp_path / "out", first).skipped == 3


def test_a_part_whose_scoring_record_is_not_json_is_named_in_one_line(image_folder, tmp_path, detector):
    """A part written by a foreign tool under fakescope's metadata key raised a raw JSON error."""
    import pyarrow.parquet as pq

    from fakescope.errors import StorageError
    from fakescope.scale.scoring import METADATA_KEY

    sources = list(scan_sources([str(image_folder)]))
    scan(sources[:2], tmp_path / "out", detector)
    part = part_files(tmp_path / "out")[0]
    table = pq.read_table(part)
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: b"{not json"}), part)
    with pytest.raises(StorageError, match=rf"^{re.escape(str(part))} is not a readable part of the results "
                                           r"\(its fakescope.scoring metadata is not a JSON object\); move it out"):
        scan(sources, tmp_path / "out", detector)


def test_a_part_of_a_newer_results_format_is_refused_in_one_line_and_one_without_a_format_resumes(image_folder, tmp_path,
                                                                                                   detector):
    """A newer fakescope's layout would be misread (a record field ignored, paths named otherwise): resuming or reading
    the folder says to upgrade; a part written before the format (layout 1) resumes as before."""
    from fakescope import __version__
    from fakescope.scale.scoring import FORMAT_KEY

    sources = list(scan_sources([str(image_folder)]))
    scan(sources[:2], tmp_path / "out", detector)
    part = part_files(tmp_path / "out")[0]
    table = pq.read_table(part)
    assert table.schema.metadata[FORMAT_KEY] == b"1"
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, FORMAT_KEY: b"2"}), part)
    message = (f"{part} was written by a newer fakescope (results format 2; fakescope {__version__} reads 1): "
               "upgrade fakescope to resume or read this folder")
    for attempt in (lambda: scan(sources, tmp_path / "out", detector), lambda: read_results(tmp_path / "out")):
        with pytest.raises(StorageError) as caught:
            attempt()
        assert str(caught.value) == message
    result = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(tmp_path / "out"), "--no-provenance"])
    assert result.exit_code != 0 and result.stderr == f"error: {message}\n", result.output
    assert len(part_files(tmp_path / "out")) == 1  # nothing written beside it
    pq.write_table(table.replace_schema_metadata({k: v for k, v in table.schema.metadata.items() if k != FORMAT_KEY}), part)
    scan(sources, tmp_path / "out", detector)
    assert sorted(read_results(tmp_path / "out")["path"]) == sorted(map(str, sources))


def test_an_out_named_as_a_table_file_is_refused_and_one_named_parquet_is_the_folder(image_folder, tmp_path, detector):
    """--out results.csv quietly made a folder named results.csv; results.parquet is the documented folder name."""
    refused = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(tmp_path / "results.csv"), "--device", "cpu",
                                       "--no-provenance", "--runtime", "torch"])
    assert refused.exit_code == 2 and refused.stderr == (
        f"error: cannot use {tmp_path / 'results.csv'} as the results folder: scan writes a folder of Parquet parts, "
        "not a .csv file; name it results.parquet or a plain folder\n")
    assert not (tmp_path / "results.csv").exists()
    scan(scan_sources([str(image_folder)]), tmp_path / "results.parquet", detector)
    assert (tmp_path / "results.parquet").is_dir() and len(pd.read_parquet(tmp_path / "results.parquet")) == 8


def test_a_source_listed_twice_is_scanned_once_and_not_counted_as_done_before(image_folder, tmp_path, detector):
    sources = list(scan_sources([str(image_folder)]))
    twice = sources + sources[:3]
    first, again = (scan(twice, tmp_path / "out", detector) for _ in range(2))
    assert [(s.scanned, s.skipped) for s in (first, again)] == [(8, 0), (0, 8)]  # as the Ray engine counts
    assert len(read_results(tmp_path / "out")) == 8


def test_a_folder_named_relative_or_absolute_resumes_the_same_rows(image_folder, tmp_path, detector, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "out"
    first = scan(scan_sources(["./images"]), out, detector)
    pd.DataFrame({"uri": ["./img1.jpg", "nested/../broken.jpg"]}).to_csv(image_folder / "m.csv", index=False)
    names = ("images", str(image_folder), "images/../images/", "images/**/*.jpg", "images/m.csv")
    again = [scan(scan_sources([name]), out, detector) for name in names]
    assert first.scanned == 8 and [(s.scanned, s.skipped) for s in again] == [(0, 8)] * 3 + [(0, 5), (0, 2)]
    assert sorted(read_results(out)["path"]) == sorted(scan_sources([str(image_folder)]))  # stored absolute


def test_file_uris_resume_the_rows_of_the_same_local_paths(image_folder, tmp_path, detector):
    out = tmp_path / "out"
    sources = list(scan_sources([str(image_folder)]))
    scan(sources[:2], out, detector)
    write_part(detections_to_table(detector.predict([f"file://{sources[2]}"])), out / "part-older-00000.parquet")
    pd.DataFrame({"uri": [f"file://{s}" for s in sources[:4]]}).to_csv(tmp_path / "m.csv", index=False)
    from_manifest = scan(scan_sources([str(tmp_path / "m.csv")]), out, detector)  # the older row's file:// counts as done
    from_folder = scan(scan_sources([f"file://{image_folder}"]), out, detector)  # listed as the folder is
    assert [(s.scanned, s.skipped) for s in (from_manifest, from_folder)] == [(1, 3), (4, 4)]
    assert sorted(read_results(out)["path"]) == sorted(sources[:2] + [f"file://{sources[2]}"] + sources[3:])


def test_results_of_older_versions_with_relative_paths_are_resumed(image_folder, tmp_path, detector, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    sources = list(scan_sources(["images"]))
    out = tmp_path / "out"
    out.mkdir()
    write_part(detections_to_table(detector.predict(sources[:4])), out / "part-older-00000.parquet")
    assert read_results(out)["path"].tolist() == sources[:4]  # as older versions stored them: as given
    summary = scan(scan_sources([str(image_folder)]), out, detector)
    assert (summary.scanned, summary.skipped) == (4, 4)
    assert len(read_results(out)) == 8


def test_the_caveat_column_is_set_for_a_pixel_only_real_and_null_for_a_declared_ai(tiny_model_dir, caveat_images, tmp_path):
    """The scan's fixed columns dropped the Detection's caveat: a pixel-only real read like proof in the Parquet."""
    from fakescope.detector import Detector
    from fakescope.forensics.fusion import PIXEL_ONLY

    sources = caveat_images
    scan(sources, tmp_path / "out", Detector.load(tiny_model_dir, device="cpu", threshold=0.99))
    rows = pd.read_parquet(tmp_path / "out").set_index("path")
    assert list(rows.columns) == SCHEMA.names[1:] and SCHEMA.names[-2:] == ["caveat", "error_kind"]  # as in detect's CSV, then the kind
    assert rows.loc[sources, ["label", "decided_by"]].values.tolist() == [["real", "pixel"], ["ai", "metadata"]]
    assert rows.loc[sources[0], "caveat"] == PIXEL_ONLY and pd.isna(rows.loc[sources[1], "caveat"])


@pytest.mark.parametrize("crashed", [False, True])  # an older version's finished part, or the journal of its crash
def test_a_folder_begun_without_caveat_resumes_and_stays_one_table(image_folder, tmp_path, detector, crashed, caplog,
                                                                  older_schema):
    sources = list(scan_sources([str(image_folder)]))
    out = tmp_path / "out"
    scan(sources[:4], out, detector)
    (part,) = part_files(out)
    older = pq.read_table(part).drop_columns(["caveat", "error_kind"])  # what a version before the column wrote
    assert older.schema == older_schema
    part.unlink()
    if crashed:
        writer = _PartWriter(out, rows_per_part=1000)
        writer.write(older)
        writer.sink.close()  # the process dies: the journal stays
    else:
        write_part(older, part)
    summary = scan(sources, out, detector)
    assert (summary.skipped, summary.scanned) == (4, 4)
    assert all(pq.read_schema(p).names == older_schema.names for p in part_files(out))  # no part with another column list
    for rows in (read_results(out), pd.read_parquet(out)):
        assert list(rows.columns) == older_schema.names and sorted(rows["path"]) == sorted(sources)
    kept = read_results(out).set_index("path").loc[older.column("path").to_pylist()]  # nothing lost
    pd.testing.assert_frame_equal(kept.reset_index(), older.to_pandas())
    assert f"{out} was begun by a fakescope without the caveat and error_kind columns" in caplog.text
    assert "scan the same sources into a new folder (fakescope scan SOURCE... --out NEW_FOLDER)" in caplog.text
    caplog.clear()  # a rerun that writes no row: it said 'new rows are written without it' all the same
    assert scan(sources, out, detector).scanned == 0 and "without the caveat" not in caplog.text


def test_a_folder_begun_with_caveat_but_without_error_kind_resumes_its_error_rows_as_done(image_folder, tmp_path,
                                                                                       detector, caplog):
    """A version with `caveat` but before `error_kind`: its error rows stay done, new rows go without the column, and
    the warning says that a rerun tries no failed URL again there."""
    sources = list(scan_sources([str(image_folder)]))
    out = tmp_path / "out"
    scan(sources[:5], out, detector)
    for part in part_files(out):
        table = pq.read_table(part)
        write_part(table.drop_columns("error_kind").replace_schema_metadata(table.schema.metadata), part)
    summary = scan(sources, out, detector)
    assert (summary.skipped, summary.scanned, summary.transient) == (5, 3, 0)
    expected = [name for name in SCHEMA.names if name != "error_kind"]
    assert all(pq.read_schema(p).names == expected for p in part_files(out))
    rows = read_results(out)
    assert list(rows.columns) == expected and sorted(rows["path"]) == sorted(sources)
    assert f"{out} was begun by a fakescope without the error_kind column: new rows are written without it" in caplog.text
    assert "without error_kind, a URL that failed for a passing reason is not tried again by a rerun" in caplog.text


@pytest.mark.parametrize(("rows_per_part", "sizes"), [(4, [4, 4]), (3, [3, 3, 2])])  # the detector writes 4 rows at a time
def test_rows_per_part_splits_the_output(image_folder, tmp_path, detector, rows_per_part, sizes):
    scan(scan_sources([str(image_folder)]), tmp_path / "out", detector, rows_per_part=rows_per_part)
    parts = part_files(tmp_path / "out")
    assert [pq.read_metadata(p).num_rows for p in parts] == sizes
    assert read_results(tmp_path / "out")["path"].tolist() == list(scan_sources([str(image_folder)]))


@pytest.mark.parametrize("older_name", [False, True])  # journals were once named like their parts
def test_crash_mid_batch_loses_only_that_batch(image_folder, tmp_path, detector, older_name):
    sources = list(scan_sources([str(image_folder)]))
    out = tmp_path / "out"
    out.mkdir()
    writer = _PartWriter(out, rows_per_part=1000)
    writer.write(detections_to_table(detector.predict(sources[:4])))
    writer.write(detections_to_table(detector.predict(sources[4:6])))
    journal = writer._journal()
    writer.sink.close()  # the process dies while writing the second batch:
    data = journal.read_bytes()
    journal.unlink()
    journal = journal.with_name(journal.name.removeprefix("_")) if older_name else journal
    journal.write_bytes(data[:-50])
    summary = scan(sources, out, detector)
    assert (summary.skipped, summary.scanned) == (4, 4)
    assert not list(out.glob("*.arrows"))
    rows = read_results(out)
    assert sorted(rows["path"]) == sorted(sources)


def test_a_part_cut_short_by_a_crash_is_never_read_and_a_rerun_deletes_it(image_folder, tmp_path, detector):
    sources = list(scan_sources([str(image_folder)]))
    out = tmp_path / "out"
    scan(sources[:4], out, detector)
    (part,) = part_files(out)
    half = out / f"_{part.name}.tmp"  # what a crash while sealing a part (either engine) leaves
    half.write_bytes(part.read_bytes()[:-100])
    assert len(pd.read_parquet(out)) == 4  # readers skip it
    summary = scan(sources, out, detector)
    assert (summary.skipped, summary.scanned) == (4, 4) and not half.exists()
    assert sorted(read_results(out)["path"]) == sorted(sources)


def test_a_part_reaches_the_disk_before_its_rename_and_the_rename_after(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace  # the real calls, recorded in order

    def recording_fsync(fd):
        calls.append(("fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file", os.fstat(fd).st_size))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", lambda *paths: (calls.append(("rename", 0)), replace(*paths)))
    table = pa.Table.from_pylist([{"path": "a.jpg", "label": "real", "score": 0.1}], schema=SCHEMA)
    write_part(table, tmp_path / "part-x-00000.parquet")
    assert [name for name, _ in calls] == ["fsync file", "rename", "fsync folder"]
    assert calls[0][1] == (tmp_path / "part-x-00000.parquet").stat().st_size  # the whole file, synced before its rename
    assert pq.read_table(tmp_path / "part-x-00000.parquet").to_pylist() == table.to_pylist()


def test_a_long_run_of_unreadable_inputs_is_written_batch_by_batch(tmp_path, detector):
    out = tmp_path / "out"
    written_when_listing = []

    def sources():
        for i in range(200):
            if i == 150:  # a crash now must not lose the 140-odd error rows decided before
                written_when_listing.append(len(read_results(out)))
            yield str(tmp_path / f"missing{i:03d}.jpg")

    summary = scan(sources(), out, detector, rows_per_part=8)
    assert (summary.scanned, summary.failed) == (200, 200)
    assert written_when_listing[0] >= 100
    assert len(read_results(out)) == 200


def test_pandas_reads_the_results_folder_while_a_scan_writes_it(tmp_path, detector):
    out = tmp_path / "out"
    read_midway = []

    def sources():
        for i in range(40):
            if i == 30:  # parts sealed and a journal open
                assert list(out.glob("*.arrows"))
                read_midway.append(pd.read_parquet(out)["path"].tolist())
            yield str(tmp_path / f"missing{i:02d}.jpg")

    scan(sources(), out, detector, rows_per_part=8)
    assert len(read_midway[0]) >= 8 and read_midway[0] == sorted(read_midway[0])
    assert pd.read_parquet(out)["path"].tolist() == [str(tmp_path / f"missing{i:02d}.jpg") for i in range(40)]


def test_manifest_source_reads_its_uri_column(image_folder, tmp_path, detector):
    names = ["img0.png", "nested/deep.jpg", "broken.jpg"]
    pd.DataFrame({"uri": names, "label": ["real", "ai", "real"]}).to_csv(image_folder / "m.csv", index=False)
    sources = list(scan_sources([str(image_folder / "m.csv")]))
    assert sources == [str(image_folder / n) for n in names]
    summary = scan(sources, tmp_path / "out", detector)
    assert (summary.scanned, summary.failed) == (3, 1)


def test_a_glob_of_manifests_reads_each_in_name_order(image_folder, tmp_path):
    sources = list(scan_sources([str(image_folder)]))
    (tmp_path / "shards").mkdir()
    pd.DataFrame({"uri": sources[3:]}).to_parquet(tmp_path / "shards" / "b.parquet")
    pd.DataFrame({"uri": sources[:3]}).to_parquet(tmp_path / "shards" / "a.parquet")
    assert list(scan_sources([str(tmp_path / "shards" / "*.parquet")])) == sources
    missing = tmp_path / "shards" / "none-*.csv"  # named once: the reason does not repeat it
    with pytest.raises(ConfigError, match=f"^{re.escape(f'cannot read manifest {missing}: no such file or folder')}$"):
        list(scan_sources([str(tmp_path / "shards" / "none-*.csv")]))


@pytest.mark.parametrize(("name", "data", "what"), [
    ("photo.csv", None, "a PNG image"),
    ("blob.csv", bytes(range(128, 256)), "not UTF-8 text (byte 0x80)"),
    ("bad.parquet", b"garbage", "not a Parquet file"),
])
def test_scan_and_generate_say_the_manifest_readers_line_for_a_file_that_is_none(tmp_path, name, data, what):
    from fakescope.generate.manifest import manifest_rows

    path = tmp_path / name
    line = not_a_manifest(path, data, what)
    with pytest.raises(ConfigError, match=line):
        list(scan_sources([str(path)]))
    with pytest.raises(ConfigError, match=line):  # `generate`'s --manifest, read before anything is made
        manifest_rows(str(path))


def test_scan_generate_and_training_say_one_line_for_a_manifest_with_no_uri_column(tmp_path):
    """scan said "manifest X has no 'uri' column", generate "cannot read manifest X: it has no uri column; ..."."""
    from fakescope.data import read_rows
    from fakescope.generate.manifest import manifest_rows

    path = tmp_path / "m.csv"
    path.write_text("path,label,split\na.png,real,train\n")
    line = f"manifest {path}: missing column(s): uri"
    with pytest.raises(ConfigError, match=f"^{re.escape(line)}$"):
        list(scan_sources([str(path)]))
    with pytest.raises(ConfigError, match=f"^{re.escape(line)}$"):
        read_rows(str(path))
    with pytest.raises(ConfigError, match=f"^{re.escape(line + '; move it away to start a new one')}$"):
        manifest_rows(str(path))  # `generate`'s own manifest in --out
    assert path.read_text() == "path,label,split\na.png,real,train\n"


def test_manifest_with_blank_uris_skips_them(tmp_path):
    (tmp_path / "m.csv").write_text("uri,label\na.png,real\n,ai\nb.jpg,real\n")
    assert list(scan_sources([str(tmp_path / "m.csv")])) == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]


def test_schema_holds_for_an_all_error_batch(tmp_path, detector):
    table = detections_to_table(detector.predict([str(tmp_path / "missing.png")]))
    assert table.schema == SCHEMA and table.column("error")[0].as_py()
    assert isinstance(table, pa.Table)


def test_scan_cli_resumes_and_reports_failures(image_folder, tmp_path):
    runner = CliRunner()
    args = ["scan", str(image_folder), "--out", str(tmp_path / "res.parquet"), "--no-provenance", "-b", "4"]
    first = runner.invoke(app, args)
    assert first.exit_code == 1, first.output
    summary = re.fullmatch(rf"scanned 8  failed 1  skipped \(done before\) 0  -> {re.escape(args[3])}  \((\S+) s, (\S+) images/s\)\n",
                           first.output)
    seconds, rate = float(summary[1]), float(summary[2])
    assert 8 / (seconds + 0.05) - 0.05 <= rate <= 8 / max(seconds - 0.05, 1e-3) + 0.05  # the rate of the time shown
    second = runner.invoke(app, args)
    assert re.fullmatch(r"scanned 0  failed 0  skipped \(done before\) 8  -> \S+  \(\S+ s\)\n", second.output)
    assert second.exit_code == 0
    assert len(pd.read_parquet(tmp_path / "res.parquet")) == 8
    (tmp_path / "empty").mkdir()
    nothing = runner.invoke(app, ["scan", str(tmp_path / "empty"), "--out", str(tmp_path / "none.parquet")])
    assert nothing.exit_code == 2 and nothing.stderr.startswith("error: no input images found: ")  # as detect says
    assert len(nothing.stderr.splitlines()) == 1
    assert not (tmp_path / "none.parquet").exists()  # was left behind, an empty folder


def test_a_missing_file_is_an_error_row_that_does_not_repeat_its_path(tmp_path, detector):
    missing = str(tmp_path / "missing.jpg")
    scan([missing], tmp_path / "out", detector)
    assert read_results(tmp_path / "out")[["path", "error"]].values.tolist() == [[missing, "no such file"]]


def test_scan_cli_glob_scores_only_images_as_a_folder_does(image_folder, tmp_path):
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.png").write_bytes(next(image_folder.glob("*.png")).read_bytes())
    (tmp_path / "mixed" / "labels.csv").write_text("path,label\na.png,real\n")
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "mixed" / "*"), "--out", str(tmp_path / "res"), "--no-provenance"])
    assert result.exit_code == 0 and "scanned 1  failed 0" in result.output, result.output
    assert pd.read_parquet(tmp_path / "res")["path"].tolist() == [str(tmp_path / "mixed" / "a.png")]


def test_scan_cli_refuses_an_unusable_results_folder_in_one_line(image_folder, tmp_path):
    runner = CliRunner()
    (tmp_path / "a-file").write_text("x")
    taken = runner.invoke(app, ["scan", str(image_folder), "--out", str(tmp_path / "a-file"), "--no-provenance"])
    assert taken.exit_code == 2, taken.output
    assert taken.stderr == f"error: cannot use {tmp_path / 'a-file'} as the results folder: File exists\n"
    images = sorted(os.listdir(image_folder))
    into_images = runner.invoke(app, ["scan", str(image_folder), "--out", str(image_folder), "--no-provenance"])
    assert into_images.exit_code == 2, into_images.output  # parts would be scattered among the images
    assert into_images.stderr == (f"error: cannot use {image_folder} as the results folder: it holds other files "
                                  "(broken.jpg...) and no scan results; give --out a new or empty folder\n")
    assert sorted(os.listdir(image_folder)) == images
    out = tmp_path / "res.parquet"
    out.mkdir()
    (out / "part-damaged.parquet").write_bytes(b"PAR1 cut short")
    pd.DataFrame({"other": [1]}).to_parquet(out / "part-foreign.parquet")
    for name in ("part-damaged.parquet", "part-foreign.parquet"):
        damaged = runner.invoke(app, ["scan", str(image_folder), "--out", str(out), "--no-provenance"])
        assert damaged.exit_code == 2, damaged.output
        assert damaged.stderr.startswith(f"error: {out / name} is not a readable part of the results (")
        assert len(damaged.stderr.splitlines()) == 1
        (out / name).unlink()


def test_scan_cli_stops_in_one_line_when_the_results_folder_takes_no_more(image_folder, full_folder, detector):
    folder, reason, free = full_folder
    full = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(folder), "--no-provenance", "--device", "cpu"])
    assert full.exit_code == 2, full.output
    assert full.stderr == f"error: cannot write results to {folder}: {reason}\n"
    free()
    assert scan(scan_sources([str(image_folder)]), folder, detector).scanned == 8
    assert not list(folder.glob("_*"))  # the rerun sealed or deleted what the failed one left


def test_scan_cli_refuses_a_remote_results_folder_in_one_line_and_takes_file_uris(image_folder, tmp_path, monkeypatch):
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    runner = CliRunner()
    for out in ("s3://bucket/results.parquet", "gdrive://folder/results.parquet"):
        refused = runner.invoke(app, ["scan", str(image_folder), "--out", out, "--no-provenance", "--engine", "ray"])
        assert refused.exit_code == 2, refused.output
        assert refused.stderr == f"error: cannot write results to {out}: --out must be a local folder (copy it there afterwards)\n"
    assert not list((tmp_path / "cwd").iterdir())  # no local folder named "s3:" or "gdrive:"
    local = runner.invoke(app, ["scan", str(image_folder), "--out", f"file://{tmp_path}/res.parquet", "--no-provenance"])
    assert local.exit_code == 1, local.output  # broken.jpg
    assert len(read_results(tmp_path / "res.parquet")) == 8


def test_scan_cli_refuses_progress_with_the_ray_engine_in_one_line(image_folder, tmp_path):
    """--progress was taken and ignored with --engine ray, whose progress --verbose shows."""
    out = tmp_path / "out"
    refused = CliRunner().invoke(app, ["scan", str(image_folder), "--out", str(out), "--engine", "ray", "--progress"])
    assert refused.exit_code == 2, refused.output
    assert refused.stderr == ("error: --progress counts the local engine's images; with --engine ray, --verbose shows "
                              "Ray Data's progress\n")
    assert not out.exists()


def test_a_file_name_that_is_not_utf8_is_scanned_once(image_folder, tmp_path, detector):
    latin1 = os.fsdecode(os.path.join(os.fsencode(image_folder), b"caf\xe9.png"))  # "caf\udce9.png" in Python
    os.rename(image_folder / "img0.png", latin1)
    sources = list(scan_sources([str(image_folder)]))
    first = scan(sources, tmp_path / "out", detector)
    again = scan(sources, tmp_path / "out", detector)
    assert (first.scanned, first.failed, again.scanned, again.skipped) == (8, 1, 0, 8)
    rows = read_results(tmp_path / "out").set_index("path")
    assert rows.loc[str(image_folder / "caf\\udce9.png"), "format"] == "PNG"


def test_scan_cli_with_decoding_processes_or_on_the_device_gives_the_same_rows(image_folder, tmp_path):
    runner = CliRunner()
    outs = {}
    variants = {"threads": [], "processes": ["--processes"], "device": ["--decode", "device"]}
    for name, extra in variants.items():
        outs[name] = tmp_path / f"{name}.parquet"
        done = runner.invoke(app, ["scan", str(image_folder), "--out", str(outs[name]), "--no-provenance", "-j", "2", *extra])
        assert done.exit_code == 1 and "scanned 8  failed 1" in done.output, done.output  # the broken file
    rows = {k: read_results(out).sort_values("path").reset_index(drop=True) for k, out in outs.items()}
    pd.testing.assert_frame_equal(rows["processes"], rows["threads"])
    pd.testing.assert_frame_equal(rows["device"], rows["threads"])  # on a CPU, torchvision decodes as Pillow does


def test_scan_cli_grid_option_sets_the_tiles_per_image(image_folder, tmp_path):
    runner = CliRunner()
    for grid in ("1", "3"):
        out = tmp_path / f"grid{grid}.parquet"
        done = runner.invoke(app, ["scan", str(image_folder), "--out", str(out), "--no-provenance", "--grid", grid, "--threads", "1"])
        assert done.exit_code == 1, done.output  # the broken file
    details = {}
    for grid in ("1", "3"):
        rows = read_results(tmp_path / f"grid{grid}.parquet").dropna(subset=["score"]).sort_values("path")
        details[grid] = [json.loads(e)[0]["detail"].split(" over ")[1] for e in rows["evidence"]]
    assert set(details["1"]) == {"1 tile(s)"} and details["3"] != details["1"]


def test_a_rerun_rewrites_the_parts_whose_transient_rows_it_superseded_so_pandas_reads_one_row_a_source(
        image_factory, tmp_path, detector, monkeypatch):
    """The transient rows a rerun superseded stayed in their parts: `pandas.read_parquet` read two rows for one source.
    A rerun now rewrites those parts without them, atomically: one cut short before its rename loses no row and the
    next rerun drops what is left; the rewritten parts keep their scoring record."""
    from image_server import serving_images

    from fakescope.io.fetch import TRUSTED_ENV

    out = tmp_path / "out"
    with serving_images(image_factory.bytes("PNG", (96, 80), 1), big=16) as origin:
        monkeypatch.setenv(TRUSTED_ENV, origin)
        urls = [f"{origin}/a.png", f"{origin}/busy.png", f"{origin}/flaky.png?n=1", f"{origin}/flaky.png?n=2"]
        assert scan(urls, out, detector).transient == 3
        (first,) = part_files(out)
        replace = os.replace

        def killed_rewriting_the_first_part(tmp, part):
            if part == first:
                raise KeyboardInterrupt
            replace(tmp, part)

        monkeypatch.setattr(os, "replace", killed_rewriting_the_first_part)
        with pytest.raises(KeyboardInterrupt):
            scan(urls[:3], out, detector)  # busy fails again, the first flaky answers; the second is not asked
        assert len(pd.read_parquet(out)) == 6 and len(read_results(out)) == 4  # nothing lost, nothing cut short
        monkeypatch.setattr(os, "replace", replace)
        assert scan(urls[:2], out, detector) == ScanSummary(1, 1, 1, 1)  # busy fails again; the flaky one is done
        rows = pd.read_parquet(out)
        assert rows["path"].is_unique and rows["error_kind"].fillna("scored").value_counts().to_dict() == \
            {"scored": 2, "transient": 2}
        pd.testing.assert_frame_equal(rows.sort_values("path", ignore_index=True),
                                      read_results(out).sort_values("path", ignore_index=True))
        assert not list(out.glob("_*")) and sorted(pq.read_metadata(p).num_rows for p in part_files(out)) == [1, 1, 2]
        assert len({frozenset(pq.read_schema(p).metadata.items()) for p in part_files(out)}) == 1  # record, format, names
        assert scan(urls, out, detector).skipped == 2  # a and the first flaky; busy and the second are asked again


def _rows(*rows: tuple[str, str | None]) -> pa.Table:
    """Rows of (path, error_kind): scored ones (kind None) or transient errors."""
    return pa.Table.from_pylist([{"path": p, "label": None if kind else "real", "error": kind and f"{p} busy",
                                  "error_kind": kind} for p, kind in rows], schema=SCHEMA)


def test_dropping_superseded_rows_reads_again_only_the_parts_holding_transient_rows_and_the_runs_own(tmp_path, monkeypatch):
    """`drop_superseded` read `path` and `error_kind` of every part again, after `read_folder` had read them at the start
    of the run: now it reads the parts `read_folder` found holding transient rows and the run's own, and drops the same
    rows, those superseded by a row in a part it does not read again included."""
    from fakescope.scale import records

    out = tmp_path / "out"
    out.mkdir()
    run = records.run_id(out)
    tables = [_rows((f"/img/{i}.jpg", None)) for i in range(20)]  # scored alone: not read again
    tables[3] = _rows(("/img/x.jpg", "transient"), ("/img/3.jpg", None))  # x: scored in part 9 by a run that stopped
    tables[9] = _rows(("/img/x.jpg", None), ("/img/9.jpg", None))
    tables[12] = _rows(("/img/y.jpg", "transient"))  # y: scored by this run
    tables[15] = _rows(("/img/w.jpg", "transient"))  # w: still transient
    parts = [out / f"part-{run}-{i:05d}.parquet" for i in range(len(tables) + 1)]
    for table, part in zip(tables, parts):
        write_part(table, part)
    contents = read_folder(out)
    assert contents.transient_parts == {parts[3], parts[12], parts[15]} and contents.settled == {"/img/x.jpg"}
    write_part(_rows(("/img/y.jpg", None), ("/img/z.jpg", "transient")), parts[-1])  # this run's own part
    expected = read_results(out).sort_values("path", ignore_index=True)
    reread = []
    path_kinds = records._path_kinds
    monkeypatch.setattr(records, "_path_kinds", lambda part: (reread.append(part), path_kinds(part))[1])
    assert drop_superseded(out, contents, parts[:-1]) == 2
    assert reread == [parts[3], parts[12], parts[15], parts[-1]]
    pd.testing.assert_frame_equal(pd.read_parquet(out).sort_values("path", ignore_index=True), expected)
    pd.testing.assert_frame_equal(read_results(out).sort_values("path", ignore_index=True), expected)
    assert not parts[12].exists() and pq.read_table(parts[3]).column("path").to_pylist() == ["/img/3.jpg"]


def test_the_newest_of_several_transient_rows_of_a_source_is_kept_whatever_the_random_ids_of_their_runs(
        tmp_path, monkeypatch):
    """Part names began with a random id, so `read_results` kept the transient row of whichever run's id sorted last,
    not the newest. Names now begin with the time their run began, after every name of older versions."""
    import uuid

    out = tmp_path / "out"
    out.mkdir()
    write_part(_rows(("https://a.example/x.png", "transient")), out / "part-eeeeeeeeeeee-00000.parquet")  # older version
    ids = iter([uuid.UUID(int=2**128 - 1), uuid.UUID(int=0)])  # the first run's id sorts last, the second's first
    monkeypatch.setattr(uuid, "uuid4", lambda: next(ids))
    for reason in ("first", "second"):
        with _PartWriter(out, rows_per_part=10) as writer:
            writer.write(pa.Table.from_pylist([{"path": "https://a.example/x.png", "error": reason,
                                                "error_kind": "transient"}], schema=SCHEMA))
    assert read_results(out)["error"].tolist() == ["second"]
    contents = read_folder(out)
    assert drop_superseded(out, contents, part_files(out)) == 2
    assert pd.read_parquet(out)["error"].tolist() == ["second"]


def test_a_run_after_the_clock_was_set_back_still_names_its_parts_after_every_earlier_part(tmp_path):
    """Names began with the wall clock alone: once it was set back (or the folder came from a machine whose clock ran
    ahead), a new run's parts sorted before older ones, so its transient row lost to the older one it supersedes."""
    out = tmp_path / "out"
    out.mkdir()
    ahead = out / f"part-t{time.time_ns() + 3600 * 10**9:020d}-abcdef-00000.parquet"  # an hour ahead of this clock
    write_part(_rows(("https://a.example/x.png", "transient")), ahead)
    with _PartWriter(out, rows_per_part=10) as writer:
        writer.write(pa.Table.from_pylist([{"path": "https://a.example/x.png", "error": "now", "error_kind": "transient"}],
                                          schema=SCHEMA))
    assert part_files(out)[0] == ahead
    assert read_results(out)["error"].tolist() == ["now"]
    assert drop_superseded(out, read_folder(out), [ahead]) == 1 and pd.read_parquet(out)["error"].tolist() == ["now"]


def test_a_folders_error_row_stays_until_a_run_ends_with_a_row_for_every_image_it_holds(tmp_path, image_factory,
                                                                                        detector):
    """A folder once unlisted (its error row, as `scan` writes one), readable now: a run naming one of its two images
    dropped the folder's row (from `read_results` and the parts) as if it had listed it, though the other was never
    scored. The row goes once a run ends with a row for each of its images: one that lists it, or names the other."""
    folder = tmp_path / "photos" / "b"
    one, two = (str(image_factory.file(folder / f"{i}.png", seed=i)) for i in (1, 2))
    out = tmp_path / "out"
    out.mkdir()
    write_part(pa.Table.from_pylist([{"path": str(folder), "error": "cannot list this folder (Permission denied): its "
                                      "images are left out", "error_kind": "permanent"}], schema=SCHEMA),
               out / "part-t00000000000000000001-aaaaaa-00000.parquet")
    scan([two], out, detector)
    assert sorted(read_results(out)["path"]) == sorted(pd.read_parquet(out)["path"]) == [str(folder), two]
    scan(scan_sources([str(folder)]), out, detector)  # lists it: scores 1.png, skips 2.png
    assert sorted(read_results(out)["path"]) == sorted(pd.read_parquet(out)["path"]) == [one, two]
