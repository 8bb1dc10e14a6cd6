"""Every fusion rule of docs/forensics.md, on evidence records and on real checker output."""

from __future__ import annotations

import pytest
from forensics_helpers import encode
from PIL import Image, PngImagePlugin

from fakescope.detection import Evidence
from fakescope.errors import ConfigError
from fakescope.forensics import collect_evidence, fuse
from fakescope.forensics.fusion import CONFLICT, CONTRADICTED, OUTRANKED, PIXEL_ONLY
from fakescope.forensics.metadata import DECLARED

BAND = (0.4, 0.6)
AI_MANIFEST = Evidence("c2pa", 0.99, "signed manifest declares trainedAlgorithmicMedia", decisive=True)
WATERMARK = Evidence("watermark", 0.99, "Stable Diffusion XL invisible watermark decoded", decisive=True)
A1111 = Evidence("metadata", 0.95, DECLARED + "text chunk(s) 'parameters' written by Stable Diffusion web UI",
                 data={"declares_ai": True})
CAMERA_TRUSTED = Evidence("c2pa", 0.05, "signed C2PA manifest declares digitalCapture", data={"trusted": True})
CAMERA_UNTRUSTED = Evidence("c2pa", 0.3, "signed C2PA manifest declares digitalCapture; signer not on a configured "
                            "trust list", data={"trusted": False})
CAMERA_EXIF = Evidence("metadata", 0.45, "camera EXIF Canon EOS R5")
NOTHING = [Evidence("c2pa", None, "no embedded C2PA manifest"), Evidence("watermark", None, "no mark"),
           Evidence("metadata", None, "broken", error="EXIF unreadable")]


@pytest.mark.parametrize("pixel,verdict", [(0.7, "ai"), (0.6, "ai"), (0.5, "uncertain"), (0.4, "uncertain"),
                                           (0.39, "real")])
def test_band_rule_without_evidence(pixel, verdict):
    fused = fuse(pixel, NOTHING, 0.5, BAND)
    assert (fused.probability, fused.verdict, fused.decided_by) == (pixel, verdict, "pixel")
    assert fused.reason.endswith("; no provenance decided")
    unchecked = fuse(pixel, iter([]), 0.5, BAND)  # --no-provenance: no checker ran, no record
    assert unchecked.verdict == verdict and unchecked.reason.endswith("; provenance not checked")
    caveat = None if verdict == "ai" else PIXEL_ONLY  # a pixel-only real or uncertain is not proof
    assert fused.caveat == unchecked.caveat == caveat


def test_provenance_either_way_leaves_no_caveat():
    assert fuse(0.02, [AI_MANIFEST, *NOTHING], 0.5, BAND).caveat is None
    assert fuse(0.1, [A1111], 0.5, BAND).caveat is None
    backed = fuse(0.3, [CAMERA_TRUSTED, *NOTHING], 0.5, BAND)
    assert (backed.verdict, backed.caveat) == ("real", None)
    assert fuse(0.45, [CAMERA_EXIF], 0.5, BAND).caveat == PIXEL_ONLY  # an unsigned hint, easily copied, backs nothing
    assert fuse(0.2, [CAMERA_EXIF], 0.5, BAND).caveat == PIXEL_ONLY
    assert fuse(None, NOTHING, 0.5, BAND).caveat is None  # no pixel score either: the reason says so


