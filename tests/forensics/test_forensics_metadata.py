"""Metadata written here with Pillow and piexif, then read back through check_metadata."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib

import piexif
import piexif.helper
import pytest
from forensics_helpers import IPTC, encode
from PIL import Image, PngImagePlugin

from fakescope.forensics import check_metadata

A1111 = "a cat in a hat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512"


def xmp_packet(source_type: str, padding: int = 0) -> bytes:
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            b'xmp:CreatorTool="Test Tool 1.0" Iptc4xmpExt:DigitalSourceType="' + (IPTC + source_type).encode()
            + b'"/></rdf:RDF></x:xmpmeta>' + b" " * padding + b'<?xpacket end="w"?>')


def png_with(photo, **texts) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, (value, compressed) in texts.items():
        info.add_itxt(key, value, zip=compressed)
    return encode(photo.resize((64, 64)), "PNG", pnginfo=info)


def test_a1111_parameters_chunk(photo):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    ev = check_metadata(encode(photo.resize((64, 64)), "PNG", pnginfo=info))
    assert ev.score == 0.95 and not ev.decisive and ev.data["declares_ai"] is True
    assert ev.data["generator"] == "Stable Diffusion web UI (A1111/Forge/SD.Next)"
    assert ev.data["generator_chunks"] == ["parameters"]
    assert "unsigned" in ev.detail


def test_parameters_chunk_without_generator_syntax_is_ignored(photo):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "exposure=1.2; gamma=2.2")
    assert check_metadata(encode(photo.resize((64, 64)), "PNG", pnginfo=info)).score is None


def test_generator_names_in_free_text_do_not_declare_ai(photo):
    """A person's name or a caption that mentions a generator is not the generator's signature."""
    data = png_with(photo, Author=("Stable Diffusion Photography Club", False),
                    Description=("Ink diffusion in water, lit like a Midjourney render", False))
    assert check_metadata(data).score is None
    novelai = png_with(photo, Software=("NovelAI", False), Source=("Stable Diffusion XL C1E1DE52", False))
    assert check_metadata(novelai).score == 0.95


def test_novelai_request_in_the_comment_chunk_declares_ai_a_caption_does_not(photo):
    request = json.dumps({"prompt": "1girl, garden", "steps": 28, "scale": 5.0, "sampler": "k_euler_ancestral",
                          "seed": 7, "uc": "lowres, bad anatomy", "request_type": "PromptGenerateRequest"})
    ev = check_metadata(png_with(photo, Comment=(request, False)))  # without its Software chunk
    assert (ev.score, ev.data["generator"], ev.data["generator_chunks"]) == (0.95, "NovelAI", ["Comment"])
    caption = png_with(photo, Comment=('Garden at dusk; my camera notes {"steps": 3} and "uc" sampler', False))
    assert check_metadata(caption).score is None


def test_comfyui_prompt_and_workflow_chunks_compressed(photo):
    prompt = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1}}})
    workflow = json.dumps({"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]})
    ev = check_metadata(png_with(photo, prompt=(prompt, True), workflow=(workflow, False)))
    assert ev.data["generator"] == "ComfyUI" and ev.data["generator_chunks"] == ["prompt", "workflow"]
    assert ev.score == 0.95


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_comfyui_prompt_and_workflow_in_exif_are_no_camera(photo, fmt):
    """ComfyUI's animated WebP/PNG savers put `prompt:{json}` in EXIF Model and `workflow:{json}` in Make."""
    prompt = json.dumps({"3": {"inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler"},
                               "class_type": "KSampler"}})
    workflow = json.dumps({"last_node_id": 9, "last_link_id": 9, "nodes": [{"id": 3, "type": "KSampler"}]})
    exif = Image.Exif()
    exif[0x0110], exif[0x010F] = f"prompt:{prompt}", f"workflow:{workflow}"
    ev = check_metadata(encode(photo.resize((64, 64)), fmt, exif=exif))
    assert ev.score == 0.95 and ev.data["generator"] == "ComfyUI", ev.detail
    assert "make" not in ev.data and "camera" not in ev.detail
    exif[0x0110], exif[0x010F] = "prompt: a lens test", "workflow: studio"  # a camera's own words
    assert check_metadata(encode(photo.resize((64, 64)), fmt, exif=exif)).score == 0.45
    described = Image.Exif()
    described[0x010E] = f"workflow:{workflow}"  # read from ImageDescription too
    ev = check_metadata(encode(photo.resize((64, 64)), fmt, exif=described))
    assert ev.score == 0.95 and "ImageDescription 'workflow'" in ev.detail, ev.detail


