"""Unsigned metadata: EXIF, XMP, IPTC-IIM, generator text chunks and JPEG quantisation tables (JPEG, PNG, WebP, TIFF,
HEIF, AVIF; a PNG's ImageMagick/exiftool raw profiles too).

Everything here is unsigned: trivially stripped (any re-encode or upload pipeline drops
it) and trivially forged. The rules follow from that:

- a declaration of AI generation (a generator's mark from `_generators.SIGNS`: its parameters chunk, its name in
  `Software`, its credit line; or IPTC `trainedAlgorithmicMedia`) is almost always left by the generator itself, so
  it scores 0.95 and is flagged `declares_ai` (fusion lets it decide `ai`, labelled unsigned, unless a signed
  manifest says otherwise); IPTC-IIM fields are matched like their XMP counterparts;
- camera EXIF (Make/Model, lens, GPS) or an XMP `digitalCapture` is copied by any editor, so it
  only nudges the score (0.45, a likelihood ratio of 0.82) and never decides anything;
- the JPEG quantisation tables only say which encoder wrote the file (a hint, no score).
"""

from __future__ import annotations

import contextlib
import re
import threading
import warnings
from typing import Any

from fakescope.detection import Evidence
from fakescope.forensics._containers import MetadataBlocks, read_blocks
from fakescope.forensics._generators import A1111_PARAMETERS, recognise
from fakescope.forensics._quantisation import estimate_quality
from fakescope.forensics._source_types import (
    AI_COMPOSITE,
    AI_GENERATED,
    CAPTURE,
    source_term,
)
from fakescope.forensics._text import one_line
from fakescope.forensics._xmp import join_extension, xmp_properties

KIND = "metadata"
SCORE_DECLARED_AI = 0.95
SCORE_DECLARED_COMPOSITE = 0.9
SCORE_CAMERA_EXIF = 0.45
MAX_XMP_BYTES = 2 * 1024 * 1024
"""XMP packets (a JPEG's extended one included) above this are not parsed (recorded as an error)."""

_SOFTWARE_KEYS = ("Software", "Source")
"""PNG text keys naming the software or device that made the image (`Author` is a person: free text)."""
_COMMENT_KEYS = ("comment", "Comment", "Description")
_XMP_NAMES = frozenset({"DigitalSourceType", "CreatorTool", "Credit", "description", "provenance", "HasExtendedXMP"})
"""XMP properties read (by local name); `Credit` is `photoshop:Credit`, `description` `dc:description`, `provenance`
`dcterms:provenance` (a remote C2PA manifest's URL), `xmpNote:HasExtendedXMP` the GUID of a JPEG's extended packet."""

_IIM_FIELDS = {(2, 5): ("description", "Object Name"), (2, 65): ("software", "Originating Program"),
               (2, 80): ("credit", "By-line"), (2, 110): ("credit", "Credit"), (2, 120): ("description", "Caption")}
"""IPTC-IIM datasets matched against `_generators.SIGNS`, as the field kind of their XMP counterpart (dc:title,
xmp:CreatorTool, dc:creator, photoshop:Credit, dc:description)."""
_IIM_SOURCE_TYPE = re.compile(r"(?:https?://)?cv\.iptc\.org/newscodes/digitalsourcetype/(\w+)/?")
"""IIM has no Digital Source Type dataset (IPTC froze IIM before the property); a tool that writes one there writes its
URI as a dataset's whole value (a caption quoting it declares nothing)."""
DECLARED = "unsigned declaration (forgeable, easily stripped): "
"""Opens the detail of a record that declares AI."""
SOURCE_TYPE_ONLY = "AI (IPTC digital source type)"
"""Names what declared AI when only a digital source type did (it names no generator)."""

_TAG_SOFTWARE, _TAG_MAKE, _TAG_MODEL, _TAG_DESCRIPTION = 0x0131, 0x010F, 0x0110, 0x010E
_EXIF_TAG_NAMES = {_TAG_DESCRIPTION: "ImageDescription", _TAG_MAKE: "Make", _TAG_MODEL: "Model"}
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
_TAG_LENS, _TAG_USER_COMMENT, _TAG_TAKEN = 0xA434, 0x9286, 0x9003
_WARNINGS_LOCK = threading.Lock()


