"""Colour difference as people see it: CIEDE2000 ΔE between two sRGB images, per pixel.

PSNR and SSIM weigh every channel's error alike; the eye does not: a step in a flat blue sky shows where the
same step in foliage does not, and chroma steps show more than their size in RGB. CIEDE2000 (CIE 142-2001;
Sharma, Wu & Dalal 2005, "The CIEDE2000 color-difference formula: implementation notes") is the standard
measure of that: ΔE ≈ 2.3 is one just-noticeable difference (Sharma 2003, *Digital Color Imaging Handbook*).
The pixels are read as sRGB (the files backfire writes are untagged 8-bit sRGB) under D65, as scikit-image's
``rgb2lab`` + ``deltaE_ciede2000`` do (the tests cross-check against it and Sharma's published pairs).

Computed in float64: the formula divides by small chroma values and takes angles, where float32 loses the
hundredths of a ΔE that separate "just under" from "just over" a JND.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

JND = 2.3
"""One just-noticeable difference in CIEDE2000 ΔE."""

# sRGB (linear) → CIE XYZ under D65, and the D65 white point (the IEC 61966-2-1 matrix, as scikit-image uses).
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423),
               (0.212671, 0.715160, 0.072169),
               (0.019334, 0.119193, 0.950227))
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_EPSILON = (6 / 29) ** 3  # below it CIELAB's cube root becomes a line (CIE 15)
_POW25_7 = 25.0 ** 7


def srgb_to_lab(image: Tensor) -> Tensor:
    """CIELAB (…, 3, H, W) of an sRGB image (…, 3, H, W) in [0, 1]; L in [0, 100]. Float64."""
    c = image.to(torch.float64).clamp(0, 1)
    linear = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=torch.float64, device=image.device)
    white = torch.tensor(_WHITE_D65, dtype=torch.float64, device=image.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white[:, None, None]
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=-3)


def _hue_degrees(b: Tensor, a: Tensor) -> Tensor:
    """Hue angle in [0, 360) degrees; 0 where the colour has no chroma (the formula's convention)."""
    hue = torch.rad2deg(torch.atan2(b, a)) % 360
    return torch.where((a == 0) & (b == 0), torch.zeros_like(hue), hue)


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    """CIEDE2000 ΔE (…, H, W) between two CIELAB images (…, 3, H, W), with k_L = k_C = k_H = 1."""
    l1, a1, b1 = lab1.to(torch.float64).unbind(-3)
    l2, a2, b2 = lab2.to(torch.float64).unbind(-3)
    c_mean7 = ((torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - torch.sqrt(c_mean7 / (c_mean7 + _POW25_7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p, h2p = _hue_degrees(b1, a1p), _hue_degrees(b2, a2p)
    chroma = c1p * c2p != 0  # a hue difference only between two colours that have hue

    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(chroma, dh, torch.zeros_like(dh))
    d_l, d_c = l2 - l1, c2p - c1p
    d_h = 2 * torch.sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh / 2))

    l_mean, c_mean = (l1 + l2) / 2, (c1p + c2p) / 2
    h_sum, h_gap = h1p + h2p, (h1p - h2p).abs()
    h_mean = torch.where(h_gap <= 180, h_sum / 2, torch.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = torch.where(chroma, h_mean, h_sum)

    rad = torch.deg2rad
    t = (1 - 0.17 * torch.cos(rad(h_mean - 30)) + 0.24 * torch.cos(rad(2 * h_mean))
         + 0.32 * torch.cos(rad(3 * h_mean + 6)) - 0.20 * torch.cos(rad(4 * h_mean - 63)))
    d_theta = 30 * torch.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * torch.sqrt(c_mean ** 7 / (c_mean ** 7 + _POW25_7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / torch.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    r_t = -torch.sin(rad(2 * d_theta)) * r_c
    tl, tc, th = d_l / s_l, d_c / s_c, d_h / s_h
    return torch.sqrt((tl ** 2 + tc ** 2 + th ** 2 + r_t * tc * th).clamp_min(0))


def delta_e_map(x: Tensor, y: Tensor) -> Tensor:
    """CIEDE2000 ΔE per pixel (…, H, W) between two sRGB images (…, 3, H, W) in [0, 1]."""
    return ciede2000(srgb_to_lab(x), srgb_to_lab(y))


def delta_e(x: Tensor, y: Tensor, mask: Tensor | None = None, quantile: float = 0.99) -> tuple[float, float]:
    """The mean and the ``quantile`` (default the 99th percentile) of the per-pixel ΔE between two sRGB images
    (3, H, W) — over the pixels where ``mask`` (H, W) is set, or all of them. The percentile says whether the
    change shows *anywhere*: a mean under one JND can hide a visible block."""
    if x.shape != y.shape or x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"delta_e takes two images of one shape (3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    values = delta_e_map(x, y)
    if mask is not None:
        values = values[mask.to(torch.bool)]
    if values.numel() == 0:
        return 0.0, 0.0
    # The nearest-rank percentile: torch.quantile refuses more than 2^24 values (a 16-megapixel photo).
    rank = max(1, math.ceil(quantile * values.numel()))
    return float(values.mean()), float(values.flatten().kthvalue(rank).values)
