"""Class-activation heatmaps: where in an image a model finds its evidence for P(ai).

Grad-CAM and Grad-CAM++ come from the pytorch-grad-cam package, with the single P(ai) logit
as target, on the layer that produces the model's `forward_features` output (found by tracing
one forward pass, so every timm backbone and any network of your own whose features come from a
module works). Plain CAM (Zhou et al., 2016) weights the same feature maps with the linear head
(the timm classifier, else the network's last linear layer); it exists when the head is global
average pooling plus one linear layer, which is checked: the CAM's spatial mean must equal the logit.

Maps cover the whole image at native resolution (the networks are fully convolutional), or,
for large images, tiles of the model's crop size that cover the image, stitched. Magnitudes are
kept across tiles (no per-tile rescaling), so regions compare across the image; the final map
is divided by its maximum.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import weakref
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakescope.errors import ConfigError
from fakescope.models.bundle import LoadedModel
from fakescope.models.config import InputPolicy
from fakescope.models.tiling import Tiles, make_tiles, normalize, whole_image_tiles

METHODS = ("gradcam", "gradcam++", "cam")
MAX_WHOLE_PIXELS = 1024 * 1024
"""Larger images are explained tile by tile, to bound memory (Grad-CAM through a whole 4 MP image peaked at 8 GB)."""


class _Unscaled:
    """Keeps raw CAM magnitudes: skips pytorch-grad-cam's per-input min-max scaling and resizing; and records only
    the forward passes of the thread that made it (`_own_thread`), so another thread's detection through the network
    adds nothing; gradient passes take turns (`_gradient_lock`)."""

    def __init__(self, model: nn.Module, target_layers: list[nn.Module]):
        super().__init__(model, target_layers)
        hooks = self.activations_and_grads
        for handle in hooks.handles:
            handle.remove()
        hooks.handles = [layer.register_forward_hook(_own_thread(record))
                         for layer in target_layers for record in (hooks.save_activation, hooks.save_gradient)]

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        grads = self.activations_and_grads
        return [
            np.maximum(self.get_cam_image(input_tensor, layer, targets, a.numpy(), g.numpy(), eigen_smooth), 0)
            for layer, a, g in zip(self.target_layers, grads.activations, grads.gradients)
        ]

    def aggregate_multi_layers(self, cam_per_target_layer):
        return np.mean(cam_per_target_layer, axis=0)


def _own_thread(hook: Callable) -> Callable:
    """`hook`, called only for the thread that wraps it: a module's hooks see every thread's passes through it."""
    owner = threading.get_ident()

    def owned(*args):
        return hook(*args) if threading.get_ident() == owner else None

    return owned


def _gradient_lock(network: nn.Module) -> threading.Lock:
    """The lock one gradient pass through `network` holds: pytorch-grad-cam zeroes the network's parameter gradients and
    runs backward through them, so two threads' passes at once raced on the shared `.grad` (a process abort in
    `zero_grad`). Forward passes without gradients (detection) need no lock."""
    with _LOCKS_LOCK:
        return _GRADIENT_LOCKS.setdefault(network, threading.Lock())


_GRADIENT_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


@functools.cache
def _gradient_cams() -> dict[str, type]:
    """pytorch-grad-cam's methods without their rescaling; imported on first use (tiles and CAM need none)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus

    return {"gradcam": type("_GradCAM", (_Unscaled, GradCAM), {}),
            "gradcam++": type("_GradCAMPlusPlus", (_Unscaled, GradCAMPlusPlus), {})}


