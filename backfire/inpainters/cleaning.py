"""The attacker's cleaning, made differentiable, wrapped around a model (expectation over transformations).

An attacker may re-save the protected photo as JPEG, shrink it, blur it or add grain before the edit.
:class:`Cleaned` wraps any :class:`Inpainter` so that its :meth:`~Inpainter.surrogate` first applies a
randomly drawn cleaning — the optimisation then sees the edit an attacker makes *after* cleaning, and a
perturbation that only works on the pristine file stops being the optimum. This is the foolbox idea:
robustness comes from wrapping the model, not from another copy of the attack loop.

The cleanings here are stand-ins for the real ones of :mod:`backfire.judge.transforms` (which measure,
with Pillow, and are never optimised through): JPEG is kornia's differentiable codec (Reich et al. 2024),
resize is PyTorch's antialiased bicubic, blur an exact Gaussian, noise additive Gaussian grain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.filters import gaussian_kernel, separable_filter
from backfire.inpainters.base import Inpainter, Wrapper
from backfire.pixels import quantize

CleaningKind = Literal["jpeg", "resize", "blur", "noise"]
CLEANING_KINDS: tuple[CleaningKind, ...] = get_args(CleaningKind)


def straight_through_round(image: Tensor) -> Tensor:
    """Round to the 8-bit grid in the forward pass, identity in the backward pass (straight-through)."""
    return image + (quantize(image).to(image) - image).detach()


def jpeg(image: Tensor, quality: float) -> Tensor:
    """Differentiable JPEG encode/decode at ``quality`` (1–100), 4:2:0 like Pillow's default.

    Shape:
        - image: (N, 3, H, W) in [0, 1], any H×W
        - output: same
    """
    from kornia.enhance import jpeg_codec_differentiable

    quality_t = torch.full((image.shape[0],), float(quality), device=image.device, dtype=torch.float32)
    return jpeg_codec_differentiable(image.float(), quality_t).clamp(0, 1).to(image.dtype)


def resize(image: Tensor, scale: float) -> Tensor:
    """Scale by ``scale`` and back to the original size (bicubic, antialiased on the way down)."""
    h, w = image.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=scale < 1)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of standard deviation ``sigma`` px: exact separable kernel of radius ⌈3σ⌉, reflect
    padding (replicate on images too small to reflect).

    Shape:
        - image: (N, C, H, W)
        - output: same
    """
    radius = max(1, math.ceil(3 * sigma))
    mode = "reflect" if radius < min(image.shape[-2:]) else "replicate"
    padded = F.pad(image, (radius, radius, radius, radius), mode=mode)
    return separable_filter(padded, gaussian_kernel(2 * radius + 1, sigma, image))


def noise(image: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Add Gaussian grain of standard deviation ``sigma`` (pixel units), drawn from ``generator``."""
    grain = torch.randn(image.shape, generator=generator).to(image.device, image.dtype)
    return (image + sigma * grain).clamp(0, 1)


@dataclass(frozen=True)
class CleaningRange:
    """How strongly each kind of cleaning is drawn (uniformly between the bounds).

    Arguments:
        jpeg: quality range; resize: scale range; blur: σ range in px; noise: σ range in pixel units.
    """

    jpeg: tuple[float, float] = (50.0, 95.0)
    resize: tuple[float, float] = (0.5, 0.9)
    blur: tuple[float, float] = (0.3, 1.2)
    noise: tuple[float, float] = (1 / 255, 4 / 255)


class CleaningSampler:
    """Draws one cleaning per image: none with probability ``1 − rate``, else a kind and a strength.

    Arguments:
        kinds: which cleanings to draw from (uniformly), from :data:`CLEANING_KINDS`.
        rate: the probability that an edit is cleaned at all.
        seed: seeds the draws (kinds, strengths and grain), so a protection can be repeated.
        ranges: the strengths.

    Examples::

        >>> sampler = CleaningSampler(("jpeg", "resize"), rate=0.7, seed=0)
        >>> cleaned = sampler(images)            # (N, 3, H, W) → (N, 3, H, W), one draw per image
    """

    def __init__(self, kinds: tuple[str, ...] = CLEANING_KINDS, rate: float = 0.7, seed: int = 0,
                 ranges: CleaningRange = CleaningRange()):
        unknown = [k for k in kinds if k not in CLEANING_KINDS]
        if unknown or not kinds:
            raise ValueError(f"unknown or no cleaning kinds {unknown}; choose from {', '.join(CLEANING_KINDS)}")
        if not 0 <= rate <= 1:
            raise ValueError(f"cleaning rate must be in [0, 1], got {rate}")
        self.kinds, self.rate, self.ranges = tuple(kinds), rate, ranges
        self.generator = torch.Generator().manual_seed(seed)
        self.last: list[str] = []  # what the last call drew, e.g. ["none", "jpeg-71.3"] (for tests and logs)

    def _uniform(self, bounds: tuple[float, float]) -> float:
        return bounds[0] + (bounds[1] - bounds[0]) * float(torch.rand((), generator=self.generator))

    def draw(self) -> tuple[str, Callable[[Tensor], Tensor]]:
        """One cleaning: its name with the strength drawn, and the function."""
        if float(torch.rand((), generator=self.generator)) >= self.rate:
            return "none", lambda x: x
        kind = self.kinds[int(torch.randint(len(self.kinds), (), generator=self.generator))]
        value = self._uniform(getattr(self.ranges, kind))
        functions: dict[str, Callable[[Tensor], Tensor]] = {
            "jpeg": lambda x: jpeg(x, value),
            "resize": lambda x: resize(x, value),
            "blur": lambda x: gaussian_blur(x, value),
            "noise": lambda x: noise(x, value, self.generator),
        }
        return f"{kind}-{value:.3g}", functions[kind]

    def __call__(self, images: Tensor) -> Tensor:
        drawn = [self.draw() for _ in range(images.shape[0])]
        self.last = [name for name, _ in drawn]
        return torch.cat([clean(image[None]) for image, (_, clean) in zip(images, drawn)])


class Cleaned(Wrapper):
    """``inner``, with the attacker's cleaning drawn and applied to the image before every edit.

    Arguments:
        inner: the model the attacker uses.
        cleaning: draws the cleaning (one per image of a batch).

    Shape:
        as :class:`Inpainter`; outside the mask the output is the *cleaned* image, as the attacker's
        file would be.

    Examples::

        >>> attacker = Cleaned(load_inpainter("backfire-s"), CleaningSampler(seed=0))
        >>> fill = attacker.surrogate(image, mask)   # differentiable in image, through the JPEG too
    """

    def __init__(self, inner: Inpainter, cleaning: CleaningSampler):
        super().__init__(inner)
        self.cleaning = cleaning

    @property
    def name(self) -> str:
        return f"{self.inner.name}+cleaning"

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.inner.inpaint(self.cleaning(image.float()), mask)

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.inner.surrogate(self.cleaning(image.float()), mask)

    def support(self, mask: Tensor) -> Tensor:
        # a resize or a blur spreads every pixel over its neighbours: the edit may see the whole photo
        return torch.ones(mask.shape[-2:], dtype=torch.float32, device=mask.device)

    def framed(self, photo: Tensor, box: tuple[int, int, int, int]) -> Inpainter | None:
        return None


def with_cleaning(model: Inpainter, cleaning: CleaningSampler) -> Inpainter:
    """``model`` with the attacker's cleaning drawn from ``cleaning`` before every edit (:class:`Cleaned`)."""
    return Cleaned(model, cleaning)
