"""bf16 and `torch.compile` inference: close to fp32, the model left untouched, clear errors."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from fakescope.detector import Detector
from fakescope.errors import ConfigError
from fakescope.models.acceleration import inference_network, native_bf16
from fakescope.scale.scan import scan_sources


def test_bf16_scores_stay_close_to_fp32_and_the_model_stays_fp32(image_folder, detector):
    sources = list(scan_sources([str(image_folder)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU without bf16 instructions only warns that it is slow
        fast = Detector.load(device="cpu", batch_size=4, provenance=False, precision="bf16")
    scored = list(zip(detector.predict(sources), fast.predict(sources), strict=True))
    assert sum(a.ok for a, _ in scored) == 7
    for a, b in scored:
        assert a.source == b.source and a.error == b.error
        if a.ok:
            assert abs(a.probability - b.probability) < 0.03
    assert next(fast.model.network.parameters()).dtype == torch.float32  # explain and export see the fp32 network


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_compiled_network_matches_eager(tiny_model_dir, image_folder):
    sources = list(scan_sources([str(image_folder)]))
    eager = Detector.load(tiny_model_dir, device="cpu", batch_size=4, provenance=False)
    compiled = Detector.load(tiny_model_dir, device="cpu", batch_size=4, provenance=False, compile=True)
    assert compiled.runtime == "torch"
    results = eager.predict(sources)
    for a, b in zip(results, compiled.predict(sources), strict=True):
        assert a.error == b.error
        if a.ok:
            assert abs(a.probability - b.probability) < 1e-4
    good = next(r.source for r in results if r.ok)
    assert compiled.explain(good, "gradcam").shape == eager.explain(good, "gradcam").shape  # on the eager network


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_a_compiled_same_padding_network_compiles_each_input_size_with_constant_padding():
    from timm.layers import Conv2dSame
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    network = _with_real_statistics(torch.nn.Sequential(
        Conv2dSame(3, 4, 3, stride=2), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), Conv2dSame(4, 4, 3, stride=2),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1)))
    forward = inference_network(network, torch.device("cpu"), compile=True)
    torch._dynamo.reset()
    graphs = []
    for batch, side in [(2, 16), (2, 15), (2, 19), (3, 15)]:  # a second size made every size symbolic:
        x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(side))  # timm's padding
        with torch.inference_mode():  # arithmetic nested layer by layer (minutes to compile with 5 such layers)
            torch.testing.assert_close(forward(x), network(x), rtol=0, atol=1e-5)
        graphs.append(counters["stats"]["unique_graphs"])
    assert [n - graphs[0] for n in graphs] == [0, 1, 2, 2]  # one graph per size, its padding constant; any batch


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler")
def test_a_compiled_network_warns_once_when_new_input_shapes_run_uncompiled():
    """Past torch._dynamo's recompile_limit of input shapes, new ones ran eagerly with only torch's own log line
    about an `inner` function; a warning now names the limit and what it means, once. The limit is 2 here (8 by
    default): a batch of one is a shape of its own."""
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                  torch.nn.Linear(4, 1)).eval()
    from torch._dynamo.utils import counters

    forward = inference_network(network, torch.device("cpu"), compile=True)
    torch._dynamo.reset()
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(recompile_limit=2), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, (batch, side) in enumerate([(2, 10), (3, 10), (1, 10), (2, 12), (2, 14), (2, 10)]):
            x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(side))
            with torch.inference_mode():
                torch.testing.assert_close(forward(x), network(x), rtol=0, atol=1e-5)
            assert len(caught) == (i >= 3), [str(w.message) for w in caught]
    assert counters["stats"]["unique_graphs"] - graphs == 2  # torch compiled no more: the warning was due
    assert str(caught[0].message) == ("torch.compile compiled 2 input shapes (torch._dynamo.config.recompile_limit): "
                                      "this 12x12 input and any other new one run uncompiled, slower; keep tile sizes "
                                      "few or raise that limit")


def test_bf16_and_compile_choose_the_torch_runtime_and_reject_onnx(tiny_model_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Detector.load(tiny_model_dir, device="cpu", runtime="auto", precision="bf16").runtime == "torch"
    with pytest.raises(ConfigError, match="run on the torch runtime"):
        Detector.load(tiny_model_dir, device="cpu", runtime="onnx", compile=True)
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; use fp32, bf16 or int8"):
        Detector.load(tiny_model_dir, device="cpu", precision="fp16")


def test_emulated_bf16_warns_on_the_cpu(monkeypatch):
    network = torch.nn.Conv2d(3, 1, 3)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    assert not native_bf16()
    with pytest.warns(UserWarning, match="no native bf16 instructions"):
        fast = inference_network(network, torch.device("cpu"), precision="bf16")
    assert fast(torch.zeros(1, 3, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert network.weight.dtype == torch.float32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inference_network(network, torch.device("cpu"), precision="bf16")


def _with_real_statistics(network: torch.nn.Module) -> torch.nn.Module:
    """Batch norms with non-trivial running statistics and affine parameters, so folding shows."""
    generator = torch.Generator().manual_seed(0)
    for m in network.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=generator) - 0.5)
    return network.eval()


@pytest.mark.parametrize("architecture", ["test_tiny", "mobilenet_v2", "npr_resnet18"])
def test_batch_norm_folds_into_the_convolutions_without_changing_the_outputs(architecture):
    from fakescope.models import create_model
    from fakescope.models.acceleration import fold_batch_norm

    network = _with_real_statistics(create_model(architecture))
    folded = fold_batch_norm(network)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules()) > 0  # the original is untouched
    x = torch.rand(3, 3, 96, 80, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), network(x), rtol=1e-4, atol=1e-4)


class _ConvUsedTwice(torch.nn.Module):
    """A convolution whose raw output also feeds a sum: folding its batch norm would change that sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return (self.bn(y) + y).mean(dim=(1, 2, 3))


