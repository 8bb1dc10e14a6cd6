"""`fakescope dataset merge`: labelled, split reals plus the ai images generated from them."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest
from data_helpers import SIDE, smooth_image
from PIL import ImageFilter
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.data import merge_manifests, read_manifest, write_manifest
from fakescope.errors import ConfigError
from fakescope.generate.local import generate_local

runner = CliRunner()


@pytest.fixture()
def reals(tmp_path):
    """reals.parquet: 12 real faces with attributes, split; as `dataset build/split` write it."""
    folder = tmp_path / "faces" / "real"
    folder.mkdir(parents=True)
    for i in range(12):
        smooth_image(i).save(folder / f"{i:05d}.png")
    (tmp_path / "attrs.csv").write_text("file,gender\n" + "".join(f"{i:05d}.png,{'fm'[i % 2]}\n" for i in range(12)))
    manifest = str(tmp_path / "reals.parquet")
    for command in (["build", str(tmp_path / "faces"), "-o", manifest, "--attributes", str(tmp_path / "attrs.csv")],
                    ["split", manifest, "--ratios", "train=0.5,test=0.5", "--max-distance", "-1"]):
        done = runner.invoke(app, ["dataset", *command])
        assert done.exit_code == 0, done.output
    return manifest


def test_generated_ai_images_take_their_faces_split_and_attributes(reals, tmp_path):
    fakes = tmp_path / "faces" / "fake" / "blur"
    count, fakes_manifest, *_ = generate_local(reals, str(fakes), lambda images: [im.filter(ImageFilter.BLUR) for im in images],
                                           generator="blur", model="blur", split="train")
    assert count == 6 and set(pd.read_csv(fakes_manifest, keep_default_na=False)["split"]) == {""}  # generate knows no splits
    out = tmp_path / "faces.parquet"
    done = runner.invoke(app, ["dataset", "merge", reals, fakes_manifest, "-o", str(out)])
    assert done.exit_code == 0 and done.output.startswith("18 images (ai: 6, real: 12)"), done.output
    merged = read_manifest(str(out))
    by_pair = merged.groupby("pair_id")
    assert (by_pair["split"].nunique() == 1).all() and (by_pair["gender"].nunique() == 1).all()
    ai = merged[merged["label"] == "ai"]
    assert set(ai["split"]) == {"train"} and ai["gender"].notna().all() and set(ai["generator"]) == {"blur"}
    assert all(uri.startswith(str(fakes)) for uri in ai["uri"])  # the fakes manifest's relative uris resolved
    assert set(merged["source"]) == {"faces"}  # the fakes' origin is their faces', not each face's path
    assert set(ai["source_uri"]) <= set(merged.loc[merged["label"] == "real", "uri"]) and set(ai["model"]) == {"blur"}


def test_a_manifest_naming_the_real_image_in_source_still_merges(reals, tmp_path):
    fakes = tmp_path / "faces" / "fake" / "blur"
    _, fakes_manifest, *_ = generate_local(reals, str(fakes), lambda images: images, generator="blur", model="blur")
    old = pd.read_csv(fakes_manifest, keep_default_na=False)
    old.assign(source=old["source_uri"]).drop(columns="source_uri").to_csv(fakes_manifest, index=False)  # as before
    merged = merge_manifests([reals, fakes_manifest])
    ai = merged[merged["label"] == "ai"]
    assert set(merged["source"]) == {"faces"} and sorted(ai["source_uri"]) == sorted(old["source_uri"])


def test_merging_again_keeps_first_rows_and_disagreeing_splits_are_refused(reals, tmp_path):
    frame = read_manifest(reals)
    twice = merge_manifests([reals, reals])
    assert len(twice) == len(frame) and merge_manifests(reals).equals(merge_manifests([reals]))  # one path: one manifest
    moved = frame.assign(split=frame["split"].map({"train": "test", "test": "train"}))
    write_manifest(moved.assign(uri=[u.replace(".png", "-copy.png") for u in frame["uri"]]), str(tmp_path / "moved.csv"))
    with pytest.raises(ConfigError, match="disagree on splits: .* pair group"):
        merge_manifests([reals, str(tmp_path / "moved.csv")])
    missing = runner.invoke(app, ["dataset", "merge", reals, str(tmp_path / "nope.csv"), "-o", str(tmp_path / "m.csv")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "nope.csv" in missing.output


def test_a_near_copy_in_another_split_is_refused_as_split_and_audit_find_it(reals, tmp_path):
    """Merge compared pair ids and identical files only: a resized copy of a train face listed for test passed."""
    frame = read_manifest(reals)
    face = frame.iloc[3]
    copy = tmp_path / "more" / "00003_small.png"
    copy.parent.mkdir()
    smooth_image(3).resize((SIDE - 8, SIDE - 8)).save(copy)
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    other = "test" if face["split"] == "train" else "train"
    write_manifest(frame.iloc[[3]].assign(uri=str(copy), sha256=digest, pair_id=digest, split=other),
                   str(tmp_path / "more.csv"))
    expected = (f"the manifests disagree on splits: 2 image(s) have a near copy (re-encoded or resized: dHash within 4 "
                f"bits) in another split, e.g. {face['uri']} ({face['split']}) and {copy} ({other})")
    with pytest.raises(ConfigError) as refused:
        merge_manifests([reals, str(tmp_path / "more.csv")])
    assert str(refused.value) == expected
    out = str(tmp_path / "merged.parquet")
    done = runner.invoke(app, ["dataset", "merge", reals, str(tmp_path / "more.csv"), "-o", out])
    assert done.exit_code == 2 and done.output == f"error: {expected}\n"
    done = runner.invoke(app, ["dataset", "merge", reals, str(tmp_path / "more.csv"), "-o", out, "--max-distance", "-1"])
    assert done.exit_code == 0 and done.output.startswith("13 images (real: 13)"), done.output
    with pytest.raises(ConfigError, match="0 to 64, or -1 for off; got 65"):
        merge_manifests([reals], max_distance=65)


def test_manifests_whose_rows_all_have_their_attributes_merge_without_error(reals, tmp_path):
    frame = read_manifest(reals)
    labelled = str(tmp_path / "labelled.parquet")
    write_manifest(frame.assign(glasses=[i % 2 for i in range(len(frame))], smiling=True), labelled)
    merged = merge_manifests([labelled, labelled])
    assert merged["glasses"].tolist() == [i % 2 for i in range(len(frame))] and merged["smiling"].all()


def test_an_integer_attribute_stays_integer_when_the_ai_images_take_it(reals, tmp_path):
    frame = read_manifest(reals)
    labelled = str(tmp_path / "labelled.parquet")
    write_manifest(frame.assign(glasses=[i % 2 for i in range(len(frame))]), labelled)
    _, fakes, *_ = generate_local(labelled, str(tmp_path / "blur"), lambda images: [im.filter(ImageFilter.BLUR) for im in images],
                              generator="blur", model="blur")
    out = tmp_path / "faces.csv"
    assert runner.invoke(app, ["dataset", "merge", labelled, fakes, "-o", str(out)]).exit_code == 0
    merged = pd.read_csv(out)
    assert merged["glasses"].dtype == "int64" and len(merged) == 2 * len(frame)  # 0/1 as written, not 0.0/1.0
    ai = merged[merged["label"] == "ai"].set_index("pair_id")["glasses"]
    assert (ai == merged[merged["label"] == "real"].set_index("pair_id")["glasses"].loc[ai.index]).all()


def test_a_broken_manifest_among_several_is_named_in_the_one_line_error(reals, tmp_path):
    rows = read_manifest(reals)
    broken = {"bad_label.csv": rows.assign(label="maybe"), "bad_split.csv": rows.assign(split="Test"),
              "repeated.csv": pd.concat([rows, rows.iloc[:1]]), "no_sha.csv": rows.drop(columns="sha256")}
    for name, frame in broken.items():
        frame.to_csv(tmp_path / name, index=False)
        done = runner.invoke(app, ["dataset", "merge", reals, str(tmp_path / name), "-o", str(tmp_path / "merged.parquet")])
        assert done.exit_code == 2 and done.output.startswith(f"error: {tmp_path / name}: "), done.output
        assert done.output.count("\n") == 1 and not (tmp_path / "merged.parquet").exists()
