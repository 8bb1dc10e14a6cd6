"""collect_evidence end to end: real checkers, stripped and broken inputs, never an exception."""

from __future__ import annotations

import io

import pytest
from forensics_helpers import encode
from PIL import Image, PngImagePlugin

from fakescope.detection import Evidence
from fakescope.errors import ConfigError
from fakescope.forensics import EVIDENCE_KINDS, collect_evidence, fuse
from fakescope.io.image import decode_image


def test_signed_ai_image_end_to_end(photo, sign):
    signed = sign(encode(photo, "PNG"), "image/png", "trainedAlgorithmicMedia")
    loaded = decode_image(signed)
    records = collect_evidence(loaded.data, loaded.image)
    assert [r.kind for r in records] == list(EVIDENCE_KINDS)
    assert records[0].decisive and records[1].score is None and records[2].score is None
    fused = fuse(0.1, records, 0.5, (0.4, 0.6))
    assert (fused.verdict, fused.decided_by) == ("ai", "c2pa")
    assert all(isinstance(r.to_dict(), dict) for r in records)


def test_a_records_repr_says_what_and_why_with_data_as_its_keys(photo, sign):
    signed = sign(encode(photo, "PNG"), "image/png", "trainedAlgorithmicMedia")
    loaded = decode_image(signed)
    manifest, _, watermark = collect_evidence(loaded.data, loaded.image)
    assert repr(manifest) == (f"Evidence('c2pa', score={round(manifest.score, 3)}, detail={manifest.detail!r}, decisive=True, "
                              f"data=[{', '.join(manifest.data)}])")
    assert repr(watermark) == f"Evidence('watermark', score=None, detail={watermark.detail!r}, data=[marks])"
    assert len(repr(watermark)) < 120 < len(str(watermark.to_dict()))  # the bit counts stay in to_dict()
    broken = Evidence("c2pa", None, "cannot read the manifest", error="truncated JUMBF box")
    assert repr(broken) == ("Evidence('c2pa', score=None, detail='cannot read the manifest', error='truncated JUMBF box', "
                            "data=[])")


def test_reencoding_strips_all_evidence_without_crash(photo, sign):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "cat\nSteps: 20, Sampler: Euler a, Seed: 1")
    signed = sign(encode(photo, "PNG", pnginfo=info), "image/png", "trainedAlgorithmicMedia")
    stripped = encode(Image.open(io.BytesIO(signed)).convert("RGB"), "JPEG", quality=90)
    loaded = decode_image(stripped)
    records = collect_evidence(loaded.data, loaded.image)
    assert [r.score for r in records] == [None, None, None] and not any(r.error for r in records)
    fused = fuse(0.3, records, 0.5, (0.4, 0.6))
    assert (fused.probability, fused.verdict, fused.decided_by) == (0.3, "real", "pixel")


@pytest.mark.parametrize("garbage", [b"", b"\xff\xd8\xff\xe1\x00", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
                                     b"RIFF\x00\x00\x00\x00WEBPjumbc2pa", b"jumb c2pa " * 100])
def test_garbage_bytes_never_raise(garbage):
    records = collect_evidence(garbage, Image.new("RGB", (300, 300), "gray"))
    assert [r.kind for r in records] == list(EVIDENCE_KINDS)
    assert all(r.score is None for r in records)


def test_truncated_signed_file_gives_error_records(photo, sign):
    signed = sign(encode(photo, "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    records = collect_evidence(signed[:5000], photo, kinds=("c2pa", "metadata"))
    assert records[0].error and records[0].score is None
    assert records[1].error and "truncated" in records[1].error


def test_pixels_only_and_kind_selection(photo):
    records = collect_evidence(None, photo, kinds=("watermark",))
    assert len(records) == 1 and records[0].kind == "watermark"
    assert [r.kind for r in collect_evidence(None, photo, kinds="watermark")] == ["watermark"]  # not w, a, t, ...
    assert collect_evidence(None, photo, kinds=()) == []
    with pytest.raises(ConfigError, match="unknown evidence kind"):
        collect_evidence(None, photo, kinds=("c2pa", "exif"))


def test_checker_crash_becomes_an_error_record(photo):
    records = collect_evidence(b"", "not an image", kinds=("watermark",))  # type: ignore[arg-type]
    assert records[0].score is None and records[0].error.startswith("AttributeError")
