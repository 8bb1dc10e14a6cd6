"""Audit: the faces shortcuts (PNG vs JPEG q75, watermark) are flagged; a clean set is not."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_helpers import PER_CLASS, encode, smooth_image, watermark
from PIL import Image

from fakescope.data import audit_manifest, build_from_folders, inspect_image, split_manifest
from fakescope.data.audit import estimate_jpeg_quality
from fakescope.errors import ConfigError


@pytest.mark.parametrize("quality", [30, 50, 75, 90, 95])
def test_jpeg_quality_is_read_from_quantisation_tables(quality):
    data = encode(smooth_image(1), "JPEG", quality=quality)
    with Image.open(io.BytesIO(data)) as image:
        assert abs(estimate_jpeg_quality(image.quantization) - quality) <= 1
    assert abs(inspect_image(data, "x.jpg")["jpeg_quality"] - quality) <= 1


def test_metadata_and_extension_are_detected():
    exif = Image.Exif()
    exif[0x0131] = "Some Generator 1.0"
    jpeg = encode(smooth_image(2), "JPEG", exif=exif.tobytes())
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("parameters", "a cat, steps 20")
    png = encode(smooth_image(3), "PNG", pnginfo=text)
    assert inspect_image(jpeg, "a.jpg")["has_exif"] and not inspect_image(jpeg, "a.jpg")["extension_mismatch"]
    info = inspect_image(png, "a.jpg")
    assert info["has_png_text"] and info["extension_mismatch"] and info["jpeg_quality"] == 100


@pytest.mark.parametrize(("fmt", "name", "mismatch"), [
    ("JPEG", "a.jpe", False), ("JPEG", "a.JFIF", False), ("PPM", "a.pgm", False), ("PPM", "a.pnm", False),
    ("TIFF", "a.tif", False), ("PNG", "a.png", False), ("PNG", "a.ppm", True), ("PNG", "a.txt", True), ("PNG", "a", False),
])
def test_every_suffix_the_folders_list_names_its_own_format(fmt, name, mismatch):
    """Only jpg/jpeg/tif/tiff/heic/heif were mapped: a .jpe JPEG or a .pgm PPM (both listed as images) was a mismatch."""
    assert inspect_image(encode(smooth_image(4), fmt), name)["extension_mismatch"] is mismatch



def _turned(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize(("mode", "fmt", "options"), [
    ("RGB", "JPEG", {}), ("L", "JPEG", {}), ("RGB", "JPEG", {"exif": _turned(6)}), ("CMYK", "JPEG", {}),
    ("RGB", "PNG", {}), ("L", "PNG", {}), ("RGBA", "PNG", {}), ("P", "PNG", {}), ("I;16", "PNG", {}),
    ("RGB", "PNG", {"exif": _turned(6)}), ("RGB", "PNG", {"pnginfo": "text"}),
])
def test_an_inspection_given_the_decoded_pixels_is_the_one_decoding_them(mode, fmt, options):
    """evaluate hands its decoded images to the audit: they serve the thumbnail where they give the file's own grey
    levels (RGB, greyscale), the file is decoded again where they do not (alpha composited on white, 16-bit scaled)."""
    from fakescope.io.image import decode_image

    image = smooth_image(7, 80).crop((0, 0, 80, 56))
    image = image.convert("I;16") if mode == "I;16" else image.convert(mode)
    if mode == "RGBA":  # see-through in part: composited on white when decoded, left out of a grey conversion
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    if options.get("pnginfo"):
        from PIL import PngImagePlugin

        options = {"pnginfo": PngImagePlugin.PngInfo()}
        options["pnginfo"].add_text("parameters", "a cat, steps 20")
    data = encode(image, fmt, **options)
    given, own = inspect_image(data, "x", decode_image(data).image), inspect_image(data, "x")
    assert np.array_equal(given.pop("thumbnail"), own.pop("thumbnail")) and given == own
    assert (own["width"], own["height"]) == ((56, 80) if "exif" in options else (80, 56))
    assert (own["has_exif"], own["has_png_text"]) == ("exif" in options, "pnginfo" in options)

def test_faces_like_shortcuts_are_flagged_loudly(faces_layout):
    report = audit_manifest(build_from_folders(str(faces_layout)))
    assert {"format", "jpeg_quality", "bits_per_pixel", "border_overlay"} <= set(report.shortcuts)
    levels = {c.name: c.level for c in report.checks}
    assert levels["has_exif"] == "ok" and levels["aspect"] == "ok"
    text = " ".join(report.warnings)
    assert "SHORTCUT: file format separates real from ai" in text and "real: PNG 100%; ai: JPEG 94%" in text
    assert "ai: median 75" in text and "crop the bottom 6%" in text
    assert any("extension that does not match" in n for n in report.notes)
    assert report.to_dict()["counts"] == {"ai": 17, "real": 17}


def test_clean_dataset_raises_no_format_or_quality_warning(clean_layout):
    report = audit_manifest(build_from_folders(str(clean_layout)))
    levels = {c.name: c.level for c in report.checks}
    assert levels["format"] == levels["jpeg_quality"] == levels["border_overlay"] == "ok"
    assert not any(w.startswith("SHORTCUT") for w in report.warnings)


_NEUTRAL = {"fmt": "JPEG", "quality": 90, "side": 64, "mark": False}


@pytest.mark.parametrize(("ai", "expected"), [
    ({"fmt": "PNG"}, {"format", "jpeg_quality"}),
    ({"quality": 60}, {"jpeg_quality", "bits_per_pixel"}),
    ({"side": 80}, {"width", "height"}),
    ({"mark": True}, {"border_overlay"}),
    ({}, {"source"}),  # content: the reals from real/photos/ (source photos), the fakes from the collection's
    ({}, set()),
])
def test_each_shortcut_the_shared_data_lists_is_flagged_alone_and_a_neutral_set_stays_quiet(tmp_path, ai, expected):
    """Format, JPEG quality, size, a corner watermark and content (sources holding one class) each flagged on a small
    set where only it differs by class; with nothing differing, no warning."""
    real_folder = tmp_path / "real" / ("photos" if expected == {"source"} else "")
    for folder, seed, options in ((real_folder, 0, _NEUTRAL), (tmp_path / "fake" / "gen", 500, {**_NEUTRAL, **ai})):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_CLASS):
            image = smooth_image(seed + i, options["side"])
            quality = {"quality": options["quality"]} if options["fmt"] == "JPEG" else {}
            (folder / f"{seed + i}.{options['fmt'].lower()}").write_bytes(
                encode(watermark(image) if options["mark"] else image, options["fmt"], **quality))
    report = audit_manifest(build_from_folders(str(tmp_path)))
    flagged = set(report.shortcuts) | {check.name for check in report.checks if check.level == "possible shortcut"}
    assert expected <= flagged and ("source" in flagged) == ("source" in expected), report.warnings
    assert "source" not in report.shortcuts  # names cannot say what sources show: a warning, never a --strict failure
    if not expected:
        assert report.warnings == [] and {check.level for check in report.checks} == {"ok"}


def test_a_pair_spread_over_two_splits_is_reported_as_a_leak(clean_layout, faces_layout):
    split = split_manifest(build_from_folders(str(clean_layout)), {"train": 0.5, "test": 0.5}, max_distance=-1)
    assert not any(w.startswith("leak") for w in audit_manifest(split).warnings)
    leaked = split.assign(pair_id="one face", split=["train", "test"] * (len(split) // 2))
    report = audit_manifest(leaked)
    assert any(w.startswith("leak: 1 pair group(s) appear in more than one split") for w in report.warnings)
    assert report.leaks == ["1 pair group(s) appear in more than one split, e.g. pair_id=one face"]
    reals = build_from_folders(str(faces_layout))
    reals = reals[reals["label"] == "real"].assign(sha256="same file", split="train")
    reals.loc[reals.index[0], "split"] = "test"
    assert audit_manifest(reals).warnings[1].startswith("leak: 1 identical file group(s) appear in more than one split")


def test_near_copies_in_different_splits_are_reported_as_a_leak(faces_layout):
    """The audit compared pair ids and identical files only: a resized copy in another split passed unseen."""
    split = split_manifest(build_from_folders(str(faces_layout)), {"train": 0.5, "test": 0.5})
    assert audit_manifest(split).leaks == []  # split keeps r015 and its resized copy together
    copy = split["uri"].str.endswith("r015_copy.jpg").to_numpy()
    original = split["uri"].str.endswith("/r015.jpg").to_numpy()
    other = "test" if split.loc[original, "split"].item() == "train" else "train"
    moved = split.assign(split=split["split"].where(~copy, other))
    expected = (f"2 image(s) have a near copy (re-encoded or resized: dHash within 4 bits) in another split, e.g. "
                f"{split.loc[original, 'uri'].item()} ({split.loc[original, 'split'].item()}) and "
                f"{split.loc[copy, 'uri'].item()} ({other})")
    assert audit_manifest(moved).leaks == [expected]
    assert audit_manifest(moved.drop(columns="dhash")).leaks == [expected]  # no stored hashes: the images are read
    assert audit_manifest(moved, max_distance=-1).leaks == []
    with pytest.raises(ConfigError, match="0 to 64, or -1 for off; got 65"):
        audit_manifest(moved, max_distance=65)


def test_single_class_says_nothing_to_compare(faces_layout):
    frame = build_from_folders(str(faces_layout))
    report = audit_manifest(frame[frame["label"] == "real"], max_per_class=5)
    assert report.checks == [] and report.inspected == {"real": 5}
    assert report.warnings == ["only real images: nothing to compare"]


def test_thumbnails_are_summed_as_read_not_kept_per_image(faces_layout):
    from fakescope.data.audit import _inspect_all

    frame = build_from_folders(str(faces_layout))
    measured, sums = _inspect_all(frame, workers=2, progress=False)
    source = frame["source"].iloc[0]
    assert "thumbnail" not in measured.columns and sorted(sums) == [(source, "ai"), (source, "real")]
    real = [inspect_image(Path(u).read_bytes())["thumbnail"] for u in frame.loc[frame["label"] == "real", "uri"]]
    assert np.allclose(sums[(source, "real")] / len(real), np.mean(real, axis=0), atol=1e-3)


def _two_sources(root: Path, per_source: dict[str, int]) -> list:
    """Source a: PNG reals, JPEG fakes; source b the other way round; `per_source` images of each class."""
    frames = []
    for source, (real_format, ai_format) in {"a": ("PNG", "JPEG"), "b": ("JPEG", "PNG")}.items():
        for folder, fmt, offset in (("real", real_format, 0), ("fake", ai_format, 500)):
            (root / source / folder).mkdir(parents=True)
            for i in range(per_source[source]):
                options = {"quality": 90} if fmt == "JPEG" else {}
                image = encode(smooth_image(offset + i + (50 if source == "b" else 0)), fmt, **options)
                (root / source / folder / f"{folder}{i}.png").write_bytes(image)
        frames.append(build_from_folders(str(root / source), source=source))
    return frames


def test_a_shortcut_inside_one_source_that_averages_out_over_the_set_is_flagged_there(tmp_path):
    """Half PNG in each class over the set, yet each source is split by format."""
    import pandas as pd

    frames = _two_sources(tmp_path, {"a": 12, "b": 12})
    report = audit_manifest(pd.concat(frames, ignore_index=True))
    assert not [note for note in report.notes if "too small to check alone" in note]
    overall = {check.name: check.level for check in report.checks}
    assert overall["format"] == "ok" and {"format@a", "format@b"} <= set(report.shortcuts)
    assert any(w.startswith("SHORTCUT: file format within source a separates real from ai") and "re-encode them identically" in w
               for w in report.warnings)
    assert not [name for name in report.shortcuts if "@" in name and name.split("@")[0] in report.shortcuts]
    alone = audit_manifest(frames[0])
    assert "format" in alone.shortcuts and not [check for check in alone.checks if "@" in check.name]


def test_a_source_too_small_to_check_alone_is_named_in_a_note(tmp_path):
    import pandas as pd

    report = audit_manifest(pd.concat(_two_sources(tmp_path, {"a": 12, "b": 3}), ignore_index=True))
    assert "format@a" in report.shortcuts and not [name for name in report.shortcuts if name.endswith("@b")]
    assert "source(s) too small to check alone, under 10 inspected images of a class: b (3 real, 3 ai) (fewer in the " \
           "manifest, unreadable, or --max-per-class under 10)" in report.notes


def test_the_sample_is_drawn_per_source_so_a_small_source_is_still_checked(tmp_path):
    import pandas as pd

    frame = pd.concat(_two_sources(tmp_path, {"a": 60, "b": 12}), ignore_index=True)
    report = audit_manifest(frame, max_per_class=20)  # a sample by label alone would hold about 3 of b's per class
    assert {"format@a", "format@b"} <= set(report.shortcuts)
    assert not [note for note in report.notes if "too small to check alone" in note]
    assert report.inspected == {"ai": 27, "real": 27}  # a: its share, ceil(20 * 60 / 72); b: the floor of 10


def test_a_share_that_rounds_to_none_or_all_is_not_shown_as_0_or_100_percent():
    import pandas as pd

    from fakescope.data.audit import _categorical_check

    measured = pd.DataFrame({"label": ["real"] * 1000 + ["ai"] * 10, "has_exif": [True] * 5 + [False] * 1005})
    assert _categorical_check(measured, "has_exif").per_class == {"ai": "no 100%", "real": "no >99%, yes <1%"}


def test_an_audit_given_its_samples_inspections_reads_none_and_reports_as_reading_them(faces_layout, tmp_path,
                                                                                       monkeypatch):
    """evaluate and evaluate-logo inspect the audit's sample (`draw_sample`, drawn once) as their scoring reads it: an
    `Inspections` keeps only the images it wants, each once (a repeated or cached read adds nothing); the audit then
    reads none of them, its report the one reading them gives (an unreadable image's None included)."""
    from dataclasses import replace

    import fakescope.io._local as local
    from fakescope.data.audit import Inspections, audit_drawn, draw_sample

    frame = build_from_folders(str(faces_layout))
    (tmp_path / "gone.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    broken = frame[frame["label"] == "real"].iloc[:1].assign(uri=str(tmp_path / "gone.png"), pair_id="gone")
    drawn = draw_sample(pd.concat([frame, broken], ignore_index=True), max_per_class=None)
    drawn = replace(drawn, rows=drawn.rows.iloc[1:])  # one image left out of the sample
    expected = audit_drawn(drawn, max_distance=-1).to_dict()
    inspections = Inspections(frozenset(drawn.rows["uri"]))
    for uri in [*drawn.frame["uri"], drawn.rows["uri"].iloc[0]]:  # a scoring pass reads every row; one twice
        inspections.add(uri, Path(uri).read_bytes())
    assert set(inspections.found) == set(drawn.rows["uri"]) and inspections.found[str(tmp_path / "gone.png")] is None
    reads, read_bytes = [], local.LocalStorage.read_bytes
    monkeypatch.setattr(local.LocalStorage, "read_bytes",
                        lambda self, uri, **kw: reads.append(uri) or read_bytes(self, uri, **kw))
    assert audit_drawn(drawn, max_distance=-1, inspections=inspections).to_dict() == expected and reads == []
    assert expected["notes"][0] == "1 image(s) could not be read and were left out"