def check_metadata(data: bytes | None) -> Evidence:
    """Read the unsigned metadata of encoded image bytes.

    Returns:
        Evidence of kind `metadata`: `score` 0.95 (0.9 for an AI composite or only a placed AI document) with
        `data["declares_ai"]` and a detail opening with `DECLARED` when metadata declares AI generation, 0.45 for
        camera EXIF or a capture source type alone, None otherwise. `data` holds software, make, model, lens, gps,
        digital_source_type (the image's own, from XMP or IPTC-IIM), part_source_types (those of placed or earlier
        documents in its XMP), generated (`whole` or `part` for a source type declaring AI), creator_tool, credit (XMP,
        else IPTC-IIM), generator (named by the first of `_generators.SIGNS` found), generator_chunks, jpeg_quality,
        jpeg_tables, c2pa_remote_url. Values shown are one line, at most 200 characters.
        Damaged or oversized blocks set `error`; whatever could be read is still reported.

    Example:
        >>> check_metadata(b"not an image").detail
        'no generator or camera metadata'
    """
    if not data:
        return Evidence(KIND, None, "no encoded bytes to read metadata from")
    blocks = read_blocks(data)
    info: dict[str, Any] = {}
    declarations: list[str] = []
    fields: list[tuple[str, str, str]] = []
    _read_exif(blocks, info, fields)
    _read_xmp(blocks, info, declarations, fields)
    _read_iim(blocks, info, declarations, fields)
    _read_text(blocks, info, fields)
    found = recognise(fields)
    _declare_generators(found, fields, info, declarations)
    quality = estimate_quality(blocks.quant_tables)
    if quality:
        info["jpeg_quality"], info["jpeg_tables"] = quality["quality"], quality["tables"]
    error = "; ".join(blocks.errors) or None
    if declarations:
        info["declares_ai"] = True
        # partly generated when XMP says so and no generator's own mark (a credit line only names who) says more
        composite = info.get("generated") == "part" and all(field == "credit" for field, _, _ in found)
        return Evidence(KIND, SCORE_DECLARED_COMPOSITE if composite else SCORE_DECLARED_AI,
                        DECLARED + "; ".join(declarations), data=info, error=error)
    hint = f"; JPEG quality ~{quality['quality']} ({quality['tables']} tables)" if quality else ""
    camera = _camera_claims(info)
    if camera:
        return Evidence(KIND, SCORE_CAMERA_EXIF, f"{'; '.join(camera)} (unsigned, easily copied){hint}",
                        data=info, error=error)
    return Evidence(KIND, None, "no generator or camera metadata" + hint, data=info, error=error)


def _camera_claims(info: dict[str, Any]) -> list[str]:
    claims = []
    if info.get("make") and info.get("model"):
        make, model = str(info["make"]), str(info["model"])
        named = model if model.casefold().startswith(make.casefold()) else f"{make} {model}"  # Canon, Canon EOS R5
        camera = " ".join([named, str(info["lens"])] if info.get("lens") else [named])
        claims.append(f"camera EXIF {camera}" + (", GPS present" if info.get("gps") else ""))
    if info.get("digital_source_type") in CAPTURE:
        claims.append(f"IPTC DigitalSourceType {info['digital_source_type']}")
    return claims


def _read_exif(blocks: MetadataBlocks, info: dict[str, Any], fields: list[tuple[str, str, str]]) -> None:
    if not blocks.exif:
        return
    from PIL import Image

    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:  # global state: one thread at a time
            warnings.simplefilter("always")  # Pillow warns about damage it reads past
            exif = Image.Exif()
            exif.load(blocks.exif)
            sub = exif.get_ifd(_IFD_EXIF)
            gps = exif.get_ifd(_IFD_GPS)
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on broken EXIF
        blocks.errors.append(f"EXIF unreadable: {type(exc).__name__}: {exc}")
        return
    if caught:
        blocks.errors.append(f"EXIF damaged: {str(caught[0].message).strip()}")
    tags = {tag: _exif_text(exif.get(tag)) for tag in (_TAG_SOFTWARE, _TAG_MAKE, _TAG_MODEL, _TAG_DESCRIPTION)}
    named = [("exif-tag", f"EXIF {_EXIF_TAG_NAMES[t]}", v) for t, v in tags.items() if v and t in _EXIF_TAG_NAMES]
    comfyui = {where for _, where, _ in recognise(named)}  # ComfyUI's `prompt:`/`workflow:` JSON names no camera
    for key, tag in (("software", _TAG_SOFTWARE), ("make", _TAG_MAKE), ("model", _TAG_MODEL)):
        if tags[tag] and f"EXIF {_EXIF_TAG_NAMES.get(tag)}" not in comfyui:
            info[key] = _clean(tags[tag])
    lens, taken = _clean(_exif_text(sub.get(_TAG_LENS))), _clean(_exif_text(sub.get(_TAG_TAKEN)))
    if lens:
        info["lens"] = lens
    if taken:
        info["datetime_original"] = taken
    info["gps"] = bool(gps)
    fields += named
    if tags[_TAG_SOFTWARE]:
        fields.append(("software", "EXIF Software", tags[_TAG_SOFTWARE]))
    if tags[_TAG_DESCRIPTION]:
        fields.append(("description", "EXIF ImageDescription", tags[_TAG_DESCRIPTION]))
    if comment := _user_comment(sub.get(_TAG_USER_COMMENT)):
        fields.append(("comment", "EXIF UserComment", comment))


