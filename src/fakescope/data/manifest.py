"""The dataset manifest: one row per image, stored as Parquet (or CSV), trusted by training and evaluation.

Required columns, in order: `uri, label, source, generator, pair_id, split, width, height, format,
sha256`. `label` is `real` or `ai`; `source` names where an image comes from, a collection or family
(`ffhq`, `lfw`; an ai image made from a real one has that real's source, or none); `pair_id` groups a
real image with every ai image derived from it (the real image's sha256 by convention) so they always
share a split; `split` is `train`, `val`, `test` or empty. The optional `source_uri`, `model` and
`params` say how an image was made (`source_uri`: the real image, prompt line or upload it came from).
Any further columns are free attributes (expression, gender, ...); one of whole numbers with blanks (`glasses`: 1, 0,
empty) is read as nullable integers, not floats (`whole_number_attributes`).

Older manifests named the real image itself in `source`: read without a `source_uri` column, a
`source` that names a file (a path, a URI, an image file name, a prompt line `prompts.txt#L3`) moves
to `source_uri`, leaving `source` empty.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from typing import TYPE_CHECKING

from fakescope.errors import ConfigError, ImageLoadError
from fakescope.io import storage
from fakescope.io.image import check_signature, pixel_limit, sniff_format, upright_size
from fakescope.io.inputs import IMAGE_SUFFIXES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("uri", "label", "source", "generator", "pair_id", "split", "width", "height", "format", "sha256")
PROVENANCE_COLUMNS = ("source_uri", "model", "params")
"""Optional columns saying how an image was made: never attributes to slice or inherit by."""
LABELS = ("real", "ai")
SPLITS = ("train", "val", "test")
MANIFEST_SUFFIXES = (".parquet", ".csv")
"""File names a manifest has (anything else is read as images, a folder or a config)."""
HASH_COLUMN = "dhash"
"""The perceptual hash (hex) `dataset split` stores per row, so later splits and audits need not read the images."""
MISSING_MARKERS = ("No face detected",)
"""Attribute values that mean "no value" (DeepFace's, in ffhq_attributes.csv): read as missing (NaN) when attributes
are joined, balanced and sliced, as are empty cells and pandas' CSV markers (NA, N/A, null, NaN, ...)."""
_LABEL_ALIASES = {"real": "real", "0": "real", "ai": "ai", "1": "ai", "fake": "ai", "generated": "ai", "synthetic": "ai"}


def describe_file(uri: str) -> dict[str, object]:
    """`describe_image` of the file at `uri`; one whose leading bytes name no image format is refused after reading
    only those (`check_signature`: a huge file named `.jpg` never fills memory)."""
    return describe_image(storage.read_bytes(uri, check=check_signature))


def describe_image(data: bytes) -> dict[str, object]:
    """Width, height (EXIF orientation applied, as decoding does), format and sha256 of encoded image bytes, reading
    only the header.

    Raises:
        ImageLoadError: The bytes are empty, not an image Pillow can open, or declare over twice `MAX_PIXELS`
            (`pixel_limit`).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:  # as decoding says it (a half-copied or failed download), not "unrecognised format"
        raise ImageLoadError("empty file")
    try:
        with pixel_limit(), Image.open(io.BytesIO(data)) as image:
            width, height = upright_size(image)
            pil_format = image.format
    except UnidentifiedImageError:  # its message names only a BytesIO
        raise ImageLoadError("not a readable image (unrecognised format)") from None
    except OSError as exc:  # a damaged header: Pillow's reason, such as "Truncated File Read"
        raise ImageLoadError(f"not a readable image ({exc})") from None
    return {
        "width": width,
        "height": height,
        "format": sniff_format(data) or (pil_format or "UNKNOWN").upper(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def as_missing(values: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """`values` with each `MISSING_MARKERS` cell made NaN."""
    return values.mask(values.isin(MISSING_MARKERS))


def normalise_label(value: object) -> str:
    """Map `real`/`ai` and their common spellings (`fake`, `0`, `1`, ...) to `real` or `ai`."""
    import pandas as pd

    empty = pd.api.types.is_scalar(value) and pd.isna(value)  # None, NaN, or pd.NA in a nullable string column
    text = "" if empty else str(value).strip().lower()
    if not text:
        raise ConfigError("empty label; expected real or ai")
    text = text.removesuffix(".0")
    if text not in _LABEL_ALIASES:
        raise ConfigError(f"unknown label {value!r}; expected real or ai")
    return _LABEL_ALIASES[text]


def validate_manifest(frame: pd.DataFrame) -> pd.DataFrame:
    """Check and normalise a manifest: required columns first, labels/splits valid, uris unique.

    Returns:
        A copy with the required columns in canonical order and dtypes, attributes after them.

    Raises:
        ConfigError: A column is missing, a label or split is unknown, or a uri repeats.
    """
    require_columns(frame, MANIFEST_COLUMNS, "manifest")
    frame = frame[list(MANIFEST_COLUMNS) + [c for c in frame.columns if c not in MANIFEST_COLUMNS]].copy()
    frame["label"] = [normalise_label(v) for v in frame["label"]]
    for column in ("uri", "source", "generator", "pair_id", "split", "format", "sha256"):
        frame[column] = frame[column].astype(object).fillna("").astype(str)
    frame = legacy_sources(frame)
    if "source_uri" in frame:
        frame["source_uri"] = frame["source_uri"].astype(object).fillna("").astype(str)
    for column in ("width", "height"):
        frame[column] = frame[column].fillna(0).astype("int64")
    _refuse_unknown_splits(frame["split"], "")
    repeated = frame["uri"][frame["uri"].duplicated()]
    if len(repeated):
        raise ConfigError(f"{len(repeated)} uri(s) appear twice in the manifest, e.g. {repeated.iloc[0]}")
    return whole_number_attributes(frame).reset_index(drop=True)


def read_manifest(uri: str) -> pd.DataFrame:
    """Read and validate a manifest from Parquet (`.parquet`) or CSV (anything else), local or remote.

    Raises:
        ConfigError: as `validate_manifest`, the message starting with `uri`.

    Example:
        >>> frame = read_manifest("s3://bucket/faces/manifest.parquet")  # doctest: +SKIP
        >>> frame.groupby(["split", "label"]).size()  # doctest: +SKIP
    """
    frame = read_table(uri, keep_default_na=False, na_values=[""], dtype={"split": str, "pair_id": str, HASH_COLUMN: str})
    try:
        return validate_manifest(frame)
    except ConfigError as exc:  # which of the manifests a merge (or a chain of commands) read
        raise ConfigError(f"{uri}: {exc}") from None


def read_rows(uri: str, *, split_required: bool = True) -> pd.DataFrame:
    """Read a manifest for training and evaluation, where only `uri`, `label` and (with `split_required`)
    `split` are required, checked and normalised by `check_rows`; relative URIs (`uri`, an ai row's `source_uri`)
    resolve against the manifest's own folder (local or remote). `source`, `generator` and `split` are read as text (a
    generator named `2022` stays `2022`).

    Raises:
        ConfigError: as `check_rows`, naming the manifest.

    Example:
        >>> rows = read_rows("data/default/manifest.csv")  # doctest: +SKIP
    """
    rows = read_table(uri, dtype={"source": str, "generator": str, "split": str, HASH_COLUMN: str})  # `2022`: a name
    return resolve_uris(check_rows(rows, f"manifest {uri}", split_required=split_required), uri)


def check_rows(rows: pd.DataFrame, origin: str = "the manifest rows", *, split_required: bool = True) -> pd.DataFrame:
    """Manifest rows as training and evaluation take them, from a file (`read_rows`) or a DataFrame: labels
    normalised (`fake` -> `ai`, ...), absent `source` / `generator` columns added empty, an older manifest's
    file names in `source` moved to `source_uri`. A split is `train`, `val`, `test` or empty (unsplit).

    Raises:
        ConfigError: `uri`, `label` (or, with `split_required`, `split`) is missing, a row has no uri, or a
            label or split is unknown; the message starts with `origin`.
    """
    require_columns(rows, ("uri", "label", *(("split",) if split_required else ())), origin)
    blank = (rows["uri"].isna() | (rows["uri"].astype(str).str.strip() == "")).to_numpy()
    if blank.any():
        raise ConfigError(f"{origin}: {blank.sum()} row(s) have no uri, the first is data row {blank.argmax() + 1}")
    if "split" in rows:
        _refuse_unknown_splits(rows["split"], f"{origin}: ")
    try:
        rows = rows.assign(label=[normalise_label(v) for v in rows["label"]])
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    for column in ("source", "generator"):
        if column not in rows:
            rows[column] = None
    return whole_number_attributes(legacy_sources(rows))


def whole_number_attributes(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each attribute column of whole numbers and blanks, which pandas reads as floats (`1.0`, NaN), as
    nullable integers (`Int64`): slices, strata and written CSVs then say `glasses=1`, not `glasses=1.0`."""
    import pandas as pd

    def whole(column: pd.Series) -> bool:
        values = column.dropna()
        return bool(len(values) < len(column) and len(values) and ((values % 1 == 0) & (values.abs() < 2**53)).all())

    skip = {*MANIFEST_COLUMNS, *PROVENANCE_COLUMNS, HASH_COLUMN}
    columns = [c for c in frame.columns if c not in skip and pd.api.types.is_float_dtype(frame[c]) and whole(frame[c])]
    return frame.astype(dict.fromkeys(columns, "Int64")) if columns else frame


def warn_repeated_uris(rows: pd.DataFrame, where: str, action: str) -> None:
    """Log a warning when rows repeat a uri: each is still `action` (scored, embedded) and counted as one more image."""
    repeated = rows["uri"].astype(str).duplicated()
    if repeated.any():
        log.warning("%d row(s) of %s repeat a uri already in it (first: %s); each row is %s and counted as one more image",
                    repeated.sum(), where, rows["uri"][repeated].iloc[0], action)


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], origin: str, *, advice: str = "") -> None:
    """Raise `ConfigError` `<origin>: missing column(s): a, b[; advice]` for those of `columns` not in `frame`: every
    reader of manifest rows says a missing column so (`origin` may be singular or plural)."""
    if missing := sorted(set(columns) - set(frame.columns)):
        raise ConfigError(f"{origin}: missing column(s): {', '.join(missing)}" + (f"; {advice}" if advice else ""))


