"""A registry of architectures: plain builder functions registered by decorator (timm-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from fakescope.errors import UnknownModelError
from fakescope.models.config import InputPolicy


@dataclass(frozen=True)
class ArchitectureInfo:
    """What the registry knows about an architecture before it is built."""

    name: str
    builder: Callable[..., nn.Module]
    input: InputPolicy
    pretrained_source: str | None
    description: str


_REGISTRY: dict[str, ArchitectureInfo] = {}


def register_model(
    *, input: InputPolicy | None = None, pretrained_source: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder `fn(pretrained: bool = False, **kwargs) -> nn.Module` under its name.

    The module it builds maps an (N, 3, H, W) normalised batch to (N,) logits of P(ai) and
    exposes `forward_features` (N, C, h, w) and `forward_head` for explanations and embeddings.
    """

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[fn.__name__] = ArchitectureInfo(
            fn.__name__, fn, input or InputPolicy(), pretrained_source, doc[0] if doc else ""
        )
        return fn

    return decorate


def list_models() -> list[str]:
    """Names of all registered architectures."""
    _import_families()
    return sorted(_REGISTRY)


def architecture_info(name: str) -> ArchitectureInfo:
    _import_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list(_REGISTRY), kind="architecture") from None


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered architecture, optionally with its ImageNet-pretrained backbone.

    Example:
        >>> create_model("test_tiny")(torch.zeros(2, 3, 64, 64)).shape  # doctest: +SKIP
        torch.Size([2])
    """
    return architecture_info(name).builder(pretrained=pretrained, **kwargs)


def _import_families() -> None:
    from fakescope.models import families  # noqa: F401  (registers on import)
