"""Builders: folder layouts with pairing, FFHQ-style JSON, CSV, attribute joins and balancing."""

from __future__ import annotations

import json
import os
import tracemalloc

import pandas as pd
import pytest
from data_helpers import PER_CLASS, encode, smooth_image

from fakescope.data import (
    balance_manifest,
    build_from_csv,
    build_from_ffhq_json,
    build_from_folders,
    describe_image,
    join_attributes,
    read_manifest,
    read_rows,
    validate_manifest,
    write_manifest,
)
from fakescope.errors import ConfigError


def test_folders_give_labels_generators_and_formats(faces_layout):
    frame = build_from_folders(str(faces_layout))
    counts = frame.groupby(["label", "generator"]).size().to_dict()
    assert counts == {("ai", "stylegan2"): PER_CLASS, ("ai", "variations"): 1, ("real", ""): PER_CLASS + 1}
    real = frame[frame["label"] == "real"]
    assert set(real["format"]) == {"PNG"} and set(frame[frame["generator"] == "stylegan2"]["format"]) == {"JPEG"}
    assert set(real["width"]) == {64, 56}


def test_a_folder_named_dot_is_named_by_the_folder_it_is(tmp_path, monkeypatch):
    (tmp_path / "holiday" / "real").mkdir(parents=True)
    (tmp_path / "holiday" / "real" / "a.png").write_bytes(encode(smooth_image(0), "PNG"))
    monkeypatch.chdir(tmp_path / "holiday")
    assert build_from_folders(".", workers=1)["source"].tolist() == ["holiday"]


def test_ai_image_named_after_a_real_one_is_paired_with_it(faces_layout):
    frame = build_from_folders(str(faces_layout)).set_index("uri")
    real = frame.loc[str(faces_layout / "real" / "r000.jpg")]
    variation = frame.loc[str(faces_layout / "fake" / "variations" / "r000_var1.png")]
    assert variation["pair_id"] == real["sha256"] == real["pair_id"]
    assert variation["source_uri"] == str(faces_layout / "real" / "r000.jpg") and variation["source"] == real["source"]
    unpaired = frame.loc[str(faces_layout / "fake" / "stylegan2" / "f003.jpg")]
    assert unpaired["pair_id"] == unpaired["sha256"]


def test_reals_of_one_name_in_two_folders_are_told_apart_by_the_sha_in_the_ai_name(tmp_path, caplog):
    import hashlib

    digests = {}
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / "real" / folder).mkdir(parents=True)
        data = encode(smooth_image(seed), "PNG")
        (tmp_path / "real" / folder / "x.png").write_bytes(data)
        digests[folder] = hashlib.sha256(data).hexdigest()
    (tmp_path / "fake" / "taef2").mkdir(parents=True)
    for folder, seed in (("a", 3), ("b", 4)):  # as fakescope generate names them: stem-sha8-...
        (tmp_path / "fake" / "taef2" / f"x-{digests[folder][:8]}-taef2.png").write_bytes(encode(smooth_image(seed), "PNG"))
    (tmp_path / "fake" / "taef2" / "x_var1.png").write_bytes(encode(smooth_image(5), "PNG"))  # no sha: either real
    frame = build_from_folders(str(tmp_path)).set_index("uri")
    for folder in ("a", "b"):
        fake = frame.loc[str(tmp_path / "fake" / "taef2" / f"x-{digests[folder][:8]}-taef2.png")]
        assert fake["pair_id"] == digests[folder] and fake["source_uri"] == str(tmp_path / "real" / folder / "x.png")
        assert fake["source"] == folder  # its real's origin, the folder under real/
    guess = frame.loc[str(tmp_path / "fake" / "taef2" / "x_var1.png")]
    assert guess["pair_id"] == guess["sha256"]
    assert "1 ai image(s) left unpaired: several real images share the name" in caplog.text


def test_manifests_built_from_relative_paths_work_from_any_folder(faces_layout, tmp_path, monkeypatch):
    monkeypatch.chdir(faces_layout.parent)
    (tmp_path / "list.csv").write_text(f"path,label\n{os.path.relpath(faces_layout / 'real' / 'r000.jpg', tmp_path)},real\n")
    built = {"folders.csv": build_from_folders(faces_layout.name), "csv.csv": build_from_csv(os.path.relpath(tmp_path / "list.csv"))}
    for name, frame in built.items():
        write_manifest(frame, str(tmp_path / "manifests" / name))
        uris = read_rows(str(tmp_path / "manifests" / name))["uri"]
        assert len(uris) and all(os.path.isfile(uri) for uri in uris)


def test_a_file_whose_name_is_not_utf8_is_skipped_with_a_warning(faces_layout, tmp_path, caplog):
    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake").joinpath(os.fsdecode(b"caf\xe9.png")).write_bytes(encode(smooth_image(3), "PNG"))
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(4), "PNG"))
    manifest = str(tmp_path / "m.parquet")
    write_manifest(build_from_folders(str(root)), manifest)
    assert read_rows(manifest)["uri"].str.endswith("/fake/ok.png").sum() == 1 and len(read_rows(manifest)) == PER_CLASS + 2
    assert "caf\\udce9.png: its name is not UTF-8" in caplog.text