def test_text_chunk_after_idat_is_read(photo):
    plain = encode(photo.resize((64, 64)), "PNG")
    body = b"parameters\x00" + A1111.encode()
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    iend = plain.rindex(b"IEND") - 4
    ev = check_metadata(plain[:iend] + chunk + plain[iend:])
    assert ev.data["generator_chunks"] == ["parameters"]


def test_exif_software_and_a1111_user_comment_in_jpeg(photo):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Software: b"Midjourney"}, "Exif": {}})
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif, quality=85))
    assert ev.data["software"] == "Midjourney" and ev.score == 0.95
    assert ev.data["jpeg_quality"] == 85 and ev.data["jpeg_tables"] == "libjpeg"
    comment = piexif.helper.UserComment.dump(A1111, encoding="unicode")
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif))
    assert ev.data["generator"].startswith("Stable Diffusion web UI") and ev.score == 0.95


def test_exif_strings_written_in_utf8(photo):
    """EXIF ASCII tags hold UTF-8 in practice (exiftool, most software); read as Latin-1, `DALL·E` was missed."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Software: "DALL·E 3".encode(), piexif.ImageIFD.Make: b"Ricoh",
                                piexif.ImageIFD.Model: "GR Ⅲ".encode()}})
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif))
    assert ev.score == 0.95 and ev.data["software"] == "DALL·E 3" and ev.data["model"] == "GR Ⅲ"
    latin1 = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Leica", piexif.ImageIFD.Model: "M10 Mon\xe9".encode("latin-1")}})
    assert check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=latin1)).data["model"] == "M10 Moné"


def test_tiff_tags_are_its_exif(photo):
    """A TIFF keeps Software, Make and Model among its own tags, not in an EXIF block."""
    ev = check_metadata(encode(photo.resize((64, 64)), "TIFF", tiffinfo={305: "Midjourney", 271: "Canon", 272: "EOS R5"}))
    assert ev.score == 0.95 and (ev.data["software"], ev.data["make"], ev.data["model"]) == ("Midjourney", "Canon", "EOS R5")
    camera = check_metadata(encode(photo.resize((64, 64)), "TIFF", tiffinfo={271: "Canon", 272: "EOS R5"}))
    assert camera.score == 0.45 and not camera.error


def test_camera_exif_only_nudges(photo):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"EOS R5",
                                piexif.ImageIFD.Software: b"Adobe Photoshop 25.0"},
                        "Exif": {piexif.ExifIFD.LensModel: b"RF24-105mm F4 L IS USM",
                                 piexif.ExifIFD.DateTimeOriginal: b"2024:05:01 10:00:00"},
                        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N"}})
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif, quality=92))
    assert ev.score == 0.45 and "declares_ai" not in ev.data
    assert (ev.data["make"], ev.data["model"], ev.data["lens"]) == ("Canon", "EOS R5", "RF24-105mm F4 L IS USM")
    assert ev.data["gps"] is True and ev.data["software"] == "Adobe Photoshop 25.0"
    assert ev.data["datetime_original"] == "2024:05:01 10:00:00"
    assert ev.detail.startswith("camera EXIF Canon EOS R5 RF24-105mm F4 L IS USM, GPS present")


EDITORS_AND_PHONES = ["Adobe Photoshop 25.0 (Windows)", "Adobe Photoshop Lightroom Classic 13.0 (Macintosh)",
                      "Adobe Lightroom 7.0", "GIMP 2.10.36", "darktable 4.6.0", "Capture One 23", "Snapseed 2.0",
                      "Affinity Photo 2", "HDR+ 1.0.540104767zd", "17.1.1", "G998BXXU5CVDD", "Topaz Photo AI 2.4"]
"""Software tags of ordinary editors and phone camera apps (Pixel's HDR+, an iOS version, Samsung firmware)."""


@pytest.mark.parametrize("software", EDITORS_AND_PHONES)
def test_editors_and_phone_apps_do_not_declare_ai(photo, software):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Google", piexif.ImageIFD.Model: b"Pixel 8",
                                piexif.ImageIFD.Software: software.encode()}})
    xmp = xmp_packet("digitalCapture").replace(b"Test Tool 1.0", software.encode())
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif, xmp=xmp))
    assert ev.score == 0.45 and "declares_ai" not in ev.data, ev.detail
    assert ev.data["software"] == ev.data["creator_tool"] == software


