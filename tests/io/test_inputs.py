"""Expanding command-line inputs: folders, globs, stdin and explicitly named files."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from fakescope.errors import ConfigError
from fakescope.io import inputs
from fakescope.io.inputs import iter_sources


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """b.png, a.JPG, notes.txt, sub/z.webp, sub/deeper/c.tiff, a_dir/y.gif (contents irrelevant)."""
    for name in ("b.png", "a.JPG", "notes.txt", "sub/z.webp", "sub/deeper/c.tiff", "a_dir/y.gif"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return tmp_path


def _relative(sources, root: Path) -> list[str]:
    return [Path(s).relative_to(root).as_posix() for s in sources]


def test_folder_is_walked_recursively_sorted_images_only(tree):
    assert _relative(iter_sources([str(tree)]), tree) == [
        "a.JPG", "b.png", "a_dir/y.gif", "sub/z.webp", "sub/deeper/c.tiff",
    ]


def test_glob_is_expanded_sorted(tree):
    assert _relative(iter_sources([str(tree / "*.png"), str(tree / "**" / "*.webp")]), tree) == ["b.png", "sub/z.webp"]


def test_recursive_glob_yields_each_file_once(tree):
    assert _relative(iter_sources([str(tree / "sub" / "**")]), tree) == ["sub/z.webp", "sub/deeper/c.tiff"]


def test_recursive_glob_walks_only_the_topmost_folder_it_matches(tree, monkeypatch):
    walked = []
    walk = inputs.list_images
    monkeypatch.setattr(inputs, "list_images", lambda folder: walked.append(folder) or walk(folder))
    assert _relative(iter_sources([str(tree / "**")]), tree) == [
        "a.JPG", "b.png", "a_dir/y.gif", "sub/z.webp", "sub/deeper/c.tiff",
    ]
    assert walked == [str(tree)]  # `**` matches every folder below too: walking each again costs depth x files


def test_hidden_files_and_folders_below_a_folder_are_left_out(tmp_path):
    for name in (".hidden/a.jpg", "photos/._b.jpg", "photos/b.jpg", "photos/.DS_Store", "__MACOSX/photos/._b.jpg",
                 "photos/.thumbnails/b.png", ".git/objects/c.png"):
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / name).write_bytes(b"x")
    assert _relative(iter_sources([str(tmp_path / "set")]), tmp_path) == ["set/photos/b.jpg"]
    assert _relative(iter_sources([str(tmp_path / "set" / ".hidden")]), tmp_path) == ["set/.hidden/a.jpg"]  # named: listed
    assert _relative(iter_sources([str(tmp_path / "set" / "photos" / "._b.jpg")]), tmp_path) == ["set/photos/._b.jpg"]


def test_a_glob_leaves_out_hidden_names_its_wildcards_match(tmp_path):
    for name in ("photos/b.jpg", "photos/.thumbnails/b.png", "__MACOSX/c.jpg", ".cache/d.jpg", ".cache/e/f.jpg"):
        (tmp_path / "set" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "set" / name).write_bytes(b"x")
    for pattern in ("*", "**", "**/*.jpg", "*/*.jpg"):
        assert _relative(iter_sources([str(tmp_path / "set" / pattern)]), tmp_path) == ["set/photos/b.jpg"], pattern
    assert _relative(iter_sources([str(tmp_path / "set" / ".cache" / "*")]), tmp_path) == ["set/.cache/d.jpg", "set/.cache/e/f.jpg"]


def test_symlinked_folders_are_walked_each_once_and_link_loops_end(tmp_path):
    for name in ("set/a/1.jpg", "elsewhere/b/2.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "set" / "linked").symlink_to(tmp_path / "elsewhere" / "b", target_is_directory=True)
    (tmp_path / "set" / "twin").symlink_to(tmp_path / "elsewhere" / "b", target_is_directory=True)
    (tmp_path / "set" / "a" / "deeper").mkdir()
    for link, target in (("a/loop", "set"), ("a/deeper/up", "set/a")):  # two loops: glob's `**` followed them for ever
        (tmp_path / "set" / link).symlink_to(tmp_path / target, target_is_directory=True)
    expected = ["set/a/1.jpg", "set/linked/2.jpg"]
    for pattern in ("set", "set/**", "set/**/*.jpg"):
        assert _relative(iter_sources([str(tmp_path / pattern)]), tmp_path) == expected, pattern
    assert _relative(iter_sources([str(tmp_path / "set" / "a")]), tmp_path) == ["set/a/1.jpg"]  # not out to its parent


def test_a_glob_lists_a_folder_reached_by_two_links_once(tmp_path):
    """`set/*` walked each matched folder on its own: two links to one folder listed its images twice."""
    for name in ("set/real/1.jpg", "set/real/sub/2.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for link, target in (("set/l1", "set/real"), ("set/l2", "set/real"), ("set/l3", "set/real/sub")):
        (tmp_path / link).symlink_to(tmp_path / target, target_is_directory=True)
    expected = ["set/l1/1.jpg", "set/l1/sub/2.png"]  # sorted: the first name that reaches each real folder
    for pattern in ("set/*", "set/*/", "set/l*"):
        assert _relative(iter_sources([str(tmp_path / pattern)]), tmp_path) == expected, pattern
    for pattern in ("set/*/*.*", "set/**", "set"):  # a walk decides a parent's links first: real/sub is l3's there
        assert _relative(iter_sources([str(tmp_path / pattern)]), tmp_path) == ["set/l1/1.jpg", "set/l3/2.png"], pattern


def test_a_recursive_glob_matches_as_glob_does(tree):
    assert _relative(iter_sources([str(tree / "**" / "[ab]*")]), tree) == ["a.JPG", "a_dir/y.gif", "b.png"]
    assert _relative(iter_sources([str(tree / "**" / "deeper" / "*.tiff")]), tree) == ["sub/deeper/c.tiff"]


def test_glob_matching_folders_walks_them(tree):
    assert _relative(iter_sources([str(tree / "su*")]), tree) == ["sub/z.webp", "sub/deeper/c.tiff"]


def test_dash_reads_paths_from_stdin_in_place(tree):
    stdin = io.StringIO(f"{tree / 'b.png'}\n\n  {tree / 'notes.txt'}  \n")
    sources = list(iter_sources([str(tree / "a.JPG"), "-", str(tree / "sub" / "z.webp")], stdin=stdin))
    assert _relative(sources, tree) == ["a.JPG", "b.png", "notes.txt", "sub/z.webp"]


def test_a_piped_name_with_spaces_around_it_is_that_file_where_one_has_them(tmp_path, monkeypatch):
    """Every line was stripped, so `find` piping ` x.png` (a file named so) gave 'no such file' for `x.png`."""
    monkeypatch.chdir(tmp_path)
    for name in (" padded.png ", "plain.png"):
        (tmp_path / name).write_bytes(b"")
    stdin = io.StringIO(" padded.png \r\n  plain.png\t\n \n")
    assert list(iter_sources(["-"], stdin=stdin)) == [" padded.png ", "plain.png"]


def test_a_line_on_stdin_is_taken_as_an_argument_is(tree):
    stdin = io.StringIO(f"{tree / 'sub'}\n{tree / '*.png'}\n{tree / 'notes.txt'}\n-\n")
    sources = list(iter_sources(["-"], stdin=stdin))
    assert _relative(sources[:-1], tree) == ["sub/z.webp", "sub/deeper/c.tiff", "b.png", "notes.txt"]
    assert sources[-1] == "-"  # a file of that name: stdin is not read twice


def test_named_files_are_yielded_whatever_they_are(tree):
    named = [str(tree / "notes.txt"), str(tree / "missing.png"), "file-without-suffix"]
    assert list(iter_sources(named)) == named


def test_an_existing_file_with_glob_characters_is_that_file(tmp_path):
    for name in ("photo[1].jpg", "photo1.jpg", "what?.png"):
        (tmp_path / name).write_bytes(b"x")
    named = [str(tmp_path / "photo[1].jpg"), str(tmp_path / "what?.png")]
    assert list(iter_sources(named)) == named
    assert _relative(iter_sources([str(tmp_path / "photo[1]*")]), tmp_path) == ["photo1.jpg"]  # a pattern still globs


def test_glob_without_match_and_empty_folder_yield_nothing(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    assert list(iter_sources([str(tmp_path / "*.nothing"), str(tmp_path / "empty")])) == []
    assert caplog.messages == [f"no image matches {tmp_path / '*.nothing'}"]  # a typo is not silent


def test_stdin_without_a_name_is_a_warning(tree, caplog):
    """`find` that found nothing, piped in: the error after it spoke only of a folder's suffixes."""
    assert list(iter_sources(["-"], stdin=io.StringIO(" \n\n"))) == []
    assert caplog.messages == ["stdin (-) gave no names: pipe in one file, folder, URI or URL per line"]
    caplog.clear()
    assert list(iter_sources(["-"], stdin=io.StringIO(f"{tree / 'sub'}\n"))) and caplog.messages == []
    assert list(iter_sources(["-", "-"], stdin=io.StringIO(f"{tree / 'b.png'}\n"))) and caplog.messages == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_an_image_piped_in_is_refused_by_its_signature(image_factory, monkeypatch, fmt):
    """`curl URL | fakescope detect -`: its lines were taken for names, and a NUL byte in one raised from glob."""
    data = image_factory.bytes(fmt, (40, 40), seed=1)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
    with pytest.raises(ConfigError, match=rf"^stdin \(-\) holds a {fmt} image, not names: pipe in one file, folder, URI or "
                                          "URL per line; an image itself: save it to a file and name that$"):
        next(iter_sources(["-"]))


