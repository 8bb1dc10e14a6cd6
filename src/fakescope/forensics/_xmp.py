"""XMP packets parsed as RDF/XML with defusedxml (no DTD, entity or external reference is honoured).

The asset's own properties are those of the top-level `rdf:Description`s about it, in attribute or
element form. The same property deeper in the packet (an `xmpMM:Ingredients` or `xmpMM:History` entry,
`xmpMM:DerivedFrom`, `photoshop:DocumentAncestors`, a description of another resource) belongs to a
placed or earlier document. A JPEG's extended packet (XMP part 3) is reassembled from its chunks here.
"""

from __future__ import annotations

import hashlib
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def xmp_properties(packet: bytes, names: frozenset[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Return the asset's own value of each property in `names` (matched by local name, first wins) and
    every value found elsewhere in the packet.

    Raises:
        ValueError: the packet is not well-formed XML or declares a DTD (one line).
    """
    text = packet.decode("utf-8", "replace").rstrip("\x00 \t\r\n").encode()  # stray bytes are no reason to lose it
    try:
        root = fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        raise ValueError("declares a DTD or entities (refused)") from None
    except ParseError as exc:
        raise ValueError(str(exc)) from None
    rdf = root if root.tag == _RDF + "RDF" else root.find(f".//{_RDF}RDF")
    own: dict[str, str] = {}
    nested: dict[str, list[str]] = {}
    if rdf is None:
        return own, nested
    tops = rdf.findall(_RDF + "Description")
    about = tops[0].get(_RDF + "about", "") if tops else ""
    asset = {id(top) for top in tops if top.get(_RDF + "about", "") == about}
    for holder in rdf.iter():
        found = [(_local(k), v) for k, v in holder.attrib.items()]
        found += [(_local(child.tag), _value(child)) for child in holder]
        for name, value in found:
            if name in names and value:
                if id(holder) in asset:
                    own.setdefault(name, value)
                else:
                    nested.setdefault(name, []).append(value)
    return own, nested


def join_extension(guid: str, chunks: list[tuple[int, int, bytes]], cap: int) -> bytes:
    """Reassemble the extended XMP packet `guid` names from its (full length, offset, chunk) triples, in any order.

    Raises:
        ValueError: the chunks disagree on the length, leave a gap, overlap or overrun it, it exceeds `cap`, or its
            MD5 (uppercase hex) is not `guid`.
    """
    lengths = sorted({full for full, _, _ in chunks})
    if len(lengths) > 1:
        raise ValueError(f"extension chunks disagree on its length ({', '.join(f'{n:,}' for n in lengths)})")
    if lengths[0] > cap:
        raise ValueError(f"extension of {lengths[0]:,} bytes exceeds {cap:,}; not parsed")
    packet = bytearray()
    for _, offset, chunk in sorted(chunks, key=lambda c: c[1]):
        if offset != len(packet):
            raise ValueError(f"extension chunk at offset {offset:,} leaves a gap or overlaps (expected {len(packet):,})")
        packet += chunk
        if len(packet) > lengths[0]:
            raise ValueError(f"extension chunk at offset {offset:,} overruns its {lengths[0]:,} bytes")
    if len(packet) != lengths[0]:
        raise ValueError(f"extension chunks hold {len(packet):,} of its {lengths[0]:,} bytes")
    if (digest := hashlib.md5(packet, usedforsecurity=False).hexdigest().upper()) != guid:
        raise ValueError(f"extension's MD5 {digest} is not its GUID {guid} (altered or truncated); not read")
    return bytes(packet)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _value(element: Element) -> str | None:
    """A property element's value: its `rdf:resource`, its text, or the first item of an rdf:Bag/Seq/Alt."""
    if element.get(_RDF + "resource"):
        return element.get(_RDF + "resource")
    if element.text and element.text.strip():
        return element.text.strip()
    item = element.find(f"./*/{_RDF}li")
    return None if item is None else item.get(_RDF + "resource") or (item.text or "").strip() or None
