"""Build manifests from folder layouts, FFHQ-style JSON listings or CSV files.

Every builder reads each image once (local or remote) to record its size, format and sha256, and
skips unreadable files, and files whose name is not UTF-8 (no manifest can record it), with a
logged warning rather than failing the whole build (`progress=True` counts the images read on
stderr); `skipped(frame)` counts them by reason. Identical files labelled both real and ai are kept,
with a warning. Local images are recorded by absolute path, so the manifest works wherever it is
written and whatever folder reads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from fakescope.data._parallel import map_images
from fakescope.data.manifest import (
    HASH_COLUMN,
    MANIFEST_COLUMNS,
    describe_file,
    legacy_sources,
    normalise_label,
    read_csv,
    resolve_uris,
    validate_manifest,
)
from fakescope.data.merge import inherit_from_pairs
from fakescope.errors import ConfigError, FakescopeError, reason_about
from fakescope.io import storage
from fakescope.io.inputs import list_images, path_text
from fakescope.io.storage import UnlistedFolder

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

SKIPPED = "skipped"
"""Key in a built manifest's `attrs`: the listed files left out, counted by reason."""
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
    root = storage.absolute(root)
    collection = source or os.path.basename(root.rstrip("/")) or "local"  # `.` is named by the folder it is
    jobs: list[tuple[str, str, str, str]] = []  # uri, label, source, generator
    for folder in REAL_FOLDERS + AI_FOLDERS:
        base = storage.join(root, folder)
        if not storage.exists(base):
            continue
        label = "real" if folder in REAL_FOLDERS else "ai"
        for uri in _images(base):
            parts = _relative(uri, base).split("/")
            group = parts[0] if len(parts) > 1 else None
            if label == "real":
                jobs.append((uri, label, source or group or collection, ""))
            else:
                jobs.append((uri, label, collection, group or default_generator))
    if not jobs:
        local = root.removeprefix("file://")
        if not storage.is_remote(root) and not os.path.isdir(local):  # a mistyped name, or a file: said as such
            what = "a file, not a folder" if os.path.exists(local) else "no such folder"
            raise ConfigError(f"{root}: {what}; expected a folder with real/ and fake/ (or ai/)")
        raise ConfigError(f"no images under {root}/real or {root}/fake (or {root}/ai)")
    frame = _describe_all(jobs, workers, progress)
    return _keep_skipped(validate_manifest(_pair_by_name(frame)), frame)


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
    for uri in _images(image_root):
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
    absent = len(listed) - len(categories)
    if absent:
        logger.warning("%d of %d listed images are not under %s", absent, len(listed), image_root)
    if not categories:
        raise ConfigError(f"none of the {len(listed)} images listed in {json_uri} are under {image_root}")
    described = _describe_all([(u, "real", source, "") for u in sorted(categories)], workers, progress)
    frame = described.assign(category=[categories[u] for u in described["uri"]]) if any(categories.values()) else described
    if absent:
        described.attrs[SKIPPED] = {"listed but not under --images": absent, **described.attrs[SKIPPED]}
    return _keep_skipped(validate_manifest(frame), described)


def build_from_csv(csv_uri: str, *, source: str | None = None, workers: int = 8, progress: bool = False) -> pd.DataFrame:
    """Build a manifest from a CSV with a path column (`uri`/`path`/`file`) and a `label` column.

    Relative paths (a path, an ai row's `source_uri`: an image or a prompt line `prompts.txt#L3`) are resolved against
    the CSV's folder, as a manifest's are (`resolve_uris`); a path listed twice is an error. Known manifest columns are kept;
    width, height, format and sha256 are measured from the images, and a `dhash` column is dropped (it may not be the
    files' now: `split_manifest` hashes them again); other columns stay as attributes.
    A row without a source takes its pair's (a `generate` manifest's ai rows, their real's), where the CSV lists it,
    else `source` where given.
    """
    import pandas as pd

    try:
        table = read_csv(storage.read_bytes(csv_uri), keep_default_na=False, na_values=[""])
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
    labels = [_csv_label(label, csv_uri, row) for row, label in enumerate(table["label"], start=1)]
    table = resolve_uris(legacy_sources(table.assign(uri=table[path_column].astype(str), label=labels)), csv_uri)
    uris = table["uri"].tolist()
    repeated = pd.Series(uris)[pd.Series(uris).duplicated()]
    if len(repeated):
        raise ConfigError(f"{csv_uri} lists {len(repeated)} path(s) more than once, e.g. {repeated.iloc[0]}; keep one row each")
    sources, generators = ([""] * len(table) if c not in table else table[c].astype(object).fillna("").astype(str)
                            for c in ("source", "generator"))
    jobs = list(zip(uris, labels, sources, generators))
    described = _describe_all(jobs, workers, progress)
    measured = described.set_index("uri")
    table = table.drop(columns=[c for c in (path_column, HASH_COLUMN) if c != "uri" and c in table])
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
    return _keep_skipped(validate_manifest(table), described)


