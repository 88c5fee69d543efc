"""Edits drawn afresh at every step: the masks attackers really draw, and benign edits beside them.

The evaluation protocol (docs/evaluation.md) fixes a few masks per family with fixed seeds; the
protection instead draws from the same families with *continuous* parameters (any dilation radius
0–32 px, any shift, any half-plane) and its own random stream, so that it learns the families and not
the particular masks the evaluation happens to use.

Attacker kinds: ``dilate`` (disk, r ∈ [0, 32] px, 0 = M itself), ``box`` (bbox(M) grown by 0–16 px),
``strokes`` (brush strokes covering ≥ 95 % of M), ``shift`` (M ∪ M moved by up to 15 % of its box),
``erode`` (r ∈ [1, 4] px), ``partial`` (M cut by a random line through its centre: about half of it).
Benign kinds: ``ring`` (dilate(M, r) − M, r ∈ [4, 16], square), ``away`` (strokes and boxes of area
≈ area(M) at ≥ k px from M, k ∈ [0, 64]), ``object`` (a box the size of bbox(M) elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from backfire import masks as mask_ops

ATTACKER_KINDS: tuple[str, ...] = ("dilate", "box", "strokes", "shift", "erode", "partial")
BENIGN_KINDS: tuple[str, ...] = ("ring", "away", "object")

_MAX_DILATION = 32
_MAX_BOX_GROW = 16
_MAX_SHIFT = 0.15
_ERODE = (1, 4)
_RING = (4, 16)
_MAX_AWAY = 64


def _dilate(m: Tensor, rng: np.random.Generator) -> Tensor:
    return mask_ops.dilate(m, int(rng.integers(0, _MAX_DILATION + 1)))


def _box(m: Tensor, rng: np.random.Generator) -> Tensor:
    left, top, right, bottom = mask_ops.bbox(m)
    grow = int(rng.integers(0, _MAX_BOX_GROW + 1))
    out = torch.zeros_like(m, dtype=torch.float32)
    out[max(0, top - grow):bottom + grow, max(0, left - grow):right + grow] = 1
    return out


def _shift(m: Tensor, rng: np.random.Generator) -> Tensor:
    left, top, right, bottom = mask_ops.bbox(m)
    angle = rng.uniform(0, 2 * math.pi)
    size = rng.uniform(0, _MAX_SHIFT)
    dy, dx = round(size * (bottom - top) * math.sin(angle)), round(size * (right - left) * math.cos(angle))
    return torch.maximum(m.float(), mask_ops.shifted(m, dy, dx))


def _erode(m: Tensor, rng: np.random.Generator) -> Tensor:
    return mask_ops.erode(m, int(rng.integers(_ERODE[0], _ERODE[1] + 1)))


def _partial(m: Tensor, rng: np.random.Generator) -> Tensor:
    ys, xs = torch.nonzero(m > 0.5, as_tuple=True)
    angle = rng.uniform(0, 2 * math.pi)
    side = (ys - ys.float().mean()) * math.sin(angle) + (xs - xs.float().mean()) * math.cos(angle)
    out = torch.zeros_like(m, dtype=torch.float32)
    keep = side >= 0
    out[ys[keep], xs[keep]] = 1
    return out


def _ring(m: Tensor, rng: np.random.Generator) -> Tensor:
    return mask_ops.ring(m, int(rng.integers(_RING[0], _RING[1] + 1)))


def _away(m: Tensor, rng: np.random.Generator) -> Tensor | None:
    return mask_ops.away_from(m, int(rng.integers(0, _MAX_AWAY + 1)), rng)


_ATTACKERS: dict[str, Callable[[Tensor, np.random.Generator], Tensor]] = {
    "dilate": _dilate, "box": _box, "strokes": lambda m, rng: mask_ops.strokes_over(m, rng),
    "shift": _shift, "erode": _erode, "partial": _partial,
}
_BENIGN: dict[str, Callable[[Tensor, np.random.Generator], Tensor | None]] = {
    "ring": _ring, "away": _away, "object": lambda m, rng: mask_ops.object_box(m, rng),
}


def attacker_reach(region: Tensor) -> Tensor:
    """(H, W) {0, 1}: every pixel a sampled attacker mask can cover — M dilated by the largest radius, and
    M's box grown by the larger of the box growth and the largest shift (strokes, erosions and half cuts stay
    inside those). What the attacker's crop windows are computed from when δ is confined to them."""
    reach = mask_ops.dilate(region, _MAX_DILATION)
    left, top, right, bottom = mask_ops.bbox(region)
    grow_y = max(_MAX_BOX_GROW, math.ceil(_MAX_SHIFT * (bottom - top)))
    grow_x = max(_MAX_BOX_GROW, math.ceil(_MAX_SHIFT * (right - left)))
    reach[max(0, top - grow_y):bottom + grow_y, max(0, left - grow_x):right + grow_x] = 1
    return reach


class EditSampler:
    """Draws attacker and benign edit masks for one protected region.

    Arguments:
        region: the protected region M, (H, W) in {0, 1}.
        seed: seeds the stream; the same seed draws the same masks in the same order.
        attacker_kinds, benign_kinds: which kinds to draw from (uniformly).

    Shape:
        - every mask: (H, W) float32 in {0, 1}, never empty.

    Examples::

        >>> sampler = EditSampler(region, seed=0)
        >>> sampler.attacker().shape == region.shape
        True
    """

    def __init__(self, region: Tensor, seed: int = 0, attacker_kinds: tuple[str, ...] = ATTACKER_KINDS,
                 benign_kinds: tuple[str, ...] = BENIGN_KINDS):
        unknown = [k for k in attacker_kinds if k not in _ATTACKERS] + [k for k in benign_kinds if k not in _BENIGN]
        if unknown or not attacker_kinds or not benign_kinds:
            raise ValueError(f"unknown or no sampled edit kinds {unknown}; attacker: {', '.join(ATTACKER_KINDS)}; "
                             f"benign: {', '.join(BENIGN_KINDS)}")
        self.region = (region > 0.5).float().cpu()
        if not 0 < self.region.sum() < self.region.numel():
            raise ValueError("region must select some pixels and leave some context")
        self.rng = np.random.default_rng(seed)
        self.attacker_kinds, self.benign_kinds = attacker_kinds, benign_kinds

    def attacker(self) -> Tensor:
        """A mask that covers part or all of M (an attacker's edit)."""
        kind = self.attacker_kinds[int(self.rng.integers(len(self.attacker_kinds)))]
        mask = _ATTACKERS[kind](self.region, self.rng)
        # erosion can swallow a thin region (a signature stroke): the attacker then masks M itself
        return mask if mask.sum() > 0 else self.region.clone()

    def benign(self) -> Tensor:
        """A mask that does not touch M (a benign edit elsewhere in the photo)."""
        kind = self.benign_kinds[int(self.rng.integers(len(self.benign_kinds)))]
        mask = _BENIGN[kind](self.region, self.rng)
        # ``away`` and ``object`` may not fit beside a large region; the ring always does
        if mask is None or mask.sum() == 0:
            mask = _ring(self.region, self.rng)
        return mask * (1 - self.region)