@pytest.mark.parametrize("term", ["humanEdits", "minorHumanEdits", "digitalCreation", "algorithmicallyEnhanced"])
def test_human_made_or_edited_source_types_declare_nothing(photo, term):
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp_packet(term)))
    assert ev.score is None and "declares_ai" not in ev.data and ev.data["digital_source_type"] == term


def test_a_model_that_repeats_the_make_is_named_once(photo):
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"NIKON CORPORATION", piexif.ImageIFD.Model: b"NIKON Z 6"}})
    assert check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif)).detail.startswith(
        "camera EXIF NIKON CORPORATION NIKON Z 6")  # not a prefix: both kept
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"Canon EOS R5"}})
    assert check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif)).detail.startswith("camera EXIF Canon EOS R5 ")


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "PNG"])
def test_xmp_digital_source_type(photo, fmt):
    if fmt == "PNG":
        data = png_with(photo, **{"XML:com.adobe.xmp": (xmp_packet("trainedAlgorithmicMedia").decode(), False)})
    else:
        data = encode(photo.resize((64, 64)), fmt, xmp=xmp_packet("trainedAlgorithmicMedia"))
    ev = check_metadata(data)
    assert ev.data["digital_source_type"] == "trainedAlgorithmicMedia" and ev.score == 0.95
    assert ev.data["creator_tool"] == "Test Tool 1.0"


@pytest.mark.parametrize("value", ["digitalsourcetype/trainedAlgorithmicMedia", "trainedAlgorithmicMedia",
                                   "https://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia/"])
def test_xmp_digital_source_type_forms(photo, value):
    """The IPTC term alone, under its `digitalsourcetype/` path or as a URI: the forms C2PA accepts too."""
    xmp = xmp_packet("trainedAlgorithmicMedia").replace((IPTC + "trainedAlgorithmicMedia").encode(), value.encode())
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp))
    assert ev.data["digital_source_type"] == "trainedAlgorithmicMedia" and ev.score == 0.95


def test_iptc_uri_quoted_in_a_caption_does_not_override_the_property(photo):
    caption = ('<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>'
               '<rdf:li xml:lang="x-default">Our AI images are labelled ' + IPTC + 'trainedAlgorithmicMedia; '
               'this one is a photo</rdf:li></rdf:Alt></dc:description></rdf:Description>').encode()
    xmp = xmp_packet("digitalCapture").replace(b"<rdf:Description ", caption + b"<rdf:Description ", 1)
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp))
    assert ev.data["digital_source_type"] == "digitalCapture" and ev.score == 0.45 and "declares_ai" not in ev.data


def test_iptc_uri_quoted_in_a_caption_without_the_property_declares_nothing(photo):
    """A photo whose packet has no DigitalSourceType property: a caption quoting the AI URI is no declaration
    (the URI counts only inside the property, even wrapped in an rdf:Bag)."""
    caption = ('<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Is this ' + IPTC + 'trainedAlgorithmicMedia? '
               'No, a photo</rdf:li></rdf:Alt></dc:description>').encode()
    xmp = xmp_packet("digitalCapture").replace(b' Iptc4xmpExt:DigitalSourceType="' + (IPTC + "digitalCapture").encode()
                                               + b'"/>', b' xmlns:dc="http://purl.org/dc/elements/1.1/">' + caption
                                               + b"</rdf:Description>")
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp))
    assert ev.score is None and "digital_source_type" not in ev.data, ev.detail
    wrapped = xmp.replace(b"<dc:description>", b"<Iptc4xmpExt:DigitalSourceType><rdf:Bag><rdf:li>" + IPTC.encode()
                          + b"trainedAlgorithmicMedia</rdf:li></rdf:Bag></Iptc4xmpExt:DigitalSourceType><dc:description>")
    assert check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=wrapped)).score == 0.95


def test_xmp_composite_and_capture(photo):
    composite = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp_packet("compositeWithTrainedAlgorithmicMedia")))
    assert composite.score == 0.9 and composite.data["declares_ai"] is True
    capture = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp_packet("digitalCapture")))
    assert capture.score == 0.45 and "declares_ai" not in capture.data



NS = ('xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
      'xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" xmlns:stRef="http://ns.adobe.com/xap/1.0/sType/ResourceRef#" '
      'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"')
