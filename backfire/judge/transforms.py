"""The attacker's cleaning transforms of docs/evaluation.md ("Robustness"), as real image operations.

Each transform takes a protected image x̃ (3×H×W in [0, 1]) and returns what an attacker would get after
cleaning it and saving the result: same shape, quantised to 8 bits (a saved file holds nothing finer).
They are not differentiable on purpose: they measure, they are never optimised through
(differentiable stand-ins for protection belong beside the model, not here).

Names: ``jpeg-95`` ``jpeg-85`` ``jpeg-75`` ``jpeg-50``, ``resize-0.5`` ``resize-0.75`` (down then back up,
bicubic), ``blur-0.5`` ``blur-1.0`` (Gaussian σ in px), ``noise-2`` ``noise-4`` (Gaussian σ in /255,
seeded), ``median-3`` and ``resize-0.75+jpeg-75`` (resize first, then JPEG).
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch import Tensor

from backfire.inpainters.cleaning import gaussian_blur
from backfire.pixels import quantize, to_pil

Transform = Callable[..., Tensor]


def _from_pil(picture: Image.Image) -> Tensor:
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _check(image: Tensor) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image of shape 3×H×W, got {tuple(image.shape)}")


def jpeg(image: Tensor, quality: int, seed: int = 0) -> Tensor:
    """Encode as JPEG at ``quality`` (Pillow, 4:2:0 as most tools save) and decode, in memory."""
    _check(image)
    buffer = _io.BytesIO()
    to_pil(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _from_pil(decoded)


def resize(image: Tensor, scale: float, seed: int = 0) -> Tensor:
    """Scale by ``scale`` and back to the original size, bicubic both ways (Pillow)."""
    _check(image)
    h, w = image.shape[-2:]
    picture = to_pil(image)
    small = picture.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return _from_pil(small.resize((w, h), Image.Resampling.BICUBIC))


def blur(image: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` px (exact separable kernel, radius 3σ, reflect)."""
    _check(image)
    return quantize(gaussian_blur(image.float()[None], sigma)[0])


def noise(image: Tensor, sigma: float, seed: int = 0) -> Tensor:
    """Add Gaussian noise of standard deviation ``sigma`` (pixel units, as everywhere: 2/255 for ``noise-2``);
    the same ``seed`` gives the same noise."""
    _check(image)
    generator = torch.Generator().manual_seed(seed)
    grain = torch.randn(image.shape, generator=generator) * sigma
    return quantize(image.float().cpu() + grain)


def median(image: Tensor, size: int = 3, seed: int = 0) -> Tensor:
    """Median filter over a ``size``×``size`` window, per channel (Pillow)."""
    _check(image)
    return _from_pil(to_pil(image).filter(ImageFilter.MedianFilter(size)))


def _named(function: Callable[..., Tensor], value) -> Transform:
    def transform(image: Tensor, seed: int = 0) -> Tensor:
        return function(image, value, seed=seed)
    return transform


def _resize_then_jpeg(image: Tensor, seed: int = 0) -> Tensor:
    return jpeg(resize(image, 0.75), 75)


TRANSFORMS: dict[str, Transform] = {
    "jpeg-95": _named(jpeg, 95),
    "jpeg-85": _named(jpeg, 85),
    "jpeg-75": _named(jpeg, 75),
    "jpeg-50": _named(jpeg, 50),
    "resize-0.5": _named(resize, 0.5),
    "resize-0.75": _named(resize, 0.75),
    "blur-0.5": _named(blur, 0.5),
    "blur-1.0": _named(blur, 1.0),
    "noise-2": _named(noise, 2 / 255),  # names speak /255, like the CLI; values are pixel units
    "noise-4": _named(noise, 4 / 255),
    "median-3": _named(median, 3),
    "resize-0.75+jpeg-75": _resize_then_jpeg,
}


def get_transforms(names) -> dict[str, Transform]:
    """The transforms called ``names`` (in that order); ``ValueError`` naming the valid ones otherwise."""
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform(s) {', '.join(unknown)}; valid: {', '.join(TRANSFORMS)}")
    return {n: TRANSFORMS[n] for n in names}
