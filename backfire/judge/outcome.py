"""The one definition of a protected photo, over every way the attacker can run the edit.

A photo is **protected** when every attacker edit fails for every model judged, every strategy that model's
tool applies to a photo of this size (IOPaint over 800 px: Crop, Original, and Resize over 1280 px), and every
draw of a stochastic model (MAT's dropout, a sampler's noise): the worst case decides (docs/evaluation.md,
"Protected"). :func:`trials` is that set, :func:`judge_every` judges it, :class:`Outcome` is what it adds
up to: ``backfire protect`` (its JSON, its terminal summary, ``--strict``), ``verify``, the folder runs'
``batch.csv``, ``evaluate``'s failure rates and the app all read it, and nothing else decides "protected".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from torch import Tensor

from backfire.inpainters.base import Inpainter
from backfire.judge.verdict import (INTACT_SSIM, VERDICT_FAMILIES, AttackerEdit, BenignEdit, EditImages,
                                    EditResult, Verdict, invisibility, judge)
from backfire.protect import TargetKind

DEFAULT_DRAWS = 8
"""Draws judged per stochastic model and strategy (``--draws``). If a fraction p of the attacker's draws would
un-protect the photo, K draws all look protected with chance (1 − p)^K: with 8, one in ten for p = 0.25 and
under one in two hundred for p = 0.5 (docs/evaluation.md, "Draws"). Deterministic models are judged once."""

__all__ = ["DEFAULT_DRAWS", "Decided", "Outcome", "Trial", "Weakest", "check_draws", "each", "judge_every", "trials"]


def check_draws(draws: int) -> int:
    """``draws`` if it is a whole number ≥ 1, else a ValueError saying why (one line)."""
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a whole number ≥ 1 (one draw judges one of the attacker's clicks), "
                         f"got {draws}")
    return int(draws)


@dataclass(frozen=True)
class Trial:
    """One way the attacker runs the edit: model ``index`` of the ensemble, set to ``strategy`` (its tool's
    default for the photo when ``default_strategy``) and to its draw ``draw``; ``tool`` does exactly that."""

    index: int
    model: Inpainter
    strategy: str
    default_strategy: bool
    draw: int
    tool: Inpainter


def trials(models: Sequence[Inpainter], size: tuple[int, int], draws: int = DEFAULT_DRAWS) -> list[Trial]:
    """Every (model × strategy × draw) a verdict on an H×W photo judges, in order: the models as given, each
    with its tool's default strategy first, then every other strategy the tool applies to a photo this size,
    and for a stochastic model draws 0 … ``draws`` − 1 (draw 0: the model as loaded) of each."""
    check_draws(draws)
    found = []
    for index, model in enumerate(models):
        default = model.strategy_for(size)
        for strategy in model.strategies(size):
            tool = model if strategy == default else model.with_strategy(strategy)
            for draw in range(draws if model.stochastic else 1):
                found.append(Trial(index, model, strategy, strategy == default, draw, tool.with_draw(draw)))
    return found


# ------------------------------------------------------------------------------------------ the outcome

@dataclass(frozen=True)
class Decided:
    """One edit over every trial: the verdict and edit record that decide it (the attacker edit least failed,
    the benign edit least intact), and whether it failed (attacker) or stayed intact (benign) on every trial."""

    verdict: Verdict
    edit: EditResult

    @property
    def name(self) -> str:
        return self.edit.name

    @property
    def ok(self) -> bool:
        """Attacker: failed on every trial; benign: intact on every trial."""
        return self.edit.failed if isinstance(self.edit, AttackerEdit) else self.edit.intact


@dataclass(frozen=True)
class Weakest:
    """The attacker edit that decides the outcome: NOT PROTECTED, the one farthest from failing; PROTECTED,
    the one closest to not failing. ``distance_to_target`` is its mean |fill − T| over the region, judged
    against ``fail_distance`` (failed when at most that)."""

    model: str
    pipeline: str
    strategy: str
    default_strategy: bool
    draw: int
    stochastic: bool
    edit: str
    family: str
    failed: bool
    distance_to_target: float
    fail_distance: float

    @classmethod
    def of(cls, verdict: Verdict, edit: AttackerEdit) -> Weakest:
        return cls(verdict.model, verdict.pipeline, verdict.strategy, verdict.default_strategy, verdict.draw,
                   verdict.stochastic, edit.name, edit.family, edit.failed, edit.metrics["target_distance_protected"],
                   verdict.fail_distance(edit))

    @property
    def where(self) -> str:
        """The trial in words: model, strategy, draw (of a stochastic model)."""
        strategy = f", strategy {self.strategy}" if self.strategy else ""
        return f"{self.model}{strategy}" + (f", draw {self.draw}" if self.stochastic else "")

    def as_dict(self) -> dict:
        return {"model": self.model, "pipeline": self.pipeline, "strategy": self.strategy,
                "default_strategy": self.default_strategy, "draw": self.draw, "stochastic": self.stochastic,
                "edit": self.edit,
                "family": self.family, "failed": self.failed, "distance_to_target": self.distance_to_target,
                "fail_distance": self.fail_distance}


@dataclass
class Outcome:
    """What the verdicts of every trial add up to. ``draws``: the draws asked per stochastic model."""

    verdicts: list[Verdict]
    draws: int = DEFAULT_DRAWS

    @property
    def protected(self) -> bool:
        """The one definition: some attacker edit was judged, and every attacker edit failed on every trial."""
        return bool(self.verdicts) and all(v.protected for v in self.verdicts)

    @property
    def benign_intact(self) -> bool:
        """Every benign edit intact on every trial."""
        return all(v.benign_intact for v in self.verdicts)

    @property
    def models(self) -> list[str]:
        """The models judged, each once, in order."""
        return list(dict.fromkeys(v.model for v in self.verdicts))

    def decided(self) -> list[Decided]:
        """Every edit (in the first verdict's order) with the trial that decides it: the one place where an
        edit over many trials is counted (``batch.csv``'s counts, ``evaluate``'s failure rates)."""
        found: dict[str, list[tuple[Verdict, EditResult]]] = {}
        for verdict in self.verdicts:
            for edit in verdict.edits:
                found.setdefault(edit.name, []).append((verdict, edit))
        return [Decided(*min(pairs, key=_shortfall)) for pairs in found.values()]

    @property
    def attacker_edits(self) -> list[Decided]:
        return [d for d in self.decided() if isinstance(d.edit, AttackerEdit)]

    @property
    def benign_edits(self) -> list[Decided]:
        return [d for d in self.decided() if isinstance(d.edit, BenignEdit)]

    @property
    def weakest(self) -> Weakest | None:
        """The attacker edit with the least margin inside the failure rule over every trial (None: none judged)."""
        pairs = [(v, e) for v in self.verdicts for e in v.attacker_edits]
        return Weakest.of(*min(pairs, key=_shortfall)) if pairs else None

    @property
    def summary(self) -> str:
        """The outcome in plain words (the verdicts' own fields stay beside it in the JSON)."""
        attacks, benign = self.attacker_edits, self.benign_edits
        failed, intact = sum(d.ok for d in attacks), sum(d.ok for d in benign)
        against = " and ".join(self.models) or "no model"
        ways = len(self.verdicts)
        if self.protected:
            every = "" if ways == 1 else f" on every one of the {ways} ways it can be run (model × strategy × draw)"
            head = (f"PROTECTED against {against}: all {len(attacks)} attacker edits of the region fail{every} (the "
                    f"inpainting shows the target instead of removing the region)")
            deciding = "closest to not failing"
        else:
            some = "" if ways == 1 else f" on at least one of the {ways} ways it can be run (model × strategy × draw)"
            head = (f"NOT PROTECTED against {against}: {len(attacks) - failed} of {len(attacks)} attacker edits "
                    f"still inpaint the region normally{some}")
            deciding = "farthest from failing"
        weakest = self.weakest
        if weakest is not None:
            head += (f"; {deciding}: {weakest.edit} on {weakest.where} (distance to the target "
                     f"{weakest.distance_to_target:.3f}; it fails at ≤ {weakest.fail_distance:.3f})")
        everywhere = "" if ways == 1 else " on every one"
        tail = (f"{intact} of {len(benign)} edits elsewhere work as before{everywhere}" if benign
                else "no benign edit judged")
        return f"{head}; {tail}."

    def as_dict(self) -> dict:
        """The JSON of a verdict on a photo: the first trial's verdict as the top level (model, edits, …, as
        before), with ``protected``, ``benign_intact`` and ``summary`` of the outcome; then what decided it
        (``weakest``), the counts over every trial, the draws, ``ensemble`` (each model's default edit, when
        there are several) and ``verdicts`` (every trial)."""
        weakest = self.weakest
        record = self.verdicts[0].as_dict() if self.verdicts else {}
        attacks, benign = self.attacker_edits, self.benign_edits
        record.update({
            "protected": self.protected, "benign_intact": self.benign_intact, "summary": self.summary,
            "weakest": None if weakest is None else weakest.as_dict(), "draws": self.draws,
            "attacker_edits": len(attacks), "attacker_edits_failed": sum(d.ok for d in attacks),
            "benign_edits": len(benign), "benign_edits_intact": sum(d.ok for d in benign),
        })
        defaults = [v for v in self.verdicts if v.default_strategy and v.draw == 0]
        if len(defaults) > 1:
            record["ensemble"] = [v.as_dict() for v in defaults]
        record["verdicts"] = [v.as_dict() for v in self.verdicts]
        return record


def _shortfall(pair: tuple[Verdict, EditResult]) -> float:
    """How close an edit of a trial is to breaking the protection (smaller: closer): the attacker edit's margin
    inside the failure rule, the benign edit's fidelity above the intact threshold."""
    verdict, edit = pair
    if isinstance(edit, AttackerEdit):
        return verdict.margin(edit)
    margin = edit.metrics["fidelity_ssim"] - INTACT_SSIM
    return margin if math.isfinite(margin) else -math.inf


# ------------------------------------------------------------------------------------------ judging it

OnEdit = Callable[[Trial, int, int], None]
"""``on_edit(trial, edits done, edits in all)``, over every trial together."""


def judge_every(original: Tensor, protected: Tensor, region: Tensor, models: Sequence[Inpainter], target: Tensor,
                *, draws: int = DEFAULT_DRAWS, families: Sequence[str] = VERDICT_FAMILIES, seed: int = 0,
                target_kind: TargetKind = "solid",
                clean_fills: Callable[[Trial], Sequence[tuple[Tensor, Tensor]]] | None = None,
                on_edit: OnEdit | None = None) -> tuple[Outcome, list[Trial], list[list[EditImages]]]:
    """:func:`backfire.judge.verdict.judge` on every trial of :func:`trials`: the outcome, the trials and each
    trial's fills (in the same order). ``clean_fills(trial)``: edits of the original already made for that
    trial (see ``judge``), e.g. those the optimisation computed for each model's default strategy and draw 0."""
    found = trials(models, tuple(original.shape[-2:]), draws)
    visibility = invisibility(original, protected)  # of the two images alone: measured once for every trial
    verdicts, fills = [], []
    for n, trial in enumerate(found):
        def progress(done: int, total: int, trial: Trial = trial, n: int = n) -> None:
            on_edit(trial, n * total + done, len(found) * total)

        verdict, images = judge(original, protected, region, trial.tool, target, tuple(families), seed=seed,
                                clean_fills=clean_fills(trial) if clean_fills else (), target_kind=target_kind,
                                on_edit=None if on_edit is None else progress, visibility=visibility)
        verdict.default_strategy, verdict.draw = trial.default_strategy, trial.draw
        verdicts.append(verdict)
        fills.append(images)
    return Outcome(verdicts, draws), found, fills


def each(outcome: Outcome) -> Iterator[Verdict]:
    """The verdicts a person reads first: each model × strategy's draw 0, and the trial that decided the
    outcome when it is another draw."""
    weakest = outcome.weakest
    for verdict in outcome.verdicts:
        deciding = weakest is not None and (verdict.model, verdict.strategy, verdict.draw) == \
            (weakest.model, weakest.strategy, weakest.draw)
        if verdict.draw == 0 or deciding:
            yield verdict