AI = IPTC + "trainedAlgorithmicMedia"
PLACED = {  # a placed AI document in each place Photoshop keeps one, in attribute and element forms
    "ingredient": f'<xmpMM:Ingredients><rdf:Bag><rdf:li stRef:documentID="xmp.did:1" Iptc4xmpExt:DigitalSourceType="{AI}"/>'
                  '</rdf:Bag></xmpMM:Ingredients>',
    "history": '<xmpMM:History><rdf:Seq><rdf:li rdf:parseType="Resource"><stEvt:action>placed</stEvt:action>'
               f'<Iptc4xmpExt:DigitalSourceType>{AI}</Iptc4xmpExt:DigitalSourceType></rdf:li></rdf:Seq></xmpMM:History>',
    "ancestors": '<photoshop:DocumentAncestors><rdf:Bag><rdf:li><rdf:Description rdf:about="xmp.did:2">'
                 f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{AI}"/></rdf:Description></rdf:li></rdf:Bag>'
                 '</photoshop:DocumentAncestors>',
    "other resource": f'</rdf:Description><rdf:Description rdf:about="xmp.did:3" Iptc4xmpExt:DigitalSourceType="{AI}">',
}


def photoshop_xmp(own: str, placed: str) -> bytes:
    """A packet whose asset description holds `own` (attributes) and, before its own property element, `placed`."""
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {NS}>'
            f'<rdf:Description rdf:about="" {own}>{placed}<xmpMM:DocumentID>xmp.did:0</xmpMM:DocumentID></rdf:Description>'
            '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("where", PLACED)
@pytest.mark.parametrize("own", ["", "digitalCapture"])
def test_xmp_ai_source_type_of_a_placed_document_is_partly_generated(photo, fmt, where, own):
    """A photo (or an image declaring nothing) holding a placed AI document reads as partly generated (0.9), not
    wholly AI (0.95), whichever comes first in the packet."""
    xmp = photoshop_xmp(f'Iptc4xmpExt:DigitalSourceType="{IPTC}{own}"' if own else "", PLACED[where])
    data = (png_with(photo, **{"XML:com.adobe.xmp": (xmp.decode(), False)}) if fmt == "PNG"
            else encode(photo.resize((64, 64)), fmt, xmp=xmp))
    ev = check_metadata(data)
    assert ev.score == 0.9 and ev.data["generated"] == "part" and ev.data["declares_ai"] is True, ev.detail
    assert ev.data["part_source_types"] == ["trainedAlgorithmicMedia"] and ev.data.get("digital_source_type") == (own or None)
    assert "placed or earlier document (partly generated)" in ev.detail and ev.error is None


@pytest.mark.parametrize("form", ['Iptc4xmpExt:DigitalSourceType="{}"',
                                  "<Iptc4xmpExt:DigitalSourceType>{}</Iptc4xmpExt:DigitalSourceType>"])
def test_xmp_own_source_type_wins_over_a_placed_one(photo, form):
    """The image's own property decides, in attribute or element form, after a placed document's in the packet."""
    for own, placed, score in (("trainedAlgorithmicMedia", "digitalCapture", 0.95), ("digitalCapture", "digitalCapture", 0.45)):
        prop = form.format(IPTC + own)
        attr, element = (prop, "") if prop.startswith("Iptc") else ("", prop)
        xmp = photoshop_xmp(attr, PLACED["ingredient"].replace("trainedAlgorithmicMedia", placed) + element)
        ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", xmp=xmp))
        assert ev.score == score and ev.data["digital_source_type"] == own and ev.data["part_source_types"] == [placed]
    assert ev.data.get("generated") is None and "declares_ai" not in ev.data


@pytest.mark.parametrize("packet", [
    b'<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b"&b;</x:xmpmeta>",
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>',
])
def test_xmp_with_entities_or_broken_xml_is_an_error_not_an_exception(photo, packet):
    """Entity expansion (an XML bomb) is refused, broken XML reported; the EXIF beside it is still read."""
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"Canon EOS R5"}})
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", exif=exif, xmp=packet))
    assert ev.error.startswith("XMP unreadable: ") and "\n" not in ev.error and ev.score == 0.45
    assert "digital_source_type" not in ev.data and ev.data["model"] == "Canon EOS R5"

EXTENSION = b"http://ns.adobe.com/xmp/extension/\x00"


