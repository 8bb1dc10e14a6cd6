"""C2PA manifests signed here with a test certificate, read back through check_c2pa."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from forensics_helpers import IPTC, encode
from PIL import Image

from fakescope.detector import Detector
from fakescope.forensics import check_c2pa, fuse
from fakescope.forensics.content_credentials import has_jumbf
from fakescope.forensics.fusion import PIXEL_ONLY

FORMATS = [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]


@pytest.mark.parametrize("fmt,mime", FORMATS)
def test_signed_ai_manifest_is_decisive_and_names_generator(photo, sign, fmt, mime):
    signed = sign(encode(photo.resize((128, 128)), fmt), mime, "trainedAlgorithmicMedia")
    assert has_jumbf(signed)  # the pre-check's premise holds for every embedding we write
    ev = check_c2pa(signed)
    assert ev.kind == "c2pa" and ev.decisive and ev.score == 0.99
    assert ev.data["digital_source_type"] == "trainedAlgorithmicMedia"
    assert ev.data["claim_generator"] == "fakescope-tests 1.0"
    assert ev.data["signer"] == "Fakescope Test / Test Signer"
    assert ev.data["integrity"] == "intact" and ev.data["trusted"] is False
    assert ev.data["validation_state"] == "Valid"
    assert ev.data["failures"] == ["signingCredential.untrusted"]
    assert ev.data["actions"] == [{"action": "c2pa.created", "digital_source_type": "trainedAlgorithmicMedia",
                                   "software_agent": None}]
    assert "signer not on a configured trust list" in ev.detail


def test_trust_anchor_makes_signer_trusted(photo, sign, signing_chain, monkeypatch, tmp_path):
    signed = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    ev = check_c2pa(signed, trust_anchors=signing_chain["root"].decode())
    assert ev.data["validation_state"] == "Trusted" and ev.data["trusted"] is True
    assert ev.score == 0.999 and ev.decisive
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_chain["root"])
    monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(anchors))
    assert check_c2pa(signed).data["trusted"] is True
    monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(tmp_path / "missing.pem"))
    missing = check_c2pa(signed)
    assert missing.score is None and "missing.pem" in missing.error


def test_camera_capture_manifest_lowers_but_does_not_decide(photo, sign, signing_chain):
    signed = sign(encode(photo.resize((128, 128)), "PNG"), "image/png", "digitalCapture")
    untrusted = check_c2pa(signed)
    assert not untrusted.decisive and untrusted.score == 0.3
    assert untrusted.data["digital_source_type"] == "digitalCapture"
    trusted = check_c2pa(signed, trust_anchors=signing_chain["root"].decode())
    assert not trusted.decisive and trusted.score == 0.05


def test_ai_ingredient_placed_into_a_photo_is_partly_generated(photo, sign, sign_manifest):
    """An edited camera photo with a generated element placed in is a composite, not a wholly AI image."""
    capture = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "digitalCapture")
    sticker = sign(encode(photo.resize((96, 96)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    edited = sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["photo"]}},
        {"action": "c2pa.placed", "parameters": {"ingredientIds": ["sticker"]}},
    ], [("photo", "parentOf", capture), ("sticker", "componentOf", sticker)])
    ev = check_c2pa(edited)
    assert ev.decisive and ev.score == 0.95 and ev.data["generated"] == "part"
    assert "ingredient declaring trainedAlgorithmicMedia" in ev.detail and "partly generated" in ev.detail
    # the same AI image opened and edited (its parent) is still wholly generated, as ChatGPT's are
    reopened = sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}], [("parent", "parentOf", sticker)])
    ev = check_c2pa(reopened)
    assert ev.score == 0.99 and ev.data["generated"] == "whole"
    assert ev.detail.startswith("signed C2PA manifest declares trainedAlgorithmicMedia")


@pytest.mark.parametrize("origin", [{"action": "c2pa.created", "digitalSourceType": IPTC + "digitalCapture"},
                                    {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalArt"}])
def test_a_generative_edit_of_a_human_made_image_is_partly_generated(photo, sign_manifest, origin):
    """A photo (or a drawing) edited with a generative tool declares trainedAlgorithmicMedia on the edit, not on
    its creation: it read as wholly generated (0.99)."""
    edited = sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        origin, {"action": "c2pa.edited", "digitalSourceType": IPTC + "trainedAlgorithmicMedia",
                 "softwareAgent": "Generative Fill"}])
    ev = check_c2pa(edited)
    assert ev.decisive and ev.score == 0.95 and ev.data["generated"] == "part", ev.detail
    assert ev.detail.startswith("signed C2PA manifest declares trainedAlgorithmicMedia (not as the image's sole "
                                "origin: partly generated) (software agent Generative Fill)")


def test_the_actions_reported_come_in_the_same_order_in_every_process(photo, sign, sign_manifest, tmp_path):
    """c2pa gives a store's manifests in an order that changes from one process to the next (a Rust HashMap), and the
    ingredients' actions were reported in that order, so the same file's evidence JSON changed between runs."""
    ingredients = [(f"part{i}", "componentOf", sign(encode(photo.resize((64 + 8 * i,) * 2), "JPEG"), "image/jpeg", term))
                   for i, term in enumerate(["digitalCapture", "trainedAlgorithmicMedia", "digitalArt", "minorHumanEdits"])]
    image = tmp_path / "composite.jpg"
    image.write_bytes(sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalArt"},
        *({"action": "c2pa.placed", "parameters": {"ingredientIds": [label]}} for label, _, _ in ingredients)], ingredients))
    read = ("import json, sys; from fakescope.forensics import check_c2pa; "
            "print(json.dumps(check_c2pa(open(sys.argv[1], 'rb').read()).data['actions']))")
    runs = [subprocess.Popen([sys.executable, "-c", read, str(image)], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    reported = [json.loads(run.communicate(timeout=120)[0]) for run in runs]
    assert len(reported[0]) == 9 and all(actions == reported[0] for actions in reported), reported


def test_placed_camera_photo_does_not_make_a_capture(photo, sign, sign_manifest):
    capture = sign(encode(photo.resize((96, 96)), "JPEG"), "image/jpeg", "digitalCapture")
    collage = sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        {"action": "c2pa.created", "digitalSourceType": IPTC + "digitalArt"}, {"action": "c2pa.placed", "parameters": {"ingredientIds": ["photo"]}}], [("photo", "componentOf", capture)])
    ev = check_c2pa(collage)
    assert ev.score is None and ev.data.get("digital_source_type") != "digitalCapture"


@pytest.mark.parametrize("term,score", [("algorithmicMedia", None), ("screenCapture", None),
                                        ("compositeSynthetic", None), ("compositeCapture", 0.3)])
def test_other_source_types_are_named_not_hidden(photo, sign, term, score):
    """algorithmicMedia (made by an algorithm without training data) is not generative AI; a composite
    of captures (HDR, panorama) is a capture; whatever the term, the record names it."""
    ev = check_c2pa(sign(encode(photo.resize((128, 128)), "PNG"), "image/png", term))
    assert ev.score == score and not ev.decisive and ev.data["digital_source_type"] == term
    assert f"declares {term}" in ev.detail


def test_tampered_pixels_break_integrity_and_the_manifest_scores_nothing(photo, sign):
    """A manifest whose hashes fail vouches for nothing: it was a 0.9 unsigned AI claim that decided `ai`."""
    signed = bytearray(sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia"))
    signed[-300] ^= 0x01  # inside the entropy-coded scan, covered by the data hash
    ev = check_c2pa(bytes(signed))
    assert ev.data["integrity"] == "broken" and "assertion.dataHash.mismatch" in ev.data["failures"]
    assert ev.score is None and not ev.decisive and "declares_ai" not in ev.data
    assert ev.data["digital_source_type"] == "trainedAlgorithmicMedia"  # still reported
    assert "does not vouch for these bytes" in ev.detail and "ignored" in ev.detail
    fused = fuse(0.1, [ev], 0.5, (0.3, 0.7))
    assert (fused.verdict, fused.decided_by) == ("real", "pixel")  # the pixel score decides
    assert "; no provenance decided; ignored c2pa: C2PA manifest declares trainedAlgorithmicMedia, but" in fused.reason


def _with_segments_of(donor: bytes, photo: bytes, fmt: str) -> bytes:
    """`photo` with the donor's C2PA store copied in: its APP11 segments (JPEG) or caBX chunk (PNG) after the
    first header segment, as a metadata copier would."""
    if fmt == "JPEG":
        parts, at = [], 2
        while donor[at + 1] != 0xDA:
            length = int.from_bytes(donor[at + 2:at + 4], "big")
            if donor[at + 1] == 0xEB:
                parts.append(donor[at:at + 2 + length])
            at += 2 + length
        return photo[:2] + b"".join(parts) + photo[2:]
    at, parts = 8, []
    while at < len(donor):
        length = int.from_bytes(donor[at:at + 4], "big")
        if donor[at + 4:at + 8] == b"caBX":
            parts.append(donor[at:at + 12 + length])
        at += 12 + length
    ihdr_end = 8 + 12 + int.from_bytes(photo[8:12], "big")
    return photo[:ihdr_end] + b"".join(parts) + photo[ihdr_end:]


@pytest.mark.parametrize("fmt,mime", FORMATS[:2])
def test_a_manifest_copied_into_another_image_does_not_pass_and_scores_nothing(photo, sign, fmt, mime):
    """Copying an AI image's manifest into a real photo made the photo read `ai` (0.9, an 'unsigned claim')."""
    donor = sign(encode(photo.resize((128, 128)), fmt), mime, "trainedAlgorithmicMedia")
    other = encode(photo.rotate(90).resize((128, 128)), fmt)
    copied = _with_segments_of(donor, other, fmt)
    assert has_jumbf(copied) and Image.open(io.BytesIO(copied)).size == (128, 128)
    ev = check_c2pa(copied)
    assert ev.data["present"] and ev.data["integrity"] == "broken", ev.detail
    assert any(code.endswith("Hash.mismatch") for code in ev.data["failures"]), ev.data["failures"]
    assert ev.score is None and not ev.decisive and "does not vouch for these bytes" in ev.detail
    assert check_c2pa(donor).decisive  # the donor itself still reads as signed AI


