"""Manifest schema: validation, label spellings, Parquet and CSV round trips."""

from __future__ import annotations

import pandas as pd
import pytest
from manifest_helpers import not_a_manifest
from PIL import Image

from fakescope.data import MANIFEST_COLUMNS, describe_image, read_manifest, read_rows, validate_manifest, write_manifest
from fakescope.data.manifest import check_rows
from fakescope.errors import ConfigError, ImageLoadError


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "uri": ["a.png", "b.jpg"], "label": ["real", "fake"], "source": ["ffhq", "ffhq"],
        "generator": ["", "stylegan2"], "pair_id": ["p1", "p1"], "split": ["train", ""],
        "width": [128, 128], "height": [128, 96], "format": ["PNG", "JPEG"], "sha256": ["x1", "x2"],
        "gender": ["Woman", None],
    })


def test_describe_image_reads_header_and_hashes(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buffer, "WEBP")
    info = describe_image(buffer.getvalue())
    assert (info["width"], info["height"], info["format"]) == (40, 30, "WEBP")
    assert len(info["sha256"]) == 64
    with pytest.raises(ImageLoadError):
        describe_image(b"not an image")


def test_validate_normalises_labels_and_orders_columns():
    frame = validate_manifest(_rows()[["gender", *reversed(MANIFEST_COLUMNS)]])
    assert tuple(frame.columns) == (*MANIFEST_COLUMNS, "gender")
    assert frame["label"].tolist() == ["real", "ai"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.drop(columns="sha256"), "manifest: missing column\\(s\\): sha256"),
    (lambda f: f.assign(label=["real", "maybe"]), "unknown label"),
    (lambda f: f.assign(split=["train", "holdout"]), "unknown split"),
    (lambda f: f.assign(uri=["a.png", "a.png"]), "appear twice"),
])
def test_validate_rejects_broken_manifests(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_manifest(change(_rows()))


def test_a_csv_manifests_perceptual_hashes_stay_text_when_all_are_digits(tmp_path):
    """A hex dHash of digits only (one in ~2,000) read as a number lost its leading zeros and was hashed again."""
    write_manifest(_rows().assign(dhash=["0123456789012345", "9000000000000001"]), str(tmp_path / "m.csv"))
    for read in (read_manifest, read_rows):
        assert read(str(tmp_path / "m.csv"))["dhash"].tolist() == ["0123456789012345", "9000000000000001"]


@pytest.mark.parametrize("name", ["m.parquet", "m.csv"])
def test_round_trip_keeps_rows_and_attributes(tmp_path, name):
    write_manifest(_rows(), str(tmp_path / name), csv_copy=True)
    back = read_manifest(str(tmp_path / name))
    assert back["uri"].tolist() == ["a.png", "b.jpg"]
    assert back["split"].tolist() == ["train", ""]
    assert back["height"].tolist() == [128, 96]
    assert back["gender"].iloc[0] == "Woman" and pd.isna(back["gender"].iloc[1])
    assert (tmp_path / "m.csv").exists()


def test_unreadable_manifest_is_a_config_error(tmp_path):
    (tmp_path / "bad.csv").write_text('uri,label\n"a.png,real\n')
    with pytest.raises(ConfigError, match="cannot read manifest"):
        read_manifest(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize(("name", "data", "what"), [
    ("photo.png", None, "a PNG image"),
    ("photo.csv", None, "a PNG image"),
    ("blob.bin", bytes(range(128, 256)), "not UTF-8 text (byte 0x80)"),
    ("bad.parquet", b"garbage", "not a Parquet file"),
])
def test_a_file_that_is_no_table_is_named_not_a_manifest(tmp_path, name, data, what):
    path = tmp_path / name
    line = not_a_manifest(path, data, what)
    for read in (read_manifest, read_rows):
        with pytest.raises(ConfigError, match=line):
            read(str(path))


def test_read_rows_needs_only_uri_label_split_and_resolves_relative_uris(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "m.csv").write_text("uri,label,split\nreal/a.png,real,train\n/abs/b.png,fake,test\ns3://b/c.png,1,val\n")
    rows = read_rows(str(tmp_path / "sub" / "m.csv"))
    assert rows["uri"].tolist() == [str(tmp_path / "sub" / "real" / "a.png"), "/abs/b.png", "s3://b/c.png"]
    assert rows["label"].tolist() == ["real", "ai", "ai"]
    assert rows["source"].isna().all() and rows["generator"].isna().all()
    (tmp_path / "bad.csv").write_text("uri,label\nx.png,real\n")
    with pytest.raises(ConfigError, match=r"^manifest .*bad\.csv: missing column\(s\): split$"):
        read_rows(str(tmp_path / "bad.csv"))


def test_check_rows_names_missing_columns_of_a_dataframe():
    with pytest.raises(ConfigError, match=r"^the manifest rows: missing column\(s\): label, split$"):
        check_rows(pd.DataFrame({"uri": ["a.png"]}))


def test_an_older_manifest_naming_a_file_in_source_reads_it_as_source_uri(tmp_path):
    (tmp_path / "m.csv").write_text("uri,label,source,split\nr.png,real,ffhq,\na.png,ai,/faces/real/r.png,\n"
                                    "b.png,ai,s3://b/r.png,\nc.png,ai,p.txt#L3,\nd.png,ai,taef2-ffhq,\n")
    rows = read_rows(str(tmp_path / "m.csv"))
    assert rows["source"].tolist() == ["ffhq", "", "", "", "taef2-ffhq"]
    assert rows["source_uri"].tolist() == ["", "/faces/real/r.png", "s3://b/r.png", f"{tmp_path / 'p.txt'}#L3", ""]
    frame = validate_manifest(_rows().assign(source=["ffhq", "upload.JPG"]))
    assert frame["source"].tolist() == ["ffhq", ""] and frame["source_uri"].tolist() == ["", "upload.JPG"]
    assert "source_uri" not in validate_manifest(_rows())  # nothing to move: no column added


def test_read_rows_refuses_an_unknown_split_or_label_naming_the_manifest_but_takes_an_empty_split(tmp_path):
    (tmp_path / "m.csv").write_text("uri,label,split\na.png,real,test\nb.png,ai,Test\nc.png,ai,\n")
    with pytest.raises(ConfigError, match=rf"^manifest {tmp_path / 'm.csv'}: unknown split\(s\) 'Test'; "
                                          r"expected train, val, test or empty \(unsplit\)$"):
        read_rows(str(tmp_path / "m.csv"))
    (tmp_path / "m.csv").write_text("uri,label,split\na.png,real,test\nc.png,ai,\n")
    assert read_rows(str(tmp_path / "m.csv"))["split"].fillna("").tolist() == ["test", ""]
    (tmp_path / "m.csv").write_text("uri,label\na.png,real\n")
    assert read_rows(str(tmp_path / "m.csv"), split_required=False)["label"].tolist() == ["real"]
    (tmp_path / "m.csv").write_text("uri,label,split\na.png,real,test\nb.png,maybe,test\n")
    with pytest.raises(ConfigError, match=rf"^manifest {tmp_path / 'm.csv'}: unknown label 'maybe'; expected real or ai$"):
        read_rows(str(tmp_path / "m.csv"))


def test_an_empty_label_in_a_nullable_string_column_is_refused_in_one_line(tmp_path):
    """A Parquet label column of pandas' `string` dtype reads an empty cell back as pd.NA, whose truth value raises:
    `value != value` (the NaN check) was a TypeError, not the empty label it is."""
    rows = pd.DataFrame({"uri": ["a.png", "b.png"], "label": pd.array(["real", None], dtype="string"), "split": "test"})
    rows.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ConfigError, match=rf"^manifest {tmp_path / 'm.parquet'}: empty label; expected real or ai$"):
        read_rows(str(tmp_path / "m.parquet"))


def test_read_rows_refuses_rows_without_a_uri(tmp_path):
    (tmp_path / "m.csv").write_text("uri,label,split\na.png,real,test\n,ai,test\n  ,ai,test\n")
    with pytest.raises(ConfigError, match=r"2 row\(s\) have no uri, the first is data row 2"):
        read_rows(str(tmp_path / "m.csv"))


def test_a_csv_saved_with_pandas_index_reads_without_it(tmp_path, caplog):
    """pandas' `to_csv` writes its index as a first column with an empty name: it was read as an attribute `Unnamed: 0`."""
    _rows().iloc[::-1].to_csv(tmp_path / "m.csv")  # index 1, 0: not a row number either
    for read in (read_manifest, read_rows):
        frame = read(str(tmp_path / "m.csv"))
        assert "Unnamed: 0" not in frame.columns and frame["label"].tolist() == ["ai", "real"]
    assert tuple(read_manifest(str(tmp_path / "m.csv")).columns) == (*MANIFEST_COLUMNS, "gender")
    assert not caplog.records
