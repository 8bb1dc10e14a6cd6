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

import torch
from torch import nn

from fakescope.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def inference_network(
    network: nn.Module, device: torch.device, *, precision: str = "fp32", compile: bool = False  # noqa: A002 - torch's own word
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The forward function to run `network` with for inference; `network` itself is left untouched.

    `precision="bf16"` runs a bf16 copy of the network (inputs must then be bf16 too, see
    `input_dtype`); `compile=True` wraps it in `torch.compile` with Inductor freezing, which folds the
    weights and batch norm into the compiled graph (the network must not be trained afterwards).

    Example:
        >>> from fakescope.models import load_model
        >>> forward = inference_network(load_model().network, torch.device("cpu"), precision="bf16")
        >>> forward(torch.zeros(1, 3, 112, 112, dtype=input_dtype("bf16"))).dtype
        torch.bfloat16
    """
    if input_dtype(precision) == torch.bfloat16:
        if device.type == "cpu" and not native_bf16():
            warnings.warn("this CPU has no native bf16 instructions: bf16 inference is emulated and slower than fp32",
                          stacklevel=3)
        network = copy.deepcopy(network).to(torch.bfloat16)
    if compile:
        network = torch.compile(network, options={"freezing": True})
    return network


def input_dtype(precision: str) -> torch.dtype:
    """The dtype the network's input must have at this precision (a `ConfigError` for an unknown one)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use {' or '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" else torch.float32


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16)."""
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(name, False) for name in ("avx512_bf16", "amx_bf16", "bf16"))