def _refuse_unknown_splits(splits: pd.Series, prefix: str) -> None:
    """Raise `ConfigError` (its message after `prefix`) for a split other than train, val, test or empty."""
    bad = sorted({str(v) for v in splits.dropna()} - {"", *SPLITS})
    if bad:
        raise ConfigError(f"{prefix}unknown split(s) {', '.join(map(repr, bad))}; expected "
                          f"{', '.join(SPLITS)} or empty (unsplit)")


def legacy_sources(frame: pd.DataFrame) -> pd.DataFrame:
    """An older manifest's file names in `source` moved to `source_uri` (see the module docstring); others unchanged."""
    if "source_uri" in frame.columns or "source" not in frame.columns:
        return frame
    source = frame["source"].astype(object).where(frame["source"].notna(), "").astype(str)
    names_file = (source.str.contains(r"[/\\]|#L\d+$", regex=True) | source.str.lower().str.endswith(IMAGE_SUFFIXES)).to_numpy()
    if not names_file.any():
        return frame
    return frame.assign(source=frame["source"].mask(names_file, ""), source_uri=source.where(names_file, ""))


def resolve_uris(frame: pd.DataFrame, manifest_uri: str) -> pd.DataFrame:
    """A copy whose relative `uri`s, and ai rows' `source_uri`s, are resolved against the folder of the manifest they
    came from.

    Local ones become absolute, normalised paths (`x/./a.png` is `x/a.png`), so the copy can be written
    anywhere, one file listed two ways is seen as one, and an ai image whose `source_uri` is `../real/a.png`
    is linked to the row listing that file (splits and audits pair them); a prompt line (`prompts.txt#L3`) names its
    prompts file the same way. An empty `source_uri` stays empty, and
    a real row's stays as written: it names the image's origin (the web app's `my cat.jpg`, the name it was
    uploaded as), no file beside the manifest.
    """
    remote = storage.is_remote(manifest_uri)
    if remote:
        base = manifest_uri.rsplit("/", 1)[0]
    else:
        base = os.path.dirname(os.path.abspath(manifest_uri.removeprefix("file://")))

    def resolved(uri: str) -> str:
        if "://" in uri:
            return uri
        if os.path.isabs(uri):
            return os.path.normpath(uri)
        return storage.join(base, uri) if remote else os.path.normpath(os.path.join(base, uri))

    frame = frame.assign(uri=[resolved(u) for u in frame["uri"].astype(str)])
    if "source_uri" in frame:
        links = frame["source_uri"].astype(object).fillna("").astype(str)
        frame["source_uri"] = [resolved(s) if s and label == "ai" else s for s, label in zip(links, frame["label"])]
    return frame


