"""A spectral baseline: logistic regression on the power spectrum of the high-pass residual.

Generators' up-sampling layers leave periodic peaks and a changed high-frequency fall-off
in the Fourier spectrum (Durall et al., CVPR 2020; Dzanic et al., NeurIPS 2020). This model
cuts each input into `patch` x `patch` windows, takes the residual of a 3x3 box blur,
applies a Hann window, and averages the log power spectrum over rings of equal radius
(azimuthal average), per colour channel. Those fixed features feed one standardising
BatchNorm and one linear layer: a logistic regression, trained with BCE by the same loop
as every other model. The feature map keeps its spatial layout, so heatmaps still work.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fakescope.errors import ConfigError


class SpectralLR(nn.Module):
    """Radial log-power spectra of residual patches, pooled, standardised, then one linear layer."""

    def __init__(self, patch: int = 32, bins: int = 24, eps: float = 1e-8):
        super().__init__()
        self.patch = patch
        self.bins = bins
        self.eps = eps
        self.num_features = 3 * bins
        hann = torch.hann_window(patch, periodic=False)
        self.register_buffer("window", torch.outer(hann, hann), persistent=False)
        self.register_buffer("ring_mean", _ring_averager(patch, bins), persistent=False)
        angle = 2 * math.pi * torch.outer(torch.arange(patch), torch.arange(patch)).double() / patch
        self.register_buffer("dft_cos", angle.cos().float(), persistent=False)
        self.register_buffer("dft_sin", angle.sin().float(), persistent=False)
        self.norm = nn.BatchNorm1d(self.num_features)
        self.linear = nn.Linear(self.num_features, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 3 * bins, max(1, H // patch), max(1, W // patch)) log radial power per patch.

        Written in operators ONNX exports with dynamic sizes: patches by reshape, the 2-D DFT as matrix products
        (of a real patch X: real part CXC - SXS, imaginary -(SXC + CXS)); a side shorter than a patch is
        replicate-padded to one (`n + 1 // (n + 1)` is max(n, 1) for the exporter, which cannot trace `max`).
        """
        n, c = x.shape[:2]
        p = self.patch
        with torch.autocast(x.device.type, enabled=False):  # spectra need float32 under bf16 training
            x = x.float()
            residual = x - nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            h, w = x.shape[2] // p, x.shape[3] // p
            h, w = h + 1 // (h + 1), w + 1 // (w + 1)
            residual = nn.functional.pad(residual, (0, p - 1, 0, p - 1), mode="replicate")[..., : h * p, : w * p]
            patches = residual.reshape(n, c, h, p, w, p).transpose(3, 4) * self.window  # N, C, h, w, p, p
            cos, sin = self.dft_cos, self.dft_sin
            real = cos @ patches @ cos - sin @ patches @ sin
            imag = sin @ patches @ cos + cos @ patches @ sin
            power = (real.square() + imag.square()).flatten(-2)  # N, C, h, w, p*p
            rings = torch.log(power @ self.ring_mean + self.eps)  # N, C, h, w, bins
        return rings.permute(0, 1, 4, 2, 3).reshape(n, c * self.bins, h, w)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised spectrum, pooled over patches: one vector per input."""
        return self.norm(self.forward_features(x).mean(dim=(2, 3)))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features.mean(dim=(2, 3)))).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _ring_averager(patch: int, bins: int) -> torch.Tensor:
    """A (patch * patch, bins) matrix that averages an FFT power grid over rings of equal radius.

    The rings split the radii from the lowest non-zero frequency to the corner evenly; the DC
    term is left out.
    """
    freqs = torch.fft.fftfreq(patch)
    radius = torch.sqrt(freqs[:, None] ** 2 + freqs[None, :] ** 2).flatten()
    lowest, corner = 1.0 / patch, 0.5 * math.sqrt(2.0)
    index = torch.clamp(((radius - lowest) / (corner - lowest) * bins).long(), 0, bins - 1)
    member = nn.functional.one_hot(index, bins).float()
    member[radius == 0] = 0.0
    return member / member.sum(0).clamp(min=1.0)


def spectral_lr(pretrained: bool | str = False, **kwargs) -> SpectralLR:
    """The `spectral_lr` architecture (declared in `fakescope.models.zoo`).

    Its features are fixed, so there is nothing to pretrain: `pretrained=True` (the training
    default) builds the same model, and training records `pretrained: false`; a weights path is refused.
    """
    if isinstance(pretrained, str):
        raise ConfigError("spectral_lr has no pretrained backbone; train it with --scratch")
    return SpectralLR(**kwargs)
