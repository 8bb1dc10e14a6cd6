"""Leakage-free splits: pairs, exact and near duplicates stay in one split; seeded and proportional."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
from data_helpers import encode, smooth_image
from PIL import Image
from typer.testing import CliRunner

from fakescope.cli import app
from fakescope.data import build_from_folders, find_leaks, group_related, read_manifest, split_manifest, write_manifest
from fakescope.data.audit import inspect_image
from fakescope.data.manifest import describe_image
from fakescope.data.splits import difference_hash, near_duplicate_pairs, perceptual_hashes
from fakescope.io.image import decode_image


def test_dhash_survives_reencoding_but_separates_images():
    image = smooth_image(7, side=96)
    original = difference_hash(encode(image, "PNG"))
    recoded = difference_hash(encode(image.resize((80, 80)), "JPEG", quality=70))
    other = difference_hash(encode(smooth_image(8, side=96), "PNG"))
    assert (original ^ recoded).bit_count() <= 4
    assert (original ^ other).bit_count() >= 16


def test_a_large_jpeg_decoded_at_reduced_scale_still_matches_its_png_and_a_smaller_copy():
    image = smooth_image(3, side=768)  # its JPEGs decode at 1/8 and 1/4 scale for the hash
    original = difference_hash(encode(image, "PNG"))
    for copy in (image, image.resize((384, 384))):
        assert (original ^ difference_hash(encode(copy, "JPEG", quality=75))).bit_count() <= 2


def test_manifests_audits_and_dhash_turn_a_rotated_photo_as_decoding_does(tmp_path):
    """Manifests and audits recorded a photo's stored width and height, and the dHash its stored pixels, where its
    EXIF orientation turns it; detection and training turn it first. All now turn it once, as `io.image` does."""
    stored = smooth_image(5, side=96).crop((0, 0, 96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(stored, "JPEG", exif=exif, quality=95)
    shown = decode_image(data)
    audited = inspect_image(data)
    assert (shown.width, shown.height) == (64, 96)
    assert (describe_image(data)["width"], describe_image(data)["height"]) == (64, 96) == (audited["width"], audited["height"])
    turned = difference_hash(data)
    assert (turned ^ difference_hash(encode(shown.image, "PNG"))).bit_count() <= 4
    assert (turned ^ difference_hash(encode(stored, "PNG"))).bit_count() >= 16  # the stored pixels hashed apart
    (tmp_path / "photo.jpg").write_bytes(data)  # an older manifest's stored figures are read and reused as they are
    old = pd.DataFrame({"uri": [str(tmp_path / "photo.jpg")], "label": ["real"], "source": ["ffhq"], "generator": [""],
                        "pair_id": ["p"], "split": ["train"], "width": [96], "height": [64], "format": ["JPEG"],
                        "sha256": ["s"], "dhash": [f"{difference_hash(encode(stored, 'PNG')):016x}"]})
    old.to_csv(tmp_path / "old.csv", index=False)
    frame = read_manifest(str(tmp_path / "old.csv"))
    assert (frame.loc[0, "width"], frame.loc[0, "height"]) == (96, 64)
    assert perceptual_hashes(frame, workers=1) == [difference_hash(encode(stored, "PNG"))]


def test_banded_search_matches_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).tolist()
    hashes = base + [h ^ (1 << int(rng.integers(0, 60))) ^ (1 << 61) for h in base[:40]] + [None]
    found = set(near_duplicate_pairs(hashes, 3))
    brute = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
             if hashes[i] is not None and hashes[j] is not None and (hashes[i] ^ hashes[j]).bit_count() <= 3}
    assert found == brute and len(found) >= 40


def test_copies_of_one_hash_are_chained_not_paired_all_with_all():
    rng = np.random.default_rng(1)
    distinct = rng.integers(0, 2**63, 60, dtype=np.int64).tolist()
    hashes = [distinct[i % 3] for i in range(3000)] + distinct[3:] + [distinct[3] ^ 1, distinct[0] ^ 6, None]
    found = near_duplicate_pairs(hashes, 3)
    assert len(found) < len(hashes)  # all pairs of the copies alone would be 1.5 million
    groups = group_related(pd.DataFrame({"pair_id": [""] * len(hashes), "sha256": [""] * len(hashes)}), hashes, max_distance=3)
    brute = [[j for j in range(len(hashes)) if hashes[i] is not None and hashes[j] is not None
              and (hashes[i] ^ hashes[j]).bit_count() <= 3] for i in (0, 1, 2, 3000, len(hashes) - 3)]
    assert [sorted(np.flatnonzero(groups == groups[row[0]])) for row in brute] == brute


def test_pairs_and_near_duplicates_never_straddle_splits(faces_layout):
    frame = build_from_folders(str(faces_layout))
    split = split_manifest(frame, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0).set_index("uri")
    real, copy = (str(faces_layout / "real" / n) for n in ("r015.jpg", "r015_copy.jpg"))
    assert split.loc[real, "split"] == split.loc[copy, "split"]
    pair = (str(faces_layout / "real" / "r000.jpg"), str(faces_layout / "fake" / "variations" / "r000_var1.png"))
    assert split.loc[pair[0], "split"] == split.loc[pair[1], "split"]
    assert find_leaks(split.reset_index()) == []
    counts = split.groupby(["split", "label"]).size()
    assert counts["train"].sum() >= 14 and counts["test"]["ai"] >= 3 and counts["val"]["real"] >= 3
    assert len(split.loc[real, "dhash"]) == 16


def test_rows_merged_into_a_split_manifest_without_a_dhash_are_hashed_when_it_is_split_again(faces_layout, tmp_path):
    frame = build_from_folders(str(faces_layout))
    reals = split_manifest(frame[frame["label"] == "real"], seed=0)
    merged = pd.concat([reals, frame[frame["label"] == "ai"]], ignore_index=True)  # as `dataset merge` leaves ai rows
    merged.loc[merged["uri"].str.endswith("r015_copy.jpg"), "dhash"] = ""
    manifest = str(tmp_path / "merged.parquet")
    write_manifest(merged, manifest)
    done = CliRunner().invoke(app, ["dataset", "split", manifest])
    assert done.exit_code == 0 and "could not be read" not in done.output, done.output
    assert (read_manifest(manifest)["dhash"] != "").all()
    for seed in range(6):  # the copy, hashed now, is still linked to its original
        split = split_manifest(merged, seed=seed).set_index("uri")["split"]
        assert split[str(faces_layout / "real" / "r015_copy.jpg")] == split[str(faces_layout / "real" / "r015.jpg")]


def test_copies_of_one_file_are_read_and_hashed_once(faces_layout, tmp_path, capsys):
    shutil.copytree(faces_layout, tmp_path / "faces")
    for name in ("r000_again.jpg", "r000_third.jpg"):
        shutil.copy(tmp_path / "faces" / "real" / "r000.jpg", tmp_path / "faces" / "real" / name)
    frame = build_from_folders(str(tmp_path / "faces"))
    split = split_manifest(frame, progress=True).set_index("uri")
    assert f"/{len(frame) - 2} [" in capsys.readouterr().err  # the hashing bar counts files, not rows
    copies = split.loc[[str(tmp_path / "faces" / "real" / n) for n in ("r000.jpg", "r000_again.jpg", "r000_third.jpg")]]
    assert copies["dhash"].nunique() == 1 and copies["dhash"].iloc[0] != "" and copies["split"].nunique() == 1


def test_a_copy_still_there_is_hashed_when_the_first_is_gone(faces_layout, tmp_path):
    """Copies were hashed through their first row only: where that file was gone, every copy lost its hash (and with it
    its near duplicates' link), though another copy was there to read."""
    shutil.copytree(faces_layout, tmp_path / "faces")
    real = tmp_path / "faces" / "real"
    shutil.copy(real / "r000.jpg", real / "r000_again.jpg")
    frame = build_from_folders(str(tmp_path / "faces"))
    (real / "r000.jpg").unlink()  # the first row of the two
    split = split_manifest(frame).set_index("uri")
    assert split.loc[str(real / "r000_again.jpg"), "dhash"] == f"{difference_hash((real / 'r000_again.jpg').read_bytes()):016x}"


def test_same_seed_same_split_and_leak_report(faces_layout):
    frame = build_from_folders(str(faces_layout))
    first = split_manifest(frame, seed=5)
    assert first["split"].tolist() == split_manifest(first, seed=5)["split"].tolist()
    leaked = first.copy()
    leaked.loc[leaked.index[0], "pair_id"] = leaked.loc[leaked.index[-1], "pair_id"]
    leaked.loc[leaked.index[0], "split"], leaked.loc[leaked.index[-1], "split"] = "train", "test"
    assert find_leaks(leaked)[0].startswith("1 pair group(s) appear in more than one split")


def test_a_seeded_split_is_the_same_on_two_machines_whatever_the_row_order_folder_or_hash_seed(faces_layout, tmp_path):
    """Groups were numbered by their first row, so the same images and seed listed in another order (another
    machine's listing, a merge) were dealt differently: 29 of 80 images changed split."""
    splits = []
    for machine, hash_seed in (("a", "1"), ("b", "2")):
        root = shutil.copytree(faces_layout, tmp_path / machine / "faces")
        frame = build_from_folders(str(root))
        manifest = tmp_path / machine / "faces.csv"
        write_manifest(frame if machine == "a" else frame.iloc[::-1], str(manifest))
        done = subprocess.run([sys.executable, "-m", "fakescope", "dataset", "split", str(manifest), "--seed", "7"],
                              env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        split = pd.read_csv(manifest)
        splits.append(dict(zip((os.path.relpath(u, root) for u in split["uri"]), split["split"])))
    assert splits[0] == splits[1] and set(splits[0].values()) == {"train", "val", "test"}


def test_an_image_and_the_one_its_source_uri_names_share_a_split_in_a_manifest_without_pair_ids(clean_layout):
    """A manifest naming each fake's real in source_uri but with empty pair_ids (an older one, written by hand) had its
    fakes dealt apart from their reals, and find_leaks took the empty pair_id for one group spread over every split."""
    frame = build_from_folders(str(clean_layout))
    reals = frame.loc[frame["label"] == "real", "uri"].tolist()
    fakes = frame["label"] == "ai"
    frame.loc[fakes, "source_uri"] = [reals[i % 4] for i in range(int(fakes.sum()))]
    frame["pair_id"] = ""
    split = split_manifest(frame, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0, max_distance=-1).set_index("uri")
    made = split[split["source_uri"] != ""]
    assert (made["split"].to_numpy() == split.loc[made["source_uri"], "split"].to_numpy()).all()
    assert split["split"].nunique() == 3 and find_leaks(split.reset_index()) == []
    moved = split.reset_index()
    first = moved.index[moved["source_uri"] != ""][0]
    moved.loc[first, "split"] = next(s for s in ("train", "val", "test") if s != moved.loc[first, "split"])
    assert [problem.split(", e.g.")[0] for problem in find_leaks(moved)] == [
        "1 image(s) are in another split than the image their source_uri names"]


def test_split_and_audit_count_the_images_they_read_on_stderr(faces_layout, capsys):
    from fakescope.data import audit_manifest

    frame = build_from_folders(str(faces_layout))
    split_manifest(frame, progress=True)
    audit_manifest(frame, progress=True)
    err = capsys.readouterr().err
    assert "dhash:" in err and "audit:" in err and err.count(f"/{len(frame)} [") >= 2


def _unrelated(n: int, splits: list[str] = ()) -> pd.DataFrame:
    """`n` distinct files, alternately real and ai, the first of them split as `splits` says."""
    digests = [f"{i:064x}" for i in range(n)]
    return pd.DataFrame({"uri": [f"/x/{i}.png" for i in range(n)], "label": ["real", "ai"] * (n // 2), "source": "s",
                         "generator": "", "pair_id": digests, "split": list(splits) + [""] * (n - len(splits)),
                         "width": 1, "height": 1, "format": "PNG", "sha256": digests})


def test_keep_splits_moves_no_image_when_files_are_added_and_deals_the_new_ones_by_the_ratios():
    first = split_manifest(_unrelated(1000), max_distance=-1)["split"].tolist()
    dealt_again = split_manifest(_unrelated(1010), max_distance=-1)["split"].tolist()
    assert sum(a != b for a, b in zip(first, dealt_again)) > 100  # a new deal moves many: the reason for keep
    kept = split_manifest(_unrelated(1200, first), max_distance=-1, keep=True)
    assert kept["split"].tolist()[:1000] == first
    assert kept["split"].value_counts().to_dict() == {"train": 960, "val": 120, "test": 120}


def test_keep_splits_puts_a_group_whose_rows_have_two_splits_in_one_and_a_new_pair_member_in_its_split():
    frame = _unrelated(6, ["train", "test", "test", "train"])
    frame.loc[[0, 1, 2], "pair_id"] = "one face"  # train, test, test: its majority, test
    frame.loc[[3, 4], "pair_id"] = "another"  # a new ai image of a face split in train
    split = split_manifest(frame, max_distance=-1, keep=True)["split"].tolist()
    assert split[:5] == ["test", "test", "test", "train", "train"] and find_leaks(frame.assign(split=split)) == []
