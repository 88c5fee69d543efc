"""The attacker's tool around a model: the edit as it is really performed, differentiable.

Nobody runs a bare inpainting network on a whole photo. IOPaint (lama-cleaner), the most used
front-end for the erase models, pads to the model's modulo with *symmetric* padding and, for photos
whose long side is over 800 px, inpaints only a window around each masked region (its default HD
strategy ``Crop``); MI-GAN always works on 512-px crops. A protection optimised against the bare
model on the full frame is not a protection against that edit, so the edit itself is modelled here,
as a :class:`~backfire.inpainters.base.Wrapper` around the network (foolbox style: the attack does
not change, the model it sees does; the engine asks the wrapper what the tool does: which pixels it
sees, whether it can be framed to a box, which strategies it offers):

- ``plain``: the bare model on the whole frame (simple-lama-inpainting, the paper's code);
- ``iopaint``: IOPaint 1.6's pre- and post-processing (``iopaint/model/base.py``,
  ``iopaint/helper.py``, ``iopaint/schema.py`` defaults), with its HD strategies
  ``Original``, ``Crop`` and ``Resize``.

Everything is differentiable in the image. Where IOPaint works on uint8 (the cubic resizes of the
photo round, LaMa's output is truncated with ``astype(np.uint8)``, MAT's and MI-GAN's rounded, the
enlarged Resize result truncated), the float path neither rounds nor truncates. Measured against
IOPaint 1.6 itself (``tests/test_pipelines.py``, in 8-bit levels, inside the hole; outside it both
return the photo unchanged): Original and Crop +0.5 on average, at most 1 (the truncation);
Resize +1.0 on average, at most 4.3 (two truncations and the rounded shrunk photo through the
model); MI-GAN's path +0.14, at most 2. ``exact_8bit=True`` adds IOPaint's uint8 steps
(straight-through), and then Original and Crop are bit-exact, Resize and MI-GAN differ on 1.3 %
and 0.02 % of the hole's pixels by at most 2 levels (cv2's fixed-point rounding of uint8 resizes).
The optimisation does not need it.

torch's bicubic resize (``align_corners=False``, no antialiasing) is cv2's ``INTER_CUBIC``
(a = -0.75, half-pixel centres, clamped borders) to float precision; IOPaint's erase path resizes
with nothing else (its ``INTER_AREA`` is only in the ControlNet preprocessing). One IOPaint quirk
is not reproduced: it converts enlarged float results with ``astype(np.uint8)``, so a cubic
overshoot below 0 or above 255 wraps around (a black speck in a white fill); the pipeline clamps.

    >>> from backfire.inpainters.pipelines import wrap
    >>> attacker = wrap(load_inpainter("lama"), "iopaint")        # IOPaint's default for each photo
    >>> attacker.strategy_for((3000, 4000)), attacker.strategies((3000, 4000))
    ('Crop', ('Crop', 'Original', 'Resize'))
    >>> filled = attacker(image, mask)
    >>> keep = attacker.support(mask)                                # the pixels the model sees
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.errors import ModelError
from backfire.inpainters.base import Inpainter, Network, Wrapper
from backfire.inpainters.registry import available_models, find_spec
from backfire.inpainters.specs import Conventions
from backfire.masks import Box, bbox

PIPELINES = ("iopaint", "plain")
"""``--pipeline`` values: IOPaint's edit, or the bare model on the whole frame."""

STRATEGIES = ("Original", "Crop", "Resize")
"""IOPaint's HD strategies (``iopaint.schema.HDStrategy`` values)."""

AUTO = "auto"
"""The strategy IOPaint's defaults pick for the photo: ``Crop`` (which runs ``Original`` on small photos)."""

PLAIN = "plain"
"""The one strategy of the ``plain`` pipeline: the bare model on the whole frame."""


@dataclass(frozen=True)
class IOPaintSettings:
    """The request fields that steer the HD strategies; the defaults are ``InpaintRequest``'s."""

    crop_trigger_size: int = 800  # Crop runs only when the long side is larger than this
    crop_margin: int = 128        # context added on each side of a region's bounding box
    resize_limit: int = 1280      # Resize shrinks the long side to this when it is larger


