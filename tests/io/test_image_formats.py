"""The image loader on every supported format and the odd inputs real folders contain."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from fakescope.errors import ImageLoadError
from fakescope.forensics.metadata import check_metadata
from fakescope.io.image import MIN_SIDE, decode_image, header_size, load_image, read_source, sniff_format
from fakescope.io.jpeg_markers import read_header

FORMATS = [  # (Pillow writer, sniffed name, lossless)
    ("JPEG", "JPEG", False),
    ("PNG", "PNG", True),
    ("WEBP", "WEBP", False),
    ("GIF", "GIF", False),
    ("BMP", "BMP", True),
    ("TIFF", "TIFF", True),
    ("PPM", "PPM", True),
    ("HEIF", "HEIF", False),
    ("AVIF", "AVIF", False),
]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes | None = None) -> bytes:
    """A PNG built chunk by chunk, so its header can declare anything."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = _png_chunk(b"IHDR", header)
    if idat is not None:
        chunks += _png_chunk(b"IDAT", zlib.compress(idat))
    return b"\x89PNG\r\n\x1a\n" + chunks + _png_chunk(b"IEND", b"")


@pytest.mark.parametrize(("writer", "sniffed", "lossless"), FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_to_rgb(image_factory, writer, sniffed, lossless):
    original = image_factory.pil((90, 70))
    data = image_factory.encode(original, writer)
    loaded = load_image(data)
    assert sniff_format(data) == sniffed
    assert (loaded.format, loaded.width, loaded.height, loaded.image.mode) == (sniffed, 90, 70, "RGB")
    assert loaded.data == data
    error = np.abs(np.asarray(loaded.image, np.int16) - np.asarray(original, np.int16)).mean()
    assert error == 0 if lossless else error < 25  # GIF quantises to 256 colours; the rest are close


def test_misnamed_files_are_sniffed_from_bytes(image_factory, tmp_path):
    png_as_jpg = image_factory.file(tmp_path / "photo.jpg", "PNG")
    jpeg_as_png = image_factory.file(tmp_path / "render.png", "JPEG")
    webp_no_suffix = image_factory.file(tmp_path / "download", "WEBP")
    assert load_image(png_as_jpg).format == "PNG"
    assert load_image(jpeg_as_png).format == "JPEG"
    assert load_image(str(webp_no_suffix)).format == "WEBP"
    grey_pgm = image_factory.encode(image_factory.pil((40, 40)).convert("L"), "PPM")  # Pillow's writer for PGM too
    assert grey_pgm.startswith(b"P5\n") and load_image(grey_pgm).format == "PPM"


def test_16bit_grey_png_is_scaled_to_8bit():
    row = np.array([0, 257 * 100, 65535, 32768], ">u2")
    pixels = np.tile(row, (64, 16))  # 64 x 64
    data = _png(64, 64, 16, 0, b"".join(b"\x00" + r.tobytes() for r in pixels))
    loaded = np.asarray(load_image(data).image)
    assert loaded[0, :4, 0].tolist() == [0, 100, 255, 128]
    assert (loaded[..., 0] == loaded[..., 2]).all()


def test_dark_16bit_png_stays_dark():
    """Every value under 256 out of 65535 is black, not a full-range 8-bit image."""
    data = _png(64, 64, 16, 0, b"".join(b"\x00" + np.full(64, 200, ">u2").tobytes() for _ in range(64)))
    assert np.asarray(load_image(data).image)[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("widen", [lambda v: v * 257, lambda v: v << 8, lambda v: (v << 8) + 255 - v],
                         ids=["times-257", "shifted", "shifted-plus-noise"])
def test_16bit_greyscale_rgb_and_arrays_agree_and_give_back_8bit_values(widen):
    """Pillow takes a 16-bit RGB PNG's high byte; greyscale and arrays were rounded (v / 257), so the same picture
    differed by 1 in 16 % of its pixels (and P(ai) by 0.002) between grey and RGB files, and a widened v << 8 lost 1."""
    grey = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 256
    wide = widen(grey).astype(">u2")
    as_grey = _png(64, 64, 16, 0, b"".join(b"\x00" + r.tobytes() for r in wide))
    as_rgb = _png(64, 64, 16, 2, b"".join(b"\x00" + np.repeat(r, 3).tobytes() for r in wide))
    for source in (as_grey, as_rgb, wide.astype(np.uint16), np.dstack([wide.astype(np.uint16)] * 3)):
        assert np.array_equal(np.asarray(load_image(source).image), np.dstack([grey.astype(np.uint8)] * 3))


def test_16bit_rgb_png_keeps_its_colours():
    pixels = np.zeros((64, 64, 3), ">u2")
    pixels[..., 0], pixels[..., 1] = 65535, 257 * 100
    data = _png(64, 64, 16, 2, b"".join(b"\x00" + r.tobytes() for r in pixels))
    assert np.asarray(load_image(data).image)[10, 10].tolist() == [255, 100, 0]


def test_palette_with_transparency_is_composited_on_white(image_factory):
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (32, 0, 64, 64))
    data = image_factory.encode(palette, "PNG", transparency=0)
    pixels = np.asarray(load_image(data).image)
    assert pixels[5, 5].tolist() == [255, 255, 255]  # transparent red -> white
    assert pixels[5, 50].tolist() == [0, 0, 255]


def test_palette_without_transparency_keeps_colours(image_factory):
    palette = Image.new("P", (64, 64), 1)
    palette.putpalette([255, 0, 0, 0, 200, 0] + [0] * 762)
    assert np.asarray(load_image(image_factory.encode(palette, "PNG")).image)[0, 0].tolist() == [0, 200, 0]


@pytest.mark.parametrize(("mode", "colour", "expected"), [
    ("RGBA", (0, 0, 0, 128), [127, 127, 127]),
    ("RGBA", (200, 10, 10, 0), [255, 255, 255]),
    ("RGBA", (10, 20, 30, 255), [10, 20, 30]),
    ("LA", (0, 0), [255, 255, 255]),
    ("LA", (50, 255), [50, 50, 50]),
])
def test_alpha_is_composited_on_white(image_factory, mode, colour, expected):
    data = image_factory.encode(Image.new(mode, (64, 64), colour), "PNG")
    assert np.asarray(load_image(data).image)[0, 0].tolist() == expected


@pytest.mark.parametrize("writer", ["TIFF", "JPEG"])
def test_cmyk_becomes_rgb_with_the_right_colours(image_factory, writer):
    cmyk = Image.new("CMYK", (64, 64), (0, 0, 0, 0))
    cmyk.paste((255, 0, 0, 0), (32, 0, 64, 32))  # cyan
    cmyk.paste((0, 0, 0, 255), (0, 32, 32, 64))  # black
    data = image_factory.encode(cmyk, writer, **({"quality": 100} if writer == "JPEG" else {}))
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    pixels = np.asarray(load_image(data).image, np.int16)
    tolerance = 0 if writer == "TIFF" else 3
    for (y, x), rgb in {(5, 5): [255, 255, 255], (5, 50): [0, 255, 255], (50, 5): [0, 0, 0]}.items():
        assert np.abs(pixels[y, x] - rgb).max() <= tolerance


def test_ycck_jpeg_becomes_rgb_with_the_right_colours():
    """Adobe YCCK (APP14 transform 2, as Photoshop saves CMYK): CMY coded as YCbCr, K kept; libjpeg turns it back."""
    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 2, y * 4, 255 - x * 2], -1).clip(0, 255).astype(np.uint8)
    cmy_k = np.asarray(Image.fromarray(rgb).convert("CMYK"), np.float64)
    c, m, yellow, k = np.moveaxis(cmy_k, -1, 0)
    ycc = np.stack([0.299 * c + 0.587 * m + 0.114 * yellow, 128 - 0.168736 * c - 0.331264 * m + 0.5 * yellow,
                    128 + 0.5 * c - 0.418688 * m - 0.081312 * yellow, 255 - k], -1)
    buf = io.BytesIO()  # Pillow writes CMYK inverted, Adobe's way: invert to store the YCCK planes as they are
    Image.fromarray(255 - ycc.round().clip(0, 255).astype(np.uint8), "CMYK").save(buf, "JPEG", quality=100)
    data = bytearray(buf.getvalue())
    data[data.index(b"Adobe") + 11] = 2  # APP14's transform byte: 0 (CMYK) -> 2 (YCCK)
    assert Image.open(io.BytesIO(bytes(data))).info["adobe_transform"] == 2
    assert np.abs(np.asarray(load_image(bytes(data)).image, np.int16) - rgb).mean() < 2


