"""`fakescope dataset` through Typer's runner, plus one run of the installed command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app

runner = CliRunner()


def test_build_split_audit_export_chain(faces_layout, tmp_path):
    manifest = str(tmp_path / "faces.parquet")
    built = runner.invoke(app, ["dataset", "build", str(faces_layout), "--out", manifest, "--balance-by", "label"])
    assert built.exit_code == 0, built.output
    assert "34 images (ai: 17, real: 17)" in built.output and (tmp_path / "faces.csv").exists()
    split = runner.invoke(app, ["dataset", "split", manifest, "--ratios", "train=0.6,test=0.4", "--seed", "2"])
    assert split.exit_code == 0, split.output
    assert "test/ai:" in split.output and "val/" not in split.output
    # the .csv copy build wrote beside it is rewritten too, rather than left without the splits
    copy = pd.read_csv(tmp_path / "faces.csv", keep_default_na=False)
    assert copy["split"].tolist() == pd.read_parquet(manifest)["split"].tolist() and set(copy["split"]) == {"train", "test"}
    audit = runner.invoke(app, ["dataset", "audit", manifest, "--json"])
    report = json.loads(audit.output)
    assert {"format", "jpeg_quality", "border_overlay"} <= set(report["shortcuts"])
    table = runner.invoke(app, ["dataset", "audit", str(faces_layout), "--strict"])
    assert table.exit_code == 1 and "format          SHORTCUT" in table.output and "! SHORTCUT:" in table.output
    assert "audit failed (--strict): 4 shortcut(s) (format, jpeg_quality, bits_per_pixel, border_overlay)" in table.output
    export = runner.invoke(app, ["dataset", "export", manifest, str(tmp_path / "pack.npy"), "--layout", "npy", "--size", "32", "--split", "test"])
    assert export.exit_code == 0, export.output
    assert export.output.startswith("1") and (tmp_path / "pack.labels.npy").exists()


def test_build_summary_counts_the_files_it_skipped(faces_layout, tmp_path):
    """The summary said "N images" and the skipped files appeared only as separate warnings."""
    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "cut.jpg").write_bytes((faces_layout / "fake" / "stylegan2" / "f000.jpg").read_bytes()[:40])
    (root / "fake" / "text.png").write_bytes(b"not an image")
    (root / "fake" / "zero.jpg").write_bytes(b"")  # was "not a readable image (unrecognised format)"
    shutil.copy(faces_layout / "fake" / "stylegan2" / "f001.jpg", root / "fake" / "ok.jpg")
    built = runner.invoke(app, ["dataset", "build", str(root), "-o", str(tmp_path / "m.parquet")])
    assert built.exit_code == 0, built.output
    assert (f"18 images (ai: 1, real: 17), 3 skipped: 1 not a readable image, 1 not an image, 1 empty file; manifest "
            f"{tmp_path / 'm.parquet'}") in built.output
    assert f"warning: skipping {root / 'fake' / 'zero.jpg'}: empty file\n" in built.stderr
    clean = runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", str(tmp_path / "all.parquet")])
    assert clean.output.startswith("34 images (ai: 17, real: 17); manifest")


@pytest.mark.parametrize(("name", "reason"), [("ffhq_atributes.csv", "no such file or folder"),
                                              ("attrs", "a folder, not a file")])  # a folder: was refused once all were read
def test_a_missing_attribute_table_is_refused_before_any_image_is_read(image_factory, tmp_path, name, reason):
    """It was found missing only after every image had been read (hours for a large set)."""
    image_factory.file(tmp_path / "set" / "real" / "a.png")
    (tmp_path / "set" / "real" / "text.jpg").write_bytes(b"not an image")  # read, it would be skipped with a warning
    (tmp_path / "attrs").mkdir()
    table = tmp_path / name
    built = runner.invoke(app, ["dataset", "build", str(tmp_path / "set"), "-o", str(tmp_path / "m.parquet"),
                                "--attributes", str(table)])
    assert (built.exit_code, built.stdout, built.stderr) == (2, "", f"error: {table}: {reason}\n")
    assert not (tmp_path / "m.parquet").exists()


def test_strict_audit_fails_on_a_split_leak_as_on_a_shortcut(clean_layout, tmp_path):
    manifest = str(tmp_path / "clean.csv")
    assert runner.invoke(app, ["dataset", "build", str(clean_layout), "-o", manifest]).exit_code == 0
    assert runner.invoke(app, ["dataset", "split", manifest, "--ratios", "train=0.5,test=0.5"]).exit_code == 0
    clean = runner.invoke(app, ["dataset", "audit", manifest, "--strict"])
    assert clean.exit_code == 0 and "audit failed" not in clean.output, clean.output
    frame = pd.read_csv(manifest)
    frame.assign(pair_id="one face", split=["train", "test"] * (len(frame) // 2)).to_csv(manifest, index=False)
    leaked = runner.invoke(app, ["dataset", "audit", manifest, "--strict"])
    assert leaked.exit_code == 1 and "! leak: 1 pair group(s)" in leaked.output
    assert leaked.output.endswith("audit failed (--strict): 1 split leak(s)\n")
    assert runner.invoke(app, ["dataset", "audit", manifest]).exit_code == 0  # without --strict: reported only
    frame[frame["label"] == "real"].to_csv(manifest, index=False)
    one_class = runner.invoke(app, ["dataset", "audit", manifest, "--strict"])
    assert one_class.exit_code == 1 and "! only real images: nothing to compare" in one_class.output
    assert one_class.output.endswith("audit failed (--strict): nothing compared: it needs readable real and ai images\n")


def test_strict_audit_fails_on_a_near_copy_in_another_split(faces_layout, tmp_path):
    manifest = str(tmp_path / "faces.parquet")
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", manifest]).exit_code == 0
    assert runner.invoke(app, ["dataset", "split", manifest, "--ratios", "train=0.5,test=0.5"]).exit_code == 0
    frame = pd.read_parquet(manifest)
    copy = frame["uri"].str.endswith("r015_copy.jpg")
    frame.loc[copy, "split"] = "test" if frame.loc[copy, "split"].item() == "train" else "train"
    frame.to_parquet(manifest)
    leaked = runner.invoke(app, ["dataset", "audit", manifest, "--strict"])
    assert leaked.exit_code == 1 and "! leak: 2 image(s) have a near copy (re-encoded or resized" in leaked.output
    assert leaked.output.endswith("audit failed (--strict): 4 shortcut(s) (format, jpeg_quality, bits_per_pixel, "
                                  "border_overlay) and 1 split leak(s)\n")
    assert "leak" not in runner.invoke(app, ["dataset", "audit", manifest, "--max-distance", "-1"]).output


def test_known_errors_are_one_line(tmp_path):
    missing = runner.invoke(app, ["dataset", "audit", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and missing.output == f"error: {tmp_path / 'nope.parquet'}: no such file or folder\n"
    bad = runner.invoke(app, ["dataset", "split", str(tmp_path / "m.csv"), "--ratios", "train:0.8"])
    assert bad.exit_code == 2 and bad.output.startswith("error: --ratios must look like")
    json_without_images = runner.invoke(app, ["dataset", "build", "x.json", "--out", str(tmp_path / "m.parquet")])
    assert json_without_images.exit_code == 2 and "--images is required" in json_without_images.output


def test_ratios_that_are_not_finite_or_name_a_split_twice_are_one_line_errors(faces_layout, tmp_path):
    manifest = str(tmp_path / "m.csv")
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", manifest]).exit_code == 0
    for ratios, message in (("train=nan,test=0.2", "split ratios must be non-negative shares"),
                            ("train=inf,test=1", "split ratios must be non-negative shares"),
                            ("train=0.8,train=0.2", "--ratios names a split twice")):
        done = runner.invoke(app, ["dataset", "split", manifest, "--ratios", ratios, "--max-distance", "-1"])
        assert done.exit_code == 2 and done.output.startswith(f"error: {message}") and done.output.count("\n") == 1, done.output


def test_build_of_a_csv_gives_source_to_the_rows_without_one(faces_layout, tmp_path):
    """`dataset build LIST.csv --source NAME` ignored --source; it now fills the rows with no source and no pair that has one."""
    real, fake = faces_layout / "real", faces_layout / "fake" / "stylegan2" / "f001.jpg"
    listing = tmp_path / "list.csv"
    listing.write_text(f"uri,label,source,pair_id\n{real / 'r001.jpg'},real,ffhq,p1\n{real / 'r002.jpg'},real,,p2\n"
                       f"{fake},ai,,p2\n")
    for extra, sources in (([], ["ffhq", "", ""]), (["--source", "web"], ["ffhq", "web", "web"])):
        out = tmp_path / f"m{len(extra)}.csv"
        built = runner.invoke(app, ["dataset", "build", str(listing), "-o", str(out), *extra])
        assert built.exit_code == 0, built.output
        assert pd.read_csv(out, keep_default_na=False)["source"].tolist() == sources


def test_max_distance_beyond_the_hash_bits_is_a_one_line_error_that_leaves_the_manifest(faces_layout, tmp_path):
    """`--max-distance` had no upper bound: past 64 (a dHash's bits) every pair of images was compared."""
    manifest = tmp_path / "m.csv"
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", str(manifest)]).exit_code == 0
    before = manifest.read_bytes()
    for distance in ("65", "1000000", "-2"):
        done = runner.invoke(app, ["dataset", "split", str(manifest), "--max-distance", distance])
        assert (done.exit_code, done.output) == (2, f"error: Invalid value for '--max-distance': {distance} is not in the "
                                                    "range -1<=x<=64. See 'fakescope dataset split -h'.\n")
        assert manifest.read_bytes() == before
    widest = runner.invoke(app, ["dataset", "split", str(manifest), "--max-distance", "64"])
    assert widest.exit_code == 0 and "dhash" in pd.read_csv(manifest).columns, widest.output


def test_export_takes_its_layout_from_the_out_suffix_unless_given(faces_layout, tmp_path):
    """`dataset export faces.parquet faces.tar` wrote a folder named faces.tar (the default layout was folders)."""
    manifest = str(tmp_path / "faces.parquet")
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", manifest]).exit_code == 0
    for name, layout in [("pack.tar", "tar"), ("pack.npy", "npy"), ("pack.safetensors", "safetensors"), ("tree", "folders")]:
        result = runner.invoke(app, ["dataset", "export", manifest, str(tmp_path / name), "--size", "32"])
        assert result.exit_code == 0 and result.output.endswith(f"({layout})\n"), result.output
    assert tarfile.is_tarfile(tmp_path / "pack.tar") and (tmp_path / "pack.labels.npy").is_file()
    assert (tmp_path / "tree" / "manifest.parquet").is_file()
    named = runner.invoke(app, ["dataset", "export", manifest, str(tmp_path / "tree.tar"), "--layout", "folders"])
    assert named.exit_code == 0 and (tmp_path / "tree.tar" / "manifest.parquet").is_file()  # --layout still decides


def test_each_verbs_usage_line_shows_only_the_arguments_its_help_lists():
    """`dataset export -h` showed `Usage: ... {manifest} [OUT]`: OUT, the older positional spelling of --out, is
    hidden from the arguments list, but the usage line still offered it."""
    import typer.main

    group = typer.main.get_command(app).commands["dataset"]
    for name, command in group.commands.items():
        usage = runner.invoke(app, ["dataset", name, "-h"], terminal_width=200).output
        line = next(text for text in usage.splitlines() if "Usage:" in text).split("[OPTIONS]")[1].split()
        shown = [p.name for p in command.params if p.param_type_name == "argument" and not p.hidden]
        assert [piece.strip("[].").lower() for piece in line] == shown, (name, line)


def test_exporting_a_split_with_no_images_is_a_one_line_error_that_writes_nothing(faces_layout, tmp_path):
    manifest = str(tmp_path / "m.csv")
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", manifest]).exit_code == 0
    unsplit = runner.invoke(app, ["dataset", "export", manifest, str(tmp_path / "out"), "--split", "train"])
    assert unsplit.exit_code == 2 and unsplit.output.startswith("error: ") and "its splits: none" in unsplit.output
    assert runner.invoke(app, ["dataset", "split", manifest, "--ratios", "train=0.5,test=0.5"]).exit_code == 0
    valid = runner.invoke(app, ["dataset", "export", manifest, str(tmp_path / "pack.npy"), "--layout", "npy", "--split", "valid"])
    assert valid.exit_code == 2 and valid.output == f"error: {manifest} has no images in split 'valid'; its splits: test, train\n"
    assert not (tmp_path / "out").exists() and not (tmp_path / "pack.npy").exists()


def test_an_export_that_would_write_over_its_manifest_is_refused_before_writing(faces_layout, tmp_path):
    manifest = tmp_path / "faces.parquet"
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", str(manifest), "--no-csv"]).exit_code == 0
    assert runner.invoke(app, ["dataset", "split", str(manifest), "--ratios", "train=0.5,test=0.5"]).exit_code == 0
    before = manifest.read_bytes()
    for out, layout in (("faces.npy", "npy"), ("faces.safetensors", "safetensors"), (".", "folders")):
        name = "manifest.parquet" if layout == "folders" else "faces.parquet"
        (tmp_path / name).write_bytes(before)
        done = runner.invoke(app, ["dataset", "export", str(tmp_path / name), str(tmp_path / out), "--layout", layout,
                                   "--split", "test"])
        assert done.exit_code == 2 and "would replace the input" in done.output, done.output
        assert (tmp_path / name).read_bytes() == before and not (tmp_path / "faces.labels.npy").exists()
    assert not (tmp_path / "faces.npy").exists() and not (tmp_path / "test").exists()


def test_build_and_merge_never_write_over_an_input_listing(faces_layout, tmp_path):
    listing = tmp_path / "faces.csv"
    listing.write_text(f"path,label\n{faces_layout / 'real' / 'r000.jpg'},real\n")
    before = listing.read_bytes()
    for src, out, extra in ((listing, "faces.parquet", []), (listing, "faces.csv", []),
                            (faces_layout, "faces.csv", ["--attributes", str(listing)])):
        done = runner.invoke(app, ["dataset", "build", str(src), "-o", str(tmp_path / out), *extra])
        assert done.exit_code == 2 and done.output.startswith("error: writing ") and "would replace the input" in done.output
        assert listing.read_bytes() == before and not (tmp_path / "m.parquet").exists()
    assert runner.invoke(app, ["dataset", "build", str(listing), "-o", str(tmp_path / "m.parquet")]).exit_code == 0
    merged = runner.invoke(app, ["dataset", "merge", str(tmp_path / "m.parquet"), str(listing), "-o", str(tmp_path / "faces.parquet")])
    assert merged.exit_code == 2 and "would replace the input" in merged.output and listing.read_bytes() == before
    assert runner.invoke(app, ["dataset", "merge", str(tmp_path / "m.parquet"), "-o", str(tmp_path / "m.parquet")]).exit_code == 0


def test_split_in_place_keeps_builds_csv_copy_in_step_and_never_writes_it_over_its_input(faces_layout, tmp_path):
    manifest, copy = tmp_path / "faces.parquet", tmp_path / "faces.csv"
    assert runner.invoke(app, ["dataset", "build", str(faces_layout), "-o", str(manifest)]).exit_code == 0
    assert runner.invoke(app, ["dataset", "split", str(manifest)]).exit_code == 0
    split = pd.read_parquet(manifest)
    assert set(split["split"]) == {"train", "val", "test"}
    assert pd.read_csv(copy, keep_default_na=False)[["uri", "split"]].equals(split[["uri", "split"]])
    before = copy.read_bytes()
    refused = runner.invoke(app, ["dataset", "split", str(copy), "-o", str(tmp_path / "faces.parquet")])
    assert refused.exit_code == 2 and "would replace the input" in refused.output and copy.read_bytes() == before
    kept = runner.invoke(app, ["dataset", "split", str(copy), "-o", str(tmp_path / "faces.parquet"), "--no-csv", "--seed", "3"])
    assert kept.exit_code == 0 and copy.read_bytes() == before


def test_a_manifest_named_other_than_parquet_or_csv_is_refused_before_any_work(faces_layout, tmp_path):
    for command in (["build", str(faces_layout)], ["merge", str(tmp_path / "nope.csv")],
                    ["split", str(tmp_path / "nope.csv")]):
        done = runner.invoke(app, ["dataset", *command, "-o", str(tmp_path / "faces.txt")])
        assert done.exit_code == 2 and done.output == f"error: a manifest is written as .parquet or .csv, not {tmp_path / 'faces.txt'}\n"
    assert list(tmp_path.iterdir()) == []


def test_installed_command_runs(faces_layout):
    command = shutil.which("fakescope")
    assert command is not None
    done = subprocess.run([command, "dataset", "audit", str(faces_layout), "--json", "--max-per-class", "8"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["inspected"] == {"ai": 8, "real": 8}


def test_empty_and_unreadable_manifests_are_one_line_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("uri,label,source,generator,pair_id,split,width,height,format,sha256\n")
    for command in (["split", "--ratios", "train=1"], ["audit"], ["export", str(tmp_path / "out")]):
        result = runner.invoke(app, ["dataset", command[0], str(tmp_path / "empty.csv"), *command[1:]])
        assert result.exit_code == 2 and result.output == f"error: manifest {tmp_path / 'empty.csv'} lists no images\n"
    (tmp_path / "gone.csv").write_text("path,label\nnope/a.png,real\nnope/b.png,ai\n")
    built = runner.invoke(app, ["dataset", "build", str(tmp_path / "gone.csv"), "--out", str(tmp_path / "m.csv")])
    assert built.exit_code == 2 and "none of the 2 listed image(s) could be read" in built.output
    assert not (tmp_path / "m.csv").exists()
    (tmp_path / "m.csv").write_text(
        "uri,label,source,generator,pair_id,split,width,height,format,sha256\nnope/a.png,real,,,p,,1,1,PNG,x\nnope/b.png,ai,,,q,,1,1,PNG,y\n")
    audit = runner.invoke(app, ["dataset", "audit", str(tmp_path / "m.csv")])
    assert audit.exit_code == 0 and "2 image(s) could not be read" in audit.output, audit.output
    split = runner.invoke(app, ["dataset", "split", str(tmp_path / "m.csv"), "--ratios", "train=1"])
    assert split.exit_code == 0 and "warning: 2 image(s) could not be read, so not checked" in split.output


def test_relative_image_paths_resolve_against_the_manifests_folder(faces_layout, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(faces_layout, data / "images")
    manifest = data / "m.csv"
    assert runner.invoke(app, ["dataset", "build", str(data / "images"), "--out", str(manifest)]).exit_code == 0
    frame = pd.read_csv(manifest)
    frame["uri"] = [os.path.relpath(u, data) for u in frame["uri"]]  # as `dataset export` writes them
    frame.to_csv(manifest, index=False)
    monkeypatch.chdir(tmp_path / "data" / "images" / "fake")  # any folder but the manifest's

    audit = runner.invoke(app, ["dataset", "audit", str(manifest), "--json"])
    assert audit.exit_code == 0 and json.loads(audit.output)["inspected"] == {"ai": 17, "real": 17}, audit.output
    split = runner.invoke(app, ["dataset", "split", str(manifest), "--ratios", "train=0.5,test=0.5"])
    assert split.exit_code == 0 and "warning" not in split.output, split.output
    kept = pd.read_csv(manifest)
    assert list(kept["uri"]) == list(frame["uri"]) and kept["dhash"].ne("").all()  # relative, and every image hashed
    moved = runner.invoke(app, ["dataset", "split", str(manifest), "--ratios", "train=0.5,test=0.5", "--out", str(tmp_path / "m.csv")])
    assert moved.exit_code == 0, moved.output
    assert all(os.path.isfile(u) for u in pd.read_csv(tmp_path / "m.csv")["uri"])  # valid from its new folder
    export = runner.invoke(app, ["dataset", "export", str(manifest), str(tmp_path / "exported")])
    assert export.exit_code == 0 and export.output.startswith("34 images exported"), export.output


def test_split_warns_when_a_requested_split_gets_no_images(tmp_path):
    from PIL import Image

    for folder, shade in (("real", 120), ("fake/flat", 121)):
        os.makedirs(tmp_path / "flat" / folder)
        for i in range(4):  # flat images: one near-duplicate group
            image = Image.new("RGB", (64, 64), (shade, 90, 60))
            image.putpixel((0, 0), (i, i, i))
            image.save(tmp_path / "flat" / folder / f"{i}.png")
    manifest = str(tmp_path / "flat.csv")
    assert runner.invoke(app, ["dataset", "build", str(tmp_path / "flat"), "--out", manifest]).exit_code == 0
    split = runner.invoke(app, ["dataset", "split", manifest])
    assert split.exit_code == 0 and "warning: no images in val, test" in split.output
    dealt = runner.invoke(app, ["dataset", "split", manifest, "--max-distance", "-1", "--ratios", "train=0.5,val=0.25,test=0.25"])
    assert "test/" in dealt.output and "warning: no images" not in dealt.output


def test_a_file_given_as_a_manifest_or_folder_is_named_in_one_line(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    not_a_manifest = f"error: {photo} is not a manifest (.csv or .parquet): it is a PNG image\n"
    for args in (["embed", str(photo), "--out", str(tmp_path / "embed")],
                 ["dataset", "merge", str(photo), str(photo), "--out", str(tmp_path / "merged.csv")],
                 ["dataset", "export", str(photo), str(tmp_path / "export")]):
        result = runner.invoke(app, args)
        assert (result.exit_code, result.output) == (2, not_a_manifest), args
    result = runner.invoke(app, ["dataset", "audit", str(photo)])
    assert (result.exit_code, result.output) == (2, f"error: {photo} is a file: audit expects a folder with real/ and fake/ "
                                                    "(or ai/), or a manifest (.csv or .parquet)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]


def test_files_added_after_a_split_move_no_split_image_with_keep_splits_and_a_new_deal_says_what_moved(faces_layout, tmp_path):
    root, manifest = tmp_path / "faces", str(tmp_path / "faces.parquet")
    shutil.copytree(faces_layout, root)
    assert runner.invoke(app, ["dataset", "build", str(root), "-o", manifest]).exit_code == 0
    assert runner.invoke(app, ["dataset", "split", manifest, "--ratios", "train=0.5,val=0.25,test=0.25"]).exit_code == 0
    before = pd.read_parquet(manifest).set_index("uri")["split"]
    for i in range(4):  # new faces, and a variation of one already split
        shutil.copy(root / "real" / f"r{i:03d}.jpg", root / "real" / f"new{i}.png")
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(root / "real" / f"plain{i}.png")
    with Image.open(root / "real" / "r003.jpg") as face:  # not a copy of r000_var1.png: that would link r000 to r003
        face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "fake" / "variations" / "r003_var1.png")
    rebuilt = str(tmp_path / "rebuilt.parquet")
    assert runner.invoke(app, ["dataset", "build", str(root), "-o", rebuilt]).exit_code == 0
    assert runner.invoke(app, ["dataset", "merge", manifest, rebuilt, "-o", manifest]).exit_code == 0
    kept = runner.invoke(app, ["dataset", "split", manifest, "--keep-splits", "-o", str(tmp_path / "kept.parquet")])
    assert kept.exit_code == 0 and "another one now" not in kept.output, kept.output
    after = pd.read_parquet(tmp_path / "kept.parquet").set_index("uri")["split"]
    assert after[before.index].equals(before) and (after != "").all()
    assert after[str(root / "real" / "new2.png")] == before[str(root / "real" / "r002.jpg")]  # an exact copy
    assert after[str(root / "fake" / "variations" / "r003_var1.png")] == before[str(root / "real" / "r003.jpg")]
    dealt = runner.invoke(app, ["dataset", "split", manifest, "--seed", "7", "--ratios", "train=0.6,test=0.4"])
    assert dealt.exit_code == 0 and "image(s) that had a split are in another one now; --keep-splits keeps them" in dealt.output


def test_an_older_manifest_naming_the_real_in_source_without_pair_ids_splits_and_audits_without_leaks(clean_layout, tmp_path):
    """Older manifests named the real image in `source` (read as source_uri) and some left pair_id empty: split dealt
    each fake apart from its real and warned of a leak `e.g. pair_id=`, the empty pair_id taken for one group."""
    assert runner.invoke(app, ["dataset", "build", str(clean_layout), "-o", str(tmp_path / "new.csv")]).exit_code == 0
    frame = pd.read_csv(tmp_path / "new.csv", keep_default_na=False)
    reals = frame.loc[frame["label"] == "real", "uri"].tolist()
    fakes = frame["label"] == "ai"
    old = frame.drop(columns=["source_uri"]).assign(pair_id="", label=frame["label"].map({"real": "0", "ai": "fake"}))
    old.loc[fakes, "source"] = [reals[i % 3] for i in range(int(fakes.sum()))]
    old.to_csv(tmp_path / "old.csv", index=False)
    done = runner.invoke(app, ["dataset", "split", str(tmp_path / "old.csv"), "-o", str(tmp_path / "split.csv"),
                               "--ratios", "train=0.5,val=0.25,test=0.25"])
    assert done.exit_code == 0 and "warning" not in done.output, done.output
    split = pd.read_csv(tmp_path / "split.csv", keep_default_na=False).set_index("uri")
    made = split[split["label"] == "ai"]
    assert (made["split"].to_numpy() == split.loc[made["source_uri"], "split"].to_numpy()).all()
    assert split["split"].nunique() == 3 and set(split["label"]) == {"real", "ai"}
    audit = runner.invoke(app, ["dataset", "audit", str(tmp_path / "split.csv"), "--strict"])
    assert audit.exit_code == 0 and "leak" not in audit.output, audit.output


def test_split_rehash_refreshes_an_old_manifests_sizes_and_dhashes_so_a_rotated_photos_copy_is_found(tmp_path):
    """An old manifest's dhash (and width/height) of an EXIF-rotated photo, taken before it was turned upright, was
    reused as it was: its upright copy, hashed afresh, was no near copy of it, so the two stayed in two splits."""
    from data_helpers import encode, smooth_image

    from fakescope.data.splits import difference_hash
    from fakescope.io.image import decode_image

    stored = smooth_image(5, side=96).crop((0, 0, 96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    (tmp_path / "photo.jpg").write_bytes(data := encode(stored, "JPEG", exif=exif, quality=95))
    (tmp_path / "copy.png").write_bytes(encode(decode_image(data).image, "PNG"))
    old = pd.DataFrame({"uri": ["photo.jpg", "copy.png"], "label": ["real", "real"], "source": ["ffhq"] * 2,
                        "generator": [""] * 2, "pair_id": ["p1", "p2"], "split": ["train", "test"], "width": [96, 64],
                        "height": [64, 96], "format": ["JPEG", "PNG"], "sha256": ["s1", "s2"],
                        "dhash": [f"{difference_hash(encode(stored, 'PNG')):016x}", ""]})
    old.to_csv(tmp_path / "old.csv", index=False)
    kept = runner.invoke(app, ["dataset", "split", str(tmp_path / "old.csv"), "-o", str(tmp_path / "kept.csv"), "--keep-splits"])
    assert kept.exit_code == 0 and pd.read_csv(tmp_path / "kept.csv")["split"].tolist() == ["train", "test"], kept.output
    fresh = runner.invoke(app, ["dataset", "split", str(tmp_path / "old.csv"), "-o", str(tmp_path / "new.csv"),
                                "--keep-splits", "--rehash"])
    assert fresh.exit_code == 0, fresh.output
    assert "warning: 1 of the 2 image(s) that had a split are in another one now" in fresh.output
    new = pd.read_csv(tmp_path / "new.csv", dtype={"dhash": str})
    assert new["split"].tolist() == ["test", "test"] and new["uri"].tolist() == ["photo.jpg", "copy.png"]
    assert new[["width", "height"]].values.tolist() == [[64, 96], [64, 96]]
    assert new["dhash"].iloc[0] == f"{difference_hash(data):016x}"


def test_a_relative_source_uri_links_an_ai_image_to_its_real_one_in_split_and_audit(clean_layout, tmp_path):
    """A source_uri such as `../faces/real/a.png` was compared unresolved with the resolved uris: split dealt each fake
    apart from its real, and audit saw no leak between them."""
    assert runner.invoke(app, ["dataset", "build", str(clean_layout), "-o", str(tmp_path / "new.csv")]).exit_code == 0
    frame = pd.read_csv(tmp_path / "new.csv", keep_default_na=False)
    sets = tmp_path / "sets"
    sets.mkdir()
    reals = [os.path.relpath(u, sets) for u in frame.loc[frame["label"] == "real", "uri"]]
    fakes = frame["label"] == "ai"
    frame = frame.assign(uri=[os.path.relpath(u, sets) for u in frame["uri"]], pair_id="")
    frame.loc[fakes, "source_uri"] = [reals[i % 3] for i in range(int(fakes.sum()))]
    frame.to_csv(sets / "m.csv", index=False)
    done = runner.invoke(app, ["dataset", "split", str(sets / "m.csv"), "--ratios", "train=0.5,val=0.25,test=0.25",
                               "--max-distance", "-1"])
    assert done.exit_code == 0 and "warning" not in done.output, done.output
    split = pd.read_csv(sets / "m.csv", keep_default_na=False).set_index("uri")
    made = split[split["label"] == "ai"]
    assert made["source_uri"].str.startswith("..").all()  # written back as listed
    assert (made["split"].to_numpy() == split.loc[made["source_uri"], "split"].to_numpy()).all()
    split.loc[made.index[0], "split"] = next(s for s in ("train", "val", "test") if s != made["split"].iloc[0])
    split.reset_index().to_csv(sets / "m.csv", index=False)
    audit = runner.invoke(app, ["dataset", "audit", str(sets / "m.csv"), "--max-distance", "-1", "--max-per-class", "10"])
    assert audit.exit_code == 0 and "in another split than the image their source_uri names" in audit.output, audit.output
