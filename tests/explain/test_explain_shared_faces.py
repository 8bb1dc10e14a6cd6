"""The bundled detector's heatmaps point at the StyleGAN2 half of a real|fake face composite."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from fakescope.detector import Detector
from fakescope.io.image import load_image

pytestmark = pytest.mark.shared
PAIRS = 16
SIDE, KEPT = 128, 120  # the bottom rows of the fakes hold a "StyleGAN2 (Karras et al.)" watermark: cropped from both


@pytest.fixture(scope="module")
def composites() -> list[tuple[Image.Image, bool]]:
    """A real FFHQ face beside a StyleGAN2 face (on either side), JPEG q75 as a whole; and whether the fake is right."""
    base = os.environ.get("FAKESCOPE_SHARED_DATA") or str(Path(__file__).resolve().parents[2].parent / "shared" / "data")
    folder = Path(base) / "faces-ffhq128-vs-stylegan2" / "data_crossval"
    if not folder.is_dir():
        pytest.skip(f"shared faces data not found at {folder}; set FAKESCOPE_SHARED_DATA")
    reals, fakes = (sorted((folder / label).iterdir())[:PAIRS] for label in ("real", "fake"))
    made = []
    for i, (real, fake) in enumerate(zip(reals, fakes)):
        fake_right = i % 2 == 0
        composite = Image.new("RGB", (2 * SIDE, KEPT))
        for path, left in ((real, SIDE * (not fake_right)), (fake, SIDE * fake_right)):
            composite.paste(load_image(path).image.crop((0, 0, SIDE, KEPT)), (left, 0))
        encoded = io.BytesIO()
        composite.save(encoded, "JPEG", quality=75)  # one compression for both halves (the set's fakes alone are JPEG)
        made.append((Image.open(encoded).convert("RGB"), fake_right))
    return made


@pytest.fixture(scope="module")
def detector() -> Detector:
    """The bundled detector, loaded once for every method."""
    return Detector.load(device="cpu", provenance=False)


@pytest.mark.parametrize("method, at_least", [("tiles", 14), ("gradcam", 14), ("cam", 14), ("gradcam++", 11)])
def test_heat_is_higher_on_the_stylegan2_half(composites, detector, method, at_least):
    hits = 0
    for image, fake_right in composites:
        heat = detector.explain(image, method)
        assert heat.shape == (KEPT, 2 * SIDE)
        left, right = heat[:, :SIDE].mean(), heat[:, SIDE:].mean()
        hits += (right > left) == fake_right
    assert hits >= at_least, f"{method}: the fake half is the hotter in {hits}/{PAIRS} composites"