def test_binary_data_on_stdin_is_refused_and_a_name_like_a_signature_is_a_name(tree, monkeypatch):
    with pytest.raises(ConfigError, match=r"^stdin \(-\) holds binary data, not names \(a NUL byte\)"):
        list(iter_sources(["-"], stdin=io.StringIO("a.png\nGIF8\x00\x01*\n")))
    monkeypatch.chdir(tree)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(b"BM.png\nb.png\n"))))
    assert list(iter_sources(["-"])) == ["BM.png", "b.png"]  # a BMP's two-byte signature, in a list of names


def test_a_glob_keeps_image_suffixes_as_a_folder_listing_does(tree, caplog):
    assert sorted(iter_sources([str(tree / "*")])) == sorted(iter_sources([str(tree)]))  # notes.txt left out
    assert caplog.messages == []
    assert list(iter_sources([str(tree / "*.txt")])) == []
    assert caplog.messages == [f"no image matches {tree / '*.txt'} (1 file(s) without an image suffix left out: name them,"
                               " or list them on stdin with -, to score them)"]
    assert _relative(iter_sources([str(tree / "notes.txt")]), tree) == ["notes.txt"]  # named: yielded


def test_sources_are_lazy(tree):
    def stdin_that_must_wait():
        raise AssertionError("stdin was read before the folder's first image was used")
        yield

    sources = iter_sources([str(tree), "-"], stdin=stdin_that_must_wait())
    assert Path(next(sources)).name == "a.JPG"
    with pytest.raises(AssertionError, match="stdin was read"):
        list(sources)
