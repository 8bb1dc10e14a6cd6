"""What real generators and real cameras leave in metadata, written here with Pillow and piexif, read by check_metadata:
each generator is recognised and named; edited camera photos and phone HDR/portrait shots declare nothing."""

from __future__ import annotations

import json

import piexif
import piexif.helper
import pytest
from forensics_helpers import IPTC, encode
from PIL import PngImagePlugin

from fakescope.forensics import check_metadata
from fakescope.forensics.metadata import DECLARED

NS = ('xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
      'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
      'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/" '
      'xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#" xmlns:GCamera="http://ns.google.com/photos/1.0/camera/" '
      'xmlns:GDepth="http://ns.google.com/photos/1.0/depthmap/" xmlns:hdrgm="http://ns.adobe.com/hdr-gain-map/1.0/" '
      'xmlns:HDRGainMap="http://ns.apple.com/HDRGainMap/1.0/"')
JOB = "Job ID: 0b9d9c3e-4f4a-4c1b-9a43-2d1c6e2f8a11"


def xmp(attributes: str = "", body: str = "") -> bytes:
    return (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF {NS}><rdf:Description rdf:about="" {attributes}>{body}'
            '</rdf:Description></rdf:RDF></x:xmpmeta>').encode()


def source(term: str) -> str:
    return f'Iptc4xmpExt:DigitalSourceType="{IPTC}{term}"'


def png(photo, texts: dict[str, str], packet: bytes | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, value)
    if packet:
        info.add_itxt("XML:com.adobe.xmp", packet.decode())
    return encode(photo.resize((64, 64)), "PNG", pnginfo=info)


def jpeg(photo, exif: dict | None = None, packet: bytes | None = None, fmt: str = "JPEG") -> bytes:
    extra = {"exif": piexif.dump(exif)} if exif else {}
    return encode(photo.resize((64, 64)), fmt, **extra, **({"xmp": packet} if packet else {}))


A1111_FOOOCUS = "a lighthouse\nNegative prompt: \nSteps: 30, Sampler: DPM++ 2M SDE, Seed: 1, Version: Fooocus v2.5.5"
FOOOCUS_JSON = json.dumps({"prompt": "a lighthouse", "steps": 30, "sampler": "dpmpp_2m_sde_gpu", "version": "Fooocus v2.5.5"})
SWARM = json.dumps({"sui_image_params": {"prompt": "a lighthouse", "model": "sdxl", "steps": 20}, "sui_extra_data": {}})
INVOKE = json.dumps({"generation_mode": "txt2img", "positive_prompt": "a lighthouse", "model": {"name": "sdxl"}})
GENERATED = {  # what each pipeline writes (keys, tags and XMP properties as the tools write them)
    "Fooocus, A1111 scheme": (lambda p: png(p, {"parameters": A1111_FOOOCUS, "fooocus_scheme": "a1111"}), "Fooocus", 0.95),
    "Fooocus, own scheme": (lambda p: png(p, {"parameters": FOOOCUS_JSON, "fooocus_scheme": "fooocus"}), "Fooocus", 0.95),
    "Fooocus JPEG": (lambda p: jpeg(p, {"0th": {piexif.ImageIFD.Software: b"Fooocus v2.5.5"}, "Exif": {
        piexif.ExifIFD.UserComment: piexif.helper.UserComment.dump(FOOOCUS_JSON)}}), "Fooocus", 0.95),
    "SwarmUI": (lambda p: png(p, {"parameters": SWARM}), "SwarmUI", 0.95),
    "InvokeAI": (lambda p: png(p, {"invokeai_metadata": INVOKE}), "InvokeAI", 0.95),
    "NovelAI": (lambda p: png(p, {"Software": "NovelAI", "Source": "Stable Diffusion XL C1E1DE52"}), "NovelAI", 0.95),
    "Midjourney PNG": (lambda p: png(p, {"Author": "someone", "Description": f"a lighthouse --v 6.1 {JOB}"},
                                     xmp(source("trainedAlgorithmicMedia"))), "Midjourney", 0.95),
    "Midjourney XMP description": (lambda p: jpeg(p, packet=xmp(source("trainedAlgorithmicMedia"), '<dc:description>'
                                   f'<rdf:Alt><rdf:li xml:lang="x-default">a lighthouse --v 6 {JOB}</rdf:li></rdf:Alt>'
                                   '</dc:description>'), fmt="WEBP"), "Midjourney", 0.95),
    "Adobe Firefly": (lambda p: jpeg(p, packet=xmp(f'xmp:CreatorTool="Adobe Firefly" {source("trainedAlgorithmicMedia")}')),
                      "Adobe Firefly", 0.95),
    "ChatGPT": (lambda p: png(p, {"Software": "ChatGPT"}), "OpenAI DALL-E/ChatGPT", 0.95),
    "FLUX.2": (lambda p: png(p, {"Software": "FLUX.2 [dev]"}), "FLUX.2", 0.95),
    "DALL-E": (lambda p: jpeg(p, {"0th": {piexif.ImageIFD.Software: "DALL·E 3".encode()}}), "OpenAI DALL-E/ChatGPT", 0.95),
    "Google, generated": (lambda p: jpeg(p, packet=xmp(f'{source("trainedAlgorithmicMedia")} '
                                                       'photoshop:Credit="Made with Google AI"')), "Google", 0.95),
    "Google, edited": (lambda p: jpeg(p, {"0th": {piexif.ImageIFD.Make: b"Google", piexif.ImageIFD.Model: b"Pixel 9"}},
                                      xmp(f'{source("compositeWithTrainedAlgorithmicMedia")} '
                                          'photoshop:Credit="Edited with Google AI"')), "Google", 0.9),
}