def test_an_unreadable_file_is_skipped_with_a_warning_naming_it_once(faces_layout, tmp_path, caplog):
    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(4), "PNG"))
    os.symlink(tmp_path / "gone.png", root / "fake" / "dangling.png")  # listed, but no file behind it
    uris = build_from_folders(str(root))["uri"]
    assert uris.str.endswith("/fake/ok.png").sum() == 1 and not uris.str.endswith("dangling.png").any()
    assert [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()] == [
        f"skipping {root / 'fake' / 'dangling.png'}: no such file or folder"]


def test_a_damaged_or_unknown_file_is_skipped_with_a_warning_that_says_why(faces_layout, tmp_path, caplog):
    """The warning said only "not a readable image (OSError)"."""
    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "cut.jpg").write_bytes(encode(smooth_image(4), "JPEG")[:40])  # the header cut short
    (root / "fake" / "text.png").write_bytes(b"not an image")
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(5), "PNG"))
    assert build_from_folders(str(root))["uri"].str.endswith("/fake/ok.png").sum() == 1
    assert sorted(r.getMessage() for r in caplog.records if "skipping" in r.getMessage()) == [
        f"skipping {root / 'fake' / 'cut.jpg'}: not a readable image (Truncated File Read)",
        f"skipping {root / 'fake' / 'text.png'}: not an image (unrecognised file signature)"]


def test_a_huge_non_image_named_jpg_is_refused_from_its_first_bytes_by_build_split_audit_and_export(faces_layout, tmp_path):
    """build, split's dHash, audit and export read a listed file whole before its format was checked: a 1 GiB
    non-image named `.jpg` took 1 GiB of memory in each."""
    from fakescope.data import audit_manifest, export_manifest, split_manifest
    from fakescope.data.build import skipped
    from fakescope.errors import ImageLoadError

    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(5), "PNG"))
    with open(root / "fake" / "huge.jpg", "wb") as fh:
        fh.write(b"not an image at all")
        fh.truncate(2**30)  # sparse: no disk used
    tracemalloc.start()
    try:
        frame = build_from_folders(str(root), workers=2)
        assert skipped(frame) == {"not an image": 1} and len(frame) == PER_CLASS + 2  # as every reader words it
        listed = pd.concat([frame, frame.iloc[-1:].assign(uri=str(root / "fake" / "huge.jpg"), sha256="f" * 64,
                                                          pair_id="f" * 64)], ignore_index=True)
        split = split_manifest(listed, seed=0, workers=2)
        assert split["dhash"].iloc[-1] == "" and (split["dhash"].iloc[:-1] != "").all()
        assert audit_manifest(split, workers=2).counts == {"ai": 2, "real": PER_CLASS + 1}
        with pytest.raises(ImageLoadError, match=rf"^{root / 'fake' / 'huge.jpg'}: not an image \(unrecognised file "
                                                 r"signature\); drop its row to export the rest$"):
            export_manifest(split, str(tmp_path / "out.tar"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20  # its first bytes, never its 1 GiB
    assert not (tmp_path / "out.tar").exists()


def test_an_image_declaring_over_twice_the_pixel_limit_is_skipped_by_build_split_and_audit(faces_layout, tmp_path,
                                                                                            caplog):
    """Pillow refuses such a header with a DecompressionBombError (no OSError): build, split's dHash and audit stopped
    with its traceback instead of skipping the image as they skip any other unreadable one."""
    import struct
    import zlib

    from fakescope.data import audit_manifest, split_manifest

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(5), "PNG"))
    huge = root / "fake" / "huge.png"  # 30,000 x 30,000 declared: 900 Mpx, over 2 x MAX_PIXELS
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    frame = build_from_folders(str(root), workers=2)
    assert len(frame) == PER_CLASS + 2 and f"skipping {huge}: image too large: 900,000,000 pixels exceeds 200,000,000 " \
        "pixels" in caplog.text
    listed = pd.concat([frame, frame.iloc[-1:].assign(uri=str(huge), sha256="f" * 64, pair_id="f" * 64)],
                       ignore_index=True)
    split = split_manifest(listed, seed=0, workers=2)
    assert split["dhash"].iloc[-1] == "" and (split["dhash"].iloc[:-1] != "").all()
    assert audit_manifest(split, workers=2).counts == {"ai": 2, "real": PER_CLASS + 1}


