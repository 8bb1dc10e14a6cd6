"""Leakage-free splits: related images (pairs, exact and near duplicates) always land in one split.

Rows are linked when they share a `pair_id` (a real photo and the ai images made from it), a
`sha256` (the same file twice) or a perceptual hash within a small Hamming distance (a resized
or re-encoded copy). Linked groups are then dealt to `train`/`val`/`test` by seeded ratios,
separately for real-only, ai-only and mixed groups so every split keeps the class balance; the deal follows
the files' sha256, so one seed splits the same images alike whatever the row order or folder. A new deal
moves earlier-split images (10 files added to 1,000 moved 420-475 of them, three seeds); `keep=True` keeps every
group's split and deals only groups with none, so files added later never move a test image into train.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
from collections.abc import Callable, Container, Mapping
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from fakescope.data._parallel import map_images
from fakescope.data.manifest import HASH_COLUMN, SPLITS, validate_manifest
from fakescope.errors import ConfigError, FakescopeError
from fakescope.io import storage
from fakescope.io.image import check_signature

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}
HASH_BITS = 64
"""Bits of a dHash: the largest Hamming distance between two of them."""
T = TypeVar("T")
_BLOCK = 1 << 22
"""Most hash comparisons held at once by the near-duplicate search (4 MB of distances)."""


def difference_hash(data: bytes) -> int:
    """64-bit dHash of encoded image bytes: signs of horizontal gradients on a 9x8 greyscale thumbnail.

    Re-encoding, resizing and mild colour changes move it by a few bits; different images
    differ in about half of them. A large JPEG is decoded luma only at 1/2 to 1/8 scale (libjpeg's DCT
    scaling, no less than 64 px a side): 2-4x faster, within a bit or two of a full decode (mean 0.2 bits,
    at most 4, on the shared data's 4,250 JPEGs). Other formats decode in full. The image is turned upright by its
    EXIF orientation first, as decoding turns it.
    """
    return _hash_and_size(data)[0]


def perceptual_hashes(frame: pd.DataFrame, *, workers: int = 8, progress: bool = False) -> list[int | None]:
    """dHash of every row's image; None where unreadable.

    A `dhash` hex column is reused where it has a value; rows without one (ai images merged into a
    split manifest, images unreadable last time) are read and hashed, one file per `sha256` (copies of
    a file share its hash, as they share its bytes; where one cannot be read, the next copy is).
    """
    stored = frame[HASH_COLUMN].tolist() if HASH_COLUMN in frame.columns else [None] * len(frame)
    hashes = [int(h, 16) if isinstance(h, str) and h else None for h in stored]
    files = _files(frame)
    known = {file: h for file, h in zip(files, hashes) if h is not None}
    known |= _measure_files(frame, difference_hash, workers=workers, progress=progress, desc="dhash", skip=known)
    return [h if h is not None else known[file] for h, file in zip(hashes, files)]


def rehash_manifest(frame: pd.DataFrame, *, workers: int = 8, progress: bool = False) -> pd.DataFrame:
    """A copy whose `width`, `height` and `dhash` are measured from the images again, not reused: for a manifest
    written before they were taken turned upright by the EXIF orientation. One read per file (`sha256`), as
    `perceptual_hashes` reads; a row none of whose copies can be read keeps its width and height, with no dhash."""
    measured = _measure_files(frame, _hash_and_size, workers=workers, progress=progress, desc="rehash")
    figures = [measured[file] for file in _files(frame)]
    return frame.assign(
        width=[m[1] if m else w for m, w in zip(figures, frame["width"].tolist())],
        height=[m[2] if m else h for m, h in zip(figures, frame["height"].tolist())],
        **{HASH_COLUMN: [f"{m[0]:016x}" if m else "" for m in figures]},
    )


def _hash_and_size(data: bytes) -> tuple[int, int, int]:
    """(`difference_hash`, width, height) of encoded image bytes, all turned upright by the EXIF orientation, from one
    opening of the image."""
    from PIL import Image

    from fakescope.io.image import pixel_limit, upright, upright_size

    with pixel_limit(), Image.open(io.BytesIO(data)) as image:
        width, height = upright_size(image)  # before `draft`, which shrinks a JPEG's size
        image.draft("L", (64, 64))
        pixels = np.asarray(upright(image).convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0]), width, height


def _files(frame: pd.DataFrame) -> list[str | int]:
    """Each row's file: its sha256, or its own position where it has none."""
    return [digest or position for position, digest in enumerate(frame["sha256"].tolist())]


def _measure_files(frame: pd.DataFrame, measure: Callable[[bytes], T], *, workers: int, progress: bool, desc: str,
                   skip: Container[str | int] = ()) -> dict[str | int, T | None]:
    """`measure` of each file's bytes (`_files`) not in `skip`, reading its rows' uris in turn until one can be read
    (None where none can); a file whose leading bytes name no image format is refused after reading only those."""
    todo: dict[str | int, list[str]] = {}
    for file, uri in zip(_files(frame), frame["uri"].tolist()):
        if file not in skip:
            todo.setdefault(file, []).append(uri)

    def one(copies: list[str]) -> T | None:
        for uri in copies:  # one that is gone or unreadable: the next copy
            try:
                return measure(storage.read_bytes(uri, check=check_signature))
            except (FakescopeError, OSError, ValueError):  # FakescopeError: also over 2x MAX_PIXELS (`pixel_limit`)
                continue
        return None

    return dict(zip(todo, map_images(one, list(todo.values()), workers=workers, progress=progress, desc=desc)))


def near_duplicate_pairs(hashes: list[int | None], max_distance: int) -> list[tuple[int, int]]:
    """Index pairs that link every two rows whose hashes differ in at most `max_distance` bits.

    Rows of one hash value are linked to its first row (a chain, not all their pairs: ten thousand
    copies of a blank image are ten thousand links, not fifty million); distinct values that close
    are paired. Those are found by splitting the 64 bits into `max_distance + 1` bands: by
    pigeonhole, two such values agree exactly on at least one band, so only values sharing a band
    value are compared, a bounded block at a time.
    """
    known = [(i, h) for i, h in enumerate(hashes) if h is not None]
    if max_distance < 0 or len(known) < 2:
        return []
    rows = np.array([i for i, _ in known])
    values, first, inverse = np.unique(np.array([h for _, h in known], dtype=np.uint64), return_index=True,
                                       return_inverse=True)
    index = rows[first]  # the first row of each distinct value
    pairs = {(int(index[v]), int(r)) for r, v in zip(rows, inverse) if index[v] != r}
    edges = np.linspace(0, 64, max_distance + 2).astype(int)
    for low, high in itertools.pairwise(edges):
        band = (values >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)
        order = np.argsort(band, kind="stable")
        starts = np.flatnonzero(np.r_[True, band[order][1:] != band[order][:-1], True])
        for start, stop in itertools.pairwise(starts):
            members = order[start:stop]
            block = max(1, _BLOCK // len(members))
            for offset in range(0, len(members) - 1, block):
                near = np.bitwise_count(values[members[offset:offset + block], None] ^ values[None, members[offset:]])
                for a, b in zip(*np.nonzero(np.triu(near <= max_distance, k=1))):
                    pairs.add(tuple(sorted((int(index[members[offset + a]]), int(index[members[offset + b]])))))
    return sorted(pairs)


def group_related(frame: pd.DataFrame, hashes: list[int | None] | None = None, *, max_distance: int = 4) -> np.ndarray:
    """Group id per row: rows sharing a pair_id, a sha256 or a near-identical dHash share a group, as do an image and
    the one its `source_uri` names (`made_from_pairs`: a manifest whose pair_ids are empty still keeps them together).

    Groups are numbered in the order of the least digest of their rows' sha256 (a row without one: its uri), so a
    seeded deal of them depends on the images, not on the order of the rows or on where the files lie.
    """
    import pandas as pd

    parent = list(range(len(frame)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for column in ("pair_id", "sha256"):
        first: dict[str, int] = {}
        for position, value in enumerate(frame[column].tolist()):  # a list: iterating Arrow strings is 20x slower
            if value:
                union(position, first.setdefault(value, position))
    for a, b in [*made_from_pairs(frame), *near_duplicate_pairs(hashes or [], max_distance)]:
        union(a, b)
    roots = np.array([find(i) for i in range(len(frame))], dtype=np.intp)
    uris = frame["uri"].tolist() if "uri" in frame else [""] * len(frame)
    keys = np.fromiter((int.from_bytes(hashlib.blake2b((digest or uri).encode(), digest_size=8).digest())
                        for digest, uri in zip(frame["sha256"].tolist(), uris)), dtype=np.uint64, count=len(frame))
    least = pd.Series(keys).groupby(roots).min()  # sorting the keys' 64-bit digests: a third of sorting the text
    rank = np.empty(len(frame), dtype=np.intp)
    rank[least.index[np.lexsort((least.index, least.to_numpy()))]] = np.arange(len(least))  # ties (no key): by root
    return rank[roots]


def made_from_pairs(frame: pd.DataFrame) -> list[tuple[int, int]]:
    """(row, row of the image it was made from) for each row whose `source_uri` names another row's uri (local paths
    compared normalised)."""
    if "source_uri" not in frame:
        return []
    rows = {_normalised(uri): row for row, uri in enumerate(frame["uri"].astype(str).tolist())}
    made_from = [rows.get(_normalised(s)) if s else None
                 for s in frame["source_uri"].astype(object).fillna("").astype(str).tolist()]
    return [(row, source) for row, source in enumerate(made_from) if source is not None and source != row]


def _normalised(uri: str) -> str:
    return uri if "://" in uri else os.path.normpath(uri)


def split_manifest(
    frame: pd.DataFrame,
    ratios: Mapping[str, float] = DEFAULT_RATIOS,
    *,
    seed: int = 0,
    max_distance: int = 4,
    workers: int = 8,
    progress: bool = False,
    keep: bool = False,
) -> pd.DataFrame:
    """Assign `split` so no pair, duplicate or near-duplicate straddles two splits.

    Args:
        frame: The manifest.
        ratios: Target share of rows per split (`train`, `val`, `test`; normalised to sum 1).
        seed: Seed of the group shuffle; the same manifest and seed give the same splits.
        max_distance: dHash Hamming distance (0 to `HASH_BITS`) at or below which images count as near
            duplicates (-1 turns the check off); unrelated images differ in about half the bits.
        workers: Threads reading images to hash them.
        progress: Count the images hashed on stderr.
        keep: Keep the splits rows have: a group with one keeps it, a group whose rows have several
            (a near duplicate linking them, a leak) takes the one most of its split rows have, ties going to
            test, then val; only groups without any are dealt, towards `ratios` over all rows.

    Returns:
        A copy with `split` filled and a `dhash` column (hex) so later splits need no re-reading.

    Example:
        >>> split = split_manifest(frame, {"train": 0.8, "test": 0.2}, seed=1)  # doctest: +SKIP
    """
    unknown = sorted(set(ratios) - set(SPLITS))
    total = float(sum(ratios.values()))
    if unknown or not 0 < total < float("inf") or min(ratios.values()) < 0:  # nan fails the comparison too
        raise ConfigError(f"split ratios must be non-negative shares of {', '.join(SPLITS)}, got {dict(ratios)}")
    check_distance(max_distance)
    frame = validate_manifest(frame)
    hashes = perceptual_hashes(frame, workers=workers, progress=progress) if max_distance >= 0 else None
    groups = group_related(frame, hashes, max_distance=max_distance)
    shares = {name: ratios.get(name, 0.0) / total for name in SPLITS}
    fixed = _kept_splits(frame["split"].tolist(), groups) if keep else {}
    split_of_group = _deal_groups(frame, groups, shares, seed, fixed)
    frame = frame.assign(split=[split_of_group[g] for g in groups])
    if hashes is not None:
        frame[HASH_COLUMN] = [f"{h:016x}" if h is not None else "" for h in hashes]
    return frame


def check_distance(max_distance: int) -> None:
    """Refuse a near-duplicate distance outside 0 to `HASH_BITS` (-1: off): beyond it every pair is compared."""
    if not -1 <= max_distance <= HASH_BITS:  # every pair compared (and linked): hours on a big set
        raise ConfigError(f"the near-duplicate distance counts differing bits of a {HASH_BITS}-bit dHash: "
                          f"0 to {HASH_BITS}, or -1 for off; got {max_distance}")


def find_leaks(frame: pd.DataFrame, hashes: list[int | None] | None = None, *, max_distance: int = 4) -> list[str]:
    """Plain-language problems where one pair_id or one sha256 appears in more than one split, or an image and the one
    its `source_uri` names are in two, and, given each row's dHash (`perceptual_hashes`), where images of different
    files within `max_distance` bits do (near copies)."""
    problems = []
    assigned = frame[frame["split"] != ""]
    for column, what in (("pair_id", "pair"), ("sha256", "identical file")):
        spread = assigned[assigned[column] != ""].groupby(column)["split"].nunique()  # empty: no pair named
        leaked = spread[spread > 1]
        if len(leaked):
            problems.append(f"{len(leaked)} {what} group(s) appear in more than one split, e.g. {column}={leaked.index[0]}")
    splits, digests, uris = (frame[c].tolist() for c in ("split", "sha256", "uri"))
    crossed = [(a, b) for a, b in made_from_pairs(frame) if splits[a] and splits[b] and splits[a] != splits[b]]
    if crossed:
        a, b = crossed[0]
        problems.append(f"{len(crossed)} image(s) are in another split than the image their source_uri names, "
                        f"e.g. {uris[a]} ({splits[a]}) made from {uris[b]} ({splits[b]})")
    if hashes is not None:
        known = [h if split else None for h, split in zip(hashes, splits)]
        near = [(a, b) for a, b in near_duplicate_pairs(known, max_distance)
                if splits[a] != splits[b] and not (digests[a] and digests[a] == digests[b])]
        if near:
            a, b = near[0]
            problems.append(f"{len({i for pair in near for i in pair})} image(s) have a near copy (re-encoded or resized: "
                            f"dHash within {max_distance} bits) in another split, e.g. {uris[a]} ({splits[a]}) "
                            f"and {uris[b]} ({splits[b]})")
    return problems


def find_split_leaks(frame: pd.DataFrame, *, max_distance: int = 4, workers: int = 8, progress: bool = False) -> list[str]:
    """`find_leaks` over the rows that have a split, near copies included (-1: off): dHashes come from the `dhash`
    column, and split rows without one are read and hashed, only where two or more splits are present."""
    check_distance(max_distance)
    split = frame[frame["split"] != ""]
    hashed = max_distance >= 0 and split["split"].nunique() > 1
    hashes = perceptual_hashes(split, workers=workers, progress=progress) if hashed else None
    return find_leaks(split, hashes, max_distance=max_distance)


def _kept_splits(splits: list[str], groups: np.ndarray) -> dict[int, str]:
    """The split each group keeps: the one most of its split rows have (ties: test, then val, then train)."""
    votes: dict[int, dict[str, int]] = {}
    for split, group in zip(splits, groups.tolist()):
        if split:
            tally = votes.setdefault(group, {})
            tally[split] = tally.get(split, 0) + 1
    return {group: max(reversed(SPLITS), key=lambda s: tally.get(s, 0)) for group, tally in votes.items()}


def _deal_groups(frame: pd.DataFrame, groups: np.ndarray, shares: dict[str, float], seed: int,
                 fixed: Mapping[int, str]) -> dict[int, str]:
    """A split per group: `fixed` ones keep theirs and count as filled; the others are dealt to the largest deficit."""
    rng = np.random.default_rng(seed)
    sizes = np.bincount(groups)
    ai = np.bincount(groups, weights=(frame["label"] == "ai").to_numpy())
    kinds = np.where(ai == 0, "real", np.where(ai == sizes, "ai", "mixed"))
    result: dict[int, str] = dict(fixed)
    for kind in sorted(set(kinds)):
        members = np.flatnonzero(kinds == kind)
        stratum_rows = sizes[members].sum()
        filled = dict.fromkeys(shares, 0)
        for group in members:
            if group in result:
                filled[result[group]] += sizes[group]
        members = members[rng.permutation(len(members))]
        members = members[np.argsort(-sizes[members], kind="stable")]
        for group in members:
            if group in result:
                continue
            deficit = {name: share * stratum_rows - filled[name] for name, share in shares.items() if share > 0}
            choice = max(deficit, key=deficit.get)
            filled[choice] += sizes[group]
            result[int(group)] = choice
    return result