def test_greyscale_becomes_three_equal_channels(image_factory):
    data = image_factory.encode(Image.new("L", (64, 64), 77), "JPEG", quality=100)
    loaded = load_image(data)
    assert loaded.image.mode == "RGB"
    assert np.asarray(loaded.image)[3, 3].tolist() == [77, 77, 77]


def test_exif_orientation_6_rotates_the_pixels(image_factory):
    stored = Image.new("RGB", (80, 60), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # red in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(image_factory.encode(stored, "JPEG", exif=exif, quality=95))
    pixels = np.asarray(loaded.image)
    assert (loaded.width, loaded.height) == (60, 80)
    assert pixels[5, -5, 0] > 200 and pixels[5, -5, 1:].max() < 40  # now top-right
    assert pixels[5, 5].max() < 40


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    loaded = load_image(buf.getvalue())
    assert np.asarray(loaded.image)[0, 0].tolist() == [255, 0, 0]
    assert (loaded.frames, load_image(Image.open(io.BytesIO(buf.getvalue()))).frames) == (2, 2)  # bytes or PIL alike


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF"])
def test_an_animation_cut_after_its_first_frame_is_still_scored(fmt):
    """Counting the frames walks them: a damaged later one is no error (a cut TIFF raised a raw TypeError)."""
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)) for _ in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    loaded = load_image(buf.getvalue()[:len(buf.getvalue()) // 2])
    assert (loaded.width, loaded.height) == (100, 100) and loaded.frames in (1, 2, 3)
    if fmt != "GIF":  # lossless: the first frame itself (a GIF's is quantised to a palette)
        assert np.array_equal(np.asarray(loaded.image), np.asarray(frames[0]))


def test_a_camera_jpeg_with_a_preview_image_is_one_frame():
    """An MPO extension (a camera's preview or depth image after the photo) is no animation."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", (32, 32))])
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 2
    loaded = load_image(buf.getvalue())
    assert (loaded.format, loaded.frames, loaded.width) == ("JPEG", 1, 64)


@pytest.mark.parametrize("writer", ["HEIF", "AVIF", "TIFF"])
def test_broken_files_are_refused_in_one_line_that_names_no_memory_address(image_factory, writer):
    data = image_factory.bytes(writer, (128, 128))
    for broken in (data[:40], data[: len(data) // 2]):
        with pytest.raises(ImageLoadError, match=f"corrupt or unsupported {sniff_format(data)}") as info:
            decode_image(broken)
        assert "\n" not in str(info.value) and " at 0x" not in str(info.value)


def test_truncated_jpeg_is_refused(image_factory):
    data = image_factory.bytes("JPEG", (128, 128))
    with pytest.raises(ImageLoadError, match="corrupt or unsupported JPEG"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty file"),
    (np.random.default_rng(3).bytes(4096), "not an image"),
    (b"%PDF-1.7\n" + b"x" * 100, "not an image"),
    (b"P6x notes", "not an image"),  # a P and a digit without Netpbm's whitespace
    (b"P6\n64 64\n255\n" + b"\0" * 100, "corrupt or unsupported PPM"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt or unsupported PNG"),
])
def test_non_images_are_refused_with_a_reason(data, message):
    with pytest.raises(ImageLoadError, match=message):
        decode_image(data)


def test_empty_file_on_disk_and_missing_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty file"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)
    for empty in ("", "file://"):  # a blank cell of a CSV of paths: not the current folder
        with pytest.raises(ImageLoadError, match="^empty path$"):
            read_source(empty)
    with pytest.raises(ImageLoadError, match="^empty path$"):
        load_image("")



def test_a_huge_non_image_named_jpg_is_refused_from_its_first_bytes(tmp_path, image_factory):
    """A file was read whole before its signature was checked: a 1 GiB one named `.jpg` took 1 GiB of memory."""
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.write(b"not an image at all")
        fh.truncate(2**30)  # sparse: no disk used
    tracemalloc.start()
    try:
        for source in (huge, f"file://{huge}"):
            with pytest.raises(ImageLoadError, match=r"^not an image \(unrecognised file signature\)$"):
                load_image(source) if isinstance(source, os.PathLike) else read_source(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    photo = image_factory.file(tmp_path / "photo.jpg", "JPEG", (640, 480))  # an image is still read whole
    assert read_source(photo) == photo.read_bytes() and load_image(photo).width == 640


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_pipe_or_a_device_is_refused_unread(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # reading waited for a writer forever (a FIFO left in a scanned folder)
    with pytest.raises(ImageLoadError, match=r"pipe\.jpg: not a regular file \(a pipe, socket or device\)$"):
        load_image(tmp_path / "pipe.jpg")
    if os.path.exists("/dev/zero"):  # read until memory ran out
        with pytest.raises(ImageLoadError, match="not a regular file"):
            read_source("file:///dev/zero")


@pytest.mark.parametrize("chunk", [
    _png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"x" * 2_000_000)),
    _png_chunk(b"iTXt", b"workflow\x00\x01\x00\x00\x00" + zlib.compress(b"x" * 2_000_000)),
    _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"x" * 2_000_000)),
], ids=["zTXt", "iTXt", "iCCP"])
def test_png_with_text_past_pillows_caps_is_still_decoded(image_factory, chunk):
    """Pillow refuses the whole file when text or ICC inflates past 1 MB (a bomb guard): the pixels need neither,
    so a bomb chunk must not make an image unscorable."""
    data = image_factory.bytes("PNG", (64, 64))
    bombed = data[:33] + chunk + data[33:]  # after IHDR
    loaded = decode_image(bombed)
    assert np.array_equal(np.asarray(loaded.image), np.asarray(decode_image(data).image))
    assert loaded.data == bombed


def _damaged_exif() -> bytes:
    """A TIFF header whose one entry (Orientation, 5 SHORTs) claims more than the tag allows and a next IFD past the end."""
    return b"II*\x00\x08\x00\x00\x00\x02\x00" + struct.pack("<HHIHH", 0x0112, 3, 5, 1, 1) + \
        struct.pack("<HHII", 0x0131, 2, 4_000, 4_000_000) + b"\x00\x00\x00\x00"


@pytest.mark.parametrize("writer", ["JPEG", "PNG"])
def test_damaged_exif_raises_no_pillow_warnings(image_factory, writer):
    """Pillow warns (two lines of Python warning on stderr per kind of damage) about EXIF it reads past; the
    metadata evidence already reports the damage, so decoding and the JPEG header walk stay silent."""
    data = image_factory.bytes(writer, (64, 64), exif=b"Exif\x00\x00" + _damaged_exif())
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)  # every warning the process's filters let through
        assert decode_image(data).width == 64
        if writer == "JPEG":
            assert read_header(data) is not None
    assert [str(w.message) for w in caught] == []
    assert "EXIF damaged" in check_metadata(data).error


def test_decoding_in_threads_leaves_the_process_warnings_state_alone(image_factory):
    """`warnings.catch_warnings` swaps process-wide state: decoding threads each inside one used to leave the
    filters and the warning printer (a finished call's `list.append`, swallowing every later warning) behind."""
    data = image_factory.bytes("JPEG", (64, 64), exif=b"Exif\x00\x00" + _damaged_exif())
    decode_image(data), check_metadata(data)  # whatever filters decoding installs for good, installed now
    filters, printer = list(warnings.filters), warnings._showwarnmsg_impl
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: (decode_image(data).width, check_metadata(data).error), range(1200)))
    assert all(width == 64 and "EXIF damaged" in error for width, error in results)
    assert warnings.filters == filters and warnings._showwarnmsg_impl is printer

def test_pillows_bomb_warning_is_quiet_for_fakescopes_limit_only(monkeypatch):
    """The filter hid every `DecompressionBombWarning` in the process once fakescope had decoded an image: a host's
    own, at its own limit, too. It now hides only those naming fakescope's limit, which `_open` turns into its error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", append=True)  # every warning the process's filters let through
        with pytest.raises(ImageLoadError, match="^image too large: 15000x15000"):
            decode_image(_png(15_000, 15_000, 8, 2))  # past 200M pixels, under twice that: Pillow warns
        assert [str(w.message) for w in caught] == []
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # the host's limit, outside fakescope's decodes
        Image.open(io.BytesIO(_png(40, 40, 8, 2)))
    assert [(w.category, str(w.message)[:50]) for w in caught] == [
        (Image.DecompressionBombWarning, "Image size (1600 pixels) exceeds limit of 1000 pix")]


@pytest.mark.parametrize("side", [100_000, 15_000])
def test_absurd_declared_size_is_refused_before_decoding(side):
    """The header alone says 100000x100000 (or 15000x15000): refused at once, nothing allocated."""
    data = _png(side, side, 8, 2)
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match="^image too large: ") as info:
            decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20  # nothing of the declared pixels' size was allocated
    assert f"{side * side:,}" in str(info.value) and str(info.value).endswith("exceeds 200,000,000 pixels")


def test_fakescope_leaves_pillows_pixel_limit_as_its_host_set_it(tiny_model_dir, image_factory, tmp_path, monkeypatch):
    """Importing fakescope set Pillow's process-wide `MAX_IMAGE_PIXELS` to 200M for its host; now its own reads
    alone use that limit (with the same error past it), and the host's value is back after each."""
    code = "import PIL.Image as I; I.MAX_IMAGE_PIXELS = 1_000_000; import fakescope.io; print(I.MAX_IMAGE_PIXELS)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["1000000"], done.stderr[-2000:]
    from fakescope import Detector

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    path = image_factory.file(tmp_path / "photo.png", size=(1200, 1000))  # 1.2M pixels: over the host's limit
    assert Detector.load(tiny_model_dir, device="cpu", provenance=False).predict(str(path)).ok
    assert header_size(_png(4000, 4000, 8, 2)) == (4000, 4000)  # past twice the host's limit: Pillow's error there
    with pytest.raises(ImageLoadError, match=r"^image too large: 20000x20000 \(400,000,000 pixels\) exceeds 200,000,000"):
        decode_image(_png(20_000, 20_000, 8, 2))
    assert Image.MAX_IMAGE_PIXELS == 1_000_000
    with pytest.raises(Image.DecompressionBombError):  # the host's own reads keep its limit
        Image.open(io.BytesIO(_png(4000, 4000, 8, 2)))


def test_a_lazily_opened_pil_bomb_is_too_large_as_its_bytes_are_not_corrupt(monkeypatch):
    """A PIL image opened from a BytesIO (Pillow's own guard off in its host) was decoded, allocating its declared
    pixels, and its truncated data called 'corrupt or unsupported'; it is refused undecoded, as its bytes are."""
    data = _png(15_000, 15_000, 8, 2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageLoadError) as from_bytes:
        load_image(data)
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError) as from_pil:
            load_image(Image.open(io.BytesIO(data)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(from_pil.value) == str(from_bytes.value) == ("image too large: 15000x15000 (225,000,000 pixels) exceeds "
                                                            "200,000,000 pixels")
    assert peak < 16 * 2**20


def test_small_images_refused_clearly_but_64px_always_scored(image_factory):
    for source in (image_factory.bytes("PNG", (24, 200)), image_factory.pil((200, 24)), np.zeros((24, 24), np.uint8)):
        with pytest.raises(ImageLoadError, match=f"too small.*minimum side {MIN_SIDE}"):
            load_image(source)
    assert MIN_SIDE <= 64
    for source in (image_factory.bytes("JPEG", (64, 64)), image_factory.pil((64, 64)), np.zeros((64, 64, 3), np.uint8)):
        assert (load_image(source).width, load_image(source).height) == (64, 64)


def test_numpy_inputs_in_every_layout(image_factory):
    rgb = np.asarray(image_factory.pil((72, 64)))
    hw = rgb[..., 0].copy()
    chw_float = np.moveaxis(rgb, -1, 0).astype(np.float32) / 255.0
    assert np.array_equal(np.asarray(load_image(rgb).image), rgb)
    assert np.array_equal(np.asarray(load_image(hw).image), np.stack([hw] * 3, -1))
    from_chw = load_image(chw_float)
    assert (from_chw.format, from_chw.width, from_chw.height) == ("array", 72, 64)
    assert np.array_equal(np.asarray(from_chw.image), rgb)  # rounded, not truncated (was off by one)
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(np.zeros((4, 64, 64, 3), np.uint8))
    with pytest.raises(ImageLoadError, match=r"array of shape \(0, 64\) is empty"):
        load_image(np.zeros((0, 64), np.float32))  # not numpy's reduction error, which stopped a whole batch
    for bad in (np.nan, np.inf):  # not scored as black pixels
        with pytest.raises(ImageLoadError, match="NaN or infinite"):
            load_image(np.where(np.arange(64)[:, None] < 8, bad, chw_float[0]))


def test_float_arrays_follow_one_rounded_rule_and_refuse_other_ranges(image_factory):
    """0-255 floats were truncated (100.6 -> 100, 0-1 floats one level low); now: [0, 1] scaled by 255, else [0, 255]
    as is, both rounded half up; values outside [0, 255] are refused, not clipped to black or white."""
    rgb = np.asarray(image_factory.pil((72, 64)))

    def pixel(value, dtype=np.float32):
        return load_image(np.full((64, 64), value, dtype)).image.getpixel((0, 0))[0]

    for dtype in (np.float16, np.float32, np.float64):
        assert np.array_equal(np.asarray(load_image(rgb.astype(dtype) / dtype(255)).image), rgb), dtype
        assert np.array_equal(np.asarray(load_image(rgb.astype(dtype)).image), rgb), dtype
    assert [pixel(0.5), pixel(0.501), pixel(0.499), pixel(1.0)] == [128, 128, 127, 255]  # in [0, 1]: x 255
    assert [pixel(100.6), pixel(100.4), pixel(254.5), pixel(1.5)] == [101, 100, 255, 2]  # above 1: 0-255
    for values, shown in (([-1.0, 1.0], r"\[-1, 1\]"), ([0.0, 255.5], r"\[0, 255.5\]")):
        with pytest.raises(ImageLoadError, match=rf"^float array values span {shown}: give pixels in \[0, 1\] \(scaled by "
                                                 r"255\) or \[0, 255\], not normalized values$"):
            load_image(np.resize(np.array(values, np.float32), (64, 64)))
    mask = np.arange(64 * 64).reshape(64, 64) % 2 == 0
    assert np.array_equal(np.asarray(load_image(mask).image)[..., 0], mask * 255)


def test_16bit_arrays_are_scaled_like_16bit_pngs(image_factory):
    rgb = np.asarray(image_factory.pil((72, 64)))
    wide = rgb.astype(np.uint16) * 257  # 0..65535, as a 16-bit TIFF or PNG read by OpenCV or tifffile
    assert np.array_equal(np.asarray(load_image(wide).image), rgb)
    assert np.array_equal(np.asarray(load_image(wide.astype(np.int32)).image), rgb)
    assert np.array_equal(np.asarray(load_image(rgb.astype(np.int64)).image), rgb)  # 0..255 in a wider type: 8-bit
    assert np.asarray(load_image(np.full((64, 64), 200, np.uint16)).image)[0, 0].tolist() == [0, 0, 0]  # dark, as in a PNG


def test_16bit_array_scaling_needs_no_float64_copies():
    """A 24 MP 16-bit array (a tifffile read) must not take 1 GB of float64 temporaries to scale."""
    wide = np.full((1000, 1000, 3), 30000, np.uint16)
    tracemalloc.start()
    try:
        pixel = load_image(wide).image.getpixel((0, 0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pixel == (117, 117, 117)
    assert peak < 3 * wide.nbytes  # one float32 copy (2x) and the uint8 result (0.5x); float64 took 8x


@pytest.mark.parametrize(("pixels", "expected"), [(np.full((1000, 1000), 30000, np.uint16), 117),  # a 16-bit PNG
                                                  (np.full((1000, 1000), 0.5, np.float32), 128)])  # a float TIFF: 127.5 rounded
def test_16bit_and_float_images_scale_without_float64_copies(pixels, expected):
    """As arrays do: float64 temporaries took 24 (16-bit) and 28 (float) bytes a pixel, 4.8 GB at 200 Mpx; now 7 and 12."""
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, "PNG" if pixels.dtype == np.uint16 else "TIFF")
    tracemalloc.start()
    try:
        pixel = load_image(data.getvalue(), keep_bytes=False).image.getpixel((0, 0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pixel == (expected,) * 3
    assert peak < 14 * pixels.size


def test_pil_input_is_converted_and_keeps_no_bytes(image_factory):
    loaded = load_image(image_factory.pil((80, 64), mode="RGBA"))
    assert (loaded.image.mode, loaded.format, loaded.data) == ("RGB", "PIL", None)
    with pytest.raises(ImageLoadError, match="cannot read an image from int"):
        load_image(42)


def test_lazily_opened_pil_image_that_fails_to_decode_is_refused(image_factory):
    data = image_factory.bytes("PNG", (128, 128))
    with pytest.raises(ImageLoadError, match="corrupt or unsupported PNG image: image file is truncated"):
        load_image(Image.open(io.BytesIO(data[: len(data) // 2])))