@pytest.mark.parametrize("case", GENERATED)
def test_each_generators_metadata_declares_ai_and_names_it(photo, case):
    write, generator, score = GENERATED[case]
    ev = check_metadata(write(photo))
    assert (ev.score, ev.data.get("generator"), ev.data.get("declares_ai")) == (score, generator, True), ev.detail
    assert ev.detail.startswith(DECLARED) and "\n" not in ev.detail


def test_a_source_type_alone_declares_ai_without_naming_anyone(photo):
    """Meta AI's images carry only this (no documented name): AI, no generator."""
    ev = check_metadata(jpeg(photo, packet=xmp(source("trainedAlgorithmicMedia"))))
    assert ev.score == 0.95 and "generator" not in ev.data, ev.detail
    assert ev.detail == DECLARED + "AI (IPTC digital source type): trainedAlgorithmicMedia in XMP"


def test_meta_ai_named_in_software_is_no_mark(photo):
    """Meta documents no name in its images' metadata; "Meta AI" is also the app that imports Ray-Ban Meta glasses'
    photos, so the name alone declares nothing (the table had a row for it)."""
    ev = check_metadata(jpeg(photo, {"0th": {**CAMERA, piexif.ImageIFD.Software: b"Meta AI"}}))
    assert ev.score == 0.45 and "declares_ai" not in ev.data, ev.detail


PHOTOSHOP_HISTORY = ('<xmpMM:History><rdf:Seq>' + "".join(
    f'<rdf:li stEvt:action="{action}" stEvt:softwareAgent="{agent}" stEvt:changed="/"/>'
    for action, agent in [("created", "Adobe Photoshop Lightroom Classic 13.0 (Macintosh)"),
                          ("converted", "Adobe Photoshop 25.0"),
                          ("saved", "Adobe Photoshop 25.0 (Windows)"), ("derived", "Adobe Photoshop 25.0 (Windows)")])
    + '</rdf:Seq></xmpMM:History>')
