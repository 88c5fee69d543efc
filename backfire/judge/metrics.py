"""Image-quality metrics of the evaluation protocol (docs/evaluation.md).

Each metric is a function on single images (3×H×W) with a batched form (N×3×H×W → N). All inputs
go through :func:`validate`; pixels are in [0, 1].

SSIM is written here rather than taken from a library because the protocol measures it on the
bounding box of a mask, which can be smaller than the usual 11-px window: the window shrinks to
fit (odd, ≥ 3) instead of failing. On images of 11 px and more it equals pytorch-msssim's
``ssim(..., data_range=1, win_size=11, win_sigma=1.5)`` (the tests check this). Its parts
(:func:`ssim_window`, :func:`ssim_map`: any dtype, differentiable) also make the trainer's SSIM loss
(:func:`backfire.train.losses.masked_ms_ssim`); the metric computes them in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from backfire.filters import gaussian_kernel, separable_filter

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


def ssim_window(side: int, window: int, sigma: float, like: Tensor) -> Tensor | None:
    """SSIM's Gaussian window (1-D, ``like``'s dtype and device) for images whose shorter side is ``side``:
    ``window`` taps, shrunk to the largest odd size that fits; ``None`` when that is under 3 px."""
    size = min(window, side if side % 2 else side - 1)
    return gaussian_kernel(size, sigma, like) if size >= 3 else None


def _ssim_of_moments(mu_x: Tensor, mu_y: Tensor, var_x: Tensor, var_y: Tensor, cov: Tensor) -> Tensor:
    c1, c2 = _K1**2, _K2**2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim_map(x: Tensor, y: Tensor, kernel: Tensor) -> Tensor:
    """The SSIM map of x vs y (N×C×H×W) under the separable window ``kernel``: N×C×(H−k+1)×(W−k+1).

    No checks and no casts: it computes in the inputs' dtype and is differentiable (the training loss
    backpropagates through it; :func:`ssim_batch` calls it in float64).
    """
    mu_x, mu_y = separable_filter(x, kernel), separable_filter(y, kernel)
    var_x = separable_filter(x * x, kernel) - mu_x**2
    var_y = separable_filter(y * y, kernel) - mu_y**2
    cov = separable_filter(x * y, kernel) - mu_x * mu_y
    return _ssim_of_moments(mu_x, mu_y, var_x, var_y, cov)


def ssim_batch(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM per image (Gaussian window, per channel, averaged), N×3×H×W → N.

    The window shrinks to the largest odd size that fits the image (at least 3 px; smaller images
    are compared with a single window over the whole image).
    """
    validate(x, y)
    x, y = x.double(), y.double()
    kernel = ssim_window(min(x.shape[-2:]), window, sigma, x)
    if kernel is None:
        return _global_ssim(x, y)
    return ssim_map(x, y, kernel).mean(dim=(1, 2, 3)).float()


def _global_ssim(x: Tensor, y: Tensor) -> Tensor:
    dims = (2, 3)
    mu_x, mu_y = x.mean(dims), y.mean(dims)
    var_x, var_y = x.var(dims, unbiased=False), y.var(dims, unbiased=False)
    cov = ((x - mu_x[..., None, None]) * (y - mu_y[..., None, None])).mean(dims)
    return _ssim_of_moments(mu_x, mu_y, var_x, var_y, cov).mean(dim=1).float()


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
