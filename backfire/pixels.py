"""Pixels in memory: float tensors in [0, 1] ↔ 8-bit values and pictures (no files here).

The one home of rounding to 8 bits: :func:`quantize` is exactly what a saved 8-bit file reads back as,
:func:`to_uint8` and :func:`to_pil` make pictures of a tensor (previews, thumbnails, the cleaning
transforms, the file writers of :mod:`backfire.io`). Protect, judge and the inpainters need this of
pixels and nothing of the file layer.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["as_chw", "quantize", "to_pil", "to_uint8"]


def as_chw(pixels: torch.Tensor) -> torch.Tensor:
    """3xHxW (or 1x3xHxW) finite float pixels, detached; anything else is a TypeError or ValueError."""
    if not isinstance(pixels, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(pixels).__name__}")
    t = pixels.detach()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected pixels of shape 3xHxW or 1x3xHxW, got {tuple(pixels.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"expected floating-point pixels in [0, 1], got dtype {t.dtype}")
    if t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"cannot save an empty image of shape {tuple(pixels.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("pixels contain NaN or infinite values")
    return t


def quantize(pixels: torch.Tensor, low: torch.Tensor | None = None,
             high: torch.Tensor | None = None) -> torch.Tensor:
    """round(clamp(x, 0, 1) * 255) / 255 as float32: exactly what a saved 8-bit PNG reads back as.

    With ``low`` / ``high``, a value is held to the grid levels inside [low, high] instead of rounding out
    of them (a protection rounded to 8 bits then never exceeds its budget, even on a 16-bit photo).
    """
    level = torch.round(pixels.detach().to(torch.float32).clamp(0.0, 1.0) * 255.0)
    slack = 1e-4  # the float error of x·255 for an 8-bit x must not cost a whole level
    if low is not None:
        level = torch.maximum(level, torch.ceil((low.detach().float() * 255.0 - slack).clamp(0.0, 255.0)))
    if high is not None:
        level = torch.minimum(level, torch.floor((high.detach().float() * 255.0 + slack).clamp(0.0, 255.0)))
    return level / 255.0


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """3xHxW (or 1x3xHxW) float in [0, 1] -> HxWx3 uint8, rounded (never truncated)."""
    t = as_chw(pixels).to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0)
    q = torch.round(t * 255.0).to(torch.uint8)
    return np.ascontiguousarray(q.permute(1, 2, 0).numpy())


def to_pil(pixels: torch.Tensor, long_side: int | None = None) -> Image.Image:
    """An RGB picture of 3xHxW pixels (rounded), shrunk with Lanczos so its long side is at most ``long_side``.

    The one way a tensor becomes a picture: previews, thumbnails, the cleaning transforms.
    """
    picture = Image.fromarray(to_uint8(pixels), mode="RGB")
    if long_side is not None and max(picture.size) > long_side:
        scale = long_side / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture
