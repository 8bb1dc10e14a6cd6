"""PNG raw profiles, as ImageMagick and exiftool write EXIF, XMP and IPTC-IIM into PNG text chunks, read by
check_metadata like a JPEG's. Neither tool is on this machine: the chunks are written here as their code writes them
(ImageMagick's `Magick_png_write_raw_profile`; exiftool's PNG.pm, which puts IPTC in a Photoshop resource block)."""

from __future__ import annotations

import piexif
import pytest
from forensics_helpers import IPTC, UTF8, encode, iim, irb
from PIL import PngImagePlugin

from fakescope.forensics import check_metadata
from fakescope.forensics.metadata import DECLARED, SOURCE_TYPE_ONLY

XMP = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
       f'Iptc4xmpExt:DigitalSourceType="{IPTC}trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>').encode()
CAMERA = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"Canon EOS R5"}})


def raw_profile(description: str, data: bytes) -> str:
    """A raw profile's text: a newline, a description, a newline, the byte count in 8 columns, then the bytes in hex,
    72 digits a line."""
    digits = data.hex()
    return f"\n{description}\n{len(data):8d}\n" + "\n".join(digits[i:i + 72] for i in range(0, len(digits), 72)) + "\n"


def png_with(photo, *chunks: tuple[str, str, str], exif: bytes | None = None) -> bytes:
    """A PNG with text chunks (key, value, `tEXt`, `zTXt` or `iTXt`) and, where given, an `eXIf` chunk."""
    info = PngImagePlugin.PngInfo()
    for key, value, kind in chunks:
        if kind == "iTXt":
            info.add_itxt(key, value)
        else:
            info.add_text(key, value, zip=kind == "zTXt")
    return encode(photo.resize((64, 64)), "PNG", pnginfo=info, **({"exif": exif} if exif else {}))


@pytest.mark.parametrize(("key", "data"), [
    ("iptc", iim(UTF8, (2, 110, "Made with Google AI"))),  # ImageMagick: the IIM record itself
    ("iptc", irb((0x0404, iim(UTF8, (2, 110, "Made with Google AI"))))),  # exiftool: in a Photoshop resource block
    ("8bim", irb((0x03ED, b"\x00" * 16), (0x0404, iim((2, 110, "Made with Google AI"))))),
])
@pytest.mark.parametrize("kind", ["zTXt", "tEXt", "iTXt"])
def test_iptc_in_a_png_raw_profile_is_read_like_a_jpegs(photo, key, data, kind):
    ev = check_metadata(png_with(photo, (f"Raw profile type {key}", raw_profile("IPTC profile", data), kind)))
    assert (ev.score, ev.data["generator"], ev.data["credit"]) == (0.95, "Google", "Made with Google AI"), ev.detail
    assert ev.detail == DECLARED + "IPTC-IIM Credit = 'Made with Google AI'" and ev.error is None


def test_a_source_type_in_a_png_iptc_profile_declares_ai_a_by_line_does_not(photo):
    declared = iim((2, 80, "Jane Doe"), (2, 25, IPTC + "trainedAlgorithmicMedia"))
    ev = check_metadata(png_with(photo, ("Raw profile type iptc", raw_profile("IPTC profile", declared), "zTXt")))
    assert ev.detail == f"{DECLARED}{SOURCE_TYPE_ONLY}: trainedAlgorithmicMedia in IPTC-IIM"
    plain = iim((2, 80, "Jane Doe"), (2, 120, f"Not {IPTC}trainedAlgorithmicMedia: a photo by Midjourney's office"))
    ev = check_metadata(png_with(photo, ("Raw profile type iptc", raw_profile("IPTC profile", plain), "zTXt")))
    assert ev.score is None and "declares_ai" not in ev.data and "Raw profile type iptc" not in ev.detail, ev.detail


@pytest.mark.parametrize(("key", "data"), [
    ("xmp", XMP), ("APP1", b"http://ns.adobe.com/xap/1.0/\x00" + XMP),  # ImageMagick's xmp; old exiftool's APP1
])
def test_xmp_in_a_png_raw_profile_is_read(photo, key, data):
    ev = check_metadata(png_with(photo, (f"Raw profile type {key}", raw_profile("xmp", data), "zTXt")))
    assert (ev.score, ev.data["generated"]) == (0.95, "whole"), ev.detail
    assert ev.detail == f"{DECLARED}{SOURCE_TYPE_ONLY}: trainedAlgorithmicMedia in XMP"


@pytest.mark.parametrize(("key", "data"), [("exif", CAMERA), ("exif", CAMERA[6:]), ("APP1", CAMERA)])
def test_exif_in_a_png_raw_profile_is_read(photo, key, data):
    """With its 'Exif' signature (ImageMagick) or without (a bare TIFF header)."""
    ev = check_metadata(png_with(photo, (f"Raw profile type {key}", raw_profile("exif", data), "zTXt")))
    assert (ev.score, ev.data["make"], ev.data["model"]) == (0.45, "Canon", "Canon EOS R5"), ev.detail


def test_a_standard_exif_chunk_wins_over_a_raw_exif_profile(photo):
    software = piexif.dump({"0th": {piexif.ImageIFD.Software: b"Midjourney"}})
    ev = check_metadata(png_with(photo, ("Raw profile type exif", raw_profile("exif", software), "zTXt"), exif=CAMERA))
    assert ev.score == 0.45 and ev.data["make"] == "Canon" and "software" not in ev.data, ev.detail


@pytest.mark.parametrize(("text", "message"), [
    ("\nexif\n      40\n0123", "is no raw profile"),  # fewer bytes than it counts
    ("exif 12 zz", "is no raw profile"),  # no header, no hex
])
def test_a_damaged_raw_profile_is_an_error_and_the_rest_is_read(photo, text, message):
    ev = check_metadata(png_with(photo, ("Raw profile type exif", text, "tEXt"), ("Software", "Midjourney", "tEXt")))
    assert ev.score == 0.95 and ev.data["generator"] == "Midjourney", ev.detail
    assert ev.error == f"PNG text chunk 'Raw profile type exif' {message} (a header, then the bytes it counts in hex); not read"


def test_a_damaged_iim_record_in_a_png_profile_is_an_error(photo):
    ev = check_metadata(png_with(photo, ("Raw profile type iptc", raw_profile("IPTC profile", b"\x1c\x02\x78\x00\x09abc"),
                                         "zTXt")))
    assert ev.score is None and ev.error == "IPTC-IIM unreadable: IIM dataset 2:120 at byte 0 cut short", ev.error