def test_skipped_files_are_counted_by_reason(faces_layout, tmp_path):
    """Skipped files showed only as separate warnings: the builders now count them by reason."""
    from fakescope.data.build import skipped

    root = tmp_path / "set"
    os.makedirs(root / "fake")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "cut.jpg").write_bytes(encode(smooth_image(4), "JPEG")[:40])
    (root / "fake" / "text.png").write_bytes(b"not an image")
    (root / "fake").joinpath(os.fsdecode(b"caf\xe9.png")).write_bytes(encode(smooth_image(3), "PNG"))
    os.symlink(tmp_path / "gone.png", root / "fake" / "dangling.png")
    (root / "fake" / "ok.png").write_bytes(encode(smooth_image(5), "PNG"))
    assert skipped(build_from_folders(str(root))) == {
        "not a readable image": 1, "not an image": 1, "name not UTF-8": 1, "no such file or folder": 1}
    assert skipped(build_from_folders(str(faces_layout))) == {}
    (tmp_path / "list.csv").write_text(f"path,label\n{root / 'fake' / 'ok.png'},ai\n{root / 'fake' / 'text.png'},ai\n")
    assert skipped(build_from_csv(str(tmp_path / "list.csv"))) == {"not an image": 1}
    (tmp_path / "ffhq.json").write_text(json.dumps({"0": {"image": {"file_path": "r000.jpg"}},
                                                    "1": {"image": {"file_path": "absent.png"}}}))
    assert skipped(build_from_ffhq_json(str(tmp_path / "ffhq.json"), str(faces_layout / "real"))) == {
        "listed but not under --images": 1}


def test_a_csv_rebuilt_is_measured_afresh_and_its_stored_dhash_dropped(tmp_path):
    """A CSV's `dhash` column was carried into the built manifest as it was, though the images are measured afresh:
    a file changed since (or hashed before photos were turned upright) kept its old hash, reused by split and audit."""
    (tmp_path / "a.png").write_bytes(encode(smooth_image(1), "PNG"))
    (tmp_path / "list.csv").write_text("path,label,width,height,dhash,gender\na.png,real,7,7,0123456789abcdef,f\n")
    built = build_from_csv(str(tmp_path / "list.csv"))
    assert "dhash" not in built and "path" not in built and built.loc[0, "gender"] == "f"
    assert (built.loc[0, "width"], built.loc[0, "height"]) == (64, 64)


def test_a_real_image_copied_into_fake_is_reported_as_labelled_both_ways(faces_layout, tmp_path, caplog):
    root = tmp_path / "set"
    os.makedirs(root / "fake" / "sd")
    os.symlink(faces_layout / "real", root / "real", target_is_directory=True)
    (root / "fake" / "sd" / "copy.png").write_bytes((faces_layout / "real" / "r004.jpg").read_bytes())
    frame = build_from_folders(str(root))
    assert len(frame) == PER_CLASS + 2
    assert "2 file(s) are identical copies labelled both real and ai (first: " in caplog.text and "/real/r004.jpg)" in caplog.text


def test_nested_generators_odd_names_and_heic_avif_webp_survive_build_split_and_export(tmp_path):
    """A generator is the first folder under fake/ however deep its images lie; names with spaces and non-ASCII
    letters, and HEIC, AVIF and WebP files, are described, split and exported under their own names and formats."""
    from typer.testing import CliRunner

    import fakescope.io.image  # noqa: F401  registers the HEIF/AVIF codecs that encode() writes with
    from fakescope.cli import app

    files = {"real/ffhq/r 1.png": "PNG", "real/ffhq/élan ☃.heic": "HEIF", "real/ffhq/deep/r3.avif": "AVIF",
             "real/ffhq/r4.webp": "WEBP", "fake/sd 1.5/run 2/r 1_var1.webp": "WEBP", "fake/sd 1.5/b.avif": "AVIF",
             "fake/dalle/ünï.heic": "HEIF", "fake/dalle/c.png": "PNG"}
    for seed, (name, fmt) in enumerate(files.items()):
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / name).write_bytes(encode(smooth_image(seed), fmt))
    manifest, runner = str(tmp_path / "m.csv"), CliRunner()
    for args in (["build", str(tmp_path / "set")], ["split", manifest, "--ratios", "train=0.5,test=0.5"]):
        done = runner.invoke(app, ["dataset", *args, "-o", manifest, "--no-csv"])
        assert done.exit_code == 0 and "warning" not in done.output, done.output
    frame = read_manifest(manifest).set_index("uri")
    assert {os.path.relpath(u, tmp_path / "set"): f for u, f in frame["format"].items()} == files
    assert frame.groupby("generator")["label"].size().to_dict() == {"": 4, "dalle": 2, "sd 1.5": 2}
    variation = frame.loc[str(tmp_path / "set" / "fake/sd 1.5/run 2/r 1_var1.webp")]
    assert variation["source_uri"] == str(tmp_path / "set" / "real/ffhq/r 1.png")
    assert variation["split"] == frame.loc[variation["source_uri"], "split"]
    done = runner.invoke(app, ["dataset", "export", manifest, "-o", str(tmp_path / "out")])
    assert done.exit_code == 0, done.output
    exported = read_manifest(str(tmp_path / "out" / "manifest.csv"))
    assert sorted(os.path.basename(u).split("-")[0] for u in exported["uri"]) == sorted(
        os.path.splitext(os.path.basename(n))[0] for n in files)
    for uri, digest in zip(exported["uri"], exported["sha256"]):
        assert describe_image((tmp_path / "out" / uri).read_bytes())["sha256"] == digest