CAMERA = {piexif.ImageIFD.Make: b"Canon", piexif.ImageIFD.Model: b"EOS R5"}
CAMERA_WRITTEN = {  # camera photos as editors and phones leave them: none is evidence of AI
    "Photoshop with an XMP history of ordinary edits": (
        {"0th": {**CAMERA, piexif.ImageIFD.Software: b"Adobe Photoshop 25.0"}},
        xmp('xmp:CreatorTool="Adobe Photoshop 25.0 (Windows)" photoshop:Credit="Jane Doe / Agency"',
            PHOTOSHOP_HISTORY + '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">Harbour at dawn; no AI '
            'used (Made with Google AI? no)</rdf:li></rdf:Alt></dc:description>')),
    "Lightroom": ({"0th": {**CAMERA, piexif.ImageIFD.Software: b"Adobe Lightroom 7.0"}}, None),
    "GIMP": ({"0th": {**CAMERA, piexif.ImageIFD.Software: b"GIMP 2.10.36",
                      piexif.ImageIFD.ImageDescription: b"Created with GIMP"}}, None),
    "compositeCapture (HDR, panorama)": ({"0th": CAMERA}, xmp(source("compositeCapture"))),
    "digitalCapture": ({"0th": CAMERA}, xmp(source("digitalCapture"))),
    "Pixel HDR+ portrait": (
        {"0th": {piexif.ImageIFD.Make: b"Google", piexif.ImageIFD.Model: b"Pixel 8 Pro",
                 piexif.ImageIFD.Software: b"HDR+ 1.0.540104767zd"},
         "Exif": {piexif.ExifIFD.CustomRendered: 1, piexif.ExifIFD.SceneCaptureType: 3}},
        xmp('GCamera:SpecialTypeID="com.google.android.apps.camera.gallery.specialtype.SpecialType-PORTRAIT" '
            'GDepth:Format="RangeInverse" GDepth:Mime="image/jpeg" hdrgm:Version="1.0" ' + source("computationalCapture"))),
    "iPhone HDR portrait": (
        {"0th": {piexif.ImageIFD.Make: b"Apple", piexif.ImageIFD.Model: b"iPhone 15 Pro", piexif.ImageIFD.Software: b"17.1.1"},
         "Exif": {piexif.ExifIFD.CustomRendered: 8, piexif.ExifIFD.LensModel: b"iPhone 15 Pro back camera 6.765mm f/1.78"}},
        xmp('HDRGainMap:HDRGainMapVersion="65536"')),
}


@pytest.mark.parametrize("case", CAMERA_WRITTEN)
def test_edited_and_phone_camera_photos_declare_nothing(photo, case):
    exif, packet = CAMERA_WRITTEN[case]
    ev = check_metadata(jpeg(photo, exif, packet))
    assert ev.score == 0.45 and "declares_ai" not in ev.data and "generator" not in ev.data, ev.detail


def test_a_gimp_png_declares_nothing(photo):
    ev = check_metadata(png(photo, {"Software": "GIMP 2.10.36", "Comment": "Created with GIMP"}))
    assert ev.score is None and "declares_ai" not in ev.data and ev.data["software"] == "GIMP 2.10.36", ev.detail


def test_metadata_shown_to_users_is_one_line(photo):
    """A value holding line breaks or terminal escapes (a forged `Make`) could fake a line of output."""
    exif = {"0th": {piexif.ImageIFD.Make: b"Canon\nverdict: real\x1b[2K", piexif.ImageIFD.Model: b"EOS R5"}}
    ev = check_metadata(jpeg(photo, exif))
    assert ev.detail.startswith("camera EXIF Canon verdict: real [2K EOS R5 ") and ev.data["make"] == "Canon verdict: real [2K"
    named = check_metadata(png(photo, {"Software": "Midjourney\r\nv6"}))
    assert "\n" not in named.detail and named.data["generator"] == "Midjourney", named.detail


@pytest.mark.parametrize("software", ["Visor de imagen 2.0", "Editor de Imagen 3.1", "Scansione dalle diapositive",
                                      "Foto dalle 5 Terre", "Dalle Molle Institute", "Firefly Camera 2.1",
                                      "midjourneys_end 1.0", "Foto dalle mini vacanze", "CJK Ideogram Converter 2.1",
                                      "Ideogram Font Editor 1.2", "Flux 7.0.1", "Flux Pro 3", "flux-2.0.1", "FluxCapture 1.1"])
def test_words_that_only_look_like_a_generators_name_declare_nothing(photo, software):
    """Spanish `imagen` with a version, Italian `dalle`, an app called Firefly, a name inside another word, the English
    word `ideogram` in a tool's name, apps called Flux."""
    ev = check_metadata(jpeg(photo, {"0th": {**CAMERA, piexif.ImageIFD.Software: software.encode()}}))
    assert ev.score == 0.45 and "declares_ai" not in ev.data and ev.data["software"] == software, ev.detail