def _read_xmp(blocks: MetadataBlocks, info: dict[str, Any], declarations: list[str],
              fields: list[tuple[str, str, str]]) -> None:
    if not blocks.xmp:
        return
    own, nested = _xmp_values(blocks, info)
    term = _term(own.get("DigitalSourceType"))
    parts = list(dict.fromkeys(t for value in nested.get("DigitalSourceType", []) if (t := _term(value))))
    if parts:
        info["part_source_types"] = parts
    ai_parts = [t for t in parts if t in AI_GENERATED | AI_COMPOSITE]
    _declare_source_type(term, "XMP", info, declarations)
    if ai_parts and "generated" not in info:
        info["generated"] = "part"
        declarations.append(f"{SOURCE_TYPE_ONLY}: {ai_parts[0]} in XMP of a placed or earlier document (partly generated)")
    for key, name in (("creator_tool", "CreatorTool"), ("credit", "Credit")):
        if own.get(name):
            info[key] = _clean(own[name])
    if own.get("provenance"):
        info["c2pa_remote_url"] = own["provenance"]
    fields += [(field, f"XMP {label}", own[name]) for field, name, label in (
        ("software", "CreatorTool", "CreatorTool"), ("credit", "Credit", "Credit"),
        ("description", "description", "dc:description"))
        if own.get(name)]


def _read_iim(blocks: MetadataBlocks, info: dict[str, Any], declarations: list[str],
              fields: list[tuple[str, str, str]]) -> None:
    """IPTC-IIM: its credit, caption, title, by-line and originating program as fields, and a digital source type URI
    that one of its datasets holds whole (the XMP one, read first, wins)."""
    texts = {key: [text for raw in raws if (text := _exif_text(raw.decode("latin-1")))]
             for key, raws in blocks.iptc.items()}  # UTF-8 where it reads as such (ESC % G), else Latin-1
    values = {key: "; ".join(found) for key, found in texts.items() if found}
    fields += [(field, f"IPTC-IIM {name}", values[key]) for key, (field, name) in _IIM_FIELDS.items() if values.get(key)]
    if values.get((2, 110)):
        info.setdefault("credit", _clean(values[(2, 110)]))
    if "digital_source_type" not in info:
        term = next((m.group(1) for found in texts.values() for text in found
                     if (m := _IIM_SOURCE_TYPE.fullmatch(text))), None)
        _declare_source_type(term, "IPTC-IIM", info, declarations)


def _declare_source_type(term: str | None, where: str, info: dict[str, Any], declarations: list[str]) -> None:
    """Record the image's own digital source type, declaring AI (wholly or partly generated) where it says so."""
    if not term:
        return
    info["digital_source_type"] = term
    if term in AI_GENERATED | AI_COMPOSITE:
        info["generated"] = "whole" if term in AI_GENERATED else "part"
        declarations.append(f"{SOURCE_TYPE_ONLY}: {term} in {where}" + ("" if term in AI_GENERATED else " (partly generated)"))