def test_hidden_files_and_folders_are_not_listed(tmp_path, caplog):
    names = ("real/a.png", "real/._a.png", "real/.thumbnails/a.png", "fake/gen/b.png", "fake/gen/.c.png",
             "fake/.git/c.png", "real/__MACOSX/d.png")
    for seed, name in enumerate(names):  # every one a readable image: only the listing may leave them out
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(encode(smooth_image(seed), "PNG"))
    frame = build_from_folders(str(tmp_path))
    assert sorted(os.path.relpath(u, tmp_path) for u in frame["uri"]) == ["fake/gen/b.png", "real/a.png"]
    assert "skipping" not in caplog.text


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no images under"):
        build_from_folders(str(tmp_path))


@pytest.mark.parametrize("name", ["misspelt", "photo.jpg"])
def test_a_missing_folder_or_a_file_is_named_as_such(tmp_path, name):
    """Both were 'no images under X/real or X/fake', as if X were an empty folder."""
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8")
    what = "a file, not a folder" if name == "photo.jpg" else "no such folder"
    with pytest.raises(ConfigError, match=f"^{tmp_path / name}: {what}; expected a folder with real/ and fake/"):
        build_from_folders(str(tmp_path / name))


@pytest.mark.parametrize("style", ["ffhq", "v7"])
def test_ffhq_json_listing_styles(faces_layout, tmp_path, style):
    names = ["r001.jpg", "r002.jpg", "r999.jpg"]
    if style == "ffhq":
        listing = {str(i): {"category": "training", "image": {"file_path": f"images1024x1024/00000/{n}"}}
                   for i, n in enumerate(names)}
    else:
        listing = [{"image": {"filename": n, "url": f"https://example.invalid/{n}?x=1"}} for n in names]
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    frame = build_from_ffhq_json(str(tmp_path / "listing.json"), str(faces_layout / "real"))
    assert [u.rsplit("/", 1)[1] for u in frame["uri"]] == ["r001.jpg", "r002.jpg"]
    assert set(frame["label"]) == {"real"} and set(frame["source"]) == {"ffhq"}
    assert ("category" in frame) == (style == "ffhq")


def test_ffhq_json_tells_files_of_one_name_apart_by_their_listed_path(tmp_path):
    """Two x.png in different subfolders: the last one listed replaced the first, silently (a row lost)."""
    for seed, folder in enumerate(("00000", "01000")):
        (tmp_path / "images" / folder).mkdir(parents=True)
        (tmp_path / "images" / folder / "x.png").write_bytes(encode(smooth_image(seed), "PNG"))
    listing = {str(i): {"category": c, "image": {"file_path": f"images1024x1024/{f}/x.png"}}
               for i, (f, c) in enumerate((("00000", "training"), ("01000", "validation")))}
    (tmp_path / "listing.json").write_text(json.dumps(listing))
    frame = build_from_ffhq_json(str(tmp_path / "listing.json"), str(tmp_path / "images"))
    assert [os.path.relpath(u, tmp_path / "images") for u in frame["uri"]] == ["00000/x.png", "01000/x.png"]
    assert frame["category"].tolist() == ["training", "validation"] and frame["sha256"].nunique() == 2
    (tmp_path / "bare.json").write_text(json.dumps([{"filename": "x.png"}]))
    with pytest.raises(ConfigError, match=r"bare\.json lists x\.png, which fits 2 files under .*images \(00000/x\.png, "
                                          r"01000/x\.png\); list paths relative to --images that tell them apart$"):
        build_from_ffhq_json(str(tmp_path / "bare.json"), str(tmp_path / "images"))


@pytest.mark.parametrize("content", ["null", "5", '"00001.png"'])
def test_json_that_is_no_listing_is_a_one_line_error(faces_layout, tmp_path, content):
    (tmp_path / "listing.json").write_text(content)
    with pytest.raises(ConfigError, match="not a listing of images"):
        build_from_ffhq_json(str(tmp_path / "listing.json"), str(faces_layout / "real"))


