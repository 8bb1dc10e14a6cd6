"""Local backend: plain paths and file:// URIs through the public storage functions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings

import pytest

from fakescope.errors import NoSuchFileError, NoSuchFolderError, StorageError
from fakescope.io import storage


def test_write_is_atomic_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "image.png"
    storage.write_bytes(str(target), b"first")
    storage.write_bytes(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["image.png"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_permissions_of_the_umask(tmp_path, umask):
    target = tmp_path / "out" / "image.png"
    code = f"from fakescope.io import storage; storage.write_bytes({str(target)!r}, b'x')"
    subprocess.run(["sh", "-c", f'umask {umask:o} && exec "$0" -c "$1"', sys.executable, code], check=True)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not the temporary file's 0600


def test_file_uri_and_plain_path_read_the_same_bytes(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    assert storage.read_bytes(f"file://{tmp_path}/x.jpg") == storage.read_bytes(str(tmp_path / "x.jpg")) == b"\xff\xd8\xff"


def test_list_files_filters_suffixes_sorts_and_recurses(tmp_path):
    for name in ["b.PNG", "a.jpg", "notes.txt", "sub/c.png", "sub/deeper/d.jpeg"]:
        storage.write_bytes(str(tmp_path / name), b"x")
    listed = list(storage.list_files(str(tmp_path), suffixes=("png", ".JPG", ".jpeg")))
    assert listed == [str(tmp_path / n) for n in ["a.jpg", "b.PNG", "sub/c.png", "sub/deeper/d.jpeg"]]
    flat = list(storage.list_files(f"file://{tmp_path}", recursive=False))
    assert flat == [f"file://{tmp_path}/{n}" for n in ["a.jpg", "b.PNG", "notes.txt"]]
    assert list(storage.list_sizes(str(tmp_path), recursive=False)) == [(str(tmp_path / n), None) for n in
                                                                        ["a.jpg", "b.PNG", "notes.txt"]]  # a walk has none


def test_a_folder_that_cannot_be_listed_is_a_warning_and_the_listing_goes_on(tmp_path, caplog):
    for name in ["a.jpg", "gone/b.jpg", "kept/c.jpg"]:
        storage.write_bytes(str(tmp_path / name), b"x")
    listed = storage.list_files(str(tmp_path))
    assert next(listed) == str(tmp_path / "a.jpg")
    (tmp_path / "gone" / "b.jpg").unlink()
    (tmp_path / "gone").rmdir()  # removed while listed, as an unreadable folder fails: once silently left out
    assert list(listed) == [str(tmp_path / "kept" / "c.jpg")]
    assert caplog.messages == [f"cannot list {tmp_path / 'gone'}: No such file or directory; its images are left out"]


def test_exists_for_files_and_non_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    storage.write_bytes(str(tmp_path / "full" / "f.bin"), b"1")
    assert storage.exists(str(tmp_path / "full" / "f.bin"))
    assert storage.exists(str(tmp_path / "full"))
    assert not storage.exists(str(tmp_path / "empty"))
    assert not storage.exists(str(tmp_path / "absent.png"))


def test_exists_closes_the_folder_it_looked_into(tmp_path):
    storage.write_bytes(str(tmp_path / "full" / "f.bin"), b"1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assert storage.exists(str(tmp_path / "full"))
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_errors_are_one_line_storage_errors(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    for call, where, reason in ((storage.read_bytes, tmp_path / "absent.png", "no such file or folder"),
                                (storage.read_bytes, tmp_path, "a folder, not a file"),
                                (storage.size, tmp_path / "absent.png", "no such file or folder"),
                                (storage.size, tmp_path, "a folder, not a file"),  # was the folder entry's size
                                (storage.list_files, tmp_path / "absent", "no such folder"),
                                (storage.list_files, tmp_path / "a.png", "a file, not a folder"),  # was "no such folder"
                                # a file where a folder goes: none there, as a manifest read must tell (was "Not a directory")
                                (storage.read_bytes, tmp_path / "a.png" / "m.csv", "no such file (a part of its path is a file)")):
        with pytest.raises(StorageError) as caught:  # the path once: as the source, not again in the reason
            call(str(where))
        assert (caught.value.reason, caught.value.source, str(caught.value)) == (reason, str(where), f"{where}: {reason}")
        assert isinstance(caught.value, NoSuchFolderError) == (reason == "no such folder")  # told apart: none there
        assert isinstance(caught.value, NoSuchFileError) == reason.startswith("no such file")
    with pytest.raises(StorageError, match="unsupported storage scheme 'ftp'"):
        storage.read_bytes("ftp://host/a.png")
    with pytest.raises(StorageError) as caught:  # a URL's password and signature stay out of the message
        storage.list_files("https://user:hunter22pass@example.com/dir/?X-Amz-Signature=SECRETSIG")
    assert str(caught.value) == ("unsupported storage scheme 'https' in 'https://example.com/dir/'; "
                                 "use a path, s3:// or gdrive://")
    assert isinstance(StorageError("x"), OSError)


def test_join_and_is_remote():
    assert storage.join("s3://bucket", "real/", "/0001.png") == "s3://bucket/real/0001.png"
    assert storage.join("gdrive://folder-id/", "a") == "gdrive://folder-id/a"
    assert storage.join("data", "real", "x.png") == os.path.join("data", "real", "x.png")
    assert storage.is_remote("gdrive://id") and storage.is_remote("s3://b")
    assert not storage.is_remote("file:///tmp") and not storage.is_remote("relative/path")
    assert isinstance(storage.get_storage("/tmp"), storage.Storage)


def test_env_file_is_read_once_without_overriding(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("FAKESCOPE_TEST_FROM_FILE=file\nFAKESCOPE_TEST_PRESET=file\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKESCOPE_TEST_PRESET", "environment")
    monkeypatch.delenv("FAKESCOPE_TEST_FROM_FILE", raising=False)
    monkeypatch.setattr(storage, "_dotenv_loaded", False)
    storage.load_env_file()
    assert os.environ["FAKESCOPE_TEST_FROM_FILE"] == "file"
    assert os.environ["FAKESCOPE_TEST_PRESET"] == "environment"
    monkeypatch.delenv("FAKESCOPE_TEST_FROM_FILE")


def test_remove_deletes_a_file_and_a_missing_one_is_no_error(tmp_path):
    uri = str(tmp_path / "a.png")
    storage.write_bytes(uri, b"a")
    storage.remove(uri)
    storage.remove(uri)
    assert not storage.exists(uri)
    with pytest.raises(StorageError, match="a folder, not a file$"):
        storage.remove(str(tmp_path))
