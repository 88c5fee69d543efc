"""Mask morphology and the edit-mask families of the evaluation protocol (``docs/evaluation.md``).

A mask is a 2-D float32 tensor H×W with values in {0, 1}; 1 = the pixel is selected. Every function
here accepts bool, integer or float masks (a float counts as selected when ``> 0.5``) and returns a
float32 mask on the input's device. Nothing reads or changes global random state: the random
families draw from a ``numpy`` generator derived from ``(family, seed)``.

Choices made where the protocol is silent:

- **Morphology borders.** Dilation treats pixels outside the image as background. Erosion treats
  them as *inside* the mask, so a region touching the frame edge shrinks only from its edges inside
  the picture, never from the frame (the frame is not an edge an attacker can miss).
- **Structuring elements.** ``"disk"`` of radius r is every offset with dy² + dx² ≤ r²;
  ``"square"`` of radius r is the (2r+1)×(2r+1) block (the paper's M⁺ is ``dilate(M, 8, "square")``).
  The operations are exact (no thresholded float convolution): a disk is decomposed into one
  horizontal run per row offset, and runs are evaluated with a log-doubling (sparse-table) max, so
  the cost is O(H·W·r) byte operations restricted to the mask's bounding box plus the radius.
- **Distance.** Euclidean distance between pixel centres. :func:`within_distance` (pixels at
  distance < k from M) is exact: it is the dilation by the disk dy² + dx² ≤ k² − 1.
- **No empty edits.** A family never returns an :class:`Edit` whose mask is empty. ``erode-k``
  returns nothing when erosion empties M, ``ring`` nothing when M fills the frame, ``away-k`` nothing
  when fewer than 0.75·area(M) pixels lie at distance ≥ k from M, ``object`` nothing when no box of
  bbox(M)'s size fits; callers report those families as skipped for that mask.
- **Empty M.** :func:`family_masks` and :func:`edits` raise ``ValueError`` on an empty mask (there is
  no protected region to attack or to leave alone).
- ``box``: bbox(M) grown by 4 px on every side, clipped to the image.
- ``strokes``: each stroke starts at a random still-uncovered pixel of M (so every stroke makes
  progress), has a width drawn uniformly from 8–40 px, and wanders for 1–6 segments whose vertices
  are clamped to bbox(M) (so spill past bbox(M) is at most half the width); segment lengths scale
  with min(long side of bbox(M), 2·sqrt(area(M))). Segments are joined and
  capped round. After at most 400 strokes, any pixels of M still uncovered are covered by
  zero-length strokes (dots) of width 8 centred on them, so it always ends with ≥ 95 % coverage.
- ``partial-50``: M's pixels are ordered by (row, col) for ``/h``, by (col, row) for ``/v`` and by
  (row + col, row) for ``/d``, and the first ⌈n/2⌉ are kept: the top half, the left half and the
  top-left half. Breaking ties by the second key makes every split exactly half by area even for
  masks that are one row, one column or one anti-diagonal thick.
- ``shift-10``: the shift is round(0.1 · bbox height) rows for ``/up`` and ``/down`` and
  round(0.1 · bbox width) columns for ``/left`` and ``/right``, at least 1 px; what leaves the
  image is dropped; each edit is M ∪ shifted M.
- ``away-k``: k = 0 means disjoint from M. Boxes and strokes (width 8–40) are placed around random
  allowed pixels, clipped to the allowed region, and accepted while the total stays ≤ 1.1·area(M);
  once the area reaches 0.95·area(M) it stops. If 40 shapes are not enough, the remainder is filled
  with the allowed pixels nearest a random allowed pixel (a blob). The area ends within
  [0.95, 1.1]·area(M), or all the allowed pixels when there are fewer than area(M) of them.
- ``object``: a box of bbox(M)'s height and width, wholly inside the image, whose 3×3-square
  dilation does not meet M (so it neither overlaps nor touches M, 8-connectivity), at a position
  drawn uniformly from all valid ones.

Examples::

    >>> m = torch.zeros(64, 96); m[20:40, 30:50] = 1
    >>> [e.name for e in family_masks(m, "partial-50")]
    ['partial-50/h', 'partial-50/v', 'partial-50/d']
    >>> edits(m, ATTACKER_FAMILIES + BENIGN_FAMILIES, seed=3)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = [
    "ATTACKER_FAMILIES",
    "BENIGN_FAMILIES",
    "Box",
    "EDIT_KINDS",
    "FAMILIES",
    "FAMILY_EDITS",
    "Edit",
    "EditKind",
    "bbox",
    "dilate",
    "edits",
    "erode",
    "family_kind",
    "family_masks",
    "ring",
    "within_distance",
]

EditKind = Literal["attacker", "benign"]
"""The two roles an edit plays, everywhere in backfire: an *attacker* edit touches the protected region
(the protection must make it fail), a *benign* edit leaves it alone (the protection must not change it)."""
EDIT_KINDS: tuple[EditKind, ...] = get_args(EditKind)

ATTACKER_FAMILIES: tuple[str, ...] = (
    "exact",
    "dilate-4",
    "dilate-8",
    "dilate-16",
    "dilate-32",
    "box",
    "strokes",
    "partial-50",
    "shift-10",
    "erode-2",
    "erode-4",
)
BENIGN_FAMILIES: tuple[str, ...] = ("ring", "away-0", "away-16", "away-64", "object")
FAMILIES: tuple[str, ...] = ATTACKER_FAMILIES + BENIGN_FAMILIES

Shape = Literal["disk", "square"]

Box = tuple[int, int, int, int]
"""A rectangle of pixels ``(left, top, right, bottom)``, right and bottom exclusive: PIL's order and IOPaint's,
the one order of boxes in backfire (``image[..., top:bottom, left:right]`` is the box's content)."""

# Tunables of the random families (documented in the module docstring).
_STROKE_WIDTH = (8, 40)  # inclusive, px
_STROKES_MAX = 400
_STROKES_COVER = 0.95
_AWAY_STOP, _AWAY_MAX, _AWAY_MIN = 0.95, 1.1, 0.75  # fractions of area(M)
_AWAY_SHAPES = 40
_BOX_GROW = 4
_RING_RADIUS = 8


@dataclass(frozen=True, eq=False)
class Edit:
    """One edit mask of a family.

    Arguments:
        family: the family it belongs to, e.g. ``"partial-50"``.
        name: the edit's name, e.g. ``"dilate-8"``, ``"partial-50/h"``, ``"shift-10/up"``.
        kind: ``"attacker"`` (touches the protected region) or ``"benign"`` (leaves it alone).
        mask: H×W float32 in {0, 1}, 1 = the inpainter fills there. Never empty.

    Edits compare by identity (masks are tensors).
    """

    family: str
    name: str
    kind: EditKind
    mask: Tensor = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise ValueError(f"kind must be 'attacker' or 'benign', got {self.kind!r}")

    def __repr__(self) -> str:
        h, w = self.mask.shape
        return (
            f"Edit(family={self.family!r}, name={self.name!r}, kind={self.kind!r}, "
            f"mask={h}x{w}, area={int(self.mask.sum())})"
        )


# --------------------------------------------------------------------------------------------------
# Basic helpers


def _as_bool(mask: Tensor) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point():
        return mask > 0.5
    return mask != 0


def _out(mask: Tensor) -> Tensor:
    return mask.to(torch.float32)


def _bbox_bool(m: Tensor) -> Box:
    rows = torch.nonzero(m.any(dim=1)).flatten()
    if rows.numel() == 0:
        raise ValueError("bbox of an empty mask")
    cols = torch.nonzero(m.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def bbox(mask: Tensor) -> Box:
    """The bounding :data:`Box` ``(left, top, right, bottom)`` of the selected pixels; right/bottom exclusive.

    Raises ``ValueError`` on an empty mask.
    """
    return _bbox_bool(_as_bool(mask))


def _check_radius(radius: int) -> int:
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return int(radius)


# --------------------------------------------------------------------------------------------------
# Morphology


def _window_op(x: Tensor, half_widths: set[int], pad: int, op: Callable, dim: int) -> dict[int, Tensor]:
    """For each w: op over the window [c - w, c + w] along ``dim`` of ``x``, whose ``dim`` is padded
    by ``pad`` on both sides; the results have the unpadded length along ``dim``."""
    length = x.shape[dim] - 2 * pad
    tables = [x]  # tables[j][c] = op over x[c : c + 2**j]
    need = max(2 * w + 1 for w in half_widths)
    while (1 << len(tables)) <= need:
        prev, step = tables[-1], 1 << (len(tables) - 1)
        n = prev.shape[dim]
        tables.append(op(prev.narrow(dim, 0, n - step), prev.narrow(dim, step, n - step)))
    out = {}
    for w in half_widths:
        size, start = 2 * w + 1, pad - w
        j = size.bit_length() - 1
        table = tables[j]
        a = table.narrow(dim, start, length)
        out[w] = a if size == 1 << j else op(a, table.narrow(dim, start + size - (1 << j), length))
    return out


def _morph(m: Tensor, r2: int, shape: Shape, dilation: bool) -> Tensor:
    """Dilation (op = or, outside = 0) or erosion (op = and, outside = 1) of a bool mask by the disk
    dy² + dx² ≤ r2, or by the square of radius isqrt(r2)."""
    radius = math.isqrt(r2)
    op = torch.logical_or if dilation else torch.logical_and
    h, w = m.shape
    padded = torch.full((h + 2 * radius, w + 2 * radius), not dilation, dtype=torch.bool, device=m.device)
    padded[radius : radius + h, radius : radius + w] = m
    if shape == "square":
        rows = _window_op(padded, {radius}, radius, op, dim=1)[radius]  # (h + 2r, w)
        return _window_op(rows, {radius}, radius, op, dim=0)[radius]
    half = {dy: math.isqrt(r2 - dy * dy) for dy in range(-radius, radius + 1)}
    runs = _window_op(padded, set(half.values()), radius, op, dim=1)  # each (h + 2r, w)
    out = runs[half[0]][radius : radius + h].clone()
    for dy, hw in half.items():
        if dy != 0:
            op(out, runs[hw][radius + dy : radius + dy + h], out=out)
    return out


def _dilate_bool(m: Tensor, r2: int, shape: Shape = "disk") -> Tensor:
    if r2 <= 0 or not bool(m.any()):
        return m.clone()
    radius = math.isqrt(r2)
    h, w = m.shape
    left, top, right, bottom = _bbox_bool(m)
    t, l, b, r = max(0, top - radius), max(0, left - radius), min(h, bottom + radius), min(w, right + radius)
    out = torch.zeros_like(m)
    out[t:b, l:r] = _morph(m[t:b, l:r], r2, shape, dilation=True)
    return out


def _erode_bool(m: Tensor, r2: int, shape: Shape = "disk") -> Tensor:
    if r2 <= 0 or not bool(m.any()):
        return m.clone()
    h, w = m.shape
    left, top, right, bottom = _bbox_bool(m)
    # A one-pixel margin of background (where the crop is not at the frame) stops the structuring
    # element before it reaches the crop's padding, which is "inside" like the outside of the frame.
    t, l, b, r = max(0, top - 1), max(0, left - 1), min(h, bottom + 1), min(w, right + 1)
    out = torch.zeros_like(m)
    out[t:b, l:r] = _morph(m[t:b, l:r], r2, shape, dilation=False)
    return out


def _check_shape(shape: str) -> None:
    if shape not in ("disk", "square"):
        raise ValueError(f"shape must be 'disk' or 'square', got {shape!r}")


def dilate(mask: Tensor, radius: int, shape: Shape = "disk") -> Tensor:
    """``mask`` dilated by a disk (dy² + dx² ≤ r²) or a (2r+1)×(2r+1) square; outside the image is
    background. Radius 0 returns a copy.

    Examples::

        >>> m = torch.zeros(40, 40); m[20, 20] = 1
        >>> int(dilate(m, 8, "square").sum())
        289
    """
    _check_shape(shape)
    radius = _check_radius(radius)
    return _out(_dilate_bool(_as_bool(mask), radius * radius, shape))


def erode(mask: Tensor, radius: int, shape: Shape = "disk") -> Tensor:
    """``mask`` eroded by a disk or square of ``radius``. Outside the image counts as *inside* the
    mask, so a region touching the frame does not shrink from the frame. Radius 0 returns a copy."""
    _check_shape(shape)
    radius = _check_radius(radius)
    return _out(_erode_bool(_as_bool(mask), radius * radius, shape))


def ring(mask: Tensor, radius: int = _RING_RADIUS, shape: Shape = "square") -> Tensor:
    """``dilate(mask, radius, shape) − mask``: the paper's benign edit R = M⁺ − M (17×17 square)."""
    _check_shape(shape)
    radius = _check_radius(radius)
    m = _as_bool(mask)
    return _out(_dilate_bool(m, radius * radius, shape) & ~m)


def within_distance(mask: Tensor, distance: float) -> Tensor:
    """Pixels whose Euclidean distance (between pixel centres) to the nearest selected pixel is
    strictly less than ``distance``. Includes the mask itself when ``distance > 0``; empty when
    ``distance <= 0``. So ``1 − within_distance(M, k)`` is every pixel at distance ≥ k from M."""
    m = _as_bool(mask)
    if distance <= 0:
        return _out(torch.zeros_like(m))
    # Integer squared distances: d² < k² ⟺ d² ≤ ⌈k²⌉ − 1.
    return _out(_dilate_bool(m, math.ceil(distance * distance) - 1, "disk"))


# --------------------------------------------------------------------------------------------------
# Random drawing helpers (numpy, bool arrays)


def _family_rng(family: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"backfire.masks/{family}/{int(seed)}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _draw_stroke(points: np.ndarray, width: int, h: int, w: int):
    """Rasterise a polyline (rows of (y, x), image coordinates) with a round brush of ``width``.
    Returns ``(top, left, local bool array)`` clipped to the image, or None if it misses the image."""
    rad = width / 2.0
    top = max(0, int(math.floor(points[:, 0].min() - rad)) - 1)
    left = max(0, int(math.floor(points[:, 1].min() - rad)) - 1)
    bottom = min(h, int(math.ceil(points[:, 0].max() + rad)) + 2)
    right = min(w, int(math.ceil(points[:, 1].max() + rad)) + 2)
    if bottom <= top or right <= left:
        return None
    canvas = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(canvas)
    xy = [(float(x - left), float(y - top)) for y, x in points]
    if len(xy) > 1:
        draw.line(xy, fill=255, width=int(width), joint="curve")
    for x, y in xy:  # round caps and joints; also makes a zero-length stroke a dot
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=255)
    return top, left, np.asarray(canvas) > 0


def _walk(rng: np.random.Generator, start: tuple[float, float], step: float, segments: int, clamp=None):
    """A random walk of ``segments`` steps of length ~U(0.5, 1.5)·step, turning smoothly."""
    pts = [np.asarray(start, dtype=np.float64)]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    for _ in range(segments):
        angle += rng.normal(0.0, 0.8)
        length = step * rng.uniform(0.5, 1.5)
        p = pts[-1] + length * np.array([math.sin(angle), math.cos(angle)])
        if clamp is not None:
            (y0, x0, y1, x1) = clamp
            p = np.array([min(max(p[0], y0), y1), min(max(p[1], x0), x1)])
        pts.append(p)
    return np.stack(pts)


def _disk_dots(points: np.ndarray, width: int) -> np.ndarray:
    """Stamp a round brush of ``width`` on every True pixel (bool array in, bool array out)."""
    t = torch.from_numpy(points)
    rad2 = (width / 2.0) ** 2
    return _dilate_bool(t, int(math.floor(rad2)), "disk").numpy()


# --------------------------------------------------------------------------------------------------
# Families


def _strokes(m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = m.shape
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    top, bottom, left, right = ys[0], ys[-1], xs[0], xs[-1]  # inclusive
    flat = np.flatnonzero(m)
    n = flat.size
    # Stroke length scale: the bbox's long side, but no more than 2·sqrt(area) so that a mask of
    # small scattered components does not get strokes spanning the whole picture.
    size = min(max(bottom - top + 1, right - left + 1), 2.0 * math.sqrt(n))
    need = math.ceil(_STROKES_COVER * n)
    cov = np.zeros_like(m)
    covered = 0
    for _ in range(_STROKES_MAX):
        if covered >= need:
            break
        start = None
        for _ in range(32):  # rejection-sample an uncovered pixel of M (≥ 5 % of M is uncovered)
            i = flat[rng.integers(n)]
            if not cov.flat[i]:
                start = i
                break
        if start is None:
            rest = np.flatnonzero(m & ~cov)
            start = rest[rng.integers(rest.size)]
        width = int(rng.integers(_STROKE_WIDTH[0], _STROKE_WIDTH[1] + 1))
        segments = int(rng.integers(1, 7))
        step = max(size * rng.uniform(0.15, 0.5), width / 2.0)
        pts = _walk(rng, divmod(int(start), w), step, segments, clamp=(top, left, bottom, right))
        drawn = _draw_stroke(pts, width, h, w)
        if drawn is None:  # cannot happen (the walk stays in bbox(M)); kept for safety
            continue
        t, l, local = drawn
        region = (slice(t, t + local.shape[0]), slice(l, l + local.shape[1]))
        covered += int((local & ~cov[region] & m[region]).sum())
        cov[region] |= local
    if covered < need:
        cov |= _disk_dots(m & ~cov, _STROKE_WIDTH[0])
    return cov


def _away(m: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    h, w = m.shape
    area = int(m.sum())
    allowed = ~(within_distance(torch.from_numpy(m), k).numpy() > 0.5) if k > 0 else ~m
    flat = np.flatnonzero(allowed)
    lo = math.ceil(_AWAY_MIN * area)
    if flat.size < lo or flat.size == 0:
        return None
    target = min(area, flat.size)
    stop = max(lo, math.ceil(_AWAY_STOP * target))
    cap = max(target, math.floor(_AWAY_MAX * area))
    out = np.zeros_like(m)
    cur = 0
    for _ in range(_AWAY_SHAPES):
        if cur >= stop:
            break
        remaining = target - cur
        anchor = None
        for _ in range(32):
            i = flat[rng.integers(flat.size)]
            if not out.flat[i]:
                anchor = divmod(int(i), w)
                break
        if anchor is None:
            break
        if rng.random() < 0.5:  # a box of area ~U(0.3, 1)·remaining, aspect ratio in [1/e, e]
            a = remaining * rng.uniform(0.3, 1.0)
            aspect = math.exp(rng.uniform(-1.0, 1.0))
            bh = max(1, round(math.sqrt(a * aspect)))
            bw = max(1, round(math.sqrt(a / aspect)))
            t = min(max(0, anchor[0] - int(rng.integers(bh))), h)
            l = min(max(0, anchor[1] - int(rng.integers(bw))), w)
            local = np.ones((min(h, t + bh) - t, min(w, l + bw) - l), dtype=bool)
        else:  # a stroke whose brush area is ~U(0.3, 1)·remaining
            width = int(rng.integers(_STROKE_WIDTH[0], _STROKE_WIDTH[1] + 1))
            segments = int(rng.integers(1, 5))
            length = remaining * rng.uniform(0.3, 1.0) / width
            pts = _walk(rng, anchor, max(length / segments, 1.0), segments)
            drawn = _draw_stroke(pts, width, h, w)
            if drawn is None:
                continue
            t, l, local = drawn
        region = (slice(t, t + local.shape[0]), slice(l, l + local.shape[1]))
        new = local & allowed[region] & ~out[region]
        added = int(new.sum())
        if added == 0 or cur + added > cap:
            continue
        out[region] |= new
        cur += added
    if cur < stop:  # fill the rest with the allowed pixels nearest a random free allowed pixel
        free = np.flatnonzero(allowed & ~out)
        y0, x0 = divmod(int(free[rng.integers(free.size)]), w)
        fy, fx = np.divmod(free, w)
        d2 = (fy - y0) ** 2 + (fx - x0) ** 2
        take = free[np.argsort(d2, kind="stable")[: target - cur]]
        out.flat[take] = True
    return out


def _object(m: Tensor, rng: np.random.Generator) -> Tensor | None:
    h, w = m.shape
    left, top, right, bottom = _bbox_bool(m)
    bh, bw = bottom - top, right - left
    if bh > h or bw > w:
        return None
    forbidden = _dilate_bool(m, 1, "square").cpu().numpy().astype(np.int64)
    sat = np.zeros((h + 1, w + 1), dtype=np.int64)
    sat[1:, 1:] = forbidden.cumsum(0).cumsum(1)
    # forbidden pixels inside the bh×bw box at every top-left (y, x), y ≤ h − bh, x ≤ w − bw
    ny, nx = h - bh + 1, w - bw + 1
    sums = sat[bh : bh + ny, bw : bw + nx] - sat[:ny, bw : bw + nx] - sat[bh : bh + ny, :nx] + sat[:ny, :nx]
    valid = np.flatnonzero(sums == 0)
    if valid.size == 0:
        return None
    y, x = divmod(int(valid[rng.integers(valid.size)]), nx)
    out = torch.zeros_like(m)
    out[y : y + bh, x : x + bw] = True
    return out


def _shift(m: Tensor, dy: int, dx: int) -> Tensor:
    h, w = m.shape
    out = torch.zeros_like(m)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = m[ys, xs]
    return out


def _partial(m: Tensor) -> list[tuple[str, Tensor]]:
    h, w = m.shape
    ys, xs = torch.nonzero(m, as_tuple=True)
    keep = (ys.numel() + 1) // 2
    keys = {"h": ys * w + xs, "v": xs * h + ys, "d": (ys + xs) * h + ys}
    out = []
    for name, key in keys.items():
        idx = torch.argsort(key, stable=True)[:keep]
        half = torch.zeros_like(m)
        half[ys[idx], xs[idx]] = True
        out.append((name, half))
    return out


def family_kind(family: str) -> EditKind:
    """``"attacker"`` or ``"benign"``; ``ValueError`` for an unknown family."""
    if family in ATTACKER_FAMILIES:
        return "attacker"
    if family in BENIGN_FAMILIES:
        return "benign"
    raise ValueError(f"unknown mask family {family!r}; valid: {', '.join(FAMILIES)}")


EditMasks = Callable[[Tensor, str, int], list[tuple[str, Tensor]]]
"""What one family makes of the region M (bool, H×W): its edits as ``(name, bool mask)``; called with the
family's full name (``dilate-8`` carries its size) and the seed of the random families."""


def _size(family: str) -> int:
    return int(family.split("-")[1])


def _family_box(m: Tensor, family: str, seed: int) -> list[tuple[str, Tensor]]:
    l, t, r, b = _bbox_bool(m)
    box = torch.zeros_like(m)
    box[max(0, t - _BOX_GROW) : b + _BOX_GROW, max(0, l - _BOX_GROW) : r + _BOX_GROW] = True
    return [(family, box)]


def _family_strokes(m: Tensor, family: str, seed: int) -> list[tuple[str, Tensor]]:
    return [(family, torch.from_numpy(_strokes(m.cpu().numpy(), _family_rng(family, seed))).to(m.device))]


def _family_shift(m: Tensor, family: str, seed: int) -> list[tuple[str, Tensor]]:
    l, t, r, b = _bbox_bool(m)
    dy, dx = max(1, math.floor(0.1 * (b - t) + 0.5)), max(1, math.floor(0.1 * (r - l) + 0.5))
    moves = {"up": (-dy, 0), "down": (dy, 0), "left": (0, -dx), "right": (0, dx)}
    return [(f"{family}/{n}", m | _shift(m, sy, sx)) for n, (sy, sx) in moves.items()]


def _family_away(m: Tensor, family: str, seed: int) -> list[tuple[str, Tensor]]:
    out = _away(m.cpu().numpy(), _size(family), _family_rng(family, seed))
    return [] if out is None else [(family, torch.from_numpy(out).to(m.device))]


def _family_object(m: Tensor, family: str, seed: int) -> list[tuple[str, Tensor]]:
    out = _object(m, _family_rng(family, seed))
    return [] if out is None else [(family, out)]


FAMILY_EDITS: dict[str, EditMasks] = {
    "exact": lambda m, family, seed: [(family, m.clone())],
    "dilate": lambda m, family, seed: [(family, _dilate_bool(m, _size(family) ** 2, "disk"))],
    "box": _family_box,
    "strokes": _family_strokes,
    "partial": lambda m, family, seed: [(f"{family}/{n}", half) for n, half in _partial(m)],
    "shift": _family_shift,
    "erode": lambda m, family, seed: [(family, _erode_bool(m, _size(family) ** 2, "disk"))],
    "ring": lambda m, family, seed: [(family, _dilate_bool(m, _RING_RADIUS**2, "square") & ~m)],
    "away": _family_away,
    "object": _family_object,
}
"""Each family's edits, by the family's name up to its size (``dilate-8`` → ``dilate``): a new family is a
name in :data:`ATTACKER_FAMILIES` or :data:`BENIGN_FAMILIES` and an entry here."""


def family_masks(mask: Tensor, family: str, seed: int = 0) -> list[Edit]:
    """The edits of one family for the protected-region mask ``mask`` (0..n of them, never empty).

    Random families (``strokes``, ``away-k``, ``object``) are reproducible: their generator is
    derived from ``(family, seed)`` with SHA-256, so the result does not depend on the call order
    and matches the corresponding entries of :func:`edits`.

    Raises ``ValueError`` for an unknown family or an empty mask.
    """
    kind = family_kind(family)
    m = _as_bool(mask)
    if not bool(m.any()):
        raise ValueError("the protected-region mask is empty")
    results = FAMILY_EDITS[family.split("-")[0]](m, family, seed)
    return [Edit(family, name, kind, _out(t)) for name, t in results if bool(t.any())]


def edits(mask: Tensor, families: Sequence[str], seed: int = 0) -> list[Edit]:
    """The edits of several families, in the order given. Each family's randomness depends only on
    ``(family, seed)``. Raises ``ValueError`` (listing the valid names) before any work if a family is
    unknown."""
    if isinstance(families, str):
        families = (families,)
    for family in families:
        family_kind(family)
    out: list[Edit] = []
    for family in families:
        out.extend(family_masks(mask, family, seed))
    return out


# --------------------------------------------------------------------------------------------------
# The random shapes of the families, with a generator the caller owns (the protection's samplers
# draw them with fresh parameters every step; the families above draw them with fixed seeds).


def strokes_over(mask: Tensor, rng: np.random.Generator) -> Tensor:
    """Random brush strokes drawn until they cover ≥ 95 % of ``mask`` (spill outside allowed)."""
    m = _as_bool(mask)
    return _out(torch.from_numpy(_strokes(m.cpu().numpy(), rng)).to(m.device))


def away_from(mask: Tensor, k: int, rng: np.random.Generator) -> Tensor | None:
    """Strokes and boxes of total area ≈ area(mask), every pixel ≥ ``k`` px from it; ``None`` if none fit."""
    m = _as_bool(mask)
    out = _away(m.cpu().numpy(), _check_radius(k), rng)
    return None if out is None else _out(torch.from_numpy(out).to(m.device))


def object_box(mask: Tensor, rng: np.random.Generator) -> Tensor | None:
    """A box the size of bbox(mask) placed where it does not touch the mask; ``None`` if none fits."""
    out = _object(_as_bool(mask), rng)
    return None if out is None else _out(out)


def shifted(mask: Tensor, dy: int, dx: int) -> Tensor:
    """``mask`` moved by (dy, dx) px; what leaves the frame is lost."""
    return _out(_shift(_as_bool(mask), int(dy), int(dx)))
