"""Device JPEG decoding: which files qualify, and pixels equal to the host decoder's (torchvision on the CPU here)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from fakescope.io.device_jpeg import decode_jpegs, device_jpeg_size
from fakescope.io.image import decode_image
from fakescope.io.jpeg_markers import Frame, Header, header_end, read_header


def _broken_frame(jpeg: bytes) -> bytes:
    """The same JPEG with a zero-sized frame header: every decoder refuses it."""
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = bytes(4)
    return bytes(data)


def test_plain_rgb_and_grey_jpegs_qualify(image_factory):
    rgb = image_factory.pil((120, 90), seed=1)
    assert device_jpeg_size(image_factory.encode(rgb, "JPEG")) == (120, 90)
    assert device_jpeg_size(image_factory.encode(rgb.convert("L"), "JPEG")) == (120, 90)


def test_progressive_and_exif_without_rotation_qualify(image_factory):
    rgb = image_factory.pil((120, 90), seed=1)
    exif = rgb.getexif()
    exif[0x0112] = 1  # upright, as cameras write it
    exif[0x010F] = "Camera maker"
    assert device_jpeg_size(image_factory.encode(rgb, "JPEG", progressive=True)) == (120, 90)
    assert device_jpeg_size(image_factory.encode(rgb, "JPEG", exif=exif)) == (120, 90)


def test_frames_and_colour_codings_other_decoders_lack_are_refused(image_factory):
    jpeg = image_factory.encode(image_factory.pil((120, 90), seed=1), "JPEG")
    sof = jpeg.find(b"\xff\xc0")
    assert read_header(jpeg) == Header(Frame(0xC0, 8, 90, 120, 3, b"\x01\x02\x03"), 1, False)
    for marker in (0xC3, 0xC9):  # lossless, arithmetic-coded
        relabelled = jpeg[:sof + 1] + bytes([marker]) + jpeg[sof + 2:]
        assert read_header(relabelled) is None and device_jpeg_size(relabelled) is None
    rgb_ids = jpeg[:sof + 10] + b"R" + jpeg[sof + 11:sof + 13] + b"G" + jpeg[sof + 14:sof + 16] + b"B" + jpeg[sof + 17:]
    adobe_rgb = jpeg[:2] + b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00" + jpeg[2:]  # transform 0: RGB
    for rgb_coded in (rgb_ids, adobe_rgb):
        assert read_header(rgb_coded).rgb_coded and device_jpeg_size(rgb_coded) is None
    assert header_end(jpeg) == jpeg.find(b"\xff\xda")


def test_everything_the_host_must_handle_is_refused(image_factory):
    rgb = image_factory.pil((120, 90), seed=1)
    exif = rgb.getexif()
    exif[0x0112] = 6  # rotated: the host applies the EXIF orientation
    jpeg = image_factory.encode(rgb, "JPEG")
    refused = {
        "png": image_factory.encode(rgb, "PNG"),
        "cmyk": image_factory.encode(rgb.convert("CMYK"), "JPEG"),
        "rotated": image_factory.encode(rgb, "JPEG", exif=exif),
        "truncated": jpeg[:-100],
        "broken frame": _broken_frame(jpeg),
        "garbage": b"\xff\xd8\xff\xe0 not a jpeg \xff\xd9",
    }
    assert {name: device_jpeg_size(data) for name, data in refused.items()} == dict.fromkeys(refused)


def test_pixels_equal_the_host_decoders_in_any_chunking(image_factory):
    sizes = [(120, 90), (64, 64), (200, 150)]
    jpegs = [image_factory.bytes("JPEG", size, seed=i, quality=90) for i, size in enumerate(sizes)]
    jpegs.append(image_factory.encode(image_factory.pil((80, 70), seed=9).convert("L"), "JPEG"))
    sizes.append((80, 70))
    host = [np.asarray(decode_image(j).image) for j in jpegs]
    for max_pixels in (1, 20_000, 2**28):  # one image per chunk, two or three, all at once
        decoded = list(decode_jpegs(jpegs, sizes, torch.device("cpu"), max_pixels=max_pixels))
        assert [d.shape for d in decoded] == [(3, h, w) for w, h in sizes]
        assert all(np.array_equal(d.permute(1, 2, 0).numpy(), h) for d, h in zip(decoded, host))


def test_torchvisions_decoder_deprecation_is_kept_out_of_stderr_and_nothing_else(image_factory):
    """torchvision 0.29 deprecates decode_jpeg (for TorchCodec) on every call: `--decode device` printed it (-W default)."""
    from torchvision.io import image as torchvision_image

    jpeg = image_factory.bytes("JPEG", (64, 48))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(decode_jpegs([jpeg], [(64, 48)], torch.device("cpu")))
        list(decode_jpegs([jpeg], [(64, 48)], torch.device("cpu")))  # the filter is added once
        warnings.warn_explicit("another deprecation", DeprecationWarning, torchvision_image.__file__, 1,
                               module="torchvision.io.image")
        filters = [f for f in warnings.filters if f[1] is not None and f[1].pattern.startswith("The image decoding")]
    assert [str(w.message) for w in caught] == ["another deprecation"] and len(filters) == 1


def test_a_jpeg_the_decoder_refuses_costs_only_itself(image_factory):
    good = image_factory.bytes("JPEG", (96, 80), seed=2)
    decoded = list(decode_jpegs([good, _broken_frame(good), good], [(96, 80)] * 3, torch.device("cpu")))
    assert decoded[1] is None
    assert decoded[0].shape == decoded[2].shape == (3, 80, 96)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decoding_never_overwrites_memory_that_queued_kernels_still_read(image_factory):
    """pytorch/vision#9606: blocks freed while kernels reading them are queued must not receive pixels."""
    device, size, n = torch.device("cuda"), (512, 384), 8
    jpegs = [image_factory.bytes("JPEG", size, seed=i, quality=90) for i in range(n)]
    numel, wrong = 3 * size[0] * size[1], 0
    for _ in range(10):
        blocks = [torch.full((numel,), 7, dtype=torch.uint8, device=device) for _ in range(n)]  # a decoded image's size
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # a long kernel, so the reads below are still queued when the blocks are freed
        sums = [block.sum(dtype=torch.int64) for block in blocks]
        del blocks
        list(decode_jpegs(jpegs, [size] * n, device))
        torch.cuda.synchronize()
        wrong += sum(int(total) != 7 * numel for total in sums)
    assert wrong == 0


def test_the_header_walk_skips_fill_bytes_and_stops_at_damage(image_factory):
    jpeg = image_factory.encode(image_factory.pil((120, 90), seed=1), "JPEG")
    padded = jpeg[:2] + b"\xff\xff" + jpeg[2:]  # fill bytes before a marker are legal
    assert read_header(padded) == read_header(jpeg) and header_end(padded) == header_end(jpeg) + 2
    cut = jpeg[:40]  # a segment that runs past the end
    assert read_header(cut) is None and header_end(cut) is None and device_jpeg_size(cut) is None
