"""The bundled model scores the same pixels the same whatever file carries them, through every front end: a lossless
format, 16 bits, an opaque alpha, an exact palette or an ICC profile is no shortcut, and a JPEG turned by its EXIF
orientation scores (and maps) as its pixels turned and saved without the tag."""

from __future__ import annotations

import functools
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_helpers import TOKEN, LiveServer  # noqa: E402

from fakescope.cli import app  # noqa: E402
from fakescope.scale import read_results, scan  # noqa: E402

SAME_AS_REFERENCE = ["tiff", "webp-lossless", "bmp", "ppm", "png-16bit", "png-rgba-opaque", "png-palette", "png-icc"]
FRONT_ENDS = ["predict", "cli", "scan", "rest"]


def _reference() -> Image.Image:
    """200 x 150 (four 112 px tiles) of gradients and noise in 256 colours, so a palette holds them exactly."""
    y, x = np.mgrid[0:150, 0:200]
    noisy = np.stack([x * 1.2, y * 1.6, (x + y) % 64 * 4], -1) + np.random.default_rng(0).normal(0, 20, (150, 200, 3))
    levels = np.clip(noisy, 0, 255).astype(np.uint8) & np.array([0xE0, 0xE0, 0xC0], np.uint8)  # 8 x 8 x 4 colours
    return Image.fromarray(levels)


def _png_16bit(image: Image.Image) -> bytes:
    """An RGB PNG of 16 bits a channel (Pillow writes none), each value v as v * 257."""
    wide = (np.asarray(image, np.uint16) * 257).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in wide.reshape(image.height, -1))
    chunks = [(b"IHDR", struct.pack(">IIBBBBB", image.width, image.height, 16, 2, 0, 0, 0)),
              (b"IDAT", zlib.compress(rows)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(struct.pack(">I", len(data)) + kind + data
                                           + struct.pack(">I", zlib.crc32(kind + data)) for kind, data in chunks)


def _encode(image: Image.Image, fmt: str, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    image = _reference()
    turned_exif = Image.Exif()
    turned_exif[0x0112] = 6  # shown turned 90 degrees clockwise
    stored_sideways = _encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=90, exif=turned_exif)
    encoded = {
        "reference": _encode(image, "PNG"),
        "tiff": _encode(image, "TIFF"),
        "webp-lossless": _encode(image, "WEBP", lossless=True),
        "bmp": _encode(image, "BMP"),
        "ppm": _encode(image, "PPM"),
        "png-16bit": _png_16bit(image),
        "png-rgba-opaque": _encode(image.convert("RGBA"), "PNG"),
        "png-palette": _encode(image.quantize(256, method=Image.Quantize.FASTOCTREE), "PNG"),
        "png-icc": _encode(image, "PNG", icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()),
        "jpeg-exif-6": stored_sideways,
        "jpeg-exif-6-turned": _encode(Image.open(io.BytesIO(stored_sideways)).transpose(Image.Transpose.ROTATE_270), "PNG"),
    }
    folder = tmp_path_factory.mktemp("formats")
    for name, data in encoded.items():
        (folder / f"{name}.img").write_bytes(data)  # no suffix to go by: the bytes name the format
    assert np.array_equal(np.asarray(Image.open(folder / "png-palette.img").convert("RGB")), np.asarray(image))
    return {name: folder / f"{name}.img" for name in encoded}


@pytest.fixture(scope="module")
def detector():
    from fakescope.detector import Detector

    return Detector.load(device="cpu", workers=2)


@pytest.fixture(scope="module")
def scores(files, detector, tmp_path_factory):
    """Each front end's P(ai) per file, computed once."""
    paths = [str(p) for p in files.values()]

    def predict():
        return [d.probability for d in detector.predict(paths)]

    def cli():
        result = CliRunner().invoke(app, ["detect", *paths, "--format", "jsonl", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        return [json.loads(line)["score"] for line in result.stdout.splitlines()]

    def scan_():
        scan(paths, out := tmp_path_factory.mktemp("scan") / "results", detector)
        rows = read_results(out).set_index("path")
        return [rows.loc[p, "score"] for p in paths]

    def rest():
        from fakescope.serve import ServeConfig

        config = ServeConfig(token=TOKEN, max_files=len(paths), jobs_dir=tmp_path_factory.mktemp("jobs"))
        with LiveServer(config, detector) as live:
            answer = httpx.post(f"{live.url}/v1/detect/batch", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60,
                                files=[("files", (Path(p).name, Path(p).read_bytes())) for p in paths])
        return [record["score"] for record in answer.json()["results"]]

    ends = {"predict": predict, "cli": cli, "scan": scan_, "rest": rest}
    return functools.cache(lambda end: dict(zip(files, ends[end](), strict=True)))


def _same(a, b) -> bool:
    return np.allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("front_end", FRONT_ENDS)
@pytest.mark.parametrize("variant", [*SAME_AS_REFERENCE, "jpeg-exif-6"])
def test_the_same_pixels_score_the_same_in_every_format_and_front_end(scores, front_end, variant):
    answers = scores(front_end)
    reference = "jpeg-exif-6-turned" if variant == "jpeg-exif-6" else "reference"
    assert _same(answers[variant], answers[reference]), (variant, answers[variant], answers[reference])
    assert _same(answers[variant], scores("predict")[reference])  # the API's P(ai), which JSON rounds to 6 places


@pytest.mark.parametrize("method", ["tiles", "cam"])
def test_an_exif_turned_jpegs_heatmap_lines_up_with_its_shown_pixels(files, detector, method):
    turned, saved_turned = (detector.explain(str(files[name]), method) for name in ("jpeg-exif-6", "jpeg-exif-6-turned"))
    assert turned.shape == saved_turned.shape and _same(turned, saved_turned)
    assert turned.shape[1] > turned.shape[0]  # landscape, as shown: 200 x 150
