"""What a failed edit looks like: the image the backdoor should paint into the region."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

TargetKind = Literal["solid", "inverted", "restore"]
TARGET_KINDS: tuple[TargetKind, ...] = get_args(TargetKind)

_PRIMARIES = torch.eye(3)  # pure red, green, blue


def solid_colour(image: Tensor) -> Tensor:
    """The paper's target colour: of pure red, green and blue, the one farthest from the mean colour.

    Shape:
        - image: (3, H, W) in [0, 1]
        - output: (3,) the chosen primary
    """
    mean = image.reshape(3, -1).mean(dim=1)
    distances = ((_PRIMARIES.to(image) - mean) ** 2).sum(dim=1)
    return _PRIMARIES.to(image)[distances.argmax()]


def make_target(image: Tensor, kind: TargetKind = "solid") -> Tensor:
    """The full-frame target T for ``image``: a solid primary, the inverted image (the paper's variant), or
    the image itself (``restore``, after Markpainting, ICML 2021: the removal fails by painting the
    protected content back; the verdict then judges a failed edit by how close it comes to the original).

    Shape:
        - image: (3, H, W) in [0, 1]
        - output: (3, H, W) in [0, 1]
    """
    if kind == "solid":
        return solid_colour(image)[:, None, None].expand_as(image).clone()
    if kind == "inverted":
        return 1 - image
    if kind == "restore":
        return image.clone()
    raise ValueError(f"unknown target kind {kind!r}; choose from {', '.join(TARGET_KINDS)}")