def test_decisive_evidence_overrides_a_real_looking_pixel_score():
    fused = fuse(0.02, [WATERMARK, CAMERA_EXIF], 0.5, BAND)
    assert (fused.verdict, fused.decided_by, fused.probability) == ("ai", "watermark", 0.99)
    assert "watermark decoded" in fused.reason
    assert fused.reason.endswith("; despite metadata: camera EXIF Canon EOS R5")  # the conflict is shown, not hidden
    despite = fuse(0.02, [WATERMARK, CAMERA_UNTRUSTED], 0.5, BAND)  # anyone can sign "this is a capture"
    assert (despite.verdict, despite.decided_by) == ("ai", "watermark")
    assert "despite c2pa: signed C2PA manifest declares digitalCapture; signer not" in despite.reason
    assert "despite" not in fuse(0.02, [WATERMARK], 0.5, BAND).reason
    assert fuse(0.02, [WATERMARK, AI_MANIFEST], 0.5, BAND).decided_by == "c2pa"
    assert fuse(None, [AI_MANIFEST], 0.5, BAND).probability == 0.99
    composite = Evidence("c2pa", 0.95, "signed C2PA manifest declares compositeWithTrainedAlgorithmicMedia", decisive=True)
    both = fuse(0.02, [composite, WATERMARK], 0.5, BAND)  # the signed manifest names it, the watermark's score stays
    assert (both.decided_by, both.probability) == ("c2pa", 0.99) and "composite" in both.reason



@pytest.mark.parametrize("pixel", [0.02, 0.5, 0.98, None])
def test_a_watermark_against_a_trusted_camera_manifest_is_a_conflict(pixel):
    """The watermark decided `ai` over a trusted signer's intact capture manifest: both are strong and one of them is
    wrong (a signer's key or camera pipeline abused, or a forged mark), so neither decides and both are shown."""
    fused = fuse(pixel, [CAMERA_TRUSTED, WATERMARK, CAMERA_EXIF], 0.5, BAND)
    assert (fused.verdict, fused.decided_by, fused.probability, fused.caveat) == ("uncertain", CONFLICT, 0.5, None)
    shown = "no pixel score" if pixel is None else f"pixel model {pixel:.3f}"
    assert fused.reason == (f"{CONTRADICTED}; watermark: Stable Diffusion XL invisible watermark decoded; against c2pa: "
                            f"signed C2PA manifest declares digitalCapture; {shown} (not deciding)")
    assert fuse(pixel, [CAMERA_TRUSTED, WATERMARK], 0.7, (0.6, 0.8)).probability == 0.7  # at the threshold, in the band

def test_unsigned_declaration_decides_ai_and_says_so():
    fused = fuse(0.1, [A1111], 0.5, BAND)
    assert (fused.verdict, fused.decided_by, fused.probability) == ("ai", "metadata", 0.95)
    assert fused.reason == "metadata: unsigned declaration (forgeable, easily stripped): text chunk(s) 'parameters' " \
                           "written by Stable Diffusion web UI"


def test_a_declaration_read_from_a_jpeg_is_one_line_said_once(photo):
    """The reason read 'metadata (unsigned declaration, ...): metadata declares AI generation (unsigned): ...' and
    ended in the JPEG quality hint, which says nothing about a declaration."""
    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly"
    evidence = collect_evidence(encode(photo.resize((64, 64)), "JPEG", exif=exif, quality=85), None, kinds="metadata")
    assert evidence[0].data["jpeg_quality"] == 85
    assert fuse(0.1, evidence, 0.5, BAND).reason == "metadata: unsigned declaration (forgeable, easily stripped): " \
                                                    "EXIF Software = 'Adobe Firefly'"


@pytest.mark.parametrize(("pixel", "verdict"), [(0.02, "real"), (0.5, "uncertain"), (0.97, "ai")])
def test_a_signed_capture_manifest_outranks_unsigned_ai_metadata(pixel, verdict):
    """Forgeable metadata does not overrule a signature: a trusted camera manifest (odds x0.053) and an unsigned AI
    declaration (x19) about cancel out, so the pixel score decides, and the reason says why the metadata did not."""
    fused = fuse(pixel, [A1111, CAMERA_TRUSTED], 0.5, BAND)
    assert fused.verdict == verdict and fused.probability == pytest.approx(pixel, abs=0.01), fused
    assert fused.reason.startswith(f"pixel model {pixel:.3f} -> ") and OUTRANKED in fused.reason
    assert fuse(0.5, [A1111, CAMERA_UNTRUSTED], 0.5, BAND).verdict == "ai"  # x19 * x0.43: an unknown signer weighs less
    ignored = Evidence("c2pa", None, "C2PA manifest declares digitalCapture, but validation failed", data={"ignored": True})
    assert fuse(0.02, [A1111, ignored], 0.5, BAND).decided_by == "metadata"  # a broken manifest vouches for nothing


