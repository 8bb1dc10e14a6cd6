"""A registry of architectures: plain builder functions registered by decorator (timm-style).

The built-in ones are declared as data (`fakescope.models.zoo`): reading the registry imports no torch, and
a builder's module is imported when the builder is first used. Architectures of your own register when their
module is imported. For processes you do not write yourself (the CLI, Ray scan actors, the web app), name
the module in `FAKESCOPE_PLUGINS` (comma-separated module names) or expose it as an entry point of the
`fakescope.models` group: both are imported before the registry is first read.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

from fakescope.errors import ConfigError, PluginError, UnknownModelError, first_line
from fakescope.models.config import InputPolicy

if TYPE_CHECKING:  # torch only where a network is built or checked: reading a model's config or the registry needs none
    import numpy as np
    import torch
    from torch import nn

PLUGINS_ENV = "FAKESCOPE_PLUGINS"
ENTRY_POINT_GROUP = "fakescope.models"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArchitectureInfo:
    """What the registry knows about an architecture before it is built: its builder is function `name` of
    `module`, imported on first use of `builder` unless registered with it."""

    name: str
    module: str
    input: InputPolicy
    pretrained_source: str | None
    description: str
    registered: Callable[..., nn.Module] | None = field(default=None, repr=False)

    @property
    def builder(self) -> Callable[..., nn.Module]:
        return self.registered or getattr(importlib.import_module(self.module), self.name)

    @property
    def origin(self) -> tuple[str, str]:
        """The builder's module and qualified name: the same builder registered again has the same."""
        return self.module, self.registered.__qualname__ if self.registered else self.name


_REGISTRY: dict[str, ArchitectureInfo] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None, *, input: InputPolicy | None = None, pretrained_source: str | None = None
) -> Callable[..., nn.Module]:
    """Register a builder `fn(pretrained: bool = False, **kwargs) -> nn.Module` under its name.

    Used as `@register_model` (the default `InputPolicy`) or `@register_model(input=..., pretrained_source=...)`.
    `pretrained_source` says where the builder's `pretrained=True` loads weights from; without one it has none
    to load: training builds it with `pretrained=False` and records that (see `usable_pretrained`), and a
    builder that cannot load weights may leave the `pretrained` argument out (one that names it gets it always).

    The module it builds maps an (N, 3, H, W) normalised batch to (N,) logits of P(ai) and
    exposes `forward_features` (N, C, h, w), `forward_head` (features -> logits) and `embed`
    (N, D) for explanations and embeddings.
    A name another builder holds (a built-in architecture, say) is refused; the same builder
    registered again (a module reloaded) replaces itself.
    """
    if input is not None and not isinstance(input, InputPolicy):
        raise ConfigError(f"register_model: input must be an InputPolicy, not {type(input).__name__}")

    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if not str(getattr(fn, "__name__", "")).isidentifier():  # a lambda or a partial: no name to load it by
            raise ConfigError(f"register_model: an architecture is named after its builder, so register a function "
                              f"defined with def, not {fn!r}")
        doc = (fn.__doc__ or "").strip().splitlines()
        _add(ArchitectureInfo(fn.__name__, fn.__module__, input or InputPolicy(), pretrained_source,
                              doc[0] if doc else "", fn))
        return fn

    return decorate if fn is None else decorate(fn)


def _add(info: ArchitectureInfo) -> None:
    """Register `info`, refusing its name if another builder holds it."""
    held = _REGISTRY.get(info.name)
    if held and held.origin != info.origin:
        # the zoo registers when first needed, so a clash with it may show either way round
        yours, theirs = (held, info) if info.module.startswith("fakescope.") else (info, held)
        raise ConfigError(f"architecture {info.name!r} of {yours.module} clashes with the one "
                          f"{theirs.module} registers; give your builder another name")
    _REGISTRY[info.name] = info


def list_models() -> list[str]:
    """Names of all registered architectures, plugins' included."""
    _register_builtins()
    _import_plugins()
    return sorted(_REGISTRY)


def architecture_info(name: str) -> ArchitectureInfo:
    """The registration of architecture `name` (plugins' included); `UnknownModelError` lists the known ones."""
    _register_builtins()
    _import_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(name, list(_REGISTRY), kind="architecture", hint=(
            f"; for one of your own, import its module first, or name the module in {PLUGINS_ENV} "
            f"or a {ENTRY_POINT_GROUP!r} entry point")) from None


