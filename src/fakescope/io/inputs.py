"""Expand command-line inputs (files, folders, globs, storage URIs, `-` for stdin) into sources."""

from __future__ import annotations

import fnmatch
import functools
import glob
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from fakescope.errors import ConfigError
from fakescope.io.fetch import is_url

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (
    ".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif",
    ".ppm", ".pgm", ".pbm", ".pnm",
)
_STDIN_TAKES = "pipe in one file, folder, URI or URL per line"
_AN_IMAGE = "; an image itself: save it to a file and name that"


def iter_sources(inputs: str | Iterable[str], *, stdin: Iterable[str] | None = None) -> Iterator[str]:
    """Yield one source per image, lazily and in a stable order.

    Folders are walked recursively (image suffixes only, sorted, hidden entries left out: see
    `list_images`); globs are expanded as `expand_glob` does (image suffixes only, as a folder is
    listed); `s3://` and other storage URIs are listed through `fakescope.io.storage` when they
    name a prefix; an http(s) URL is that one image, never listed; `-` reads one input per line from stdin, each taken
    as an argument is (a folder piped in is listed), except a storage URI with an image suffix: that object, read
    without listing it first. A named file, or one read from stdin, is always yielded, whatever its
    suffix (or glob characters in its name), so that a misnamed image or a broken file is reported, not skipped.
    A line is taken without its line ending, and without spaces around it unless a file is named with them (a blank
    line is skipped); stdin without one is a warning, as a glob matching nothing is. One string is one input.
    """
    stdin_read = False
    for item in [inputs] if isinstance(inputs, str) else inputs:
        if item == "-":
            if stdin_read:  # `- -`: read to its end once; again it is empty, not 'no names'
                continue
            stdin_read = True
            lines = stdin if stdin is not None else _stdin_lines()
            line = None
            for line in filter(None, map(_stdin_name, lines)):  # a line `-` is a file: stdin is read once
                if "\0" in line:  # no name has one: binary data piped in, which glob and open would raise on
                    raise ConfigError(f"stdin (-) holds binary data, not names (a NUL byte): {_STDIN_TAKES}{_AN_IMAGE}")
                if _is_uri(line) and line.lower().endswith(IMAGE_SUFFIXES):
                    yield line  # that object, unchecked: a million URIs piped in cost no listing each
                else:
                    yield from _expand(line)
            if line is None:  # `find` that found nothing: not a folder's suffix rule
                log.warning("stdin (-) gave no names: %s", _STDIN_TAKES)
        else:
            yield from _expand(item)


def _expand(item: str) -> Iterator[str]:
    """One input other than `-`: a storage URI, folder or glob is expanded, anything else is that file
    (a `file://` URI is its local path, an http(s) URL that image)."""
    item = item.removeprefix("file://")
    if is_url(item):
        yield item
    elif _is_uri(item):
        yield from _expand_uri(item)
    elif os.path.isdir(item):
        yield from list_images(str(Path(item)))
    elif glob.has_magic(item) and not os.path.exists(item):  # a file named `photo[1].jpg` is that file
        matched = expand_glob(item)
        first = next(matched, None)
        if first is None:  # a typo is not silent
            _warn_no_image(item)
        else:
            yield first
            yield from matched
    else:
        yield item


def _is_uri(item: str) -> bool:
    return "://" in item and not item.startswith("file://")


def _stdin_name(line: str) -> str:
    """A stdin line as a name: without its line ending, and without the spaces around it unless a file has them
    (`find` prints ` x.jpg` as it is; a padded line in a hand-made list still names `x.jpg`)."""
    name = line.rstrip("\r\n")
    stripped = name.strip()
    return name if name != stripped and stripped and os.path.lexists(name) else stripped


