"""Build manifests from folder layouts, FFHQ-style JSON listings or CSV files; join attributes; balance.

Every builder reads each image once (local or remote) to record its size, format and sha256, and
skips unreadable files, and files whose name is not UTF-8 (no manifest can record it), with a
logged warning rather than failing the whole build (`progress=True` counts the images read on
stderr). Identical files labelled both real and ai are kept, with a warning. Local images are
recorded by absolute path, so the manifest works wherever it is written and whatever folder reads it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from fakescope.data._parallel import map_images
from fakescope.data.manifest import (
    MANIFEST_COLUMNS,
    MISSING_MARKERS,
    as_missing,
    describe_image,
    normalise_label,
    resolve_uris,
    validate_manifest,
)
from fakescope.data.merge import inherit_from_pairs
from fakescope.errors import ConfigError, FakescopeError, reason_about
from fakescope.io import storage
from fakescope.io.inputs import list_images, path_text

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

REAL_FOLDERS = ("real",)
AI_FOLDERS = ("fake", "ai")
_URI_COLUMNS = ("uri", "path", "file", "filename", "file_name")


def build_from_folders(
    root: str, *, source: str | None = None, default_generator: str = "unknown", workers: int = 8, progress: bool = False
) -> pd.DataFrame:
    """Build a manifest from `root/real/[<source>/]...` and `root/fake/[<generator>/]...` (or `root/ai/`).

    An ai image whose file stem starts with a real image's stem (`00152_var1.png` from
    `00152.png`) is paired with it: it shares its `pair_id` and `source` and names it in `source_uri`.
    An unpaired ai image's source is the collection (`source`, else the folder's name). Where reals in
    different folders share that stem, the sha256 prefix `fakescope generate` puts after it
    (`00152-1a2b3c4d-...`) picks one; without it the ai image stays unpaired, with a warning.
    Unpaired images are their own group (`pair_id` = own sha256). Hidden files and folders (`.DS_Store`,
    AppleDouble `._x.jpg`, `.thumbnails/`, `__MACOSX/`) are left out, as `fakescope.io.inputs.list_images` lists.

    Example:
        >>> frame = build_from_folders("data/faces")  # doctest: +SKIP
        >>> frame.groupby(["label", "generator"]).size()  # doctest: +SKIP
    """
    collection = source or os.path.basename(root.rstrip("/")) or "local"
    root = storage.absolute(root)
    jobs: list[tuple[str, str, str, str]] = []  # uri, label, source, generator
    for folder in REAL_FOLDERS + AI_FOLDERS:
        base = storage.join(root, folder)
        if not storage.exists(base):
            continue
        label = "real" if folder in REAL_FOLDERS else "ai"
        for uri in list_images(base):
            parts = _relative(uri, base).split("/")
            group = parts[0] if len(parts) > 1 else None
            if label == "real":
                jobs.append((uri, label, source or group or collection, ""))
            else:
                jobs.append((uri, label, collection, group or default_generator))
    if not jobs:
        raise ConfigError(f"no images under {root}/real or {root}/fake (or {root}/ai)")
    frame = _describe_all(jobs, workers, progress)
    return validate_manifest(_pair_by_name(frame))


def build_from_ffhq_json(json_uri: str, image_root: str, *, source: str = "ffhq", workers: int = 8,
                         progress: bool = False) -> pd.DataFrame:
    """Build a `real` manifest from an FFHQ-style JSON listing and the folder holding its images.

    Accepts FFHQ's own `ffhq-dataset-v2.json` (`{"0": {"category": ..., "image": {"file_path": ...}}}`)
    and V7/Darwin-style exports (a list of `{"image": {"filename": ...}}` or `{"filename": ...}`).
    Each listed file is looked up by name under `image_root`; where several files there have its
    name, the listed path picks the one whose path ends like it (`00000/x.png` for
    `images1024x1024/00000/x.png`), and a path that fits several is an error. Listed files that are
    absent are skipped with a logged count. A `category` (training/validation) becomes an attribute column.
    """
    try:
        listing = json.loads(storage.read_bytes(json_uri))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{json_uri} is not valid JSON (line {exc.lineno})") from None
    if not isinstance(listing, (dict, list)):
        raise ConfigError(f"{json_uri} holds a {type(listing).__name__}, not a listing of images (an object or a list)")
    entries = list(listing.values()) if isinstance(listing, dict) else listing
    image_root = storage.absolute(image_root)
    by_name: dict[str, list[str]] = {}
    for uri in list_images(image_root):
        by_name.setdefault(os.path.basename(uri), []).append(uri)
    categories: dict[str, str] = {}
    listed: set[str] = set()
    for entry in entries:
        name, category = _ffhq_entry(entry)
        if name:
            listed.add(name)
            uri = _listed_file(name, by_name, image_root, json_uri)
            if uri:
                categories.setdefault(uri, category)
    if len(categories) < len(listed):
        logger.warning("%d of %d listed images are not under %s", len(listed) - len(categories), len(listed), image_root)
    if not categories:
        raise ConfigError(f"none of the {len(listed)} images listed in {json_uri} are under {image_root}")
    frame = _describe_all([(u, "real", source, "") for u in sorted(categories)], workers, progress)
    if any(categories.values()):
        frame["category"] = [categories[u] for u in frame["uri"]]
    return validate_manifest(frame)


def build_from_csv(csv_uri: str, *, source: str | None = None, workers: int = 8, progress: bool = False) -> pd.DataFrame:
    """Build a manifest from a CSV with a path column (`uri`/`path`/`file`) and a `label` column.

    Relative paths are resolved against the CSV's folder; a path listed twice is an error. Known manifest columns are kept;
    width, height, format and sha256 are measured from the images; other columns stay as attributes.
    A row without a source takes its pair's (a `generate` manifest's ai rows, their real's), where the CSV lists it,
    else `source` where given.
    """
    import io

    import pandas as pd

    try:
        table = pd.read_csv(io.BytesIO(storage.read_bytes(csv_uri)), keep_default_na=False, na_values=[""])
    except ValueError as exc:  # an empty file, a malformed row, bytes that are not text
        raise ConfigError(f"cannot read {csv_uri}: {type(exc).__name__}: {exc}") from None
    path_column = next((c for c in _URI_COLUMNS if c in table.columns), None)
    if path_column is None or "label" not in table.columns:
        raise ConfigError(f"{csv_uri} needs a label column and one of {', '.join(_URI_COLUMNS)}")
    if table.empty:
        raise ConfigError(f"{csv_uri} lists no images")
    blank = table[path_column].isna().to_numpy()
    if blank.any():
        raise ConfigError(f"{csv_uri}: {blank.sum()} row(s) have no {path_column}, the first is data row {blank.argmax() + 1}")
    uris = resolve_uris(table.assign(uri=table[path_column].astype(str)), csv_uri)["uri"].tolist()
    repeated = pd.Series(uris)[pd.Series(uris).duplicated()]
    if len(repeated):
        raise ConfigError(f"{csv_uri} lists {len(repeated)} path(s) more than once, e.g. {repeated.iloc[0]}; keep one row each")
    sources, generators = ([""] * len(table) if c not in table else table[c].astype(object).fillna("").astype(str)
                            for c in ("source", "generator"))
    jobs = [(u, _csv_label(label, csv_uri, row), s, g)
            for row, (u, label, s, g) in enumerate(zip(uris, table["label"], sources, generators), start=1)]
    measured = _describe_all(jobs, workers, progress).set_index("uri")
    table = table.assign(uri=uris).drop(columns=[c for c in _URI_COLUMNS[1:] if c == path_column])
    table = table[table["uri"].isin(measured.index)]
    for column in ("width", "height", "format", "sha256", "label"):
        table[column] = measured.loc[table["uri"], column].to_numpy()
    if "pair_id" not in table:
        table["pair_id"] = table["sha256"]
    table["pair_id"] = table["pair_id"].fillna(table["sha256"])
    for column in ("source", "generator", "split"):
        if column not in table:
            table[column] = ""
    own = table["source"].astype(object).fillna("").astype(str) != ""
    table = inherit_from_pairs(table, ["source"], has=own)  # an ai row's origin is its real's
    if source:
        table["source"] = table["source"].astype(object).fillna("").astype(str).replace("", source)
    return validate_manifest(table)


def _csv_label(value: object, csv_uri: str, row: int) -> str:
    """`normalise_label`, its error naming the listing and data row."""
    try:
        return normalise_label(value)
    except ConfigError as exc:
        raise ConfigError(f"{csv_uri}, data row {row}: {exc}") from None


def join_attributes(frame: pd.DataFrame, table_uri: str, *, key: str | None = None) -> pd.DataFrame:
    """Left-join an attribute table (CSV) onto the manifest by file stem.

    Args:
        frame: The manifest.
        table_uri: A CSV whose `key` column (default: its first column) names image files,
            e.g. `ffhq_attributes.csv` with `ffhq_file,expression,glasses,gender,race`.
        key: The file-name column of the table.

    Rows are matched on the file name without extension, so `00001.png` in the table matches
    `real/00001.jpg`. A row with no match of its own is matched by the file name in its `source_uri`
    (the upload's name, for images the web app saved), else takes the attributes of a matched row
    with its `pair_id`, the face it was made from (an ai image such as `00001-<hash>-dall-e-2-...`).
    Attribute columns that clash with manifest columns get an `attr_` prefix; `MISSING_MARKERS` values are missing. A table that matches no
    image at all (the wrong key column, say), or gives one file stem rows with different attributes (the
    first is kept), is logged as a warning.
    """
    import io

    import pandas as pd

    data = storage.read_bytes(table_uri)
    try:
        columns = pd.read_csv(io.BytesIO(data), nrows=0).columns
    except ValueError as exc:
        raise ConfigError(f"cannot read attribute table {table_uri}: {exc}") from None
    key = key or columns[0]
    if key not in columns:
        raise ConfigError(f"attribute table {table_uri} has no column {key!r}")
    if len(columns) < 2:
        raise ConfigError(f"attribute table {table_uri} has no column besides its file names ({key!r})")
    table = pd.read_csv(io.BytesIO(data), dtype={key: str}, na_values=list(MISSING_MARKERS))  # `00001` names a file
    example = f" (such as {table[key].iloc[0]})" if len(table) else ""
    table = table.assign(_stem=table[key].astype(str).map(_stem)).drop(columns=[key])
    _warn_conflicting_rows(table, table_uri)
    table = table.drop_duplicates("_stem").rename(columns={c: f"attr_{c}" for c in table.columns if c in frame.columns})
    known = set(table["_stem"])
    made_from = frame["source_uri"] if "source_uri" in frame else [""] * len(frame)
    stems = [own if own in known else _stem(source) for own, source in zip(frame["uri"].map(_stem), made_from)]
    joined = frame.assign(_stem=stems).merge(table, on="_stem", how="left").drop(columns="_stem")
    columns = [c for c in table.columns if c != "_stem"]
    own = joined[columns].notna().any(axis=1)
    joined = inherit_from_pairs(joined, columns, has=own)
    through_pair = int((joined[columns].notna().any(axis=1) & ~own).sum())
    if not any(stem in known for stem in stems):
        logger.warning("no image matched a row of %s by its file-name column %r%s: its attributes are all empty; "
                       "is that the right key column?", table_uri, key, example)
    logger.info("attributes matched %d of %d rows (%d through their pair)", int(own.sum()) + through_pair,
                len(frame), through_pair)
    return validate_manifest(joined)


def _warn_conflicting_rows(table: pd.DataFrame, table_uri: str) -> None:
    """Warn where rows of one file stem (`00001.png`, `00001.jpg`) give it different attributes: the first is kept."""
    distinct = table.drop_duplicates().groupby("_stem").size()
    conflicting = distinct[distinct > 1]
    if len(conflicting):
        logger.warning("%d file name(s) have rows with different attributes in %s (first: %s); the first row of each "
                       "is kept", len(conflicting), table_uri, conflicting.index[0])


def balance_manifest(
    frame: pd.DataFrame, by: Sequence[str] = ("label",), *, seed: int = 0, per_stratum: int | None = None
) -> pd.DataFrame:
    """Downsample so every stratum (combination of `by` values) has the same number of rows, keeping pairs whole.

    A real image and every ai image made from it (one `pair_id`) are kept or dropped together, so
    balancing never orphans a fake or unpairs a real; a row without a pair is its own group. Strata
    are filled rarest first, each walking its rows in seeded random order and keeping a row's whole
    group when that takes no stratum past `per_stratum`. Without pairs this is a seeded sample of
    `per_stratum` rows from each stratum. A pair spans strata of both labels, so a stratum can end
    short: balancing `label` keeps each pair's ratio (one real to two variations, say). A combination
    of `by` values that no row has (ai images of one gender, say) stays empty, with a warning; rows lacking
    a value (ai images without attributes, or a `MISSING_MARKERS` one) form strata of their own, also with a warning. Where no pair fits
    (each puts more rows into one stratum than `per_stratum`, as one real face of a group with two variations
    does against the default of 1), it raises ConfigError rather than return no rows.

    Args:
        frame: The manifest.
        by: Columns defining strata: `("label",)` balances classes; `("label", "gender")` also
            balances an attribute. Missing attribute values form their own stratum.
        seed: Seed of the random choice of kept groups.
        per_stratum: Most rows to keep per stratum; default the smallest stratum's size.
    """
    import numpy as np

    unknown = [c for c in by if c not in frame.columns]
    if unknown:
        raise ConfigError(f"cannot balance by unknown column(s) {', '.join(unknown)}")
    frame = frame.reset_index(drop=True)
    values = as_missing(frame[list(by)])
    stratum = values.groupby(list(by), dropna=False, sort=True).ngroup().to_numpy()
    sizes = np.bincount(stratum)
    _warn_empty_strata(frame.assign(**values), list(by))
    count = per_stratum if per_stratum is not None else int(sizes.min())
    pair = frame["pair_id"].fillna("").astype(str).to_numpy()
    group = np.where(pair != "", pair, [f"row:{i}" for i in range(len(frame))])  # no pair: its own group
    members = frame.groupby(group, sort=False).indices
    filled, keep, seen = np.zeros(len(sizes), dtype=np.int64), np.zeros(len(frame), dtype=bool), set()
    for s in np.argsort(sizes, kind="stable"):
        rows = np.flatnonzero(stratum == s)
        for row in rows[np.random.RandomState(seed).permutation(len(rows))]:  # pandas' sample(random_state=seed)
            if filled[s] >= count:
                break
            if group[row] in seen:
                continue
            seen.add(group[row])
            taken = np.bincount(stratum[members[group[row]]], minlength=len(sizes))
            if (filled + taken <= count).all():
                filled += taken
                keep[members[group[row]]] = True
    if len(frame) and not keep.any():  # else an empty manifest would be written, and train fail on it later
        limit = f"{count} per stratum" + (" (the smallest stratum's size)" if per_stratum is None else "")
        raise ConfigError(f"balancing by {','.join(by)} keeps no rows: the limit is {limit} and each pair (a real image "
                          "and the ai images made from it) puts more rows than that into one stratum; raise per_stratum "
                          "(--per-stratum) or balance by fewer columns")
    logger.info("balanced %d strata to at most %d rows: kept %d of %d rows", len(sizes), count, int(keep.sum()), len(frame))
    return validate_manifest(frame[keep])


def _warn_empty_strata(frame: pd.DataFrame, by: list[str]) -> None:
    """Warn about combinations of known `by` values that no row has (ai images of women, say): no balancing can fill
    them; and about rows lacking a value (ai images without attributes), which are balanced as strata of their own."""
    values = frame[by]
    known = values.notna().all(axis=1)
    observed = set(values[known].astype(str).drop_duplicates().itertuples(index=False, name=None))
    levels = [values[c].dropna().astype(str).unique() for c in by]
    empty = [combo for combo in itertools.product(*levels) if combo not in observed]
    if empty:
        logger.warning("%d of the %d strata have no rows, so they stay empty (first: %s)", len(empty),
                       len(empty) + len(observed), ", ".join(f"{c}={v}" for c, v in zip(by, empty[0])))
    if not known.all():
        lacking = frame.loc[~known, "label"].value_counts().sort_index()
        logger.warning("%d row(s) (%s) lack a value of %s: they are balanced as strata of their own", int((~known).sum()),
                       ", ".join(f"{label}: {n}" for label, n in lacking.items()),
                       ", ".join(c for c in by if values[c].isna().any()))


def _describe_all(jobs: Iterable[tuple[str, str, str, str]], workers: int, progress: bool) -> pd.DataFrame:
    import pandas as pd

    def describe(job: tuple[str, str, str, str]) -> dict[str, object] | None:
        uri, label, source, generator = job
        if path_text(uri) != uri:  # a manifest is UTF-8 text: a name that is not could be neither written nor found again
            logger.warning("skipping %s: its name is not UTF-8; rename it to include it", path_text(uri))
            return None
        try:
            info = describe_image(storage.read_bytes(uri))
        except FakescopeError as exc:
            logger.warning("skipping %s: %s", uri, reason_about(exc, uri))
            return None
        return {"uri": uri, "label": label, "source": source, "generator": generator,
                "pair_id": info["sha256"], "split": "", **info}

    jobs = list(jobs)
    rows = [row for row in map_images(describe, jobs, workers=workers, progress=progress, desc="describe") if row is not None]
    if not rows:
        raise ConfigError(f"none of the {len(jobs)} listed image(s) could be read")
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    both = frame.groupby("sha256")["label"].transform("nunique") > 1
    if both.any():
        logger.warning("%d file(s) are identical copies labelled both real and ai (first: %s); remove the wrongly "
                       "labelled copies", int(both.sum()), frame.loc[both, "uri"].iloc[0])
    return frame


def _pair_by_name(frame: pd.DataFrame) -> pd.DataFrame:
    """Pair each ai image with the real one whose name stem starts its own (`photo` for `photo_var1`).

    Of several reals of that stem (in different folders), the one whose sha256 prefix follows in the ai
    name (`photo-1a2b3c4d-...`, as `fakescope generate` names its outputs) is taken; without one, the
    ai image stays unpaired, with a warning, rather than be paired with a guess.
    """
    real = frame[frame["label"] == "real"]
    by_stem: dict[str, list[tuple[str, str, str, str]]] = {}
    for uri, pair_id, source, digest in zip(real["uri"], real["pair_id"], real["source"], real["sha256"]):
        by_stem.setdefault(_stem(uri), []).append((pair_id, source, uri, digest))
    uris, pair_ids, sources = frame["uri"].tolist(), frame["pair_id"].tolist(), frame["source"].tolist()
    source_uris = [""] * len(frame)
    ambiguous = []
    for position in (frame["label"] == "ai").to_numpy().nonzero()[0]:  # lists, not cell writes: each of those is O(rows)
        stem = _stem(uris[position])
        for cut in [len(stem)] + [m.start() for m in reversed(list(re.finditer(r"[_\-.]", stem)))]:
            candidates = by_stem.get(stem[:cut], [])
            if len(candidates) > 1:
                candidates = [c for c in candidates if c[3][:8] in stem[cut:]]
                if len(candidates) != 1:
                    ambiguous.append(uris[position])
                    break
            if candidates:
                pair_ids[position], sources[position], source_uris[position] = candidates[0][:3]
                break
    if ambiguous:
        logger.warning("%d ai image(s) left unpaired: several real images share the name they start with "
                       "(first: %s); put the real's sha256 prefix after its name to pair them", len(ambiguous), ambiguous[0])
    return frame.assign(pair_id=pair_ids, source=sources, source_uri=source_uris)


def _listed_file(name: str, by_name: dict[str, list[str]], image_root: str, json_uri: str) -> str | None:
    """The one file under `image_root` that a listed path names: by base name, and where several files have
    that name, by as much of the listed path as their paths share.

    Raises:
        ConfigError: Several files fit the listed path (a bare name, two subfolders holding it).
    """
    wanted = name.replace("\\", "/").split("/")
    candidates = by_name.get(wanted[-1], [])
    if len(candidates) > 1:
        candidates = [c for c in candidates if _ends_alike(_relative(c, image_root).split("/"), wanted)]
    if len(candidates) > 1:
        shown = ", ".join(path_text(_relative(c, image_root)) for c in candidates[:3])
        raise ConfigError(f"{json_uri} lists {path_text(name)}, which fits {len(candidates)} files under {image_root} "
                          f"({shown}); list paths relative to --images that tell them apart")
    return candidates[0] if candidates else None


def _ends_alike(path: list[str], listed: list[str]) -> bool:
    """Whether the shorter of two paths (as parts) is the end of the longer."""
    n = min(len(path), len(listed))
    return path[-n:] == listed[-n:]


def _ffhq_entry(entry: object) -> tuple[str, str]:
    if not isinstance(entry, dict):
        return (str(entry), "") if isinstance(entry, str) else ("", "")
    image = entry.get("image", entry)
    if isinstance(image, dict):
        name = image.get("file_path") or image.get("filename") or image.get("file_name") or image.get("url") or ""
    else:
        name = str(image)
    return str(name).split("?")[0], str(entry.get("category", ""))


def _relative(uri: str, base: str) -> str:
    return uri[len(base):].lstrip("/")


def _stem(uri: str) -> str:
    return os.path.splitext(uri.rsplit("/", 1)[-1])[0]