def test_truncated_and_corrupt_manifests_give_error_records(photo, sign):
    signed = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    truncated = check_c2pa(signed[: len(signed) // 3])
    assert truncated.score is None and truncated.error and truncated.data == {"present": True}
    corrupt = bytearray(signed)
    at = corrupt.find(b"c2pa.actions")
    corrupt[at + 40] ^= 0xFF
    broken = check_c2pa(bytes(corrupt))
    assert broken.score is None and not broken.decisive and broken.error


def test_no_manifest_and_reencoded_copy(photo, sign):
    assert check_c2pa(encode(photo, "PNG")).data == {"present": False}
    assert check_c2pa(None).detail == "no encoded bytes to read a manifest from"
    signed = sign(encode(photo.resize((128, 128)), "PNG"), "image/png", "trainedAlgorithmicMedia")
    reencoded = encode(Image.open(io.BytesIO(signed)).convert("RGB"), "JPEG", quality=90)
    assert not has_jumbf(reencoded)
    assert check_c2pa(reencoded).score is None



def test_a_pixel_only_real_carries_the_caveat_and_a_manifest_backed_verdict_does_not(photo, sign, tiny_model_dir):
    detector = Detector.load(tiny_model_dir, threshold=0.99, device="cpu")  # the tiny model's pixel verdict: real
    made = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    captured = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "digitalCapture")
    stripped = encode(Image.open(io.BytesIO(made)).convert("RGB"), "JPEG", quality=90)  # manifest gone, as re-shared
    ai, real, bare = detector.predict([made, captured, stripped])
    assert (ai.verdict, ai.decided_by, ai.caveat) == ("ai", "c2pa", None)
    assert (real.verdict, real.caveat) == ("real", None) and "digitalCapture" in real.reason
    assert (bare.verdict, bare.decided_by, bare.caveat) == ("real", "pixel", PIXEL_ONLY)
    assert bare.to_dict()["caveat"] == PIXEL_ONLY and ai.to_dict()["caveat"] is None


def test_jpeg_precheck_searches_the_header_unless_it_is_damaged(photo, sign):
    plain = encode(photo.resize((64, 64)), "JPEG")
    assert not has_jumbf(plain + b"jumb c2pa")  # bytes after the image data are no place for a manifest
    signed = sign(plain, "image/jpeg", "trainedAlgorithmicMedia")
    assert has_jumbf(signed) and signed.index(b"jumb") < signed.index(b"\xff\xda")  # APP11, before the scan
    damaged = plain[:2] + b"\xff\xe0\xff\xff" + b"jumb c2pa"  # a segment longer than the file: search it all
    assert has_jumbf(damaged)


def test_readers_in_many_threads_share_one_context(photo, sign):
    signed = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    with ThreadPoolExecutor(8) as pool:  # decoding workers read manifests concurrently
        results = list(pool.map(lambda _: check_c2pa(signed), range(400)))
    assert results[0].decisive and all(r == results[0] for r in results)

@pytest.mark.shared
def test_published_ai_images_read_as_ai(shared_data):
    files = sorted((shared_data / "provenance-c2pa-ai").glob("*.png"))
    if len(files) < 5:
        pytest.skip(f"expected 5 signed images in {shared_data / 'provenance-c2pa-ai'}")
    for path in files:
        ev = check_c2pa(path.read_bytes())
        assert ev.decisive and ev.score == 0.99, (path.name, ev.detail)
        assert ev.data["digital_source_type"] == "trainedAlgorithmicMedia"
        # Offline there is no trust list: every real signer is untrusted, and these certificates
        # have expired, so c2pa says Invalid although the signature and hashes verify.
        assert ev.data["validation_state"] == "Invalid" and ev.data["trusted"] is False
        assert ev.data["integrity"] == "intact"
        assert set(ev.data["failures"]) == {"signingCredential.untrusted", "signingCredential.expired"}
        assert ev.data["signer"] in {"OpenAI / Truepic Lens CLI in Sora", "Google LLC / Google Media Processing Services"}


@pytest.mark.shared
def test_a_published_manifest_copied_into_a_real_photo_scores_nothing(shared_data):
    """A Google-signed AI manifest moved into a real photo's PNG read as `ai` 0.9 before."""
    donor, photo = shared_data / "provenance-c2pa-ai" / "lady.png", shared_data / "seed-examples" / "00152.png"
    if not (donor.is_file() and photo.is_file()):
        pytest.skip(f"needs {donor} and {photo}")
    ev = check_c2pa(_with_segments_of(donor.read_bytes(), photo.read_bytes(), "PNG"))
    assert ev.data["integrity"] == "broken" and "assertion.boxesHash.mismatch" in ev.data["failures"]
    assert ev.score is None and not ev.decisive


def test_tampered_parent_manifest_breaks_integrity(photo, sign, sign_manifest):
    """Rewriting the generated parent's source type to a capture term (same length, so the store still
    parses) breaks that ingredient's hashes: c2pa reports it under ingredientDeltas, and the image must
    not read as a signed capture."""
    generated = sign(encode(photo.resize((96, 96)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    reopened = sign_manifest(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}], [("parent", "parentOf", generated)])
    forged = reopened.replace(b"digitalsourcetype/trainedAlgorithmicMedia", b"digitalsourcetype/aaaaaaaa/digitalCapture")
    assert forged != reopened
    ev = check_c2pa(forged)
    assert ev.data["integrity"] == "broken" and "assertion.hashedURI.mismatch" in ev.data["failures"]
    assert ev.score is None and "validation failed" in ev.detail


@pytest.mark.parametrize("code,kind", [
    ("signingCredential.untrusted", "trust"),
    ("signingCredential.expired", "trust"),
    ("signingCredential.invalid", "trust"),
    ("signingCredential.ocsp.skipped", "trust"),
    ("signingCredential.ocsp.inaccessible", "trust"),
    ("signingCredential.ocsp.unknown", "trust"),
    ("claimSignature.outsideValidity", "trust"),
    ("algorithm.deprecated", "trust"),
    ("timeStamp.untrusted", "trust"),
    ("timeStamp.outsideValidity", "trust"),
    ("timeStamp.mismatch", "trust"),
    ("timeStamp.malformed", "trust"),
    ("signingCredential.ocsp.revoked", "revoked"),
    ("signingCredential.revoked", "revoked"),
    ("claimSignature.mismatch", "integrity"),
    ("claimSignature.missing", "integrity"),
    ("assertion.dataHash.mismatch", "integrity"),
    ("assertion.boxesHash.mismatch", "integrity"),
    ("assertion.bmffHash.mismatch", "integrity"),
    ("assertion.hashedURI.mismatch", "integrity"),
    ("ingredient.hashedURI.mismatch", "integrity"),
    ("assertion.missing", "integrity"),
    ("claim.malformed", "integrity"),
    ("algorithm.unsupported", "integrity"),
    ("general.error", "integrity"),
    ("com.example.unlisted", "integrity"),
])
def test_failure_codes_are_classified_by_what_they_mean(code, kind):
    """Only three codes counted as trust problems; every other one, timeStamp.outsideValidity or an OCSP
    responder out of reach included, made the manifest count as tampered and be ignored."""
    from fakescope.forensics.content_credentials import failure_kind

    assert failure_kind(code) == kind


def _read_with_failures(signed: bytes, *codes: str, outcome: str = "failure", state: str = "Invalid"):
    """A signed image's real store and results, with `codes` added to the active manifest's failures (or `outcome`)."""
    import c2pa

    from fakescope.forensics.content_credentials import _context, _evidence_from_store

    with c2pa.Reader.try_create("image/jpeg", io.BytesIO(signed), None, _context("")) as reader:
        store, results = json.loads(reader.json()), reader.get_validation_results()
    results["activeManifest"].setdefault(outcome, []).extend({"code": code} for code in codes)
    return _evidence_from_store(store, state, results)


def test_the_credential_says_revocation_was_not_checked_without_an_embedded_ocsp_response(photo, sign, signing_chain):
    """Offline, revocation is seen only in an OCSP response the manifest carries; without one, 'signer trusted' read
    as if the certificate were known not to be revoked."""
    from fakescope.forensics.content_credentials import NO_OCSP

    signed = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "digitalCapture")
    trusted = check_c2pa(signed, trust_anchors=signing_chain["root"].decode())
    assert f"signer trusted (chains to a configured trust anchor), {NO_OCSP};" in trusted.detail, trusted.detail
    assert trusted.data["revocation_checked"] is False
    assert f"signer not on a configured trust list, {NO_OCSP};" in check_c2pa(signed).detail
    stapled = _read_with_failures(signed, "signingCredential.ocsp.notRevoked", outcome="success", state="Trusted")
    assert stapled.data["revocation_checked"] is True and stapled.score == 0.05
    assert "revocation" not in stapled.detail and "signer trusted (chains to a configured trust anchor);" in stapled.detail


def test_a_time_stamp_or_ocsp_problem_leaves_the_manifest_scoring_and_a_revoked_signer_does_not(photo, sign):
    signed = sign(encode(photo.resize((128, 128)), "JPEG"), "image/jpeg", "trainedAlgorithmicMedia")
    late = _read_with_failures(signed, "timeStamp.outsideValidity", "signingCredential.ocsp.inaccessible")
    assert late.decisive and late.score == 0.99 and late.data["integrity"] == "intact" and not late.data["ignored"]
    assert "unverified: signingCredential.ocsp.inaccessible, timeStamp.outsideValidity" in late.detail
    revoked = _read_with_failures(signed, "signingCredential.ocsp.revoked")
    assert revoked.score is None and not revoked.decisive
    assert revoked.data["integrity"] == "intact" and revoked.data["revoked"] and revoked.data["ignored"]
    assert "validation failed (signingCredential.ocsp.revoked)" in revoked.detail
    assert "(its signing certificate was revoked); ignored" in revoked.detail
    fused = fuse(0.2, [revoked], 0.5, (0.3, 0.7))
    assert "ignored c2pa: C2PA manifest declares trainedAlgorithmicMedia, but validation failed" in fused.reason


def test_a_signed_manifests_own_text_is_shown_on_one_line(photo, sign_manifest):
    """Anyone can sign a manifest: a software agent with a line break and a terminal escape could fake a line of output."""
    signed = sign_manifest(encode(photo.resize((64, 64)), "PNG"), "image/png", [
        {"action": "c2pa.created", "digitalSourceType": IPTC + "trainedAlgorithmicMedia",
         "softwareAgent": "Gen 1\nverdict: real\x1b[2K"}])
    ev = check_c2pa(signed)
    assert ev.decisive and "(software agent Gen 1 verdict: real [2K)" in ev.detail, ev.detail
    assert ev.data["actions"][0]["software_agent"] == "Gen 1 verdict: real [2K"
