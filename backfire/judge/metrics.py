"""Image-quality metrics of the evaluation protocol (docs/evaluation.md).

Each metric is a function on single images (3×H×W) with a batched form (N×3×H×W → N). All inputs
go through :func:`validate`; pixels are in [0, 1].

SSIM is written here rather than taken from a library because the protocol measures it on the
bounding box of a mask, which can be smaller than the usual 11-px window: the window shrinks to
fit (odd, ≥ 3) instead of failing. On images of 11 px and more it equals pytorch-msssim's
``ssim(..., data_range=1, win_size=11, win_sigma=1.5)`` (the tests check this).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 100.0  # dB; identical images would otherwise give +inf, which JSON cannot hold
_K1, _K2 = 0.01, 0.03


def validate(*images: Tensor, mask: Tensor | None = None) -> None:
    """Raise ValueError unless the images are same-shaped (…, 3, H, W) tensors and the mask fits."""
    first = images[0]
    if first.ndim not in (3, 4) or first.shape[-3] != 3:
        raise ValueError(f"expected 3×H×W or N×3×H×W images, got {tuple(first.shape)}")
    for other in images[1:]:
        if other.shape != first.shape:
            raise ValueError(f"image shapes differ: {tuple(first.shape)} vs {tuple(other.shape)}")
    if mask is not None and mask.shape[-2:] != first.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(first.shape)}")


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_batch(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM per image (Gaussian window, per channel, averaged), N×3×H×W → N.

    The window shrinks to the largest odd size that fits the image (at least 3 px; smaller images
    are compared with a single window over the whole image).
    """
    validate(x, y)
    x, y = x.double(), y.double()
    side = min(x.shape[-2:])
    size = min(window, side if side % 2 else side - 1)
    if size < 3:
        return _global_ssim(x, y)
    g = _gaussian_window(size, sigma, x)
    channels = x.shape[1]
    kernel_h = g.view(1, 1, size, 1).repeat(channels, 1, 1, 1)
    kernel_w = g.view(1, 1, 1, size).repeat(channels, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = _K1**2, _K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


def _global_ssim(x: Tensor, y: Tensor) -> Tensor:
    dims = (2, 3)
    mu_x, mu_y = x.mean(dims), y.mean(dims)
    var_x, var_y = x.var(dims, unbiased=False), y.var(dims, unbiased=False)
    cov = ((x - mu_x[..., None, None]) * (y - mu_y[..., None, None])).mean(dims)
    c1, c2 = _K1**2, _K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(dim=1).float()


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two 3×H×W images (see :func:`ssim_batch`)."""
    validate(x, y)
    return float(ssim_batch(x[None], y[None], window, sigma)[0])


def psnr_batch(x: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
    """PSNR in dB per image over the pixels of ``mask`` (all pixels if None), capped at PSNR_CAP.

    Shape: x, y (N, 3, H, W); mask (N, 1, H, W) or (H, W) → (N,)
    """
    validate(x, y, mask=mask)
    weight = torch.ones_like(x[:, :1]) if mask is None else mask.to(x).expand_as(x[:, :1])
    mse = (((x.double() - y.double()) ** 2) * weight).sum(dim=(1, 2, 3))
    mse = mse / (weight.sum(dim=(1, 2, 3)).double() * x.shape[1]).clamp_min(1)
    floor = 10 ** (-PSNR_CAP / 10)
    return (10 * torch.log10(1 / mse.clamp_min(floor))).float()


def psnr(x: Tensor, y: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB of two 3×H×W images over the pixels of ``mask`` (H×W), capped at PSNR_CAP."""
    validate(x, y, mask=mask)
    return float(psnr_batch(x[None], y[None], None if mask is None else mask.reshape(1, 1, *mask.shape[-2:]))[0])


def mean_abs_in(x: Tensor, y: Tensor, mask: Tensor) -> float:
    """Mean |x − y| over the pixels of ``mask`` and all channels (NaN when the mask is empty)."""
    validate(x, y, mask=mask)
    m = mask.reshape(1, *mask.shape[-2:]).to(x)
    count = float(m.sum()) * x.shape[0]
    return float(((x - y).abs() * m).sum()) / count if count else math.nan


def linf_255(x: Tensor, y: Tensor) -> float:
    """The largest pixel difference, in /255 units."""
    validate(x, y)
    return float((x - y).abs().max()) * 255