def test_csv_with_relative_paths_and_label_spellings(faces_layout, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(
        "path,label,gender\n"
        f"{faces_layout}/real/r001.jpg,0,Man\n"
        f"{faces_layout}/fake/stylegan2/f001.jpg,fake,\n"
    )
    frame = build_from_csv(str(csv))
    assert frame["label"].tolist() == ["real", "ai"]
    assert frame["format"].tolist() == ["PNG", "JPEG"]
    assert frame["gender"].iloc[0] == "Man"
    (tmp_path / "rel").mkdir()
    (tmp_path / "rel" / "x.jpg").write_bytes((faces_layout / "real" / "r002.jpg").read_bytes())
    (tmp_path / "rel" / "list.csv").write_text("uri,label\nx.jpg,real\n")
    assert build_from_csv(str(tmp_path / "rel" / "list.csv"))["uri"].tolist() == [str(tmp_path / "rel" / "x.jpg")]


def test_csv_ai_rows_without_a_source_take_their_reals(faces_layout, tmp_path):
    """A generate manifest's ai rows have source_uri and pair_id but no source: listed with their reals they take the
    reals' origin (they were 'unknown' in evaluate's slices); listed alone, nothing says their origin, so it stays empty."""
    real, fake = faces_layout / "real" / "r001.jpg", faces_layout / "fake" / "stylegan2" / "f001.jpg"
    header = "uri,label,source,generator,pair_id,source_uri\n"
    ai_row = f"{fake},ai,,dall-e-2,p1,{real}\n"
    (tmp_path / "both.csv").write_text(header + f"{real},real,ffhq,,p1,\n" + ai_row)
    assert build_from_csv(str(tmp_path / "both.csv"))["source"].tolist() == ["ffhq", "ffhq"]
    (tmp_path / "alone.csv").write_text(header + ai_row)
    assert build_from_csv(str(tmp_path / "alone.csv"))["source"].tolist() == [""]


def test_a_csvs_relative_source_uris_resolve_against_its_folder_as_its_paths_do(faces_layout, tmp_path):
    """An ai row's relative `source_uri` (an image, a prompt line) stayed as written, so the manifest written elsewhere
    named files beside itself: the pair was lost. A real row's is its origin (an upload's name), kept as written."""
    faces = os.path.relpath(faces_layout, tmp_path / "lists")
    real, fake, variation = (f"{faces}/{name}" for name in ("real/r000.jpg", "fake/stylegan2/f000.jpg",
                                                             "fake/variations/r000_var1.png"))
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "list.csv").write_text(f"uri,label,source_uri\n{real},real,my cat.jpg\n{variation},fake,{real}\n"
                                                 f"{fake},ai,../prompts.txt#L3\n")
    (tmp_path / "lists" / "older.csv").write_text(f"uri,label,source\n{real},real,ffhq\n{variation},ai,{real}\n")
    out = str(tmp_path / "out" / "deeper" / "m.csv")  # a depth that the relative names would not hold at
    write_manifest(build_from_csv(str(tmp_path / "lists" / "list.csv")), out, csv_copy=False)
    expected = ["my cat.jpg", str(faces_layout / "real" / "r000.jpg"), f"{tmp_path / 'prompts.txt'}#L3"]
    assert read_rows(out, split_required=False)["source_uri"].tolist() == expected
    older = build_from_csv(str(tmp_path / "lists" / "older.csv"))  # a file name in `source`: the older source_uri
    assert older[["source", "source_uri"]].values.tolist() == [["ffhq", ""], ["", expected[1]]]


def test_csv_listing_one_path_twice_is_a_one_line_error(faces_layout, tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,label\n{faces_layout}/real/r001.jpg,real\n{faces_layout}/real/r002.jpg,real\n"
                   f"{faces_layout}/real/r001.jpg,ai\n")
    with pytest.raises(ConfigError, match=r"lists 1 path\(s\) more than once, e.g. .*/real/r001.jpg"):
        build_from_csv(str(csv))
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.jpg").write_bytes((faces_layout / "real" / "r001.jpg").read_bytes())
    csv.write_text("path,label\nreal/a.jpg,real\n./real/a.jpg,real\nreal//x/../a.jpg,real\n")  # one file, three spellings
    with pytest.raises(ConfigError, match=rf"lists 2 path\(s\) more than once, e.g. {tmp_path}/real/a.jpg;"):
        build_from_csv(str(csv))


@pytest.mark.parametrize(("content", "message"), [
    ("", r"cannot read {csv}: EmptyDataError: No columns to parse from file$"),
    ("path,label\n", r"{csv} lists no images$"),
    ("path,label\n,real\n", r"{csv}: 1 row\(s\) have no path, the first is data row 1$"),
    ("path,label\nx.jpg,real\ny.jpg,\n", r"{csv}, data row 2: empty label; expected real or ai$"),
    ("path,label\nx.jpg,maybe\n", r"{csv}, data row 1: unknown label 'maybe'; expected real or ai$"),
    # pandas took the path for an index, read `real` as the path and `ffhq` as the label: a row's extra field is refused
    ("path,label\nx.jpg,real,ffhq\n", r"cannot read {csv}: ValueError: a row has more fields than the header names"),
    ("path,label\nx.jpg,real,ffhq\ny.jpg,ai,ffhq\n", r"cannot read {csv}: ValueError: a row has more fields than"),
    ("path,label,label\nx.jpg,real,ai\n", r"cannot read {csv}: ValueError: the header names column\(s\) 'label' more than once"),
])
def test_a_csv_listing_that_is_empty_or_lacks_a_path_or_label_is_a_one_line_error_naming_the_row(tmp_path, content, message):
    csv = tmp_path / "list.csv"
    csv.write_text(content)
    with pytest.raises(ConfigError, match=message.format(csv=csv)):
        build_from_csv(str(csv))


