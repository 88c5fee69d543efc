"""Gaussian filtering, written once: SSIM's local statistics (:mod:`backfire.judge.metrics`, and through
it the training loss) and the attacker's differentiable blur (:mod:`backfire.inpainters.cleaning`).

A leaf module (it imports nothing of ours), so the inpainters, the judge and the trainer may all use it.
Any dtype, differentiable, no host syncs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["gaussian_kernel", "separable_filter"]


def gaussian_kernel(size: int, sigma: float, like: Tensor) -> Tensor:
    """The 1-D Gaussian of ``size`` taps centred on the middle one, standard deviation ``sigma`` px,
    normalised to sum 1, in ``like``'s dtype and device."""
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def separable_filter(images: Tensor, kernel: Tensor) -> Tensor:
    """Each channel of ``images`` (N×C×H×W) filtered by the 1-D ``kernel`` along the rows, then along the
    columns, without padding: N×C×(H−k+1)×(W−k+1). Pad first for a same-size result.

    The order is fixed (the two passes commute only up to rounding): every caller gets the same bits.
    """
    c, k = images.shape[1], kernel.numel()
    rows = F.conv2d(images, kernel.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(rows, kernel.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