_MIGAN_MARGIN = 128  # MI-GAN's __call__ sets the crop margin itself
_MIGAN_SIDE = 512


def conventions_for(model_name: str) -> Conventions | None:
    """How IOPaint feeds the registry's model ``model_name`` (its spec's conventions); None if IOPaint does not
    run it (sd-inpaint) or the registry does not know it."""
    spec = find_spec(model_name)
    return None if spec is None else spec.conventions


def default_pipeline(model_name: str) -> str:
    """``iopaint`` for the erase models IOPaint runs, ``plain`` for the others (sd-inpaint)."""
    return "iopaint" if conventions_for(model_name) is not None else "plain"


def wrap(model: Inpainter, pipeline: str = "iopaint", strategy: str = AUTO,
         settings: IOPaintSettings = IOPaintSettings(), conventions: Conventions | None = None,
         exact_8bit: bool = False) -> Pipeline:
    """``model`` inside the attacker's tool ``pipeline`` (one of :data:`PIPELINES`).

    ``strategy``: ``"auto"`` (what IOPaint's defaults run for each photo) or one of
    :data:`STRATEGIES`; ignored by ``plain``. ``conventions`` overrides the table entry for
    ``model.name`` (a model IOPaint does not know needs it). ``exact_8bit``: reproduce IOPaint's
    uint8 steps too (straight-through); off, the edit stays in float (see the module's docstring).

    Raises:
        ModelError: unknown pipeline or strategy, or no IOPaint conventions for the model.
    """
    key = pipeline.strip().lower()
    if key == "plain":
        return PlainPipeline(model)
    if key == "iopaint":
        return IOPaintPipeline(model, strategy, settings, conventions, exact_8bit)
    raise ModelError(f"unknown pipeline {pipeline!r}; available: {', '.join(PIPELINES)}")


def support(models: Inpainter | Sequence[Inpainter], masks: Tensor) -> Tensor:
    """(H, W) {0, 1}: the pixels that any of ``models`` sees when the photo is edited with any of
    ``masks`` ((H, W) or (N, 1, H, W)). A perturbation elsewhere cannot change those edits, so the
    engine can keep δ zero there (each model says which it sees: :meth:`Inpainter.support`)."""
    members = [models] if isinstance(models, Inpainter) else list(models)
    batch = _as_mask_batch(masks)
    seen = torch.zeros(batch.shape[-2:], dtype=torch.float32, device=batch.device)
    for model in members:
        seen = torch.maximum(seen, model.support(batch).to(seen))
    return seen


def bounding_box(seen: Tensor) -> Box | None:
    """The box (:func:`backfire.masks.bbox`) around the nonzero pixels of an (H, W) support; None if empty."""
    return bbox(seen != 0) if bool(seen.any()) else None


# --------------------------------------------------------------------------------------------
# Geometry (integers, on the CPU): IOPaint's boxes, windows and sizes