def _stdin_lines() -> Iterator[str]:
    """Stdin's lines decoded as file names are (`os.fsdecode`): a name that is not UTF-8, from `find`, is
    that file, not a UnicodeDecodeError under a strict locale. An image piped in (`curl URL | fakescope detect -`)
    is refused by its signature before a line of it is taken for a name."""
    raw = getattr(sys.stdin, "buffer", None)
    if hasattr(raw, "peek"):  # a buffered stream: its head seen without consuming it
        from fakescope.io.image import sniff_format

        head = raw.peek(64)[:64]  # a list starting `BMW/` is text: an image's head holds control bytes too
        if (fmt := sniff_format(head)) and any(byte < 32 and byte not in b"\t\n\r" for byte in head):
            raise ConfigError(f"stdin (-) holds a {fmt} image, not names: {_STDIN_TAKES}{_AN_IMAGE}")
    yield from sys.stdin if raw is None else map(os.fsdecode, raw)


def expand_glob(pattern: str) -> Iterator[str]:
    """The images a local glob matches, sorted, each once, as a folder listing keeps them: matched files with an
    image suffix and the images under matched folders, none where a wildcard matched a hidden name (`__MACOSX`).
    Each real folder's images are listed once, by the first name that reaches them (`set/*` with two links to one
    folder: its images once)."""
    named = set(Path(pattern).parts)  # a hidden folder the pattern names itself is listed, as with a folder
    matches = sorted(m for m in _glob(pattern) if not any(is_hidden(part) and part not in named for part in Path(m).parts))
    real_folder = functools.lru_cache(maxsize=4096)(os.path.realpath)
    listed: set[tuple[str, str]] = set()
    for match in _expand_matches(matches):  # `**` matches a folder and what it holds: each file once
        folder, name = os.path.split(match)
        if (key := (real_folder(folder), name)) not in listed:
            listed.add(key)
            yield match


def _warn_no_image(pattern: str) -> None:
    others = sum(map(os.path.isfile, _glob(pattern)))
    log.warning("no image matches %s%s", pattern, f" ({others} file(s) without an image suffix left out: name them,"
                " or list them on stdin with -, to score them)" if others else "")