def test_camera_manifest_lowers_but_never_to_zero():
    fused = fuse(0.9, [CAMERA_TRUSTED], 0.5, BAND)
    assert fused.probability == pytest.approx(0.9 * 0.05 / (0.9 * 0.05 + 0.1 * 0.95))
    assert (fused.verdict, fused.decided_by) == ("real", "c2pa")  # 0.9 -> 0.32
    assert fuse(0.97, [CAMERA_TRUSTED], 0.5, BAND).verdict == "ai"  # 0.97 -> 0.63
    floor = fuse(0.2, [CAMERA_TRUSTED, CAMERA_TRUSTED, CAMERA_TRUSTED], 0.5, BAND)
    assert floor.probability == 0.01 and floor.verdict == "real"
    assert fuse(0.001, [CAMERA_TRUSTED], 0.5, BAND).probability == 0.001  # never raised either


def test_camera_exif_moves_little():
    fused = fuse(0.7, [CAMERA_EXIF], 0.5, BAND)
    assert 0.65 < fused.probability < 0.7 and fused.verdict == "ai" and fused.decided_by == "pixel"
    assert "camera EXIF" in fused.reason


def test_without_pixel_score():
    assert fuse(None, NOTHING, 0.5, BAND).verdict == "uncertain"
    assert fuse(None, NOTHING, 0.5, BAND).probability is None
    only_camera = fuse(None, [CAMERA_TRUSTED], 0.5, BAND)
    assert only_camera.probability == pytest.approx(0.05) and only_camera.decided_by == "c2pa"


def test_band_must_hold_threshold():
    with pytest.raises(ConfigError):
        fuse(0.5, [], 0.7, BAND)
    assert fuse(0.5, [], 0.5, (0.5, 0.5)).verdict == "ai"
    assert fuse(0.49, [], 0.5, (0.5, 0.5)).verdict == "real"


@pytest.mark.parametrize("pixel", [2.0, -0.1, 1.0000001])
def test_a_pixel_probability_outside_0_1_is_refused(pixel):
    with pytest.raises(ConfigError, match=r"^pixel probability must be in \[0, 1\] \(or None\), got "):
        fuse(pixel, [AI_MANIFEST], 0.5, BAND)
    assert fuse(1.0, [], 0.5, BAND).probability == 1.0 and fuse(0.0, [], 0.5, BAND).probability == 0.0


@pytest.mark.parametrize("pixel", [float("nan"), float("inf")])
def test_a_non_finite_pixel_score_counts_as_none_so_evidence_still_decides(pixel):
    signed = fuse(pixel, [AI_MANIFEST], 0.5, BAND)
    assert (signed.probability, signed.verdict, signed.decided_by) == (0.99, "ai", "c2pa")  # max(nan, 0.99) is nan
    alone = fuse(pixel, NOTHING, 0.5, BAND)
    assert (alone.probability, alone.verdict, alone.decided_by) == (None, "uncertain", "none")
    assert fuse(pixel, [CAMERA_EXIF], 0.5, BAND).probability == pytest.approx(0.45)


def test_a_camera_signed_png_with_a1111_parameters_is_not_decided_by_the_chunk(photo, sign):
    """End to end: the A1111 chunk was in the file when it was signed as a capture; the signature outranks it."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    signed = sign(encode(photo.resize((64, 64)), "PNG", pnginfo=info), "image/png", "digitalCapture")
    records = collect_evidence(signed, None, kinds=("c2pa", "metadata"))
    assert [(e.kind, e.score) for e in records] == [("c2pa", 0.3), ("metadata", 0.95)]  # test signer: untrusted
    fused = fuse(0.02, records, 0.5, BAND)
    assert fused.verdict == "real" and OUTRANKED in fused.reason, fused  # 0.02 x19 x0.43 -> 0.14
