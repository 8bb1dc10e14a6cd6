"""Hostile images on the REST API: a one-line 422 or a bounded cost, never a crash or a stall."""

from __future__ import annotations

import io
import struct
import time
import zlib

import httpx
from PIL import Image, ImageDraw
from serve_helpers import encode


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` and holds a few bytes of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(10))) + chunk(b"IEND", b"")


def _frames(count: int, side: int, mode: str = "P") -> list[Image.Image]:
    frames = []
    for i in range(count):
        frame = Image.new(mode, (side, side), 0)
        ImageDraw.Draw(frame).point((i % side, (i // side) % side), fill=1 + i % 200)
        frames.append(frame)
    return frames


def _animated(fmt: str, count: int, side: int, mode: str = "P") -> bytes:
    frames = _frames(count, side, mode)
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:])
    return buffer.getvalue()


def test_hostile_images_answer_one_line_or_a_bounded_score(server, auth):
    truncated = encode(Image.new("RGB", (512, 512), (9, 9, 9)), "JPEG")
    cases = {
        "header.png": (_png_header(100_000, 100_000), 422, "image too large: 10,000,000,000 pixels, over "),
        "bomb.png": (encode(Image.new("L", (3000, 2000))), 422, "image too large: 3000x2000 is 6,000,000 pixels; "
                                                                "the limit is 1,000,000"),
        "cut.jpg": (truncated[:len(truncated) // 2], 422, "corrupt or unsupported JPEG image: image file is truncated"),
        "frames.gif": (_animated("GIF", 3000, 64), 200, None),
        "frames.tiff": (_animated("TIFF", 250, 32, "RGB"), 200, None),
        "frames.apng": (_animated("PNG", 1000, 64, "RGB"), 200, None),
        "frames.webp": (_animated("WEBP", 300, 64, "RGB"), 200, None),
    }
    for name, (data, status, detail) in cases.items():
        started = time.monotonic()
        answer = httpx.post(f"{server.url}/v1/detect", headers=auth, files={"file": (name, data, "image/png")}, timeout=60)
        assert answer.status_code == status, (name, answer.text)
        assert time.monotonic() - started < 20, name  # the first frame only, whatever the frame count
        if detail:
            assert answer.json()["detail"].startswith(detail) and "\n" not in answer.json()["detail"]
        else:
            assert answer.json()["width"] in (32, 64) and 0 <= answer.json()["score"] <= 1
    batch = httpx.post(f"{server.url}/v1/detect/batch", headers=auth, timeout=60,
                       files=[("files", (name, data, "image/png")) for name, (data, _, _) in cases.items()])
    results = batch.json()["results"]
    assert [r["score"] is not None for r in results] == [status == 200 for _, status, _ in cases.values()]
