"""The model zoo: every architecture fakescope can build, registered by name.

All are binary classifiers returning one logit of P(ai) per input and built on timm
backbones (`mobilenet_v2` and `resnet50` are the original project's networks; timm's
definitions match torchvision's). Trained from scratch unless `pretrained=True`. Their names,
input policies and descriptions are declared in `fakescope.models.zoo`, which registers them
without importing this module (torch).
"""

from __future__ import annotations

import torch
from torch import nn

from fakescope.models.pretrained import load_pretrained


class Classifier(nn.Module):
    """A timm backbone with a one-logit head, optionally fed a high-pass residual of the input.

    `residual="npr"` replaces the input with its neighbouring-pixel residual
    (x minus its 2x nearest down/up-sampled copy; Tan et al., CVPR 2024), which keeps
    the up-sampling traces that generators leave and discards most of the content.
    """

    def __init__(self, backbone: nn.Module, residual: str | None = None):
        super().__init__()
        self.backbone = backbone
        self.residual = residual

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual == "npr":
            x = npr_residual(x)
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(features).squeeze(-1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) features, one vector per input."""
        return self.backbone.forward_head(self.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring-pixel residual; odd sizes are handled by cropping the re-upsampled copy."""
    h, w = x.shape[-2:]
    low = nn.functional.interpolate(x[..., : h - h % 2, : w - w % 2], scale_factor=0.5, mode="nearest")
    up = nn.functional.interpolate(low, scale_factor=2.0, mode="nearest")
    up = nn.functional.pad(up, (0, w - up.shape[-1], 0, h - up.shape[-2]), mode="replicate")
    return (x - up) * 4.0


def _build(timm_name: str, pretrained: bool | str, residual: str | None = None, **kwargs) -> Classifier:
    import timm  # seconds to import (it loads torchvision): listing the zoo does not need it

    backbone = timm.create_model(timm_name, pretrained=False, num_classes=1, **kwargs)
    if pretrained:
        load_pretrained(backbone, timm_name, pretrained)
    return Classifier(backbone, residual)


def efficientnet_lite0(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("tf_efficientnet_lite0", pretrained, **kwargs)


def efficientnet_lite1(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("tf_efficientnet_lite1", pretrained, **kwargs)


def efficientnet_lite2(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("tf_efficientnet_lite2", pretrained, **kwargs)


def mobilenet_v2(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("mobilenetv2_100", pretrained, **kwargs)


def resnet50(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("resnet50", pretrained, **kwargs)


def npr_resnet18(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("resnet18", pretrained, residual="npr", **kwargs)


def test_tiny(pretrained: bool | str = False, **kwargs) -> Classifier:
    return _build("test_efficientnet", pretrained, **kwargs)

