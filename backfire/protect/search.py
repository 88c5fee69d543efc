"""``--budget auto``: the least visible protection whose verdict holds, found on a ladder of budgets.

The search climbs a ladder of rungs (budget, steps) from small to a visibility ceiling (:class:`AutoBudget`: a
largest budget and a smallest PSNR). Each rung is one run of the one optimisation loop
(:func:`backfire.protect.engine.protect`), warm-started from the previous rung's δ (clipped into the new bound),
and is judged by the caller's ``judge`` — the road's save, read back and verdict (:func:`backfire.jobs.protect_task`),
as every protection is. It stops at the first rung whose verdict holds; when none does, it keeps the strongest
rung within the ceiling. Nothing here judges: the verdict and the visibility come from the caller, so the rule
of "protected" stays the verdict's (:class:`backfire.judge.outcome.Outcome`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from torch import Tensor

from backfire.inpainters.base import Inpainter
from backfire.protect.engine import Protection, StepCallback, protect
from backfire.protect.recipes import Recipe

J = TypeVar("J")

LADDER_255: tuple[float, ...] = (4.0, 6.375, 10.0, 16.0, 24.0, 32.0, 48.0, 64.0)
"""The budgets tried, in /255, least visible first: about ×1.5 apart (the fill moves roughly linearly with the
budget, docs/curves.md), starting under the paper's 6.375 and reaching where published attacks on real inpainters
work (25–51/255, docs/literature.md). A ceiling between two rungs becomes the last rung itself."""

DEFAULT_MAX_BUDGET_255 = 16.0
"""The default largest budget, /255. 16/255 is the largest L∞ budget the published protections of photos
against SD inpainting use (PhotoGuard, DiffusionGuard, AdvPaint: 7.65–16/255, docs/literature.md); beyond it the
perturbation is plainly visible — on backfire-s's curve at 16/255 the protected photo's CIEDE2000 ΔE is 8.2 on
average and 18.8 at the 99th percentile, eight just-noticeable differences (docs/curves.md)."""

DEFAULT_MIN_PSNR = 30.0
"""The default smallest PSNR of the protected photo against the original, dB: 30 dB is the usual floor of
acceptable quality for lossy images. It bounds the perturbation's energy where the budget bounds its worst pixel:
a flat budget (the paper's Adam saturates most pixels at ±ε) passes it up to about 8/255 (6.375/255: 32.7 dB,
16/255: 24.5 dB on backfire-s's curve), a texture-shaped one further."""

Stop = Literal["protected", "budget", "psnr"]
"""Why the search stopped: a rung's verdict held; the ladder reached the largest budget; a rung fell under the
smallest PSNR (its verdict is not kept: it is over the ceiling)."""


@dataclass(frozen=True)
class Rung:
    """One setting of the search: L∞ ``budget`` in [0, 1] units and the optimisation ``steps`` it runs."""

    budget: float
    steps: int


@dataclass(frozen=True)
class AutoBudget:
    """The visibility ceiling of a search: the largest budget (in [0, 1] units) and the smallest PSNR (dB, None: no
    floor). Checked where the user's words come in (:meth:`backfire.jobs.Request.of`)."""

    max_budget: float = DEFAULT_MAX_BUDGET_255 / 255
    min_psnr: float | None = DEFAULT_MIN_PSNR

    def rungs(self, steps: int) -> tuple[Rung, ...]:
        """The ladder under the largest budget, the largest budget itself last, each running ``steps``."""
        budgets = [b / 255 for b in LADDER_255 if b / 255 < self.max_budget - 1e-9]
        return tuple(Rung(b, steps) for b in (*budgets, self.max_budget))

    def within(self, psnr: float) -> bool:
        """A rung whose protected photo has this PSNR is within the ceiling (its budget is, by the ladder)."""
        return self.min_psnr is None or psnr >= self.min_psnr

    def as_dict(self) -> dict:
        return {"max_budget_255": self.max_budget * 255, "min_psnr": self.min_psnr}


@dataclass(frozen=True)
class Tried(Generic[J]):
    """One rung run: its protection (warm-started from the previous rung's), the caller's verdict on it, whether
    the verdict holds and the rung is within the ceiling, and the seconds of the optimisation and of the verdict."""

    rung: Rung
    protection: Protection
    judged: J
    holds: bool
    psnr: float
    within: bool
    judge_seconds: float

    def as_dict(self) -> dict:
        """What the search itself knows of the rung (the caller adds its verdict's measures)."""
        return {"budget_255": self.rung.budget * 255, "steps": self.rung.steps, "seconds": self.protection.seconds,
                "judge_seconds": self.judge_seconds, "psnr": self.psnr, "protected": self.holds,
                "within_ceiling": self.within}


@dataclass(frozen=True)
class Searched(Generic[J]):
    """The rungs tried in order, the one kept, and why the search stopped."""

    tried: list[Tried[J]]
    kept: Tried[J]
    stopped: Stop

    @property
    def protected(self) -> bool:
        return self.kept.holds and self.kept.within


RungStart = Callable[[int, Rung], StepCallback | None]
"""``on_rung(index, rung)`` before rung ``index`` (0-based) runs; returns that rung's step callback (or None)."""
RungDone = Callable[[int, "Tried"], None]
"""``on_tried(index, tried)`` once rung ``index`` is judged."""


def search(image: Tensor, region: Tensor, inpainter: Inpainter | Sequence[Inpainter], recipe: Recipe,
           ceiling: AutoBudget, judge: Callable[[Protection], J], *, holds: Callable[[J], bool],
           psnr: Callable[[J], float], seed: int = 0, grey: bool = False, on_rung: RungStart | None = None,
           on_tried: RungDone | None = None) -> Searched[J]:
    """Climb ``ceiling``'s ladder (each rung runs ``recipe``'s steps at its budget) until a rung's verdict holds.

    ``judge(protection)`` is the caller's verdict on a rung (save, read back, judge); ``holds(verdict)`` whether it
    protects and ``psnr(verdict)`` the protected photo's PSNR (dB), both read off that verdict. The first rung
    starts from the recipe's random start (``seed``), every later one from the previous rung's δ. Stops at the
    first rung that holds within the ceiling; a rung under the smallest PSNR ends the search and is not kept;
    the kept rung is then the strongest within the ceiling (the first rung if even it was over).
    """
    tried: list[Tried[J]] = []
    init: Tensor | None = None
    for index, rung in enumerate(ceiling.rungs(recipe.steps)):
        on_step = None if on_rung is None else on_rung(index, rung)
        if on_step is not None:
            on_step(0, rung.steps, None)  # the wait for the first step shows too
        protection = protect(image, region, inpainter, recipe, budget=rung.budget, steps=rung.steps, seed=seed,
                             grey=grey, init=init, on_step=on_step)
        started = time.perf_counter()
        verdict = judge(protection)
        seen = psnr(verdict)
        done = Tried(rung, protection, verdict, holds(verdict), seen, ceiling.within(seen),
                     time.perf_counter() - started)
        tried.append(done)
        if on_tried is not None:
            on_tried(index, done)
        if not done.within:
            within = [t for t in tried if t.within]
            return Searched(tried, within[-1] if within else tried[0], "psnr")
        if done.holds:
            return Searched(tried, done, "protected")
        init = protection.delta
    return Searched(tried, tried[-1], "budget")
