"""Generator watermarks embedded here with invisible-watermark, then decoded by check_watermark."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from forensics_helpers import encode, photo_like
from PIL import Image

from fakescope.forensics import KNOWN_MARKS, check_watermark, collect_watermarks, read_watermarks
from fakescope.forensics.watermark import SDXL_MESSAGE, _u_plane, _votes_in_both_orders, decode_bits

imwatermark = pytest.importorskip("imwatermark", reason="pip install --no-deps invisible-watermark")

SDXL_BITS = [int(b) for b in f"{SDXL_MESSAGE:048b}"]
PAYLOADS = {"Stable Diffusion XL": SDXL_BITS, "Stable Diffusion 2": b"SDV2", "Stable Diffusion 1": b"StableDiffusionV1"}


def embed(image: Image.Image, payload, order: str = "bgr") -> Image.Image:
    """Watermark like the reference pipelines: CompVis/Stability pass BGR, diffusers passes RGB."""
    encoder = imwatermark.WatermarkEncoder()
    encoder.set_watermark("bytes" if isinstance(payload, bytes) else "bits", payload)
    rgb = np.asarray(image)
    marked = encoder.encode(np.ascontiguousarray(rgb[..., ::-1] if order == "bgr" else rgb), "dwtDct")
    return Image.fromarray(np.ascontiguousarray(marked[..., ::-1] if order == "bgr" else marked))


def reload(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def marked(photo):
    return {(name, order): embed(photo, payload, order) for name, payload in PAYLOADS.items()
            for order in ("bgr", "rgb")}


def bgr_votes(bgr: np.ndarray, xp=np) -> np.ndarray:
    """The per-block bits check_watermark reads from HxWx3 `bgr` pixels handed to the encoder as they are (read in
    numpy, or in torch with `xp=torch`)."""
    rgb = np.ascontiguousarray(bgr[..., ::-1]).transpose(2, 0, 1)
    if xp is np:
        return _votes_in_both_orders(rgb, np)[0]
    return _votes_in_both_orders(torch.from_numpy(rgb), torch)[0].numpy()


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_vectorised_decoder_matches_the_package_bit_for_bit(photo, marked, xp):
    for image in (photo, marked[("Stable Diffusion XL", "bgr")]):
        bgr = np.ascontiguousarray(np.asarray(image)[..., ::-1])
        votes = bgr_votes(bgr, xp)
        for length in (32, 48, 136):
            reference = imwatermark.WatermarkDecoder("bits", length).decode(bgr, "dwtDct")
            assert np.array_equal(decode_bits(votes, length), np.asarray(reference, dtype=np.uint8))


def test_u_channel_is_opencvs_for_every_colour():
    cv2 = pytest.importorskip("cv2")
    b, g, r = np.meshgrid(*[np.arange(256, dtype=np.uint8)] * 3, indexing="ij")
    bgr = np.stack([b, g, r], -1).reshape(4096, 4096, 3)  # all 2**24 colours
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)[..., 1]
    assert np.array_equal(_u_plane(*np.moveaxis(bgr.astype(np.int32), -1, 0)), expected)


def test_haar_band_is_pywavelets_bit_for_bit():
    """Votes from pywt.dwt2's own approximation band equal check_watermark's on a noisy image."""
    cv2, pywt = pytest.importorskip("cv2"), pytest.importorskip("pywt")
    bgr = np.random.default_rng(0).integers(0, 256, (384, 512, 3), dtype=np.uint8)
    approx, _ = pywt.dwt2(cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)[..., 1], "haar")
    blocks = approx.reshape(48, 4, 64, 4).swapaxes(1, 2).reshape(-1, 16)[:, 1:]
    expected = np.mod(np.abs(blocks).max(axis=1), 36.0) > 18.0
    assert np.array_equal(bgr_votes(bgr), expected)


@pytest.mark.parametrize("name", list(PAYLOADS))
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_fresh_marks_decode_exactly(marked, name, order):
    ev = check_watermark(marked[(name, order)])
    assert ev.decisive and ev.score == 0.99 and ev.data["generator"] == name
    assert ev.data["marks"][name]["bit_errors"] == 0 and ev.data["marks"][name]["channel_order"] == order


def test_batched_reading_equals_one_at_a_time(photo, marked):
    images = [*marked.values(), photo, photo_like(384, seed=7), Image.new("RGB", (200, 200)), marked[("Stable Diffusion 2", "rgb")]]
    tensors = [torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images]
    batched = read_watermarks(tensors, max_pixels=3 * 512 * 512)  # 512x512 images 3 at a time, one 384, one too small
    assert batched == [check_watermark(image) for image in images]  # tensors read in torch, PIL images in numpy
    assert sum(e.decisive for e in batched) == len(marked) + 1


def test_a_failed_batch_becomes_error_records():
    records = collect_watermarks([torch.zeros(2, 300, 300, dtype=torch.uint8)])  # two channels: not RGB
    assert records[0].kind == "watermark" and records[0].score is None and records[0].error


def test_clean_images_carry_no_mark(photo):
    for image in (photo, photo_like(384, seed=7)):
        ev = check_watermark(image)
        assert ev.score is None and not ev.decisive
        for mark in KNOWN_MARKS:
            assert ev.data["marks"][mark.name]["bit_errors"] > mark.max_bit_errors


def test_fragility_measured_on_a_photo_like_image(marked):
    """The figures quoted in docs/forensics.md for the synthetic image."""
    decoded = {}
    for name in PAYLOADS:
        image = marked[(name, "bgr")]
        decoded[name] = {
            "jpeg95 4:4:4": check_watermark(reload(encode(image, "JPEG", quality=95, subsampling=0))).decisive,
            "jpeg90 4:4:4": check_watermark(reload(encode(image, "JPEG", quality=90, subsampling=0))).decisive,
            "jpeg75 4:4:4": check_watermark(reload(encode(image, "JPEG", quality=75, subsampling=0))).decisive,
            "jpeg95 4:2:0": check_watermark(reload(encode(image, "JPEG", quality=95))).decisive,
            "resize 0.5": check_watermark(image.resize((256, 256), Image.BICUBIC)).decisive,
            "png": check_watermark(reload(encode(image, "PNG"))).decisive,
        }
    expected = {"jpeg95 4:4:4": True, "jpeg90 4:4:4": True, "jpeg75 4:4:4": False,
                "jpeg95 4:2:0": False, "resize 0.5": False, "png": True}
    assert decoded == {name: expected for name in PAYLOADS}


def test_size_gates():
    assert check_watermark(Image.new("RGB", (255, 256))).detail.startswith("image too small")
    assert check_watermark(Image.new("RGB", (4097, 4096))).detail.startswith("image too large")


@pytest.mark.shared
@pytest.mark.slow
def test_fragility_on_real_photos(shared_data):
    """Measures the table in docs/forensics.md: 20 ImageNet photos resized to 512x512."""
    files = sorted((shared_data / "real-imagenet-sample").glob("*"))[::12][:20]
    if len(files) < 20:
        pytest.skip("needs 20 photos in real-imagenet-sample")
    photos = [Image.open(p).convert("RGB").resize((512, 512)) for p in files]
    ops = {
        "fresh": lambda i: i,
        "jpeg95 4:4:4": lambda i: reload(encode(i, "JPEG", quality=95, subsampling=0)),
        "jpeg90 4:2:0": lambda i: reload(encode(i, "JPEG", quality=90)),
        "resize 0.5": lambda i: i.resize((256, 256), Image.BICUBIC),
    }
    counts = {}
    for name, payload in PAYLOADS.items():
        marked_photos = [embed(p, payload) for p in photos]
        counts[name] = {op: sum(check_watermark(f(m)).data.get("generator") == name for m in marked_photos)
                        for op, f in ops.items()}
    print(counts)
    assert counts["Stable Diffusion XL"]["fresh"] >= 15 and counts["Stable Diffusion XL"]["jpeg95 4:4:4"] >= 15
    assert counts["Stable Diffusion 2"]["fresh"] < counts["Stable Diffusion XL"]["fresh"]
    for name in PAYLOADS:
        assert counts[name]["jpeg90 4:2:0"] <= 2 and counts[name]["resize 0.5"] == 0


@pytest.mark.shared
@pytest.mark.slow
def test_no_false_marks_on_real_photos(shared_data):
    """Measures the false-positive figures in docs/forensics.md (run with -s to print them)."""
    imagenet = sorted((shared_data / "real-imagenet-sample").glob("*"))
    lfw = sorted((shared_data / "real-lfw").glob("*"))
    ffhq = sorted((shared_data / "faces-ffhq128-vs-stylegan2").glob("data*/real/*"))
    if len(imagenet) < 250 or len(lfw) < 1000 or len(ffhq) < 3000:
        pytest.skip("needs 250 photos in real-imagenet-sample, 1000 in real-lfw and 3000 FFHQ reals")
    sets = {
        "imagenet": (imagenet, lambda i: i),
        "imagenet jpeg90": (imagenet, lambda i: reload(encode(i, "JPEG", quality=90))),
        "imagenet resize 0.9": (imagenet, lambda i: i.resize((int(i.width * 0.9), int(i.height * 0.9)))),
        "lfw upscaled x2": (lfw, lambda i: i.resize((500, 500), Image.BICUBIC)),  # 250x250 is under the size gate
        "ffhq upscaled x2": (ffhq, lambda i: i.resize((256, 256), Image.BICUBIC)),  # 128x128: likewise
    }
    for name, (files, op) in sets.items():
        records = [check_watermark(op(Image.open(p).convert("RGB"))) for p in files]
        read = [r for r in records if "marks" in r.data]
        fewest = {m.name: min(r.data["marks"][m.name]["bit_errors"] for r in read) for m in KNOWN_MARKS}
        print(name, f"read {len(read)}/{len(records)}, marks decoded {sum(r.decisive for r in records)}, fewest bit errors {fewest}")
        assert not any(r.decisive for r in records) and len(read) >= 0.9 * len(records)
        assert all(fewest[m.name] > 2 * m.max_bit_errors + 4 for m in KNOWN_MARKS)  # far from every limit


def test_a_trusted_camera_manifest_over_marked_pixels_is_a_conflict(marked, sign, signing_chain, monkeypatch, tmp_path):
    """End to end: a capture manifest signed by a trusted signer, whose hashes match, over pixels carrying SDXL's mark.
    The watermark decided `ai`; now neither decides and the reason names both. An unknown signer's manifest does not
    weigh as much: the watermark decides over it, as before."""
    from fakescope.forensics import collect_evidence, fuse
    from fakescope.forensics.fusion import CONFLICT

    signed = sign(encode(marked[("Stable Diffusion XL", "rgb")], "PNG"), "image/png", "digitalCapture")
    untrusted = fuse(0.1, collect_evidence(signed, reload(signed)), 0.5, (0.3, 0.7))
    assert (untrusted.verdict, untrusted.decided_by) == ("ai", "watermark") and "despite c2pa" in untrusted.reason
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(signing_chain["root"])
    monkeypatch.setenv("FAKESCOPE_C2PA_TRUST_ANCHORS", str(anchors))
    records = collect_evidence(signed, reload(signed))
    assert [(e.kind, e.score) for e in records] == [("c2pa", 0.05), ("metadata", None), ("watermark", 0.99)]
    fused = fuse(0.1, records, 0.5, (0.3, 0.7))
    assert (fused.verdict, fused.decided_by, fused.probability) == ("uncertain", CONFLICT, 0.5)
    assert "watermark: Stable Diffusion XL" in fused.reason and "against c2pa: signed C2PA manifest declares " \
        "digitalCapture; signer trusted" in fused.reason, fused.reason