def mask_boxes(mask: np.ndarray | Tensor) -> list[Box]:
    """One box per region, as IOPaint's ``boxes_from_mask`` finds them, in the same order.

    IOPaint takes the bounding rectangles of ``cv2.findContours(RETR_EXTERNAL)``: one per
    8-connected region, a region lying in a hole of another counting as part of it, listed in the
    reverse of raster order of their first pixel. Reproduced here without OpenCV: fill the holes
    (background not 4-connected to the border), label the 8-connected regions, box them.
    ``mask``: (H, W), true/nonzero = hole (IOPaint thresholds at 127 first; pass a binary mask).
    """
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    h, w = mask.shape
    rows, starts, ends = _runs(mask)
    if len(rows) == 0:
        return []
    # Holes: background runs in components that never touch the border.
    bg_rows, bg_starts, bg_ends = _gaps(rows, starts, ends, (h, w))
    bg_labels = _label_runs(bg_rows, bg_starts, bg_ends, diagonal=False)
    touches = (bg_rows == 0) | (bg_rows == h - 1) | (bg_starts == 0) | (bg_ends == w)
    outside = np.zeros(bg_labels.max() + 1 if len(bg_labels) else 0, dtype=bool)
    outside[bg_labels[touches]] = True
    hole_runs = ~outside[bg_labels] if len(bg_labels) else np.zeros(0, dtype=bool)
    if hole_runs.any():
        filled = mask.copy()
        for r, s, e in zip(bg_rows[hole_runs], bg_starts[hole_runs], bg_ends[hole_runs]):
            filled[r, s:e] = True
        rows, starts, ends = _runs(filled)
    labels = _label_runs(rows, starts, ends, diagonal=True)
    boxes: dict[int, list[int]] = {}
    for label, r, s, e in zip(labels.tolist(), rows.tolist(), starts.tolist(), ends.tolist()):
        box = boxes.get(label)
        if box is None:  # runs come in raster order: the first run of a region holds its first pixel
            boxes[label] = [s, r, e, r + 1]
        else:
            box[0], box[2], box[3] = min(box[0], s), max(box[2], e), r + 1
    return [tuple(b) for b in reversed(list(boxes.values()))]


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of true pixels in raster order: row, start column, end column (exclusive)."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=bool)  # a false column each side: no run crosses a row end
    padded[:, 1:-1] = mask
    flat = padded.reshape(-1)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # alternately a run's start and its end
    starts, ends = edges[0::2], edges[1::2]
    rows = starts // (w + 2)
    return rows, starts - rows * (w + 2) - 1, ends - rows * (w + 2) - 1