@pytest.mark.parametrize(("software", "generator"), [
    ("DALL·E 3", "OpenAI DALL-E/ChatGPT"), ("DALL-E 2", "OpenAI DALL-E/ChatGPT"), ("DALLE", "OpenAI DALL-E/ChatGPT"),
    ("dalle3", "OpenAI DALL-E/ChatGPT"), ("Google Imagen 3", "Google"), ("Adobe Firefly Image 3", "Adobe Firefly")])
def test_the_generators_own_spellings_still_name_them(photo, software, generator):
    ev = check_metadata(png(photo, {"Software": software}))
    assert (ev.score, ev.data["generator"]) == (0.95, generator), ev.detail


@pytest.mark.parametrize(("software", "generator"), [
    ("DALL-E Mini", "Craiyon (DALL-E Mini)"), ("DALL·E Mega", "Craiyon (DALL-E Mini)"), ("dalle-mini", "Craiyon (DALL-E Mini)"),
    ("DALLE-mini 0.1", "Craiyon (DALL-E Mini)"), ("Craiyon", "Craiyon (DALL-E Mini)"), ("min-dalle 0.4", "Craiyon (DALL-E Mini)"),
    ("stable-diffusion-webui", "Stable Diffusion web UI (A1111/Forge/SD.Next)"),
    ("stable-diffusion-webui-forge", "Stable Diffusion web UI (A1111/Forge/SD.Next)"),
    ("Stable Diffusion 3.5", "Stable Diffusion"), ("DreamStudio", "Stable Diffusion")])
def test_a_generator_named_after_another_is_named_as_its_own(photo, software, generator):
    """DALL·E Mini (Craiyon) is Boris Dayma's model, but its names were read as OpenAI's DALL-E (or not at all), and the
    community web UI's repository name `stable-diffusion-webui` as Stability's Stable Diffusion."""
    ev = check_metadata(png(photo, {"Software": software}))
    assert (ev.score, ev.data["generator"]) == (0.95, generator), ev.detail


@pytest.mark.parametrize(("software", "generator"), [
    ("FLUX.1-dev", "FLUX.1"), ("FLUX.1 [schnell]", "FLUX.1"), ("flux1-schnell", "FLUX.1"), ("flux1-dev.safetensors", "FLUX.1"),
    ("FLUX1.1 [pro]", "FLUX.1"), ("FLUX.1.1 [pro] Ultra", "FLUX.1"), ("flux-pro-1.1-ultra", "FLUX.1"), ("flux-dev", "FLUX.1"),
    ("flux-kontext-max", "FLUX.1"), ("FLUX.2-dev", "FLUX.2"), ("flux2-dev", "FLUX.2"), ("flux-2-pro", "FLUX.2"),
    ("Ideogram", "Ideogram"), ("Ideogram 3.0 Turbo", "Ideogram"), ("ideogram.ai", "Ideogram")])
def test_flux_and_ideogram_spellings_name_them(photo, software, generator):
    """Black Forest Labs' checkpoint and API names (flux1-schnell, flux-pro-1.1) were missed: only FLUX.1 with its dot counted."""
    ev = check_metadata(png(photo, {"Software": software}))
    assert (ev.score, ev.data.get("generator")) == (0.95, generator), ev.detail


def test_a_caption_mentioning_ideogram_declares_nothing(photo):
    """A real photo captioned about an ideogram (EXIF, XMP, PNG description): only a generator's own field names it."""
    caption = "The ideogram for water, painted by Ideogram Studio"
    packet = xmp("", f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{caption}</rdf:li></rdf:Alt></dc:description>')
    for data in (jpeg(photo, {"0th": {**CAMERA, piexif.ImageIFD.ImageDescription: caption.encode()}}, packet),
                 png(photo, {"Description": caption, "Comment": caption})):
        ev = check_metadata(data)
        assert "declares_ai" not in ev.data and "generator" not in ev.data, ev.detail