def app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_extension(photo, own: str, extension: bytes, *, guid: str | None = None, chunk: int = 30_000,
                        full: int | None = None, drop: int | None = None, sent: bytes | None = None) -> bytes:
    """A JPEG whose standard packet names `guid` (the extension's MD5 by default) in xmpNote:HasExtendedXMP and
    whose extended packet (`sent` in place of `extension` where given, under `extension`'s GUID) is split into
    `chunk`-byte APP1 segments, written last first (readers order them by offset)."""
    digest = hashlib.md5(extension).hexdigest().upper()  # noqa: S324 - the GUID XMP part 3 defines
    extension = extension if sent is None else sent
    standard = photoshop_xmp(f'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" xmpNote:HasExtendedXMP="{guid or digest}" '
                             f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="Adobe Photoshop 26.0" {own}', "")
    jpeg = encode(photo.resize((64, 64)), "JPEG", xmp=standard)
    offsets = [o for o in range(0, len(extension), chunk) if o != drop]
    segments = [app1(EXTENSION + digest.encode() + struct.pack(">II", full or len(extension), o) + extension[o:o + chunk])
                for o in reversed(offsets)]
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def big_extension(own: str = "", placed: str = "") -> bytes:
    """An extended packet (top-level description about the image) padded, as Photoshop's history is, past one segment."""
    saved = '<rdf:li stEvt:action="saved" stEvt:changed="/"/>' * 2_000
    history = f"<xmpMM:History><rdf:Seq>{saved}</rdf:Seq></xmpMM:History>"
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {NS}><rdf:Description rdf:about="" {own}>{placed}{history}'
            "</rdf:Description></rdf:RDF></x:xmpmeta>").encode()


@pytest.mark.parametrize(("own", "placed", "score", "generated"), [
    (f'Iptc4xmpExt:DigitalSourceType="{AI}"', "", 0.95, "whole"),
    ("", PLACED["ingredient"], 0.9, "part"),
])
def test_jpeg_extended_xmp_is_reassembled_and_read(photo, own, placed, score, generated):
    """A declaration Photoshop keeps in the extended packet (split over APP1 segments) is the image's own or a
    placed document's as in a standard packet; the standard packet's properties are kept beside it."""
    extension = big_extension(own, placed)
    assert len(extension) > 65_000
    ev = check_metadata(jpeg_with_extension(photo, "", extension))
    assert ev.score == score and ev.data["generated"] == generated and ev.error is None, (ev.detail, ev.error)
    assert ev.data["creator_tool"] == "Adobe Photoshop 26.0" and ev.data["xmp_bytes"] > len(extension)


def test_jpeg_extended_xmp_with_another_guid_is_ignored(photo):
    """An extension the standard packet does not name (XMP part 3: the GUIDs must match) declares nothing."""
    ev = check_metadata(jpeg_with_extension(photo, "", big_extension(f'Iptc4xmpExt:DigitalSourceType="{AI}"'),
                                            guid="0" * 32))
    assert ev.score is None and "generated" not in ev.data and ev.error is None
    assert ev.data["creator_tool"] == "Adobe Photoshop 26.0"


@pytest.mark.parametrize(("damage", "message"), [
    ({"drop": 30_000}, "leaves a gap or overlaps"),
    ({"full": 3 * 1024 * 1024}, "exceeds 2,097,152"),
    ({"full": 10}, "overruns its 10 bytes"),
    ({"full": 10**6}, "hold"),
])
def test_inconsistent_or_oversized_extended_xmp_is_an_error_not_an_exception(photo, damage, message):
    """A missing chunk, a claimed length past the cap or not matching the chunks: one line, the standard packet kept."""
    extension = big_extension(f'Iptc4xmpExt:DigitalSourceType="{AI}"')
    ev = check_metadata(jpeg_with_extension(photo, f'Iptc4xmpExt:DigitalSourceType="{IPTC}digitalCapture"', extension,
                                            **damage))
    assert ev.error.startswith("XMP unreadable: extension") and message in ev.error and "\n" not in ev.error, ev.error
    assert ev.score == 0.45 and ev.data["digital_source_type"] == "digitalCapture"
    assert ev.data["creator_tool"] == "Adobe Photoshop 26.0"