def _gaps(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, size: tuple[int, int]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of the complement, from the runs (cheaper than scanning the inverted mask)."""
    h, w = size
    first = np.r_[True, rows[1:] != rows[:-1]] if len(rows) else np.zeros(0, dtype=bool)
    last = np.r_[rows[1:] != rows[:-1], True] if len(rows) else np.zeros(0, dtype=bool)
    # Before each run: from the previous run's end (or 0 at a row's first run) to its start.
    gap_rows = [rows, rows[last]]
    gap_starts = [np.where(first, 0, np.r_[0, ends[:-1]]), ends[last]]
    gap_ends = [starts, np.full(int(last.sum()), w)]
    empty = np.setdiff1d(np.arange(h), rows)
    gap_rows.append(empty)
    gap_starts.append(np.zeros(len(empty), dtype=np.int64))
    gap_ends.append(np.full(len(empty), w))
    rows_, starts_, ends_ = (np.concatenate(a).astype(np.int64) for a in (gap_rows, gap_starts, gap_ends))
    keep = ends_ > starts_
    rows_, starts_, ends_ = rows_[keep], starts_[keep], ends_[keep]
    order = np.lexsort((starts_, rows_))
    return rows_[order], starts_[order], ends_[order]


def _label_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, diagonal: bool) -> np.ndarray:
    """Component label of each run (union-find over runs of adjacent rows that touch).

    ``diagonal``: 8-connectivity (runs touching at a corner join), else 4-connectivity.
    """
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    reach = 1 if diagonal else 0
    row_first = np.searchsorted(rows, np.arange(rows.max() + 2 if len(rows) else 1))
    starts_l, ends_l = starts.tolist(), ends.tolist()
    for r in range(len(row_first) - 2):
        a, a_end, b_end = row_first[r], row_first[r + 1], row_first[r + 2]
        b = a_end
        while a < a_end and b < b_end:  # two sorted lists of disjoint runs: a merge sweep
            if starts_l[a] < ends_l[b] + reach and starts_l[b] < ends_l[a] + reach:
                ra, rb = find(a), find(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
            if ends_l[a] < ends_l[b]:
                a += 1
            else:
                b += 1
    roots = np.array([find(i) for i in range(len(rows))], dtype=np.int64)
    return np.unique(roots, return_inverse=True)[1].reshape(-1)


def crop_window(box: Box, size: tuple[int, int], margin: int) -> Box:
    """IOPaint's ``_crop_box``: the box grown by ``margin`` per side around its centre, shifted
    back inside the photo (keeping its size where the photo allows) at the borders."""
    img_h, img_w = size
    left, top, right, bottom = box
    cx, cy = (left + right) // 2, (top + bottom) // 2
    w, h = right - left + 2 * margin, bottom - top + 2 * margin
    _l, _r, _t, _b = cx - w // 2, cx + w // 2, cy - h // 2, cy + h // 2
    l, r, t, b = max(_l, 0), min(_r, img_w), max(_t, 0), min(_b, img_h)
    if _l < 0:
        r += -_l
    if _r > img_w:
        l -= _r - img_w
    if _t < 0:
        b += -_t
    if _b > img_h:
        t -= _b - img_h
    return max(l, 0), max(t, 0), min(r, img_w), min(b, img_h)


def shrunk_size(size: tuple[int, int], limit: int) -> tuple[int, int]:
    """IOPaint's ``resize_max_size``: (H, W) with the long side brought down to ``limit``."""
    h, w = size
    if max(h, w) <= limit:
        return h, w
    ratio = limit / max(h, w)
    return int(h * ratio + 0.5), int(w * ratio + 0.5)


def padded_size(size: tuple[int, int], conventions: Conventions) -> tuple[int, int]:
    """IOPaint's ``pad_img_to_modulo``: up to the modulo, at least ``min_size``, square if asked."""
    mod = conventions.pad_mod
    h, w = (-(-side // mod) * mod for side in size)
    if conventions.min_size is not None:
        h, w = max(h, conventions.min_size), max(w, conventions.min_size)
    if conventions.pad_to_square:
        h = w = max(h, w)
    return h, w


# --------------------------------------------------------------------------------------------
# Differentiable image operations


def symmetric_pad(x: Tensor, height: int, width: int) -> Tensor:
    """Pad the bottom and right of ``x`` (…, H, W) to ``height``×``width`` as ``np.pad(mode="symmetric")``:
    mirrored with the edge pixel repeated (a b c | c b a), repeating the mirror when the pad is
    longer than the side. IOPaint and LaMa's own code pad so (torch's "reflect" drops the edge)."""
    return x.index_select(-2, _mirror_index(x.shape[-2], height, x.device)).index_select(
        -1, _mirror_index(x.shape[-1], width, x.device))


def _mirror_index(n: int, out: int, device: torch.device) -> Tensor:
    i = torch.arange(out, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


def cubic_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """cv2's ``INTER_CUBIC`` (what IOPaint resizes with), differentiable: no antialiasing when
    shrinking, a = -0.75, half-pixel centres, clamped borders; agrees to float precision."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False)


def _resized_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """The mask as IOPaint resizes it: cubic on 0/255 uint8, so soft at the edges, on 8-bit levels."""
    with torch.no_grad():
        return torch.round(cubic_resize(mask, size).clamp(0, 1) * 255) / 255


def to_8bit(x: Tensor, truncate: bool = False, slack: float = 0.0) -> Tensor:
    """``x`` on the 8-bit grid as IOPaint's uint8 steps leave it (rounded, or truncated like
    ``astype(np.uint8)``), straight-through: the backward pass is the identity.

    ``slack`` (levels) is added before truncating values IOPaint computes in float64 and that are
    often whole numbers (a resize of a flat area): in float32 they come out a hair below.
    """
    levels = x.clamp(0, 1) * 255
    levels = torch.floor(levels + slack) if truncate else torch.round(levels)
    return x + (levels / 255 - x).detach()


# --------------------------------------------------------------------------------------------
# Pipelines


class Pipeline(Wrapper):
    """An attacker's tool around a network (``inner``): itself an :class:`Inpainter`, so the engine and the
    verdict use it unchanged; ``pipeline`` names the tool (one of :data:`PIPELINES`)."""

    def __init__(self, model: Inpainter, pipeline: str):
        super().__init__(model)
        self.pipeline = pipeline

    @abc.abstractmethod
    def strategy_for(self, size: tuple[int, int]) -> str:
        """The strategy this pipeline runs on an H×W photo."""

    def strategies(self, size: tuple[int, int]) -> tuple[str, ...]:
        return (self.strategy_for(size),)

    def with_strategy(self, strategy: str) -> Pipeline:
        return self

    def every_strategy(self, size: tuple[int, int]) -> Inpainter:
        return EveryStrategy(self, size)

    def describe(self, size: tuple[int, int]) -> dict:
        return {**super().describe(size), "pipeline": self.pipeline}


class EveryStrategy(Wrapper):
    """``pipeline`` with each call run through the next of the strategies its tool applies to an H×W photo
    (round robin): an optimisation through it sees every setting an attacker may pick, in turn."""

    def __init__(self, pipeline: Inpainter, size: tuple[int, int]):
        super().__init__(pipeline)
        self.size = tuple(size)
        self.variants = [pipeline.with_strategy(s) for s in pipeline.strategies(self.size)]
        self.calls = 0

    def _next(self) -> Inpainter:
        variant = self.variants[self.calls % len(self.variants)]
        self.calls += 1
        return variant

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        return self._next().inpaint(image, mask)

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        return self._next().surrogate(image, mask)

    @property
    def surrogate_is_edit(self) -> bool:
        return all(v.surrogate_is_edit for v in self.variants)

    def support(self, mask: Tensor) -> Tensor:
        return torch.stack([v.support(mask) for v in self.variants]).amax(0)

    def framed(self, photo: Tensor, box: Box) -> Inpainter | None:
        return None  # the variants that see the whole photo would need it

    def every_strategy(self, size: tuple[int, int]) -> Inpainter:
        return self if tuple(size) == self.size else self.inner.every_strategy(size)

    def _around(self, inner: Inpainter) -> EveryStrategy:
        return EveryStrategy(inner, self.size)


class PlainPipeline(Pipeline):
    """The bare model on the whole frame: today's edit, the paper's threat model."""

    def __init__(self, model: Inpainter):
        super().__init__(model, "plain")

    def strategy_for(self, size: tuple[int, int]) -> str:
        return PLAIN


class IOPaintPipeline(Pipeline):
    """IOPaint 1.6's erase-model edit around the network ``model`` (see :func:`wrap`).

    The strategy: ``"auto"`` → IOPaint's default request (``Crop``); ``Crop`` runs ``Original``
    when the long side is at most ``crop_trigger_size`` and ``Resize`` runs it when the long side is
    at most ``resize_limit``, as IOPaint does. MI-GAN always runs its own crop path (``Crop``;
    ``Original`` for a photo of exactly 512×512). ``exact_8bit``: see :func:`wrap`.
    """

    inner: Network

    def __init__(self, model: Network, strategy: str = AUTO, settings: IOPaintSettings = IOPaintSettings(),
                 conventions: Conventions | None = None, exact_8bit: bool = False):
        super().__init__(model, "iopaint")
        if conventions is None:
            conventions = conventions_for(model.name)
        if conventions is None:
            known = [name for name in available_models() if conventions_for(name) is not None]
            raise ModelError(f"IOPaint does not run model {model.name!r} as an erase model; "
                             f"use the plain pipeline (IOPaint's: {', '.join(known)})")
        if not isinstance(model, Network):
            raise ModelError(f"IOPaint's pipeline runs a network, not {model!r}; wrap the bare model")
        if not model.surrogate_is_edit and model.autocast is None:  # autocast alone keeps it feed-forward
            raise ModelError(f"model {model.name!r} is not feed-forward; use the plain pipeline")
        if conventions.pad_mod % model.multiple:
            raise ModelError(f"model {model.name!r} needs a multiple of {model.multiple}, "
                             f"IOPaint pads to {conventions.pad_mod}")
        self.strategy = _check_strategy(strategy)
        self.settings = settings
        self.conventions = conventions
        self.exact_8bit = exact_8bit

    # -- which edit ----------------------------------------------------------------------------

    def strategy_for(self, size: tuple[int, int]) -> str:
        return self._effective(self.strategy, size)

    def strategies(self, size: tuple[int, int]) -> tuple[str, ...]:
        found = [self.strategy_for(size)]
        for strategy in STRATEGIES:
            effective = self._effective(strategy, size)
            if effective not in found and self._runs(effective, size):
                found.append(effective)
        return tuple(found)

    @property
    def smallest_side(self) -> int:
        """The shortest photo side whose padded frame (:func:`padded_size`: up to IOPaint's modulo, its minimum
        size) the network fills (:attr:`Network.smallest_frame`): IOPaint pads no further, so a smaller photo
        fails in IOPaint itself (big-LaMa: 9 px, padded to 16; MAT, MI-GAN: 1, padded to 512)."""
        side = 1
        while min(padded_size((side, side), self.conventions)) < self.inner.smallest_frame:
            side += 1
        return side

    def _runs(self, strategy: str, size: tuple[int, int]) -> bool:
        """Whether IOPaint can run ``strategy`` on an H×W photo at least :attr:`smallest_side` per side: Resize
        shrinks it, and a long, thin photo can shrink below what the network fills (a tool that fails is not
        an edit the attacker can make)."""
        return strategy != "Resize" or min(shrunk_size(size, self.settings.resize_limit)) >= self.smallest_side

    def with_strategy(self, strategy: str) -> IOPaintPipeline:
        return IOPaintPipeline(self.inner, strategy, self.settings, self.conventions, self.exact_8bit)

    def _effective(self, strategy: str, size: tuple[int, int]) -> str:
        long_side = max(size)
        if self.conventions.own_crop:
            return "Original" if tuple(size) == (_MIGAN_SIDE, _MIGAN_SIDE) else "Crop"
        if strategy in (AUTO, "Crop") and long_side > self.settings.crop_trigger_size:
            return "Crop"
        if strategy == "Resize" and long_side > self.settings.resize_limit:
            return "Resize"
        return "Original"

    def windows(self, mask: Tensor, frame: tuple[int, int] | None = None, offset: tuple[int, int] = (0, 0)
                ) -> list[Box]:
        """The crop windows IOPaint inpaints for an (H, W) mask, in paste order (empty unless Crop).

        ``frame`` and ``offset`` ((left, top)): ``mask`` is the part of a ``frame``-sized photo's mask
        at ``offset``, zero elsewhere; the windows are then in the photo's coordinates.
        """
        size = tuple(frame or mask.shape[-2:])
        if self.strategy_for(size) != "Crop":
            return []
        margin = _MIGAN_MARGIN if self.conventions.own_crop else self.settings.crop_margin
        dx, dy = offset
        return [crop_window((left + dx, top + dy, right + dx, bottom + dy), size, margin)
                for left, top, right, bottom in mask_boxes(mask > 0.5)]

    def framed(self, photo: Tensor, box: Box) -> Framed | None:
        """This tool's edit of ``photo`` (3, H, W) seen through ``box`` (see :class:`Framed`) when it crops
        the photo; None when it sees all of it (Original, Resize)."""
        return Framed(self, photo, box) if self.strategy_for(tuple(photo.shape[-2:])) == "Crop" else None

    def support(self, mask: Tensor) -> Tensor:
        mask = _as_mask_batch(mask)
        if self.strategy_for(tuple(mask.shape[-2:])) != "Crop":
            return torch.ones(mask.shape[-2:], dtype=torch.float32, device=mask.device)
        seen = torch.zeros(mask.shape[-2:], dtype=torch.float32, device=mask.device)
        for item in mask[:, 0]:
            for left, top, right, bottom in self.windows(item):
                seen[top:bottom, left:right] = 1
        return seen

    # -- the edit ------------------------------------------------------------------------------

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        image, mask = self.cast(image, mask)
        strategy = self.strategy_for(tuple(image.shape[-2:]))
        if strategy == "Original":
            return self._pad_forward(image, mask)
        if strategy == "Resize":
            return self._resize(image, mask)
        return torch.cat([self._crop(image[i:i + 1], mask[i:i + 1]) for i in range(len(image))])

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        return _tuned_edit(self, image, mask)

    @property
    def surrogate_is_edit(self) -> bool:
        return self.inner.surrogate_is_edit  # the tool's edit, through the network's own optimisation settings

    def _pad_forward(self, image: Tensor, mask: Tensor) -> Tensor:
        """IOPaint's ``_pad_forward`` + the model's ``forward``: symmetric pad, threshold the mask,
        run, crop back, keep the unmasked area (``sd_keep_unmasked_area``, on by default) with the
        mask as given — soft after a resize, so the blend is too."""
        h, w = image.shape[-2:]
        height, width = padded_size((h, w), self.conventions)
        padded, padded_mask = symmetric_pad(image, height, width), symmetric_pad(mask, height, width)
        hole = (padded_mask * 255 > self.conventions.hole_above + 0.5).to(image.dtype)
        # The erase models erase the hole themselves (big-lama.pt, MAT, MI-GAN); the Inpainter
        # contract gives ``fill`` an erased image.
        result = self._8bit(self.inner.fill(padded * (1 - hole), hole)[..., :h, :w], self.conventions.truncates)
        return mask * result + (1 - mask) * image

    def _8bit(self, x: Tensor, truncate: bool = False, slack: float = 0.0) -> Tensor:
        return to_8bit(x, truncate, slack) if self.exact_8bit else x

    def _shrink(self, image: Tensor, size: tuple[int, int]) -> Tensor:
        """cv2 resizes the uint8 photo: the result is rounded to 8 bits."""
        return self._8bit(cubic_resize(image, size))

    def _crop(self, image: Tensor, mask: Tensor) -> Tensor:
        """Crop (and MI-GAN's own path): each window inpainted alone, pasted back in IOPaint's order
        (a later window overwrites an earlier one where they overlap, unmasked pixels included)."""
        result = image.clone()
        for left, top, right, bottom in self.windows(mask[0, 0]):
            window = (..., slice(top, bottom), slice(left, right))
            result[window] = self._edit_window(image[window], mask[window])
        return result

    def _edit_window(self, image: Tensor, mask: Tensor) -> Tensor:
        if not self.conventions.own_crop:
            return self._pad_forward(image, mask)
        size = tuple(image.shape[-2:])
        small = shrunk_size(size, _MIGAN_SIDE)
        if small == size:
            return self._pad_forward(image, mask)
        filled = cubic_resize(self._pad_forward(self._shrink(image, small), _resized_mask(mask, small)), size)
        # The float result is written into the uint8 photo: truncated.
        return self._8bit((mask * filled + (1 - mask) * image).clamp(0, 1), truncate=True, slack=1e-3)

    def _resize(self, image: Tensor, mask: Tensor) -> Tensor:
        """Resize: inpaint the photo shrunk to ``resize_limit``, enlarge the result, paste it in the mask."""
        size = tuple(image.shape[-2:])
        small = shrunk_size(size, self.settings.resize_limit)
        filled = cubic_resize(self._pad_forward(self._shrink(image, small), _resized_mask(mask, small)), size)
        # IOPaint converts the enlarged float result with astype(uint8), which wraps the cubic
        # overshoot around; the [0, 1] contract clamps it instead.
        return self._8bit((mask * filled + (1 - mask) * image).clamp(0, 1), truncate=True, slack=1e-3)

    def __repr__(self) -> str:
        return f"IOPaintPipeline({self.inner!r}, strategy={self.strategy!r})"


def _tuned_edit(tool: Inpainter, image: Tensor, mask: Tensor) -> Tensor:
    """A tool's edit that calls its network's ``fill`` itself, under the network's optimisation settings
    (:meth:`Network.tuned`): the tool's surrogate."""
    network = tool.inner if isinstance(tool.inner, Network) else tool.inner.inner  # Framed → pipeline → network
    with network.tuned():
        out = tool.inpaint(image, mask)
    return out if network.autocast is None else out.to(image.dtype)


def _check_strategy(strategy: str) -> str:
    """``strategy`` spelt as :data:`STRATEGIES` spell it (any case), or ``auto``."""
    names = {name.lower(): name for name in (AUTO, *STRATEGIES)}
    key = strategy.strip().lower()
    if key not in names:
        raise ModelError(f"unknown IOPaint strategy {strategy!r}; available: {', '.join(names.values())}")
    return names[key]


def _as_mask_batch(mask: Tensor) -> Tensor:
    """(H, W), (1, H, W) or (N, 1, H, W) → (N, 1, H, W) binary float."""
    while mask.ndim < 4:
        mask = mask.unsqueeze(0)
    return (mask > 0.5).float()


class Framed(Wrapper):
    """An :class:`IOPaintPipeline`'s ``Crop`` edit of ``photo``, seen through ``box``.

    Takes and returns the box's pixels only (N, 3, h, w) with masks that lie inside the box; the
    strategy and the windows are those of the whole photo, and where a window reaches outside the
    box its context there is the photo's own (a constant). When the tool crops, only the windows
    matter, so the engine can optimise δ on the support's bounding box: a 12-megapixel photo then
    costs about what its crops cost, instead of paying full-frame tensors in every pass.
    ``Framed(p, photo, box)(x[..., box], m[..., box])`` equals ``p(x, m)[..., box]`` whenever ``x``
    equals ``photo`` outside the box and ``m`` is zero there.
    """

    inner: IOPaintPipeline

    def __init__(self, pipeline: IOPaintPipeline, photo: Tensor, box: Box):
        super().__init__(pipeline)
        self.size = tuple(photo.shape[-2:])
        if pipeline.strategy_for(self.size) != "Crop":
            strategy = pipeline.strategy_for(self.size)
            raise ValueError(f"framing needs the Crop strategy; {strategy} sees the whole photo")
        self.box = box
        self.photo = photo.detach().reshape(1, 3, *self.size).to(pipeline.device, pipeline.dtype)

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        image, mask = self.cast(image, mask)
        left, top, right, bottom = self.box
        if tuple(image.shape[-2:]) != (bottom - top, right - left):
            raise ValueError(f"framed input must be the box's {bottom - top}×{right - left}, "
                             f"got {tuple(image.shape[-2:])}")
        return torch.cat([self._crop(image[i:i + 1], mask[i:i + 1]) for i in range(len(image))])

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        return _tuned_edit(self, image, mask)

    @property
    def surrogate_is_edit(self) -> bool:
        return self.inner.surrogate_is_edit

    def support(self, mask: Tensor) -> Tensor:
        """The photo's windows for a box-sized ``mask``, in the box's coordinates."""
        mask = _as_mask_batch(mask)
        left, top, right, bottom = self.box
        seen = torch.zeros(mask.shape[-2:], dtype=torch.float32, device=mask.device)
        for item in mask[:, 0]:
            for wl, wt, wr, wb in self.inner.windows(item, self.size, (left, top)):
                seen[max(wt, top) - top:min(wb, bottom) - top, max(wl, left) - left:min(wr, right) - left] = 1
        return seen

    def framed(self, photo: Tensor, box: Box) -> Inpainter | None:
        return None

    def strategy_for(self, size: tuple[int, int]) -> str:
        return "Crop"

    def strategies(self, size: tuple[int, int]) -> tuple[str, ...]:
        return ("Crop",)

    def with_strategy(self, strategy: str) -> Inpainter:
        return self

    def every_strategy(self, size: tuple[int, int]) -> Inpainter:
        return self

    def _crop(self, image: Tensor, mask: Tensor) -> Tensor:
        left, top, right, bottom = self.box
        result = image.clone()
        for window in self.inner.windows(mask[0, 0], self.size, (left, top)):
            wl, wt, wr, wb = window
            # the part of the window inside the box, in the box's and in the window's coordinates
            il, it, ir, ib = max(wl, left), max(wt, top), min(wr, right), min(wb, bottom)
            inner = (..., slice(it - top, ib - top), slice(il - left, ir - left))
            local = (..., slice(it - wt, ib - wt), slice(il - wl, ir - wl))
            if (il, it, ir, ib) == window:
                win_image, win_mask = image[inner], mask[inner]
            else:  # the window reaches out of the box: the photo's pixels there, no hole
                win_image = self.photo[..., wt:wb, wl:wr].clone()
                win_image[local] = image[inner]
                win_mask = torch.zeros_like(win_image[:, :1])
                win_mask[local] = mask[inner]
            result[inner] = self.inner._edit_window(win_image, win_mask)[local]
        return result

    def __repr__(self) -> str:
        return f"Framed({self.inner!r}, box={self.box})"