def test_a_manifest_or_attribute_table_with_a_field_more_than_its_header_is_a_one_line_error(faces_layout, tmp_path):
    frame = build_from_folders(str(faces_layout))
    manifest = tmp_path / "m.csv"
    manifest.write_text(frame.to_csv(index=False).replace("\n", ",extra\n").replace(",extra\n", "\n", 1))
    with pytest.raises(ConfigError, match=rf"cannot read manifest {manifest}: ValueError: a row has more fields than"):
        read_manifest(str(manifest))
    table = tmp_path / "attrs.csv"
    table.write_text("ffhq_file,gender\nr001.png,Man,white\n")  # shifted: r001.png read as an index, Man as the key
    with pytest.raises(ConfigError, match=rf"cannot read attribute table {table}: ValueError: a row has more fields"):
        join_attributes(frame, str(table))


def test_attributes_join_on_file_stem_and_balance_strata(faces_layout, tmp_path):
    table = tmp_path / "attrs.csv"
    rows = [f"r{i:03d}.png,{'happy' if i % 2 else 'neutral'},{i % 2},{'Man' if i < 5 else 'Woman'},white" for i in range(PER_CLASS)]
    table.write_text("ffhq_file,expression,glasses,gender,race\n" + "\n".join(rows) + "\n")
    frame = join_attributes(build_from_folders(str(faces_layout)), str(table))
    real = frame[frame["label"] == "real"].set_index(frame[frame["label"] == "real"]["uri"].str.rsplit("/", n=1).str[1])
    assert real.loc["r003.jpg", "gender"] == "Man" and real.loc["r007.jpg", "expression"] == "happy"
    assert frame[frame["generator"] == "stylegan2"]["gender"].isna().all()
    balanced = balance_manifest(frame, ("label",), seed=3)
    assert balanced["label"].value_counts().to_dict() == {"real": PER_CLASS + 1, "ai": PER_CLASS + 1}
    strata = balance_manifest(frame, ("label", "gender"), per_stratum=5).groupby(["label", "gender"], dropna=False)
    assert strata.size().tolist() == [1, 5, 5, 5, 1]  # ai/Man (the variation), ai/missing, real/Man, real/Woman, real/missing
    smallest = balance_manifest(frame, ("label", "gender"))
    assert len(smallest) == 5
    with pytest.raises(ConfigError, match="unknown column"):
        balance_manifest(frame, ("colour",))
    assert balance_manifest(frame, "label", seed=3).equals(balanced)  # one string is one column, not its letters


def test_attribute_keys_without_extension_keep_their_leading_zeros(tmp_path):
    (tmp_path / "real").mkdir()
    for i in (1, 2):
        smooth_image(i).save(tmp_path / "real" / f"{i:05d}.png")
    (tmp_path / "attrs.csv").write_text("id,glasses\n00001,1\n00002,0\n")
    frame = join_attributes(build_from_folders(str(tmp_path)), str(tmp_path / "attrs.csv"))
    assert frame["glasses"].tolist() == [1, 0]


def test_an_attribute_table_saved_with_pandas_index_keys_on_its_first_named_column(tmp_path):
    """Its empty-named index column was taken for the key, matched no image, and was then missing from the table."""
    (tmp_path / "real").mkdir()
    for i in (1, 2):
        smooth_image(i).save(tmp_path / "real" / f"{i:05d}.png")
    pd.DataFrame({"ffhq_file": ["00001.png", "00002.png"], "glasses": [1, 0]}).to_csv(tmp_path / "attrs.csv")
    frame = join_attributes(build_from_folders(str(tmp_path)), str(tmp_path / "attrs.csv"))
    assert frame["glasses"].tolist() == [1, 0] and "Unnamed: 0" not in frame.columns


def test_an_integer_attribute_with_blanks_stays_integer_when_joined_written_read_and_balanced(tmp_path, caplog):
    """An ai image without attributes left `glasses` blank, so pandas made the column float: `glasses=1.0` in the written
    CSV, in the strata balancing warned of, and in what read_rows gave evaluate."""
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    for i in (1, 2, 3):
        smooth_image(i).save(tmp_path / "real" / f"{i:05d}.png")
    smooth_image(9).save(tmp_path / "fake" / "other.png")
    (tmp_path / "attrs.csv").write_text("ffhq_file,glasses,score\n00001.png,1,0.5\n00002.png,0,1.5\n00003.png,0,2\n")
    frame = join_attributes(build_from_folders(str(tmp_path)), str(tmp_path / "attrs.csv"))
    assert str(frame["glasses"].dtype) == "Int64" and frame["score"].dtype == float  # fractions stay floats
    write_manifest(frame, str(tmp_path / "m.csv"))
    assert set(pd.read_csv(tmp_path / "m.csv", dtype=str, keep_default_na=False)["glasses"]) == {"1", "0", ""}
    for read in (read_manifest, read_rows):
        assert sorted(read(str(tmp_path / "m.csv"))["glasses"].dropna().tolist()) == [0, 0, 1]
    balance_manifest(frame, ("label", "glasses"))
    assert "(first: label=ai, glasses=1)" in caplog.text