def _glob(pattern: str) -> Iterator[str]:
    """What `pattern` matches, over a walk from its last folder without wildcards: one that enters symlinked folders each
    once and never one's own ancestor (`glob`'s would follow such a link round and round: with two, for ever), leaves out
    hidden folders the pattern does not name, and gives a folder it reaches but cannot list as its `UnlistedFolder`
    (`glob` leaves it out unsaid). Without a `**`, only folders the pattern's leading parts match are listed."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    anchor = os.path.join(*parts[:first]) if first else ""
    matches = (found if isinstance(found, str) else os.path.join(anchor, *found)
               for found in _walked(anchor or ".", parts[first:], set(parts))
               if isinstance(found, str) or _matches(parts[first:], found))
    return filter(os.path.isdir, matches) if pattern.endswith(("/", os.sep)) else matches  # `photos/*/`: folders, as glob


def _walked(root: str, pattern: tuple[str, ...], named: set[str]) -> Iterator[tuple[str, ...] | str]:
    """`root` (as `()`) and the folders and files below it that `pattern` may match, as path parts relative to it; a
    folder that cannot be listed as its `UnlistedFolder`, which a pattern cannot tell holds no match (listing it reports
    it), unless the pattern names what lies below it (`_named_below`)."""
    from fakescope.io._local import walk

    failed: list[OSError] = []
    for folder, dirs, files in walk(root, failed.append):
        yield from _named_below(failed, root, pattern)
        here = Path(os.path.relpath(folder, root)).parts if folder != root else ()
        if not here:
            yield here
        yield from (here + (name,) for name in dirs + files)
        dirs[:] = [name for name in dirs if _may_hold(pattern, here + (name,), named)]
    yield from _named_below(failed, root, pattern)


def _named_below(failed: list[OSError], root: str, pattern: tuple[str, ...]) -> Iterator[tuple[str, ...] | str]:
    """The folders `walk` could not list (`unlisted`): where the pattern's parts below one have no wildcard
    (`*/x.png`), the path they name, looked up as `glob` does without listing the folder (an execute-only one opens it),
    or nothing where none is there; else the `UnlistedFolder`, as where the folder cannot even be entered."""
    from fakescope.io._local import unlisted

    for folder in unlisted(failed):
        here = Path(os.path.relpath(folder, root)).parts
        rest = pattern[len(here):]
        if "**" in pattern or not rest or any(map(glob.has_magic, rest)):
            yield folder
            continue
        try:
            os.lstat(os.path.join(folder, *rest))
        except PermissionError:
            yield folder
        except OSError:  # none there
            continue
        else:
            yield here + rest


def _may_hold(pattern: tuple[str, ...], parts: tuple[str, ...], named: set[str]) -> bool:
    """Whether the folder at `parts` may hold a match: one not hidden (or named) under a `**`, else one that the
    pattern's leading parts match."""
    if "**" in pattern:
        return not is_hidden(parts[-1]) or parts[-1] in named
    return len(parts) < len(pattern) and _matches(pattern[:len(parts)], parts)


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """`parts` fit `pattern`'s parts, `**` standing for any number of folders and other parts matched as `glob` does
    (a wildcard matches no dot name)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, parts[i:]) for i in range(len(parts) + 1))
    return (bool(parts) and fnmatch.fnmatch(parts[0], head) and (head[0] == "." or parts[0][0] != ".")
            and _matches(rest, parts[1:]))


def _expand_matches(matches: list[str]) -> Iterator[str]:
    """Sorted glob matches: a file with an image suffix, a folder walked unless one above it was (`**` matches both)
    or it is one walked already under another name (a link)."""
    walked: set[Path] = set()
    real: set[str] = set()
    for match in matches:
        if not os.path.isdir(match):
            if match.lower().endswith(IMAGE_SUFFIXES):
                yield match
        elif walked.isdisjoint((folder := Path(match)).parents) and os.path.realpath(match) not in real:
            walked.add(folder)  # sorted: a folder comes before those below it
            real.add(os.path.realpath(match))
            yield from list_images(str(folder))


def is_hidden(name: str) -> bool:
    """True for a name listings skip: a dot name (`.DS_Store`, AppleDouble `._photo.jpg`, `.git`) or `__MACOSX`."""
    return name.startswith(".") or name == "__MACOSX"


def list_images(folder: str) -> Iterator[str]:
    """The images under a local folder or storage prefix, sorted, without hidden files or anything in a hidden folder.

    Only names below `folder` count (see `is_hidden`): a folder named explicitly, `~/.cache/faces`, is listed. A local
    folder that cannot be listed comes in its images' place as an `UnlistedFolder` (`fakescope.io.storage.list_files`),
    which reading it reports as an error.
    """
    from fakescope.io import storage

    root = folder.rstrip("/")
    for uri in storage.list_files(folder, suffixes=IMAGE_SUFFIXES):
        if not any(map(is_hidden, uri[len(root):].split("/"))):
            yield uri


def _expand_uri(uri: str) -> Iterator[str]:
    """The images under a folder or prefix; a name with an image suffix is that file unless it is a folder (`a.jpg/`)."""
    from fakescope.errors import StorageError, StorageUnavailableError

    if not uri.lower().endswith(IMAGE_SUFFIXES):
        yield from list_images(uri)
        return
    try:
        listed = list_images(uri)
        first = next(listed, None)
    except StorageUnavailableError:
        raise
    except StorageError:  # a Drive file is no folder to list
        first = None
    if first is not None:
        yield first
        yield from listed
    else:  # that file, as a local name is: one that is missing is reported, not dropped
        yield uri


def path_text(source: str) -> str:
    """`source` as text any output can take: a file name that is not UTF-8 (Python's surrogate escapes) gets `\\udcNN` escapes."""
    return source.encode("utf-8", "backslashreplace").decode("utf-8")
