"""Export: folder tree, tar and uint8 packs, each with a manifest that points at what was written."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakescope.data import build_from_folders, export_manifest, read_manifest, split_manifest
from fakescope.data.export import centre_crop
from fakescope.data.manifest import read_table, resolve_uris
from fakescope.errors import ConfigError, StorageError


@pytest.fixture(scope="module")
def split_faces(faces_layout):
    return split_manifest(build_from_folders(str(faces_layout)), seed=0, max_distance=-1)


def test_folder_tree_keeps_bytes_and_relative_uris(split_faces, tmp_path):
    exported = export_manifest(split_faces, str(tmp_path / "out"))
    back = read_manifest(str(tmp_path / "out" / "manifest.parquet"))
    assert back["uri"].tolist() == exported["uri"].tolist()
    first = back.iloc[0]
    assert first["uri"].startswith(f"{first['split']}/{first['label']}/")
    assert (tmp_path / "out" / first["uri"]).read_bytes() == Path(split_faces["uri"].iloc[0]).read_bytes()
    assert (tmp_path / "out" / "manifest.csv").exists()


def test_a_source_uri_naming_an_exported_image_follows_it(split_faces, tmp_path):
    frame = split_faces.copy()
    real, ai = frame.index[frame["label"] == "real"][0], frame.index[frame["label"] == "ai"][0]
    frame["source_uri"] = ""
    frame.loc[ai, "source_uri"] = frame.loc[real, "uri"]
    frame.loc[frame.index[frame["label"] == "ai"][1], "source_uri"] = "/elsewhere/photo.png"
    exported = export_manifest(frame, str(tmp_path / "out"))
    assert exported.loc[ai, "source_uri"] == exported.loc[real, "uri"] == f"{frame.loc[real, 'split']}/real/" + \
        exported.loc[real, "uri"].rsplit("/", 1)[-1]
    assert "/elsewhere/photo.png" in set(exported["source_uri"])  # not exported: named as it was
    (tmp_path / "out").rename(tmp_path / "moved")
    moved = resolve_uris(read_table(str(tmp_path / "moved" / "manifest.parquet")), str(tmp_path / "moved" / "manifest.parquet"))
    assert moved.loc[ai, "source_uri"] == moved.loc[real, "uri"] == str(tmp_path / "moved" / exported.loc[real, "uri"])


def test_a_folder_holding_an_earlier_export_is_refused_before_writing(split_faces, tmp_path):
    out = tmp_path / "out"
    export_manifest(split_faces, str(out))
    before = sorted(p for p in out.rglob("*") if p.is_file())
    with pytest.raises(ConfigError, match=rf"^{out} already holds an export \(its manifest.parquet\)"):
        export_manifest(split_faces[split_faces["split"] == "test"], str(out))
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before
    assert len(read_manifest(str(out / "manifest.parquet"))) == len(split_faces)


def test_tar_holds_images_and_manifests(split_faces, tmp_path):
    export_manifest(split_faces, str(tmp_path / "faces.tar"), layout="tar")
    with tarfile.open(tmp_path / "faces.tar") as tar:
        names = tar.getnames()
        manifest = pd.read_parquet(io.BytesIO(tar.extractfile("manifest.parquet").read()))
        image = tar.extractfile(manifest["uri"].iloc[1]).read()
    assert len(names) == len(split_faces) + 2 and "manifest.csv" in names
    assert manifest["sha256"].iloc[1] == __import__("hashlib").sha256(image).hexdigest()


@pytest.mark.parametrize("layout", ["folders", "tar"])
def test_copies_of_one_file_under_one_name_are_exported_under_two(faces_layout, tmp_path, layout):
    for folder in ("a", "b"):
        (tmp_path / "set" / "real" / folder).mkdir(parents=True)
        (tmp_path / "set" / "real" / folder / "x.jpg").write_bytes((faces_layout / "real" / "r001.jpg").read_bytes())
    (tmp_path / "set" / "fake").mkdir()
    (tmp_path / "set" / "fake" / "f.jpg").write_bytes((faces_layout / "fake" / "stylegan2" / "f001.jpg").read_bytes())
    out = tmp_path / ("out" if layout == "folders" else "out.tar")
    exported = export_manifest(build_from_folders(str(tmp_path / "set")), str(out), layout=layout)
    assert exported["uri"].str.startswith("unsplit/real/x-").sum() == 2 and exported["uri"].is_unique
    if layout == "tar":
        with tarfile.open(out) as tar:
            assert sorted(tar.getnames()) == sorted([*exported["uri"], "manifest.parquet", "manifest.csv"])
    else:
        assert read_manifest(str(out / "manifest.parquet"))["uri"].tolist() == exported["uri"].tolist()
        assert all((out / uri).is_file() for uri in exported["uri"])


@pytest.mark.parametrize("layout", ["npy", "safetensors"])
def test_a_truncated_image_in_a_pack_is_named_in_the_error(split_faces, tmp_path, layout):
    from fakescope.errors import ImageLoadError

    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(split_faces["uri"].iloc[0]).read_bytes()[:300])  # the header reads, the pixels do not
    frame = pd.concat([split_faces, split_faces.iloc[:1].assign(uri=str(broken))], ignore_index=True)
    with pytest.raises(ImageLoadError, match=f"^{broken}: .*truncated"):
        export_manifest(frame, str(tmp_path / f"pack.{layout}"), layout=layout, size=32)
    assert not (tmp_path / f"pack.{layout}").exists()


@pytest.mark.parametrize("layout", ["npy", "safetensors"])
def test_uint8_pack_has_crops_labels_and_row_order(split_faces, tmp_path, layout):
    out = tmp_path / f"pack.{layout}"
    export_manifest(split_faces, str(out), layout=layout, size=48)
    if layout == "npy":
        images, labels = np.load(out), np.load(tmp_path / "pack.labels.npy")
    else:
        from safetensors.numpy import load_file

        tensors = load_file(str(out))
        images, labels = tensors["images"], tensors["labels"]
    manifest = read_manifest(str(tmp_path / "pack.parquet"))
    assert images.shape == (len(split_faces), 48, 48, 3) and images.dtype == np.uint8
    assert labels.tolist() == (manifest["label"] == "ai").astype(int).tolist()
    first = np.asarray(Image.open(manifest["uri"].iloc[0]).convert("RGB"))
    offset = (first.shape[0] - 48) // 2
    assert np.array_equal(images[0], first[offset:offset + 48, offset:offset + 48])


def test_small_images_are_upscaled_before_the_crop():
    crop = centre_crop(Image.new("RGB", (20, 10), (9, 99, 199)), 32)
    assert crop.shape == (32, 32, 3) and crop[16, 16].tolist() == [9, 99, 199]


def test_unknown_layout_is_refused(split_faces, tmp_path):
    with pytest.raises(ConfigError, match="unknown export layout"):
        export_manifest(split_faces, str(tmp_path / "x"), layout="zip")


@pytest.mark.parametrize("name, layout", [("faces.tar", "tar"), ("faces.npy", "npy")])
def test_tar_and_npy_stream_to_a_local_file_image_by_image(split_faces, tmp_path, monkeypatch, name, layout):
    from fakescope.io import storage

    written, read = [], storage.read_bytes

    def watch(uri: str, **options) -> bytes:  # how much of the tar is on disk as each image is read
        written.append(sum(p.stat().st_size for p in tmp_path.glob(".*.part")))
        return read(uri, **options)

    monkeypatch.setattr(storage, "read_bytes", watch)
    export_manifest(split_faces, str(tmp_path / name), layout=layout, size=32)
    assert written[-1] > written[0] and name in [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*"))


def test_a_failed_tar_export_leaves_no_file_behind(split_faces, tmp_path):
    gone = split_faces.assign(uri=split_faces["uri"].where(split_faces.index != 3, str(tmp_path / "gone.png")))
    with pytest.raises(StorageError, match="no such file"):
        export_manifest(gone, str(tmp_path / "faces.tar"), layout="tar")
    assert list(tmp_path.iterdir()) == []