def create_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """Build a registered architecture, optionally with its ImageNet-pretrained backbone.

    `pretrained` reaches a builder that names it (also `pretrained=False`, so one without a default builds too);
    one that leaves it out is built without it.

    Example:
        >>> import torch
        >>> create_model("test_tiny")(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2])
    """
    from torch import nn

    builder = architecture_info(name).builder
    named = pretrained or "pretrained" in inspect.signature(builder).parameters
    network = builder(**({"pretrained": pretrained} if named else {}), **kwargs)
    if not isinstance(network, nn.Module):
        raise ConfigError(f"architecture {name!r} must build a torch.nn.Module, not a {type(network).__name__}")
    return network


def usable_pretrained(name: str, pretrained: bool | str) -> bool | str:
    """`pretrained` as architecture `name` can honour it: as asked when it registers a `pretrained_source`,
    else False (it has no weights to load, whatever its builder does with `pretrained`).

    Raises:
        ConfigError: a weights file is asked of an architecture that registers no `pretrained_source`.
    """
    if not pretrained or architecture_info(name).pretrained_source:
        return pretrained
    if isinstance(pretrained, str):
        raise ConfigError(f"architecture {name!r} registers no pretrained_source, so it cannot load the weights file "
                          f"{pretrained}; train it with --scratch (pretrained: false)")
    return False


def create_checked(name: str, crop_size: int, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """`create_model`, with a one-line `ConfigError` naming the architecture, not a torch traceback mid-training,
    for keyword arguments its builder does not take and for a network that cannot map a batch of two blank
    `crop_size` RGB tiles to two logits (one forward pass, in eval mode)."""
    import torch

    try:
        network = create_model(name, pretrained=pretrained, **kwargs)
    except TypeError as exc:  # an unknown or mistyped keyword argument
        raise ConfigError(f"cannot build architecture {name!r} with architecture_kwargs {kwargs}: "
                          f"{first_line(exc)}") from None
    training = network.training
    parameter = next(network.parameters(), None)
    batch = torch.zeros(2, 3, crop_size, crop_size, device=parameter.device if parameter is not None else None)
    try:
        with torch.no_grad():
            output = network.eval()(batch)
    except Exception as exc:  # noqa: BLE001 - whatever the network's own forward raises
        raise ConfigError(f"architecture {name!r} must take a batch of RGB tiles, shape (2, 3, {crop_size}, {crop_size}),"
                          f" but fails on it ({first_line(exc)}); a network for other channels converts its RGB "
                          "input itself") from None
    finally:
        network.train(training)
    check_logits(output, 2, name)
    return network


def check_logits(output: object, n: int, architecture: str) -> torch.Tensor | np.ndarray:
    """`output` if it is the (n,) logits the registry's contract asks for (a tensor, or an onnxruntime network's numpy
    array), else a one-line `ConfigError`."""
    import numpy as np

    if not isinstance(output, np.ndarray):
        import torch

        if not isinstance(output, torch.Tensor):
            raise _not_logits(architecture, n, f"a {type(output).__name__}")
    if tuple(output.shape) != (n,):
        raise _not_logits(architecture, n, f"shape {tuple(output.shape)}")
    return output


def _not_logits(architecture: str, n: int, got: str) -> ConfigError:
    return ConfigError(f"architecture {architecture!r} must return one logit of P(ai) per input, shape ({n},), not {got}"
                       " (for a two-class head return logits[:, 1] - logits[:, 0])")


def plugin_source(name: str) -> bytes:
    """The source file of the module that registered architecture `name` outside fakescope (plugins imported
    first): what an ONNX export of it also depends on. Empty for fakescope's own, or one not registered."""
    _import_plugins()
    info = _REGISTRY.get(name)
    if info is None or info.module.partition(".")[0] == "fakescope":
        return b""
    path = getattr(sys.modules.get(info.module), "__file__", None)
    try:
        return Path(path).read_bytes() if path else b""
    except OSError:
        return b""


def _register_builtins() -> None:
    from fakescope.models.zoo import BUILTIN

    for info in BUILTIN:  # at every read, as importing their modules did: a clash with a plugin raises each time
        _add(info)


@functools.cache
def _import_plugins() -> None:
    """Import the modules named in FAKESCOPE_PLUGINS (an error if one fails) and the entry points (a warning)."""
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - whatever the plugin's own import raises
            raise PluginError(f"{PLUGINS_ENV}: cannot import {name!r} ({type(exc).__name__}: "
                              f"{str(exc).partition(chr(10))[0]})") from None
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the others
            if os.environ.get("RANK", "0") == "0":  # under torchrun every rank would say it alike
                log.warning("entry point %s (%s): cannot load (%s: %s)", point.name, point.value, type(exc).__name__,
                            str(exc).partition("\n")[0])