def test_extended_xmp_whose_md5_is_not_its_guid_is_ignored_in_one_line(photo):
    """The GUID is the MD5 of the whole extended packet (XMP part 3) but was only matched against the standard
    packet's, so an altered extension under the right GUID was read; it is now ignored, saying why."""
    extension = big_extension(f'Iptc4xmpExt:DigitalSourceType="{AI}"')
    altered = extension.replace(b'action="saved"', b'action="SAVED"', 1)  # one history entry, the length kept
    ev = check_metadata(jpeg_with_extension(photo, f'Iptc4xmpExt:DigitalSourceType="{IPTC}digitalCapture"', extension,
                                            sent=altered))
    guid, digest = (hashlib.md5(packet).hexdigest().upper() for packet in (extension, altered))  # noqa: S324
    assert ev.error == f"XMP unreadable: extension's MD5 {digest} is not its GUID {guid} (altered or truncated); not read"
    assert ev.score == 0.45 and ev.data["digital_source_type"] == "digitalCapture"
    assert ev.data["xmp_bytes"] < len(extension)


def test_several_standard_xmp_packets_are_all_read(photo):
    """The second standard packet no longer replaces the first: the first's CreatorTool and the second's AI
    declaration are both read, and the anomaly is said."""
    jpeg = encode(photo.resize((64, 64)), "JPEG", xmp=xmp_packet("digitalCapture"))
    second = photoshop_xmp("", PLACED["ingredient"])
    ev = check_metadata(jpeg[:2] + app1(b"http://ns.adobe.com/xap/1.0/\x00" + second) + jpeg[2:])
    assert ev.data["creator_tool"] == "Test Tool 1.0" and ev.data["digital_source_type"] == "digitalCapture"
    assert ev.score == 0.9 and ev.data["generated"] == "part"
    assert ev.error == "2 standard XMP packets (one expected); all read, the first's own values win"

@pytest.mark.parametrize("quality", [30, 75, 90, 95])
def test_jpeg_quality_estimate(photo, quality):
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", quality=quality))
    assert ev.data == {"jpeg_quality": quality, "jpeg_tables": "libjpeg"} and ev.score is None


def test_custom_quantisation_tables_are_named(photo):
    ev = check_metadata(encode(photo.resize((64, 64)), "JPEG", quality="web_high"))
    assert ev.data["jpeg_tables"] == "custom"


def test_huge_xmp_is_an_error_not_an_exception(photo):
    data = png_with(photo, **{"XML:com.adobe.xmp": (xmp_packet("trainedAlgorithmicMedia", 5_000_000).decode(), False)})
    ev = check_metadata(data)
    assert ev.error and "exceeds" in ev.error and ev.data["xmp_bytes"] > 5_000_000
    assert ev.score is None


def test_broken_exif_is_an_error_not_an_exception(photo):
    broken = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 40
    data = encode(photo.resize((64, 64)), "JPEG", exif=broken)
    ev = check_metadata(data)
    assert ev.error and ev.error.startswith("EXIF damaged") and ev.data["jpeg_quality"] == 75
    not_tiff = encode(photo.resize((64, 64)), "JPEG", exif=b"Exif\x00\x00XX garbage that is no TIFF header")
    ev = check_metadata(not_tiff)
    assert ev.error and ev.error.startswith("EXIF unreadable") and ev.score is None


def test_damaged_containers_are_errors(photo):
    jpeg = encode(photo.resize((64, 64)), "JPEG")
    ev = check_metadata(jpeg[:2] + b"\x00\x00" + jpeg[4:])
    assert ev.error and "structure damaged" in ev.error
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    png = encode(photo.resize((64, 64)), "PNG", pnginfo=info)
    cut = png[: png.index(b"parameters") + 20]
    ev = check_metadata(cut)
    assert ev.error and "truncated" in ev.error
    assert check_metadata(b"\x89PNG\r\n\x1a\n" + b"\xff" * 64).error
    bomb = zlib.compress(b"x" * 20_000_000)
    body = b"parameters\x00\x00" + bomb
    chunk = struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", zlib.crc32(b"zTXt" + body))
    ev = check_metadata(png[:33] + chunk + png[33:])
    assert ev.error and "inflates past" in ev.error


def test_reencoding_strips_metadata(photo):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", A1111)
    marked = encode(photo.resize((64, 64)), "PNG", pnginfo=info)
    assert check_metadata(marked).score == 0.95
    stripped = encode(Image.open(io.BytesIO(marked)).convert("RGB"), "JPEG", quality=90)
    assert check_metadata(stripped).score is None