def read_table(uri: str, *, empty_ok: bool = False, store=storage, **csv_options) -> pd.DataFrame:
    """A Parquet (`.parquet`) or CSV file from any storage (read by `store`, default `fakescope.io.storage`) as a
    DataFrame: every reader of a manifest reads it here, so all say the same line for a file that is none.

    Raises:
        StorageError: The file is missing or unreadable.
        ConfigError: It is no Parquet or CSV file (an image, binary data), not a valid one, or (unless
            `empty_ok`) it has no rows.
    """
    import pandas as pd

    data = store.read_bytes(uri)
    parquet = uri.lower().endswith(".parquet")
    try:
        table = pd.read_parquet(io.BytesIO(data)) if parquet else read_csv(data, **csv_options)
    except (ValueError, OSError) as exc:
        if what := _not_a_table(data, parquet, exc):
            raise ConfigError(f"{uri} is not a manifest (.csv or .parquet): it is {what}") from None
        reason = "".join(f": {line}" for line in str(exc).strip().splitlines()[:1])  # pandas' may run to lines
        raise ConfigError(f"cannot read manifest {uri}: {type(exc).__name__}{reason}") from None
    if table.empty and not empty_ok:
        raise ConfigError(f"manifest {uri} lists no images")
    return table


def read_csv(data: bytes, **options) -> pd.DataFrame:
    """CSV bytes as a DataFrame, refusing rows with more fields than the header (pandas would take a first row's
    extra field for an index and shift every column, paths read as labels, or drop it) and a column named twice
    (pandas would read the second `label` as an attribute `label.1`). A first column with an empty name, the index
    pandas' `to_csv` writes unless told `index=False`, is dropped (else read as an attribute `Unnamed: 0`).

    Raises:
        ValueError: As pandas' `read_csv` does, also for such a row or column.
    """
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            table = pd.read_csv(io.BytesIO(data), index_col=False, **options)
        except pd.errors.ParserWarning:
            raise ValueError("a row has more fields than the header names: name every column, or quote a field "
                             "that holds a comma") from None
    # The header once more, by the same parser: pandas (2.0+) renames a second `label` to `label.1` with no way to turn
    # that off, and the csv module parses a first row apart from pandas (it does not skip leading blank lines).
    header = pd.read_csv(io.BytesIO(data), header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0]
    if twice := sorted(set(header[header.duplicated()])):
        raise ValueError(f"the header names column(s) {', '.join(map(repr, twice))} more than once; keep one of each")
    return table.iloc[:, 1:] if len(header) > 1 and header.iloc[0] == "" else table