def test_no_face_detected_is_a_missing_attribute_when_joined_and_balanced(tmp_path, caplog):
    (tmp_path / "real").mkdir()
    for i in (1, 2, 3):
        smooth_image(i).save(tmp_path / "real" / f"{i:05d}.png")
    (tmp_path / "attrs.csv").write_text("ffhq_file,glasses\n00001.png,1\n00002.png,No face detected\n00003.png,0\n")
    frame = join_attributes(build_from_folders(str(tmp_path)), str(tmp_path / "attrs.csv"))
    assert frame["glasses"].tolist()[::2] == [1, 0] and pd.isna(frame["glasses"].iloc[1])
    marked = _faces({"Man": 2, "No face detected": 1}, 1)
    balance_manifest(marked, ("label", "gender"))
    assert "2 row(s) (ai: 1, real: 1) lack a value of gender: they are balanced as strata of their own" in caplog.text


def test_an_attribute_table_matching_no_image_is_warned_about_and_an_empty_one_refused(faces_layout, tmp_path, caplog):
    (tmp_path / "attrs.csv").write_text("gender,file\nMan,r001.png\n")
    frame = join_attributes(build_from_folders(str(faces_layout)), str(tmp_path / "attrs.csv"))
    assert frame["file"].isna().all() and "by its file-name column 'gender' (such as Man)" in caplog.text
    assert join_attributes(frame, str(tmp_path / "attrs.csv"), key="file")["gender"].notna().sum() == 1
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ConfigError, match="cannot read attribute table .*empty.csv"):
        join_attributes(frame, str(tmp_path / "empty.csv"))


def test_an_attribute_table_giving_a_file_two_rows_is_warned_about_and_one_without_attributes_refused(
        faces_layout, tmp_path, caplog):
    frame = build_from_folders(str(faces_layout))
    table = tmp_path / "attrs.csv"
    table.write_text("file,gender\nr001.png,Woman\nr001.jpg,Man\nr002.png,Man\nr002.png,Man\n")
    joined = join_attributes(frame, str(table)).set_index(frame["uri"].str.rsplit("/", n=1).str[1])
    assert joined.loc["r001.jpg", "gender"] == "Woman" and joined.loc["r002.jpg", "gender"] == "Man"
    assert f"1 file name(s) have rows with different attributes in {table} (first: r001); the first row" in caplog.text
    table.write_text("file\nr001.png\n")
    with pytest.raises(ConfigError, match=rf"^attribute table {table} has no column besides its file names \('file'\)$"):
        join_attributes(frame, str(table))


def test_ai_image_takes_the_attributes_of_the_real_face_it_was_made_from(faces_layout, tmp_path):
    table = tmp_path / "attrs.csv"
    table.write_text("ffhq_file,expression,glasses,gender,race\nr000.png,happy,1,Woman,asian\nf001.png,sad,0,Man,white\n")
    frame = join_attributes(build_from_folders(str(faces_layout)), str(table)).set_index("uri")
    variation = frame.loc[str(faces_layout / "fake" / "variations" / "r000_var1.png")]
    assert variation[["expression", "gender", "race"]].tolist() == ["happy", "Woman", "asian"] and variation["glasses"] == 1
    assert frame.loc[str(faces_layout / "fake" / "stylegan2" / "f001.jpg"), "gender"] == "Man"  # its own row wins
    assert frame.loc[str(faces_layout / "fake" / "stylegan2" / "f002.jpg"), ["gender", "race"]].isna().all()


def test_attribute_table_with_a_value_for_every_image_keeps_its_integer_and_boolean_columns(tmp_path):
    (tmp_path / "real").mkdir()
    for i in range(4):
        smooth_image(i).save(tmp_path / "real" / f"{i:05d}.png")
    table = tmp_path / "attrs.csv"
    table.write_text("file,glasses,smiling\n" + "".join(f"{i:05d}.png,{i % 2},{i < 2}\n" for i in range(4)))
    frame = join_attributes(build_from_folders(str(tmp_path)), str(table))
    assert frame["glasses"].tolist() == [0, 1, 0, 1] and frame["smiling"].tolist() == [True, True, False, False]


def _faces(genders: dict[str, int], variations: int, *, unpaired_fakes: int = 0) -> pd.DataFrame:
    """A manifest of real faces with `variations` ai images each (one pair_id), plus unpaired fakes."""
    rows = []
    for gender, n in genders.items():
        for i in range(n):
            pair = f"{gender}{i}"
            rows.append({"uri": f"real/{pair}.png", "label": "real", "pair_id": pair, "gender": gender})
            rows += [{"uri": f"ai/{pair}_{v}.png", "label": "ai", "pair_id": pair, "gender": gender} for v in range(variations)]
    rows += [{"uri": f"ai/gan{i}.png", "label": "ai", "pair_id": f"gan{i}", "gender": None} for i in range(unpaired_fakes)]
    frame = pd.DataFrame(rows)
    for column in ("source", "generator", "split", "format", "sha256"):
        frame[column] = ""
    return validate_manifest(frame.assign(width=64, height=64))


def _whole_pairs(balanced: pd.DataFrame, frame: pd.DataFrame) -> bool:
    sizes = frame.groupby("pair_id").size()
    return bool((balanced.groupby("pair_id").size() == sizes[balanced["pair_id"].unique()]).all())


