"""`Detector(decode="device")`: plain JPEGs decoded and tiled on the inference device give the host path's records."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from functools import partial

import pytest
import torch

import fakescope.forensics.watermark as watermark_module
from fakescope.detector import Detector
from fakescope.errors import ConfigError
from fakescope.forensics.watermark import read_watermarks
from fakescope.io import device_jpeg


@pytest.fixture(scope="module")
def mixed_inputs(image_factory, tmp_path_factory) -> list:
    """JPEGs the device takes (several sizes, greyscale, progressive 4:4:4, one big enough for the watermark reader) and
    ones it must not."""
    folder = tmp_path_factory.mktemp("decode-inputs")
    rotated = image_factory.pil((150, 130), seed=5)
    exif = rotated.getexif()
    exif[0x0112] = 6
    files = {
        "a.jpg": image_factory.bytes("JPEG", (150, 130), seed=1),
        "b.jpg": image_factory.bytes("JPEG", (300, 260), seed=2, quality=95),  # 78,000 pixels: watermark read
        "grey.jpg": image_factory.encode(image_factory.pil((96, 80), seed=3).convert("L"), "JPEG"),
        "progressive.jpg": image_factory.bytes("JPEG", (250, 230), seed=8, progressive=True, subsampling=0),
        "cmyk.jpg": image_factory.encode(image_factory.pil((96, 80), seed=4).convert("CMYK"), "JPEG"),
        "rotated.jpg": image_factory.encode(rotated, "JPEG", exif=exif),
        "small.jpg": image_factory.bytes("JPEG", (60, 40), seed=6),  # under a tile: upscaled on the host
        "c.png": image_factory.bytes("PNG", (96, 80), seed=7),
        "corrupt.jpg": b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in files] + [str(folder / "absent.jpg"), files["a.jpg"], image_factory.pil((96, 80))]


@pytest.mark.parametrize("workers,processes", [(0, False), (2, False), (2, True)])
def test_device_decoding_gives_the_host_paths_records(tiny_model_dir, mixed_inputs, workers, processes):
    common = dict(device="cpu", workers=workers, processes=processes, batch_size=5)
    host = Detector.load(tiny_model_dir, decode="host", **common).predict(mixed_inputs, heatmap=True)
    device = Detector.load(tiny_model_dir, decode="device", **common).predict(mixed_inputs, heatmap=True)
    assert [r.to_dict() for r in device] == [r.to_dict() for r in host]  # evidence, watermark included
    assert all((d.heatmap == h.heatmap).all() for d, h in zip(device, host) if h.ok)
    assert [r.ok for r in device] == [True] * 8 + [False, False, True, True]
    watermark = next(e for e in device[1].evidence if e.kind == "watermark")
    assert watermark.detail.startswith("no known generator watermark")  # read on the decoded tensor


def test_small_device_batches_change_nothing(tiny_model_dir, mixed_inputs, monkeypatch):
    """Decoding and watermark reading in the smallest chunks (one image each) gives the same records."""
    expected = [r.to_dict() for r in Detector.load(tiny_model_dir, device="cpu", decode="device").predict(mixed_inputs)]
    real = device_jpeg.decode_jpegs
    monkeypatch.setattr(device_jpeg, "decode_jpegs", lambda *args: real(*args, max_pixels=1))
    monkeypatch.setattr(watermark_module, "read_watermarks", partial(read_watermarks, max_pixels=1))
    results = Detector.load(tiny_model_dir, device="cpu", decode="device").predict(mixed_inputs)
    assert [r.to_dict() for r in results] == expected


def test_a_jpeg_the_device_cannot_decode_goes_through_the_host(tiny_model_dir, mixed_inputs, monkeypatch):
    expected = Detector.load(tiny_model_dir, device="cpu", decode="host").predict(mixed_inputs[:3])
    real = device_jpeg.decode_jpegs

    def failing_second(encoded, sizes, device):
        for i, pixels in enumerate(real(encoded, sizes, device)):
            yield None if i == 1 else pixels

    monkeypatch.setattr(device_jpeg, "decode_jpegs", failing_second)
    results = Detector.load(tiny_model_dir, device="cpu", decode="device").predict(mixed_inputs[:3])
    assert [r.to_dict() for r in results] == [r.to_dict() for r in expected]


def test_the_host_decodes_unless_asked(tiny_model_dir):
    assert Detector.load(tiny_model_dir, device="cpu").decode == "host"
    with pytest.raises(ConfigError, match="unknown decode"):
        Detector.load(tiny_model_dir, device="cpu", decode="gpu")


def test_decoding_processes_read_watermarks_under_a_multithreaded_parent(tiny_model_dir, image_factory, tmp_path):
    """A forked decoding process that runs torch ops must not enter its parent's OpenMP pool (it hung)."""
    photo = image_factory.file(tmp_path / "photo.jpg", "JPEG", (300, 260))
    script = textwrap.dedent(f"""
        import torch
        torch.set_num_threads(2)
        torch.ones(512, 512) @ torch.ones(512, 512)  # the parent's thread pool is up before the fork
        from fakescope.detector import Detector
        detector = Detector.load({str(tiny_model_dir)!r}, device="cpu", workers=2, processes=True, decode="host")
        [result] = detector.predict([{str(photo)!r}])
        assert result.ok and any(e.kind == "watermark" and e.error is None for e in result.evidence), result
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvjpeg_scores_match_the_host_decoders(tiny_model_dir, mixed_inputs):
    cpu = Detector.load(tiny_model_dir, device="cpu", batch_size=3).predict(mixed_inputs)
    host = Detector.load(tiny_model_dir, device="cuda", decode="host", batch_size=3).predict(mixed_inputs)
    device = Detector.load(tiny_model_dir, device="cuda", decode="device", batch_size=3).predict(mixed_inputs)
    assert [r.ok for r in device] == [r.ok for r in host] == [r.ok for r in cpu]
    # batches queued ahead on CUDA, logits copied back asynchronously: the CPU's scores all the same
    assert [r.probability for r in host] == pytest.approx([r.probability for r in cpu], abs=1e-3)
    assert [r.probability for r in device] == pytest.approx([r.probability for r in host], abs=0.02)