def _not_a_table(data: bytes, parquet: bool, exc: Exception) -> str | None:
    """What the bytes are when they are no Parquet or CSV at all (an image, binary data); None for a broken table."""
    if kind := sniff_format(data):
        return f"a {kind} image"
    if parquet and data[:4] != b"PAR1":
        return "not a Parquet file"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.object[exc.start]:#04x})"
    return None


def write_manifest(frame: pd.DataFrame, uri: str, *, csv_copy: bool = False) -> None:
    """Validate and write a manifest as Parquet or CSV (by suffix); `csv_copy` adds a `.csv` export beside it."""
    files = manifest_files(uri, csv_copy=csv_copy)
    frame = validate_manifest(frame)
    buffer = io.BytesIO()
    if uri.lower().endswith(".parquet"):
        frame.to_parquet(buffer, index=False)
    else:
        frame.to_csv(buffer, index=False)
    storage.write_bytes(uri, buffer.getvalue())
    for copy in files[1:]:
        storage.write_bytes(copy, frame.to_csv(index=False).encode())


def manifest_files(uri: str, *, csv_copy: bool = False) -> list[str]:
    """The files `write_manifest` writes: `uri`, and with `csv_copy` the `.csv` beside a `.parquet` one.

    Raises:
        ConfigError: `uri` ends in neither `.parquet` nor `.csv`, so no other command would take it for a manifest.
    """
    if not uri.lower().endswith(MANIFEST_SUFFIXES):
        raise ConfigError(f"a manifest is written as .parquet or .csv, not {uri}")
    return [uri] + ([os.path.splitext(uri)[0] + ".csv"] if csv_copy and uri.lower().endswith(".parquet") else [])


def refuse_overwrite(targets: list[str], inputs: list[str], *, updated: str | None = None) -> None:
    """Raise `ConfigError` before any work when a file to be written is one of `inputs`, which it would replace (but
    `updated`, an input the command may rewrite), or its local folder takes no new file (read-only, or a file where a
    folder goes: the work would be lost when writing it)."""
    def key(uri: str) -> str:
        return uri if storage.is_remote(uri) else os.path.realpath(uri.removeprefix("file://"))

    named = {key(uri): uri for uri in inputs}
    for target in targets:
        if target != updated and key(target) in named:
            raise ConfigError(f"writing {target} would replace the input {named[key(target)]}; choose another output")
        if why := storage.unwritable(os.path.dirname(target) or "."):
            raise ConfigError(f"cannot write {target}: {why}; choose another output")
