"""Named protection recipes, as values: a new recipe is a new entry here, never a new loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from backfire.masks import EditKind
from backfire.protect.optimisers import OptimiserKind
from backfire.protect.targets import TargetKind

TermMask = Literal["exact", "dilated", "ring", "sampled-attacker", "sampled-benign"]
"""The edit masks a recipe term can name (built by :data:`backfire.protect.engine.TERM_MASK_BUILDERS`)."""
TERM_MASKS: tuple[TermMask, ...] = get_args(TermMask)
SAMPLED_TERM_MASKS: tuple[TermMask, ...] = ("sampled-attacker", "sampled-benign")
BudgetShape = Literal["flat", "texture"]
ToolStrategies = Literal["default", "every"]


@dataclass(frozen=True)
class Term:
    """One edit the optimisation looks at.

    Arguments:
        mask: which edit mask, built from the protected region M: ``"exact"`` (M),
            ``"dilated"`` (M dilated by the recipe's square), ``"ring"`` (dilated − M), or drawn afresh
            every step (:mod:`backfire.protect.sampling`): ``"sampled-attacker"`` (a mask an attacker
            might draw over M), ``"sampled-benign"`` (an edit elsewhere).
        role: ``"attacker"`` pushes the fill toward the target; ``"benign"`` holds it at the clean fill
            (the two edit kinds of :data:`backfire.masks.EDIT_KINDS`).
        weight: the term's weight in the loss.
    """

    mask: TermMask
    role: EditKind
    weight: float

    @property
    def sampled(self) -> bool:
        """Drawn afresh every step (its goal, for a benign term, too)."""
        return self.mask in SAMPLED_TERM_MASKS


@dataclass(frozen=True)
class Recipe:
    """Everything the engine needs to know to protect an image.

    Arguments:
        name: registry name.
        terms: the edits in the loss (each an MSE averaged over the pixels of its mask).
        steps: optimisation steps.
        budget: L∞ bound on the perturbation, in [0, 1] pixel units (0.025 = 6.375/255).
        lr, betas: Adam's step size and moment decay; for the sign optimisers ``lr`` is the first
            step as a fraction of the budget (see :func:`backfire.protect.optimisers.make_optimiser`).
        init_high: the perturbation starts as U[0, init_high).
        dilation: radius of the square that dilates M (8 → a 17×17 square).
        target: what a failed edit should look like.
        optimiser: ``"adam"`` (the paper's), ``"sign"`` (PGD, decaying step) or ``"momentum"`` (MI-FGSM).
        stride: 1 optimises δ per pixel; s > 1 optimises it on a grid s times coarser, bilinearly
            upsampled (a low-frequency δ: more leverage on the fill per unit of visible change).
        cleaning: the attacker's cleanings each attack edit may go through first (expectation over
            transformations, :mod:`backfire.inpainters.cleaning`): ``"jpeg"``, ``"resize"``, ``"blur"``,
            ``"noise"``; empty = edits of the pristine file only.
        cleaning_rate: the probability that an attack edit is cleaned at all.
        quantise_steps: the last this-many steps see x + δ rounded to 8 bits (straight-through), as
            the saved file will hold it.
        budget_shape: ``"flat"`` (the same bound everywhere) or ``"texture"`` (the full bound in
            textured areas, down to 40 % on flat ones, where changes show; the budget stays the maximum).
        redraw: attack edits see the model's own randomness (MAT's latent and noise) drawn afresh every
            call, instead of the fixed draw the attacker's tool makes (an expectation over the generator).
        tool_strategies: ``"default"``: attack edits go through the strategy the attacker's tool picks by
            default for the photo's size (IOPaint: Crop over 800 px); ``"every"``: through every strategy
            that applies, in turn (an expectation over the attacker's settings).
    """

    name: str
    terms: tuple[Term, ...]
    steps: int
    budget: float
    lr: float
    betas: tuple[float, float]
    init_high: float
    dilation: int
    target: TargetKind = "solid"
    optimiser: OptimiserKind = "adam"
    stride: int = 1
    cleaning: tuple[str, ...] = ()
    cleaning_rate: float = 0.5
    quantise_steps: int = 0
    budget_shape: BudgetShape = "flat"
    tool_strategies: ToolStrategies = "default"
    redraw: bool = False
    description: str = ""

    def but(self, **changes) -> Recipe:
        """A copy with some fields changed (``None`` values leave the field as it is)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PAPER = Recipe(
    name="paper",
    description="Zhang et al. 2024 (arXiv 2410.14966), reproduced exactly",
    terms=(Term("exact", "attacker", 1.0), Term("dilated", "attacker", 1.0), Term("ring", "benign", 2.0)),
    steps=20,
    budget=0.025,
    lr=0.1,
    betas=(0.5, 0.5),
    init_high=0.01,
    dilation=8,
    target="solid",
)

ROBUST = PAPER.but(
    name="robust",
    description="the paper's edits plus attacker and benign masks drawn every step, the attacker's cleaning "
                "(JPEG, resize, blur, noise) drawn per edit, every setting of the attacker's tool in turn, MI-FGSM "
                "steps, an 8-bit finish, a texture-shaped budget",
    terms=(*PAPER.terms, Term("sampled-attacker", "attacker", 1.0), Term("sampled-attacker", "attacker", 1.0),
           Term("sampled-benign", "benign", 2.0)),
    optimiser="momentum",
    lr=0.25,  # the first sign step is ε/4, decaying (the steerability study)
    cleaning=("jpeg", "resize", "blur", "noise"),
    cleaning_rate=0.5,
    quantise_steps=5,
    budget_shape="texture",
    tool_strategies="every",
    redraw=True,
)

MIN_BUDGET_255 = 0.5
"""The smallest budget worth asking for, in /255: below half an 8-bit level, rounding to the saved file's
8 bits erases the perturbation entirely."""

RECIPES: dict[str, Recipe] = {PAPER.name: PAPER, ROBUST.name: ROBUST}
DEFAULT_RECIPE = PAPER.name


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}") from None