def class_activation_map(
    model: LoadedModel,
    image: Image.Image,
    method: str = "gradcam",
    *,
    tiled: bool | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """An H x W float32 map in [0, 1] of where `model` sees evidence that `image` is ai.

    Args:
        model: A loaded fakescope model on its PyTorch network.
        image: An RGB image, explained at its native resolution.
        method: `gradcam`, `gradcam++` or `cam`.
        tiled: Explain crop-size tiles covering the image and stitch them; default: only
            for images over `MAX_WHOLE_PIXELS`, or for a network that fails on the whole image
            (one that takes only its crop size).
        batch_size: Tiles per backward pass.

    Raises:
        ConfigError: An unknown method, a network that is not a PyTorch one with `forward_features`
            (an ONNX runtime), features no module produces, `cam` on a head that is not pooling + linear,
            or a map with NaN or infinite values.

    Example:
        >>> from fakescope.models import load_model
        >>> heat = class_activation_map(load_model(), Image.open("examples/coffee.jpg").convert("RGB"))  # doctest: +SKIP
        >>> heat.shape, float(heat.max())  # doctest: +SKIP
        ((400, 600), 1.0)
    """
    if method not in METHODS:
        raise ConfigError(f"unknown explanation method {method!r}; expected one of {', '.join(METHODS)}")
    require_classifier(model)
    policy = model.config.input
    if tiled is None:
        tiled = image.width * image.height > MAX_WHOLE_PIXELS
    if not tiled:
        try:
            return _heat(model, whole_image_tiles(image), method, batch_size)
        except RuntimeError:  # a network that takes only its crop size (a flatten + linear head): tiles, as it was trained
            pass
    return _heat(model, covering_tiles(image, policy), method, batch_size)


def covering_tiles(image: Image.Image, policy: InputPolicy) -> Tiles:
    """Crop-size tiles that cover every pixel of the image (after `make_tiles` upscales a side under the crop size)."""
    upscale = max(1.0, policy.crop_size / min(image.size)) if policy.upscale_small else 1.0
    covering = math.ceil(max(image.size) * upscale / policy.crop_size)
    return make_tiles(image, dataclasses.replace(policy, grid=covering))


def _heat(model: LoadedModel, tiles: Tiles, method: str, batch_size: int) -> np.ndarray:
    device = next(model.network.parameters()).device
    maps = [
        raw_maps(model.network, normalize(chunk.to(device), model.config.input), method)
        for chunk in torch.from_numpy(tiles.pixels).split(batch_size)
    ]
    heat = stitch(tiles, place(torch.cat(maps), feature_stride(model.network), tiles.pixels.shape[-2:]).numpy())
    if not np.isfinite(heat).all():  # drawn, NaN is transparent: the overlay would look like no evidence at all
        raise ConfigError(f"{model.config.name}: the {method} map is not finite (the network gave NaN or infinite values)")
    peak = float(heat.max())
    return heat / peak if peak > 0 else heat


def feature_stride(network: nn.Module) -> tuple[int, int]:
    """Input pixels per feature cell (rows, columns), from the cells that 256 more pixels add (a 112 px crop has
    4 cells of 32, the last partial, so its size over theirs, 28, is not the stride); measured once per network."""
    if (stride := _STRIDES.get(network)) is None:
        device = next(network.parameters()).device
        with torch.no_grad():
            small, large = (network.forward_features(torch.zeros(1, 3, side, side, device=device)) for side in (256, 512))
        grown = (large.shape[-2] - small.shape[-2], large.shape[-1] - small.shape[-1])
        if large.ndim != 4 or min(grown) <= 0:
            raise ConfigError(f"maps need features that grow with the image: {type(network).__name__}.forward_features "
                              f"gave {tuple(small.shape)} at 256 px and {tuple(large.shape)} at 512 px")
        stride = _STRIDES[network] = (round(256 / grown[0]), round(256 / grown[1]))
    return stride


_STRIDES: weakref.WeakKeyDictionary[nn.Module, tuple[int, int]] = weakref.WeakKeyDictionary()


def raw_maps(network: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """Non-negative evidence maps (N, h, w) on the feature grid of a normalised batch, unscaled (`place` puts them
    on its pixels)."""
    if method == "cam":
        maps = _head_cam(network, x)
    else:
        layer = feature_layer(network, x[:1, :, :256, :256])
        from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

        cam = _gradient_cams()[method](network, [layer])
        try:
            with _gradient_lock(network), torch.enable_grad():
                found = cam(x.detach().requires_grad_(True), [BinaryClassifierOutputTarget(1)] * len(x))
        finally:
            cam.activations_and_grads.release()
        maps = torch.from_numpy(np.asarray(found, dtype=np.float32))
    return maps.float().cpu().clamp_(min=0)


def place(maps: torch.Tensor, stride: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) feature maps on (N, H, W) pixels, cell (i, j) over `stride` pixels from (i, j) * stride.

    Upsampled by the stride and cropped to the image: resized to it, the grid stretched on a side that is
    not a multiple of the stride (300 px: 10 cells of 32, the last partial). Pixels past the last cell
    (features that floor the size) take its edge values.
    """
    (h, w), (height, width) = maps.shape[-2:], size
    cells = nn.functional.interpolate(maps.unsqueeze(1), size=(h * stride[0], w * stride[1]), mode="bilinear",
                                      align_corners=False)
    short = (0, max(0, width - cells.shape[-1]), 0, max(0, height - cells.shape[-2]))
    return nn.functional.pad(cells, short, mode="replicate")[:, 0, :height, :width]


def unsupported(model: LoadedModel, method: str) -> str | None:
    """Why `model`'s architecture gives no `method` map for any image (checked on one crop-size noise tile), or None."""
    try:
        require_classifier(model)
        side = model.config.input.crop_size
        noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)  # not flat: max-pool != mean
        device = next(model.network.parameters()).device
        x = normalize(torch.from_numpy(whole_image_tiles(noise).pixels).to(device), model.config.input)
        if method == "cam":
            _head_cam(model.network, x)
        else:
            feature_layer(model.network, x)
    except ConfigError as exc:
        return str(exc)
    return None


def require_classifier(model: LoadedModel) -> None:
    """Grad-CAM, CAM and embeddings need the PyTorch network (its gradients) with the registry's `forward_features`."""
    if not (isinstance(model.network, nn.Module) and hasattr(model.network, "forward_features")):
        raise ConfigError(f"{model.config.name}: this method needs a PyTorch network with forward_features, not "
                          f"{type(model.network).__name__} (per-tile heatmaps, --method tiles, work for every model)")


def feature_layer(network: nn.Module, sample: torch.Tensor) -> nn.Module:
    """The outermost module whose output is `network.forward_features(sample)`: the last conv block.

    Raises:
        ConfigError: The features come from a plain function, not a module.
    """
    outputs: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [
        m.register_forward_hook(_own_thread(lambda module, _inputs, output: outputs.append((module, output))))
        for m in network.modules()
        if m is not network
    ]
    try:
        with torch.no_grad():
            features = network.forward_features(sample)
    finally:
        for hook in hooks:
            hook.remove()
    _require_maps(network, features)
    for module, output in reversed(outputs):
        if output is features:
            return module
    raise ConfigError(f"{type(network).__name__}: no module produces the forward_features output to explain "
                      "(per-tile heatmaps, --method tiles, work for every model)")


def stitch(tiles: Tiles, maps: np.ndarray) -> np.ndarray:
    """Paint tile-sized maps over the image (mean where tiles overlap); returns H x W float32."""
    h, w = tiles.image_size
    if tiles.scale != 1.0:  # a side under the crop size was upscaled before tiling: paint there, then scale back
        upscaled = dataclasses.replace(tiles, image_size=(round(h * tiles.scale), round(w * tiles.scale)), scale=1.0)
        return np.asarray(Image.fromarray(stitch(upscaled, maps)).resize((w, h), Image.Resampling.BILINEAR), np.float32)
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    th, tw = maps.shape[-2:]
    for (top, left), m in zip(tiles.boxes, maps):
        total[top:top + th, left:left + tw] += m
        count[top:top + th, left:left + tw] += 1
    return total / np.maximum(count, 1)


def _require_maps(network: nn.Module, features: torch.Tensor) -> None:
    if features.ndim != 4:
        raise ConfigError(f"{type(network).__name__}: forward_features gives shape {tuple(features.shape)}, not (N, C, h, w) "
                          "feature maps to explain (per-tile heatmaps, --method tiles, work for every model)")


def _head_cam(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CAM: the network's own head applied to each feature cell alone, less its constant (the head of zero features:
    the bias, which no cell holds), a logit per cell (N, h, w); with the bias a map was shifted, cut or flattened.

    Where the head is average pooling then affine layers (a linear classifier, or spectral_lr's eval-mode batch
    norm and linear layer), the cells' mean plus that constant is the image's logit; that is checked, and any other
    head refused.
    """
    with torch.no_grad():
        features = network.forward_features(x)
        _require_maps(network, features)
        n, c, h, w = features.shape
        try:
            cells = features.permute(0, 2, 3, 1).reshape(n * h * w, c, 1, 1)
            bias = network.forward_head(torch.zeros_like(cells[:1])).float().reshape(())
            maps = network.forward_head(cells).float().reshape(n, h, w) - bias
        except RuntimeError:  # a head of several logits, or one that needs more than one cell
            raise ConfigError("CAM needs a one-logit head over average-pooled features; use gradcam for this "
                              "architecture") from None
        logits = network.forward_head(features).float().reshape(n)
    finite = maps.isfinite().all() and logits.isfinite().all()  # NaN never compares equal: said as not finite instead
    if finite and not torch.allclose(maps.mean((1, 2)) + bias, logits, rtol=1e-3, atol=1e-3):
        raise ConfigError("CAM needs global average pooling + affine layers (linear, batch norm) as its head; use "
                          "gradcam for this architecture")
    return maps.cpu()
