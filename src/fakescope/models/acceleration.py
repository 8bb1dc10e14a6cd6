"""Faster PyTorch inference: bf16 weights and `torch.compile` with Inductor's frozen weights.

Both are opt-in (`Detector(precision="bf16", compile=True)`, `--precision bf16 --compile`):
bf16 changes the numbers slightly (docs/scale.md has the measured changes in P(ai) and AUC), and
compiling costs seconds to a minute on the first batch, which only a long scan earns back. bf16 is
fast on CPUs with native bf16 instructions (AVX512-BF16, AMX) and on GPUs; elsewhere it is emulated
and slower than fp32, so a warning says so.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from fakescope.models.config import check_precision
from fakescope.models.same_padding import pad_in_conv


def inference_network(
    network: nn.Module, device: torch.device, *, precision: str = "fp32", compile: bool = False  # noqa: A002 - torch's own word
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward function to run `network` with for inference; `network` itself is left untouched.

    Batch norm is always folded into the convolutions before it (`fold_batch_norm`), and timm's
    TF-style "same" convolutions pad inside the convolution instead of copying their input
    (`fakescope.models.same_padding`).
    `precision="bf16"` runs a bf16 copy of the network (inputs must then be bf16 too, see
    `input_dtype`); `compile=True` wraps it in `torch.compile` with Inductor freezing, which folds the
    weights and batch norm into the compiled graph (the network must not be trained afterwards); each
    input height and width compiles its own graph, any batch size (`_static_sizes`, which warns once past
    torch's recompile limit).

    Example:
        >>> from fakescope.models import load_model
        >>> forward = inference_network(load_model().network, torch.device("cpu"), precision="bf16")
        >>> forward(torch.zeros(1, 3, 112, 112, dtype=input_dtype("bf16"))).dtype
        torch.bfloat16
    """
    forward = pad_in_conv(fold_batch_norm(network))
    if input_dtype(precision) == torch.bfloat16:
        if device.type == "cpu" and not native_bf16():
            warnings.warn("this CPU has no native bf16 instructions: bf16 inference is emulated and slower than fp32",
                          stacklevel=3)
        forward = (copy.deepcopy(forward) if forward is network else forward).to(torch.bfloat16)
    if compile:
        return _static_sizes(torch.compile(forward, options={"freezing": True}))
    return forward


def _static_sizes(compiled: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """`compiled`, given its inputs' height and width as constants and their batch size as a variable.

    On a second input size torch.compile made every size symbolic, and "same" padding (timm's or `conv2d_same`)
    nests each layer's size arithmetic into the next one's: a network with 5 such layers compiled its first size
    in 25 s and its second not in 12 minutes on 2 busy cores. Each height and width now compiles once, its padding
    constant, and a batch of one its own graph. Past torch._dynamo's `recompile_limit` (8) of these shapes, torch runs
    new ones eagerly: a warning says so once, naming the limit.
    """
    shapes: set[tuple[int, int, bool]] = set()

    def forward(x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[2], x.shape[3], x.shape[0] == 1)  # torch specialises a batch of one
        if shape not in shapes:
            shapes.add(shape)
            if len(shapes) == (limit := torch._dynamo.config.recompile_limit) + 1:
                warnings.warn(f"torch.compile compiled {limit} input shapes (torch._dynamo.config.recompile_limit): "
                              f"this {shape[0]}x{shape[1]} input and any other new one run uncompiled, slower; keep "
                              "tile sizes few or raise that limit", stacklevel=2)
        torch._dynamo.mark_static(x, 2)
        torch._dynamo.mark_static(x, 3)
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return compiled(x)

    return forward


def input_dtype(precision: str) -> torch.dtype:
    """The dtype the network's input must have at this precision (a `ConfigError` for an unknown one)."""
    check_precision(precision)
    return torch.bfloat16 if precision == "bf16" else torch.float32


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16)."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(name, False) for name in ("avx512_bf16", "amx_bf16", "bf16"))


def fold_batch_norm(network: nn.Module, *, tolerance: float = 1e-4) -> nn.Module:
    """A copy of an eval-mode `network` with every batch norm that directly follows a convolution
    folded into that convolution's weights (and its activation kept, for timm's BatchNormAct2d).

    The pairs are found by running the network once and matching each batch norm's input tensor
    to a convolution's output. A copy whose logits differ from that run's by more than
    `tolerance` on the same probe (a convolution output also used elsewhere), or a network the probe
    cannot run, is not used: the original comes back unchanged. On this CPU the bundled network's
    forward pass spent 27% of its time in batch norm (docs/scale.md).
    """
    if network.training:
        return network
    folded, probe = copy.deepcopy(network), _probe_input(network)
    try:  # an optimisation only: a network it cannot probe (a fixed input size, say) runs as it is
        pairs, expected = _conv_bn_pairs(folded, probe)  # the copy unfolded yet: the original's logits
        for conv, bn, parent, name in pairs:
            weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                bn.weight, bn.bias)
            conv.weight, conv.bias = weight, bias
            setattr(parent, name, _activation_of(bn))
        with torch.inference_mode():
            got = folded(probe)
    except (RuntimeError, ValueError, TypeError):
        return network
    if not isinstance(expected, torch.Tensor) or not expected.isfinite().all():  # not the contract's logits, or NaN
        return network  # ones (no tolerance to compare within): inference says so, on the original
    scale = expected.abs().max().clamp_min(1.0)
    same = pairs and torch.allclose(got, expected, rtol=0, atol=tolerance * float(scale))
    return folded if same else network


def _conv_bn_pairs(network: nn.Module, probe: torch.Tensor) -> tuple[list[tuple[nn.Conv2d, nn.BatchNorm2d, nn.Module, str]], Any]:
    """(conv, bn, bn's parent, bn's attribute name) for each batch norm fed straight by a convolution
    when `network` runs on `probe`, and what that run returned."""
    parents = {child: (parent, name) for parent in network.modules() for name, child in parent.named_children()}
    produced: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}
    pairs = []

    def after_conv(module, _inputs, output):
        produced[id(output)] = (output, module)

    def before_bn(module, inputs):
        made = produced.get(id(inputs[0]))
        if made is not None and made[0] is inputs[0] and _activation_of(module) is not None and module in parents:
            pairs.append((made[1], module, *parents[module]))

    hooks = [m.register_forward_hook(after_conv) for m in network.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_pre_hook(before_bn) for m in network.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.inference_mode():
            output = network(probe)
    finally:
        for hook in hooks:
            hook.remove()
    convs, bns = {id(conv) for conv, *_ in pairs}, {id(bn) for _, bn, *_ in pairs}
    return (pairs if len(convs) == len(bns) == len(pairs) else []), output  # a module run twice: leave the network alone


def _activation_of(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What a folded batch norm leaves behind: nothing (plain), its dropout and activation (timm's
    BatchNormAct2d), or None for a kind this module does not know."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if hasattr(bn, "act") and hasattr(bn, "drop") and type(bn).__name__ == "BatchNormAct2d":
        return nn.Sequential(bn.drop, bn.act)
    return None


def _probe_input(network: nn.Module) -> torch.Tensor:
    parameter = next(network.parameters())
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 112, 112, generator=generator).to(parameter.device, parameter.dtype)
