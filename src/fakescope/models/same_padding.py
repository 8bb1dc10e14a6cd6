"""timm's TF-style "same" convolutions (`Conv2dSame`) without their separate padding step.

`Conv2dSame` pads its input by an amount computed from its size (`F.pad`, a copy; the odd pixel
at the end) and then convolves. Here the convolution pads by itself: for ONNX, one `Conv` with
`auto_pad=SAME_UPPER`, which pads exactly so (undilated layers only: onnxruntime refuses `auto_pad`
with dilation, so a dilated one keeps timm's `Pad`); for PyTorch, a convolution with symmetric padding
that, where the padding is uneven, is one stride wider on each side, whose first output row or
column is dropped (`conv2d_same`). Every output sums the same pixels and zeros; docs/scale.md
has the measured gains.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own alias


def conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: tuple[int, int],
                dilation: tuple[int, int], groups: int) -> torch.Tensor:
    """timm's `conv2d_same` with the padding done by the convolution (sizes read as Python ints)."""
    from timm.layers import get_same_padding

    padding, keep = [], []
    for size, k, s, d in zip(x.shape[-2:], weight.shape[-2:], stride, dilation):
        total = get_same_padding(int(size), int(k), s, d)  # TF puts the odd pixel at the end
        uneven = total % 2
        padding.append(total // 2 + s * uneven)  # a stride more: windows start where TF's do, one output early
        keep.append(slice(uneven, uneven + -(-int(size) // s)))
    out = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return out[..., keep[0], keep[1]] if keep[0].start or keep[1].start else out


def pad_in_conv(network: nn.Module) -> nn.Module:
    """A copy of `network` whose `Conv2dSame` layers pad inside the convolution (`conv2d_same`;
    `network` itself when it has none)."""
    return _swapped(network, _PaddedConv2dSame)


def for_onnx(network: nn.Module) -> nn.Module:
    """A copy of `network` whose undilated `Conv2dSame` layers export as one `Conv` with `auto_pad=SAME_UPPER`
    (`network` itself when it has none); onnxruntime cannot run `auto_pad` with dilation."""
    return _swapped(network, _ExportedConv2dSame, lambda m: all(d == 1 for d in m.dilation))


def _swapped(network: nn.Module, kind: type[nn.Conv2d], fits: Callable[[nn.Conv2d], bool] = lambda m: True
             ) -> nn.Module:
    from timm.layers import Conv2dSame

    def swapped(m: nn.Module) -> bool:
        return isinstance(m, Conv2dSame) and fits(m)

    if not any(swapped(m) for m in network.modules()):
        return network
    network = copy.deepcopy(network)
    for m in network.modules():
        if swapped(m):
            m.__class__ = kind  # the same parameters and attributes, another forward
    return network


class _PaddedConv2dSame(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_same(x, self.weight, self.bias, self.stride, self.dilation, self.groups)


class _ExportedConv2dSame(nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.bias is not None else self.weight.new_zeros(self.out_channels)  # the exporter takes no None
        return _SameConv.apply(x, self.weight, bias, self.stride, self.dilation, self.groups)


class _SameConv(torch.autograd.Function):
    """`conv2d_same`, exported as one ONNX `Conv` with `auto_pad=SAME_UPPER`. The exporter cannot
    trace size arithmetic inside a function with its own symbolic: hence sizes as Python ints."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, dilation, groups):  # noqa: ARG004 - autograd's signature
        return conv2d_same(x, weight, bias, stride, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, stride, dilation, groups):
        kernel = weight.type().sizes()[-2:]
        return g.op("Conv", x, weight, bias, auto_pad_s="SAME_UPPER", kernel_shape_i=list(kernel),
                    strides_i=list(stride), dilations_i=list(dilation), group_i=groups)
