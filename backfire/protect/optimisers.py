"""How the perturbation moves each step: Adam (the paper's choice), or sign steps (PGD, MI-FGSM).

Why more than Adam: at the paper's lr 0.1 against a 0.025 clamp, Adam's first steps already jump
across the whole L∞ ball, so 20 steps amount to sign flips with no fine search. Sign-PGD with a
decaying step explores the ball coarsely first and settles later; momentum (MI-FGSM) keeps a
direction through noisy gradients. Which works is measured (``benchmarks/study_steerability.py``),
not assumed.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

OptimiserKind = Literal["adam", "sign", "momentum"]
OPTIMISER_KINDS: tuple[OptimiserKind, ...] = get_args(OptimiserKind)

_LAST_STEP_FRACTION = 0.1  # the sign step decays to a tenth of its first size


class SignDescent:
    """Signed-gradient descent with a cosine-decaying step, optionally with momentum (MI-FGSM).

    Arguments:
        param: the tensor to optimise (its ``.grad`` is read).
        first_step: the first step's size, in the parameter's own unit ([0, 1] pixels for δ).
        steps: the run's length, which sets the decay.
        momentum: 0 for sign-PGD; MI-FGSM's μ (1.0 in the paper that introduced it) otherwise, with
            each gradient normalised by its mean absolute value before it is accumulated.

    It has the two methods the engine calls on a ``torch.optim`` optimiser: ``zero_grad`` and ``step``.
    """

    def __init__(self, param: Tensor, first_step: float, steps: int, momentum: float = 0.0):
        if first_step <= 0:
            raise ValueError(f"first_step must be > 0, got {first_step}")
        self.param, self.first_step, self.steps, self.momentum = param, first_step, max(steps, 1), momentum
        self.taken = 0
        self.velocity = torch.zeros_like(param)

    def step_size(self, taken: int) -> float:
        progress = min(taken / max(self.steps - 1, 1), 1.0)
        decay = _LAST_STEP_FRACTION + (1 - _LAST_STEP_FRACTION) * (1 + math.cos(math.pi * progress)) / 2
        return self.first_step * decay

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        if grad is None:
            return
        if self.momentum:
            self.velocity.mul_(self.momentum).add_(grad / grad.abs().mean().clamp_min(1e-12))
            grad = self.velocity
        self.param.sub_(self.step_size(self.taken) * grad.sign())
        self.taken += 1


def make_optimiser(kind: OptimiserKind, param: Tensor, *, lr: float, betas: tuple[float, float],
                   budget: float, steps: int):
    """The optimiser a recipe names.

    Arguments:
        kind: ``"adam"``, ``"sign"`` or ``"momentum"``.
        lr: Adam's learning rate; for the sign optimisers the first step as a fraction of ``budget``
            (so that ``--budget`` changes scale the steps with it).
        betas: Adam's moment decays (unused by the sign optimisers).
        budget: the L∞ bound in [0, 1] pixel units.
        steps: the run's length.
    """
    if kind == "adam":
        return torch.optim.Adam([param], lr=lr, betas=betas)
    if kind == "sign":
        return SignDescent(param, lr * budget, steps)
    if kind == "momentum":
        return SignDescent(param, lr * budget, steps, momentum=1.0)
    raise ValueError(f"unknown optimiser {kind!r}; choose from {', '.join(OPTIMISER_KINDS)}")
