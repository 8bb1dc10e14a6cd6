"""IPTC-IIM records (JPEG APP13, TIFF IPTC-NAA) and HEIF/AVIF EXIF and XMP, written here, read by check_metadata."""

from __future__ import annotations

import struct

import piexif
import pytest
from forensics_helpers import IPTC, UTF8, encode, iim, irb

from fakescope.forensics import check_metadata
from fakescope.forensics.metadata import DECLARED, SOURCE_TYPE_ONLY

JOB = "Job ID: 0b9d9c3e-4f4a-4c1b-9a43-2d1c6e2f8a11"


def jpeg_with_iim(photo, record: bytes, exif: bytes | None = None, before: bytes = b"") -> bytes:
    """A JPEG whose APP13 'Photoshop 3.0' segment holds `record` as 8BIM resource 0x0404, after the resources `before`,
    as Photoshop writes it."""
    body = b"Photoshop 3.0\x00" + before + irb((0x0404, record))
    data = encode(photo.resize((64, 64)), "JPEG", **({"exif": exif} if exif else {}))
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(body) + 2) + body + data[2:]


def test_a_google_credit_line_in_iim_names_google(photo):
    ev = check_metadata(jpeg_with_iim(photo, iim(UTF8, (2, 110, "Made with Google AI"), (2, 80, "someone"))))
    assert (ev.score, ev.data["generator"], ev.data["credit"]) == (0.95, "Google", "Made with Google AI"), ev.detail
    assert ev.detail == DECLARED + "IPTC-IIM Credit = 'Made with Google AI'"


def test_a_midjourney_job_in_the_iim_caption_names_midjourney(photo):
    ev = check_metadata(jpeg_with_iim(photo, iim(UTF8, (2, 120, f"a lighthouse --v 6.1 {JOB}"), (2, 5, "lighthouse"))))
    assert (ev.score, ev.data["generator"]) == (0.95, "Midjourney") and "IPTC-IIM Caption" in ev.detail, ev.detail


@pytest.mark.parametrize("dataset", [(2, 25), (2, 135)])  # wherever a tool puts it: keywords, a language field
def test_a_source_type_uri_alone_in_iim_declares_ai_naming_no_one(photo, dataset):
    """Meta AI's mark is the IPTC source type only: IIM has no dataset for it, so a tool writes the URI whole."""
    ev = check_metadata(jpeg_with_iim(photo, iim((*dataset, IPTC + "trainedAlgorithmicMedia"))))
    assert (ev.score, ev.data["digital_source_type"], ev.data["generated"]) == (0.95, "trainedAlgorithmicMedia", "whole")
    assert "generator" not in ev.data
    assert ev.detail == f"{DECLARED}{SOURCE_TYPE_ONLY}: trainedAlgorithmicMedia in IPTC-IIM"


def test_a_news_photo_quoting_generators_in_iim_declares_nothing(photo):
    """A by-line, an agency credit and a caption about AI, quoting the source type URI, are no generator's mark."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Nikon", piexif.ImageIFD.Model: b"Z 9"}})
    caption = f"A Midjourney render ({IPTC}trainedAlgorithmicMedia) beside a Meta AI one, Made by Google AI? No."
    record = iim((2, 80, "Jane Doe"), (2, 110, "Reuters"), (2, 120, caption), (2, 65, "Photo Mechanic"),
                 encoding="latin-1")
    ev = check_metadata(jpeg_with_iim(photo, record, exif))
    assert (ev.score, ev.data["credit"]) == (0.45, "Reuters") and "declares_ai" not in ev.data, ev.detail


def test_iim_text_reads_as_utf8_else_latin1(photo):
    utf8 = check_metadata(jpeg_with_iim(photo, iim(UTF8, (2, 110, "Agència Ñ"))))
    latin1 = check_metadata(jpeg_with_iim(photo, iim((2, 110, "Agència Ñ"), encoding="latin-1")))
    assert utf8.data["credit"] == latin1.data["credit"] == "Agència Ñ"


def test_a_damaged_iim_record_is_an_error_and_exif_is_still_read(photo):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"EOS R5"}})
    ev = check_metadata(jpeg_with_iim(photo, b"\x1d\x02\x78\x00\x03abc", exif))  # 0x1D is no tag marker
    assert ev.score == 0.45 and ev.data["model"] == "EOS R5"
    assert ev.error.startswith("IPTC-IIM unreadable: ") and "\n" not in ev.error


def test_a_tiffs_iptc_naa_tag_is_read(photo):
    ev = check_metadata(encode(photo.resize((64, 64)), "TIFF", tiffinfo={33723: iim((2, 110, "Edited with Google AI"))}))
    assert (ev.score, ev.data["generator"]) == (0.95, "Google"), ev.detail


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_a_phones_heif_camera_exif_is_read(photo, fmt):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model: b"iPhone 15 Pro"},
                        "Exif": {piexif.ExifIFD.LensModel: b"iPhone 15 Pro back triple camera 6.765mm f/1.78"}})
    ev = check_metadata(encode(photo.resize((64, 64)), fmt, exif=exif, quality=60))
    assert ev.score == 0.45 and ev.data["lens"].startswith("iPhone 15 Pro back"), ev.detail
    assert ev.detail.startswith("camera EXIF Apple iPhone 15 Pro iPhone 15 Pro back triple camera")


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_an_ai_avif_or_heifs_xmp_is_read(photo, fmt):
    packet = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              f'<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
              f'Iptc4xmpExt:DigitalSourceType="{IPTC}trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>').encode()
    ev = check_metadata(encode(photo.resize((64, 64)), fmt, xmp=packet, quality=60))
    assert (ev.score, ev.data["generated"]) == (0.95, "whole") and "generator" not in ev.data, ev.detail
    assert ev.detail == f"{DECLARED}{SOURCE_TYPE_ONLY}: trainedAlgorithmicMedia in XMP"


def test_iim_after_other_resources_and_in_an_extended_dataset_is_read(photo):
    """Photoshop puts other resources first (resolution info, here with an odd-length name); a dataset over 32,767 bytes
    has an extended length (IIM 4.2 1.5.2: the top bit set, the low bits count the bytes of the length)."""
    caption = f"{'a long prompt, ' * 2500}{JOB}".encode()
    extended = b"\x1c\x02\x78" + struct.pack(">HI", 0x8004, len(caption)) + caption
    before = irb((0x03ED, b"\x00\x48\x00\x00\x00\x01\x00\x01\x00\x48\x00\x00\x00\x01\x00\x01"), name=b"res")
    ev = check_metadata(jpeg_with_iim(photo, iim((2, 110, "Studio")) + extended, before=before))
    assert (ev.score, ev.data["generator"], ev.data["credit"]) == (0.95, "Midjourney", "Studio"), ev.detail