def _xmp_values(blocks: MetadataBlocks, info: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The image's own XMP properties and those found deeper, from every standard packet and the extended one that
    `HasExtendedXMP` names; the bytes read go to `info["xmp_bytes"]`, what cannot be read to `blocks.errors`."""
    info["xmp_bytes"] = sum(len(packet) for packet in blocks.xmp)
    if len(blocks.xmp) > 1:
        blocks.errors.append(f"{len(blocks.xmp)} standard XMP packets (one expected); all read, the first's own values win")
    own: dict[str, str] = {}
    nested: dict[str, list[str]] = {}
    for packet in blocks.xmp:
        if len(packet) > MAX_XMP_BYTES:
            blocks.errors.append(f"XMP packet of {len(packet):,} bytes exceeds {MAX_XMP_BYTES:,}; not parsed")
        else:
            _merge_xmp(packet, own, nested, blocks.errors)
    guid = own.get("HasExtendedXMP", "").strip()
    chunks = blocks.xmp_extension.get(guid)  # one named by another GUID is ignored
    if chunks:
        try:
            extension = join_extension(guid, chunks, MAX_XMP_BYTES)
        except ValueError as exc:
            blocks.errors.append(f"XMP unreadable: {exc}")
        else:
            info["xmp_bytes"] += len(extension)
            _merge_xmp(extension, own, nested, blocks.errors)
    return own, nested


def _merge_xmp(packet: bytes, own: dict[str, str], nested: dict[str, list[str]], errors: list[str]) -> None:
    """Add a packet's properties: its top-level descriptions' to `own` (values already there win), the rest to `nested`."""
    try:
        found, deeper = xmp_properties(packet, _XMP_NAMES)
    except ValueError as exc:
        errors.append(f"XMP unreadable: {exc}")
        return
    for name, value in found.items():
        own.setdefault(name, value)
    for name, values in deeper.items():
        nested.setdefault(name, []).extend(values)


def _read_text(blocks: MetadataBlocks, info: dict[str, Any], fields: list[tuple[str, str, str]]) -> None:
    for key, value in blocks.text.items():
        where = "JPEG comment" if blocks.format == "JPEG" and key == "comment" else f"text chunk {key!r}"
        fields.append((f"chunk:{key}", where, value))
        fields += [(field, where, value) for field, keys in (("software", _SOFTWARE_KEYS), ("comment", _COMMENT_KEYS),
                                                               ("description", ("Description",))) if key in keys]
    if "Software" in blocks.text:
        info.setdefault("software", _clean(blocks.text["Software"]))


def _declare_generators(found: list[tuple[str, str, str]], fields: list[tuple[str, str, str]], info: dict[str, Any],
                        declarations: list[str]) -> None:
    """Name the generators whose marks were `found` ((field, where, generator) from `recognise`, in priority order):
    a generator's chunks together, a name (software, credit line) with its value, any other place by itself."""
    if not found:
        return
    info["generator"] = found[0][2]
    keys = [field.removeprefix("chunk:") for field, _, _ in found if field.startswith("chunk:")]
    if keys:
        info["generator_chunks"] = keys
    values = {where: value for _, where, value in fields}
    for generator in dict.fromkeys(name for _, _, name in found):
        chunks = [field.removeprefix("chunk:") for field, _, name in found if name == generator and field.startswith("chunk:")]
        if chunks:
            declarations.append(f"text chunk(s) {', '.join(map(repr, chunks))} written by {generator}")
        declarations += [f"{where} = {(_clean(values[where]) or '')[:60]!r}" if field in ("software", "credit")
                         else f"{where} {values[where].partition(':')[0]!r} written by {generator}" if field == "exif-tag"
                         else f"{where} written by {generator}"
                         for field, where, name in found if name == generator and not field.startswith("chunk:")]


def _term(value: str | None) -> str | None:
    """The IPTC term of a DigitalSourceType value (a bare term, a `digitalsourcetype/` path or a URI), else None."""
    term = source_term(value)
    return term if term and re.fullmatch(r"\w+", term) else None


def _clean(value: object) -> str | None:
    """A value as shown: one line (control characters and line breaks become spaces), at most 200 characters."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = one_line(value.replace("\x00", ""))
    return value[:200] or None


def _exif_text(value: object) -> str | None:
    """An EXIF ASCII tag, whole: Pillow decodes it as Latin-1, but most software writes UTF-8 there (`DALL·E`)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    with contextlib.suppress(UnicodeError):
        value = value.encode("latin-1").decode("utf-8")
    return value.replace("\x00", "").strip() or None


def _user_comment(raw: object) -> str | None:
    """Decode EXIF UserComment: an 8-byte charset prefix, then the text (UTF-16 for UNICODE)."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    prefix, body = raw[:8], raw[8:]
    if prefix.startswith(b"UNICODE"):
        big, little = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        return big if A1111_PARAMETERS.search(big) else little  # byte order unstated: the one that reads
    return body.decode("utf-8", "replace")