def test_balancing_keeps_a_real_face_and_all_its_variations_together():
    frame = _faces({"Man": 10, "Woman": 4}, variations=2)
    balanced = balance_manifest(frame, ("label", "gender"), seed=1)
    assert _whole_pairs(balanced, frame)
    # the smallest stratum, real/Woman, holds 4 rows; two whole pairs per gender fill ai to 4
    counts = balanced.groupby(["label", "gender"]).size().to_dict()
    assert counts == {("ai", "Man"): 4, ("ai", "Woman"): 4, ("real", "Man"): 2, ("real", "Woman"): 2}
    assert balanced.equals(balance_manifest(frame, ("label", "gender"), seed=1))
    assert not balanced.equals(balance_manifest(frame, ("label", "gender"), seed=2))


@pytest.mark.parametrize("seed", range(5))
def test_balancing_never_orphans_a_fake_or_unpairs_a_real(seed):
    frame = _faces({"Man": 7, "Woman": 5}, variations=3, unpaired_fakes=9)
    balanced = balance_manifest(frame, ("gender",), seed=seed, per_stratum=8)
    assert _whole_pairs(balanced, frame)
    assert balanced.groupby("gender", dropna=False).size().tolist() == [8, 8, 8]  # Man, Woman: two pairs; missing: 8 fakes


def test_balancing_keeps_the_pairs_of_a_folder_build(faces_layout):
    frame = build_from_folders(str(faces_layout))
    for seed in range(8):
        names = set(balance_manifest(frame, ("label",), seed=seed, per_stratum=4)["uri"].str.rsplit("/", n=1).str[1])
        assert ("r000.jpg" in names) == ("r000_var1.png" in names)


def test_balancing_warns_of_a_stratum_no_row_has(caplog):
    frame = pd.concat([_faces({"Man": 4}, 1), _faces({"Woman": 3}, 0)], ignore_index=True)  # no ai images of women
    balanced = balance_manifest(frame, ("label", "gender"))
    assert balanced.groupby(["label", "gender"]).size().to_dict() == {("ai", "Man"): 3, ("real", "Man"): 3, ("real", "Woman"): 3}
    assert "1 of the 4 strata have no rows, so they stay empty (first: label=ai, gender=Woman)" in caplog.text
    caplog.clear()
    balance_manifest(frame, ("label",))
    assert "strata" not in caplog.text


def test_balancing_that_would_keep_no_row_is_refused():
    # one real face per gender with two variations each: the default per stratum (1) fits no pair
    frame = _faces({"Man": 1, "Woman": 1}, variations=2)
    with pytest.raises(ConfigError, match=r"balancing by label,gender keeps no rows: the limit is 1 per stratum "
                                          r"\(the smallest stratum's size\) and each pair .*; raise per_stratum"):
        balance_manifest(frame, ("label", "gender"))
    assert len(balance_manifest(frame, ("label", "gender"), per_stratum=2)) == 6
def test_balancing_by_attributes_the_fakes_lack_names_the_empty_strata_and_the_rows_without_a_value(caplog):
    """Unpaired fakes have no gender: the warning names ai/Man as empty, not combinations with the missing value."""
    frame = _faces({"Man": 5, "Woman": 3}, variations=0, unpaired_fakes=6)
    balanced = balance_manifest(frame, ("label", "gender"))
    assert balanced.groupby(["label", "gender"], dropna=False).size().tolist() == [3, 3, 3]
    assert "2 of the 4 strata have no rows, so they stay empty (first: label=ai, gender=Man)" in caplog.text
    assert "6 row(s) (ai: 6) lack a value of gender: they are balanced as strata of their own" in caplog.text


@pytest.mark.parametrize(("seed", "per_stratum"), [(0, None), (3, None), (7, 2)])
def test_balancing_without_pairs_samples_rows_as_before(seed, per_stratum):
    frame = _faces({"Man": 9, "Woman": 4, "Other": 6}, variations=0, unpaired_fakes=5)
    groups = frame.groupby(["gender"], dropna=False, sort=True)
    count = per_stratum or int(groups.size().min())
    before = pd.concat([g.sample(n=min(count, len(g)), random_state=seed) for _, g in groups]).sort_index()
    assert balance_manifest(frame, ("gender",), seed=seed, per_stratum=per_stratum)["uri"].tolist() == before["uri"].tolist()


def test_progress_counts_the_images_read_on_stderr(faces_layout, capsys):
    build_from_folders(str(faces_layout), progress=True)
    assert "describe:" in (err := capsys.readouterr().err) and f"/{2 * PER_CLASS + 2} [" in err


def test_images_are_read_in_bounded_chunks_and_kept_in_order(monkeypatch):
    from fakescope.data import _parallel

    monkeypatch.setattr(_parallel, "CHUNK", 3)
    submitted = []
    assert list(_parallel.map_images(lambda i: submitted.append(i) or i * i, range(10), workers=2)) == [i * i for i in range(10)]
    assert sorted(submitted) == list(range(10))