def skipped(frame: pd.DataFrame) -> dict[str, int]:
    """How many listed files a builder left out of `frame`, by reason (`not a readable image`: 2); {} if none."""
    return dict(frame.attrs.get(SKIPPED, {}))


def _images(folder: str) -> Iterator[str]:
    """`list_images`, refusing a folder under `folder` that cannot be listed: the dataset would miss its images unsaid."""
    for uri in list_images(folder):
        if isinstance(uri, UnlistedFolder):
            raise ConfigError(f"{path_text(uri)}: {uri.reason}, so the dataset would miss them: make it readable (or "
                              "move it out) and build again")
        yield uri


def _keep_skipped(frame: pd.DataFrame, described: pd.DataFrame) -> pd.DataFrame:
    frame.attrs[SKIPPED] = skipped(described)
    return frame


def _csv_label(value: object, csv_uri: str, row: int) -> str:
    """`normalise_label`, its error naming the listing and data row."""
    try:
        return normalise_label(value)
    except ConfigError as exc:
        raise ConfigError(f"{csv_uri}, data row {row}: {exc}") from None


def _describe_all(jobs: Iterable[tuple[str, str, str, str]], workers: int, progress: bool) -> pd.DataFrame:
    import pandas as pd

    def describe(job: tuple[str, str, str, str]) -> dict[str, object] | str:
        """The row of one image, or why it is skipped (as counted: the reason without its detail)."""
        uri, label, source, generator = job
        if path_text(uri) != uri:  # a manifest is UTF-8 text: a name that is not could be neither written nor found again
            logger.warning("skipping %s: its name is not UTF-8; rename it to include it", path_text(uri))
            return "name not UTF-8"
        try:
            info = describe_file(uri)
        except FakescopeError as exc:
            reason = reason_about(exc, uri)
            logger.warning("skipping %s: %s", uri, reason)
            return reason.split(" (")[0]  # `not a readable image (Truncated File Read)`: counted as not readable
        return {"uri": uri, "label": label, "source": source, "generator": generator,
                "pair_id": info["sha256"], "split": "", **info}

    jobs = list(jobs)
    rows, reasons = [], Counter()
    for row in map_images(describe, jobs, workers=workers, progress=progress, desc="describe"):
        if isinstance(row, str):
            reasons[row] += 1
        else:
            rows.append(row)
    if not rows:
        raise ConfigError(f"none of the {len(jobs)} listed image(s) could be read")
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    frame.attrs[SKIPPED] = dict(reasons.most_common())
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
        by_stem.setdefault(file_stem(uri), []).append((pair_id, source, uri, digest))
    uris, pair_ids, sources = frame["uri"].tolist(), frame["pair_id"].tolist(), frame["source"].tolist()
    source_uris = [""] * len(frame)
    ambiguous = []
    for position in (frame["label"] == "ai").to_numpy().nonzero()[0]:  # lists, not cell writes: each of those is O(rows)
        stem = file_stem(uris[position])
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


def file_stem(uri: str) -> str:
    """The file name of `uri` without its extension."""
    return os.path.splitext(uri.rsplit("/", 1)[-1])[0]
