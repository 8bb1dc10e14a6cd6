"""Every architecture of the zoo, as a user ships it: built at its input policy, saved and loaded as a model folder,
and run by a Detector on the torch and the onnx runtime with the same logits."""

from __future__ import annotations

import pytest
import torch

from fakescope.detector import Detector
from fakescope.models import ModelConfig, architecture_info, create_model, list_models, load_model, save_model

ZOO = [n for n in list_models() if architecture_info(n).builder.__module__.startswith("fakescope.")]


@pytest.mark.parametrize("name", ZOO)
def test_each_architecture_round_trips_and_runs_alike_on_onnx_through_a_detector(name, tmp_path, image_factory):
    pytest.importorskip("onnxruntime")
    policy = architecture_info(name).input
    c = policy.crop_size
    torch.manual_seed(0)
    network = create_model(name).eval()
    save_model(network, ModelConfig(name=name, architecture=name, input=policy), tmp_path / "model")
    x = torch.rand(2, 3, c, c, generator=torch.Generator().manual_seed(1)) * 4 - 2
    with torch.inference_mode():
        assert torch.equal(load_model(tmp_path / "model").network(x), network(x))
    # one tile, a grid of tiles at an odd size, and one smaller than a tile (upscaled)
    images = [image_factory.pil((c, c), seed=1), image_factory.pil((2 * c + 7, c + 3), seed=2),
              image_factory.pil((c // 2 + 1, c // 3), seed=3)]
    on_torch = Detector.load(tmp_path / "model", device="cpu", provenance=False).predict_logits(images)
    on_onnx = Detector.load(tmp_path / "model", device="cpu", provenance=False, runtime="onnx")
    assert on_onnx.runtime == "onnx"
    torch.testing.assert_close(torch.from_numpy(on_onnx.predict_logits(images)), torch.from_numpy(on_torch),
                               rtol=1e-4, atol=1e-4)
