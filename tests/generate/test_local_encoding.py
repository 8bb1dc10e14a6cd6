"""`--format source`: a local generator's ai image has its source's file properties, so none of them tells it apart."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from fakescope.data import read_rows
from fakescope.generate._encoding import _lossless_webp
from fakescope.generate.local import generate_local


def _darker(images):
    """A generator that changes every pixel (so nothing is copied from the source by chance)."""
    return [image.point(lambda value: value // 2) for image in images]


def _sources(folder) -> None:
    gradient = np.tile(np.arange(48, dtype=np.uint8) * 5, (40, 1))
    rgb = Image.fromarray(np.dstack([gradient, gradient[::-1], np.full_like(gradient, 90)]), "RGB")
    alpha = Image.fromarray(np.where(gradient > 100, 255, 0).astype(np.uint8), "L")
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    rgba.save(folder / "rgba.png")
    grey_alpha = rgb.convert("L")
    grey_alpha.putalpha(alpha)
    grey_alpha.save(folder / "la.png")
    palette = rgb.quantize(16)
    palette.save(folder / "palette.png", transparency=3)
    rgb.convert("L").save(folder / "grey.png")
    cv2.imwrite(str(folder / "deep.png"), (np.asarray(rgb)[..., ::-1].astype(np.uint16) * 257))
    rgb.save(folder / "lossy.webp", quality=55)
    rgb.save(folder / "lossless.webp", lossless=True)
    rgba.save(folder / "alpha.webp", quality=70)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter: the generator's input and output are upright, so the alpha is turned too
    rgba.save(folder / "turned.png", exif=exif)
    rgb.save(folder / "icc.png", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes())


def test_source_format_keeps_each_source_s_format_mode_alpha_palette_and_profile(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    _sources(photos)
    written, manifest, unusable, _ = generate_local(str(photos), str(out), _darker, generator="dark", model="dark")
    assert (written, unusable) == (10, 0)
    rows = read_rows(manifest).set_index("source_uri")

    def pair(name: str) -> tuple[Image.Image, Image.Image, bytes]:
        fake_uri = rows.loc[str(photos / name), "uri"]
        return Image.open(photos / name), Image.open(fake_uri), open(fake_uri, "rb").read()

    for name, mode in (("rgba.png", "RGBA"), ("la.png", "LA"), ("alpha.webp", "RGBA")):
        source, fake, _ = pair(name)
        assert (fake.format, fake.mode) == (source.format, mode), name
        assert np.array_equal(np.asarray(fake.getchannel("A")), np.asarray(source.getchannel("A"))), name
        assert not np.array_equal(np.asarray(fake.convert("RGB")), np.asarray(source.convert("RGB"))), name
    source, fake, _ = pair("palette.png")
    assert (fake.mode, fake.info["transparency"], fake.getpalette()) == ("P", 3, source.getpalette())
    assert np.array_equal(np.asarray(fake) == 3, np.asarray(source) == 3)  # transparent where the source is
    source, fake, _ = pair("grey.png")
    assert (fake.format, fake.mode) == ("PNG", "L")
    source, fake, _ = pair("deep.png")  # 8 bits from the generator: an 8-bit PNG, as the docs say
    assert (fake.format, fake.mode, fake.size) == ("PNG", "RGB", source.size)
    for name, lossless in (("lossy.webp", False), ("lossless.webp", True), ("alpha.webp", False)):
        source, fake, data = pair(name)
        assert fake.format == "WEBP" and rows.loc[str(photos / name), "format"] == "WEBP", name
        assert _lossless_webp(data) is lossless and _lossless_webp((photos / name).read_bytes()) is lossless, name
    source, fake, _ = pair("turned.png")
    assert fake.size == (40, 48) and np.array_equal(np.asarray(fake.getchannel("A")),
                                                   np.asarray(ImageOps.exif_transpose(source).getchannel("A")))
    source, fake, _ = pair("icc.png")
    assert fake.info["icc_profile"] == source.info["icc_profile"]


def test_png_format_saves_every_source_as_an_rgb_png(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "fakes"
    photos.mkdir()
    _sources(photos)
    _, manifest, _, _ = generate_local(str(photos), str(out), _darker, generator="dark", model="dark", output_format="png")
    fakes = [Image.open(uri) for uri in read_rows(manifest)["uri"]]
    assert len(fakes) == 10 and {(fake.format, fake.mode) for fake in fakes} == {("PNG", "RGB")}