def test_a_convolution_output_used_elsewhere_is_not_folded_and_training_networks_are_left_alone():
    from fakescope.models.acceleration import fold_batch_norm

    network = _with_real_statistics(_ConvUsedTwice())
    assert fold_batch_norm(network) is network  # the probe's outputs differ, so the original comes back
    fixed_size = _with_real_statistics(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                                           torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 1)))
    assert fold_batch_norm(fixed_size) is fixed_size  # takes only 32 x 32 inputs: the probe cannot run it
    network.train()
    assert fold_batch_norm(network) is network
    broken = _with_real_statistics(_ConvUsedTwice())
    with torch.no_grad():
        broken.conv.weight[0, 0, 0, 0] = float("nan")
    assert fold_batch_norm(broken) is broken  # NaN logits on the probe: was 'atol must be >= 0, got nan' in Detector()


@pytest.mark.parametrize("kernel,stride,bias", [(3, 2, False), (5, 2, True), (2, 1, True), (4, 3, False)])
@pytest.mark.parametrize("size", [(112, 112), (7, 7), (64, 111), (113, 57)])
def test_same_padding_inside_the_convolution_matches_timms_pad_then_convolve(kernel, stride, bias, size):
    from timm.layers import Conv2dSame

    from fakescope.models.same_padding import pad_in_conv

    conv = Conv2dSame(8, 8, kernel, stride=stride, groups=2, bias=bias).eval()
    padded = pad_in_conv(conv)
    assert type(padded) is not Conv2dSame and type(conv) is Conv2dSame  # a copy: Grad-CAM keeps timm's
    x = torch.rand(2, 8, *size, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(padded(x), conv(x), rtol=0, atol=1e-5)


def test_the_bundled_networks_inference_forward_pads_inside_its_convolutions():
    from timm.layers import Conv2dSame

    from fakescope.models import load_model

    network = load_model().network
    forward = inference_network(network, torch.device("cpu"))
    assert not any(isinstance(m, Conv2dSame) for m in forward.modules())
    assert sum(isinstance(m, Conv2dSame) for m in network.modules()) == 5
    x = torch.rand(3, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(forward(x), network(x), rtol=0, atol=1e-4)
