"""The one optimisation loop: build the recipe's edits → forward (batched) → loss → step → project."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from backfire import masks as mask_ops
from backfire.pixels import quantize
from backfire.inpainters.base import Inpainter
from backfire.inpainters.cleaning import CleaningSampler, straight_through_round, with_cleaning
from backfire.inpainters.pipelines import Box, bounding_box, support
from backfire.protect.optimisers import make_optimiser
from backfire.protect.recipes import DEFAULT_RECIPE, TERM_MASKS, Recipe, Term, TermMask, get_recipe
from backfire.protect.sampling import EditSampler, attacker_reach
from backfire.protect.targets import make_target

StepCallback = Callable[[int, int, float | None], None]
"""``on_step(done, total, loss)``; ``loss`` is None for the call that opens the work (done = 0)."""
ImageCallback = Callable[[int, Tensor], None]


@dataclass
class Protection:
    """What :func:`protect` returns.

    ``protected`` is already quantised to 8 bits (round, never truncate): exactly what a saved PNG
    reads back as. ``losses`` holds the loss before each step. ``clean_fills`` holds, per model, the
    benign edits of the original the optimisation computed as goals — ``(mask, fill over x)`` pairs, only
    for models whose surrogate is their real edit — so the verdict need not run them again.
    """

    protected: Tensor
    target: Tensor
    recipe: Recipe
    seconds: float
    losses: list[float] = field(default_factory=list)
    clean_fills: list[list[tuple[Tensor, Tensor]]] = field(default_factory=list)


TermMaskBuilder = Callable[[Tensor, int, "EditSampler | None"], Tensor]
"""``builder(region M, dilation radius, sampler)`` → the term's edit mask (H×W)."""

TERM_MASK_BUILDERS: dict[TermMask, TermMaskBuilder] = {
    "exact": lambda region, dilation, sampler: region.clone(),
    "dilated": lambda region, dilation, sampler: mask_ops.dilate(region, dilation, shape="square"),
    "ring": lambda region, dilation, sampler: mask_ops.ring(region, dilation, shape="square"),
    "sampled-attacker": lambda region, dilation, sampler: sampler.attacker().to(region),
    "sampled-benign": lambda region, dilation, sampler: sampler.benign().to(region),
}
"""Every term mask a recipe can name (:data:`backfire.protect.recipes.TERM_MASKS`) and how it is built."""


def term_mask(region: Tensor, term: Term, dilation: int, sampler: EditSampler | None = None) -> Tensor:
    """The edit mask (H×W) a recipe term names, built from the protected region M.

    Sampled terms draw a fresh mask from ``sampler`` on every call.
    """
    if term.sampled and sampler is None:
        raise ValueError(f"term {term.mask!r} needs an EditSampler")
    try:
        build = TERM_MASK_BUILDERS[term.mask]
    except KeyError:
        raise ValueError(f"unknown term mask {term.mask!r}; choose from {', '.join(TERM_MASKS)}") from None
    return build(region, dilation, sampler)


def texture_budget(image: Tensor, budget: float) -> Tensor:
    """A per-pixel L∞ bound: the full ``budget`` where the photo is textured, down to 40 % of it where flat.

    Changes hide in texture and show on flat areas (sky, skin, paper): the bound follows the local
    standard deviation of luminance over a 7×7 window, reaching ``budget`` at 13/255.

    Shape:
        - image: (3, H, W) in [0, 1]
        - output: (1, H, W), values in [0.4·budget, budget]
    """
    luma = (image * torch.tensor([0.299, 0.587, 0.114], device=image.device, dtype=image.dtype)[:, None, None])
    luma = luma.sum(0, keepdim=True)[None]
    mean = F.avg_pool2d(luma, _TEXTURE_WINDOW, stride=1, padding=_TEXTURE_WINDOW // 2, count_include_pad=False)
    square = F.avg_pool2d(luma**2, _TEXTURE_WINDOW, stride=1, padding=_TEXTURE_WINDOW // 2, count_include_pad=False)
    std = (square - mean**2).clamp_min(0).sqrt()[0]
    return budget * (std / _TEXTURE_FULL).clamp(_TEXTURE_FLOOR, 1.0)


_TEXTURE_WINDOW = 7
_TEXTURE_FULL = 13 / 255
_TEXTURE_FLOOR = 0.4


def masked_mse(output: Tensor, goal: Tensor, mask: Tensor) -> Tensor:
    """Per-sample MSE over the pixels inside ``mask`` (N×3×H×W, N×3×H×W, N×1×H×W → N)."""
    squared = ((output - goal) ** 2 * mask).sum(dim=(1, 2, 3))
    return squared / (mask.sum(dim=(1, 2, 3)) * output.shape[1]).clamp_min(1)


def protect(
    image: Tensor,
    region: Tensor,
    inpainter: Inpainter | Sequence[Inpainter],
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    budget: float | None = None,
    steps: int | None = None,
    target: str | None = None,
    seed: int = 0,
    max_batch: int | None = None,
    grey: bool = False,
    on_step: StepCallback | None = None,
    on_image: ImageCallback | None = None,
) -> Protection:
    """Add a perturbation that makes inpainting over ``region`` fail while other edits still work.

    Arguments:
        image: the photo, (3, H, W) in [0, 1], any size.
        region: the protected region M, (H, W) in {0, 1}.
        inpainter: the model to protect against, or several (an ensemble: their losses are averaged).
        recipe: a :class:`Recipe` or its name.
        budget: L∞ bound in [0, 1] units (overrides the recipe's).
        steps, target: override the recipe's.
        seed: seeds the random start, the sampled edits and the cleaning, so a run can be repeated.
        max_batch: at most this many edits per forward pass (gradients are accumulated, the result
            is the same); ``None`` puts all of a step's edits of one role in one batch.
        grey: the photo is greyscale (equal channels): optimise one δ shared by the three channels, so the
            protected photo stays greyscale instead of gaining colour noise.
        on_step: called as ``on_step(step, steps, loss)`` after every step.
        on_image: called as ``on_image(step, x + δ)`` (float, not yet quantised) after every step, for
            studies that follow the protection as it grows.

    Returns:
        A :class:`Protection` whose ``protected`` image is quantised to 8 bits.

    Examples::

        >>> result = protect(image, region, load_inpainter("lama", weights="big-lama.pt"))
        >>> save_image(result.protected, "protected.png")
    """
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).but(
        budget=budget, steps=steps, target=target)
    members = [inpainter] if isinstance(inpainter, Inpainter) else list(inpainter)
    if not members:
        raise ValueError("protect needs at least one inpainter")
    _check_inputs(image, region, recipe)
    started = time.perf_counter()
    # δ and the loss stay in fp32 whatever the model computes in: Adam on fp16 values loses small steps.
    device, dtype = members[0].device, torch.float32
    x = image.to(device, dtype)
    region = (region.to(device) > 0.5).to(dtype)  # binary once: the hot loop's masks are built from it
    goal_image = make_target(x, recipe.target)
    frame = _crop_frame(members, region, recipe)
    framed = None if frame is None else [m.framed(x, frame[0]) for m in members]
    if framed is None or any(f is None for f in framed):
        protected, losses, clean = _optimise(x, region, goal_image, members, recipe, seed, grey=grey,
                                             max_batch=max_batch, on_step=on_step, on_image=on_image)
    else:
        # The attacker's tool inpaints crop windows only: δ lives in them, and the optimisation runs on
        # the box around them (a 12 MP photo then costs what its crops cost).
        (left, top, right, bottom), seen = frame
        window = (slice(None), slice(top, bottom), slice(left, right))

        def pasted(step: int, image_part: Tensor) -> None:
            whole = x.clone()
            whole[window] = image_part
            on_image(step, whole)

        part, losses, _ = _optimise(x[window], region[window[1:]], goal_image[window], framed, recipe, seed,
                                    grey=grey, max_batch=max_batch, on_step=on_step,
                                    on_image=pasted if on_image else None, seen=seen[window[1:]])
        protected = quantize(x)
        protected[window] = part
        clean = [[] for _ in members]  # the framed fills are not the full-frame edits the verdict runs
    return Protection(protected=protected.cpu(), target=goal_image.cpu(), recipe=recipe,
                      seconds=time.perf_counter() - started, losses=losses, clean_fills=clean)


def _crop_frame(members: list[Inpainter], region: Tensor, recipe: Recipe) -> tuple[Box, Tensor] | None:
    """The box around every pixel the models' edits see for the recipe's edits, and their union (H×W), when
    that is not the whole photo (every model of the ensemble crops it: IOPaint's Crop strategy); else None.

    Sampled attacker masks are counted through everything they can cover
    (:func:`backfire.protect.sampling.attacker_reach`); δ stays zero outside the union.
    """
    size = tuple(region.shape)
    if recipe.tool_strategies == "every" and any(len(m.strategies(size)) > 1 for m in members):
        return None  # Original and Resize see the whole photo: δ must cover it
    whole = (0, 0, size[1], size[0])
    masks = [term_mask(region, t, recipe.dilation) for t in recipe.terms if not t.sampled]
    seen = torch.zeros_like(region)
    if masks:
        seen = support(members, torch.stack(masks)[:, None].cpu()).to(region)
        if bounding_box(seen) == whole:
            return None  # the usual case (a bare model, a small photo): settled before the sampled masks' reach
    if any(t.sampled for t in recipe.terms):
        seen = torch.maximum(seen, support(members, attacker_reach(region)[None, None].cpu()).to(region))
    frame = bounding_box(seen)
    if frame is None or frame == whole:
        return None
    return frame, seen


def _optimise(x: Tensor, region: Tensor, goal_image: Tensor, members: list[Inpainter], recipe: Recipe, seed: int,
              *, grey: bool, max_batch: int | None, on_step: StepCallback | None, on_image: ImageCallback | None,
              seen: Tensor | None = None) -> tuple[Tensor, list[float], list[list[tuple[Tensor, Tensor]]]]:
    """The loop: the protected image (8-bit), the loss before each step, the clean fills computed as goals.
    ``seen`` (H×W {0, 1}): δ is kept zero outside it."""
    bound = texture_budget(x, recipe.budget) if recipe.budget_shape == "texture" else recipe.budget
    if seen is not None:
        bound = bound * seen  # a zero bound outside the windows: δ is exactly zero there
    edits = _EditSource(x, region, goal_image, recipe, members, seed)
    cleaning = CleaningSampler(recipe.cleaning, recipe.cleaning_rate, seed=seed) if recipe.cleaning else None
    attackers = [m.redrawn() for m in members] if recipe.redraw else list(members)
    if recipe.tool_strategies == "every":  # attack edits through every setting of the attacker's tool, in turn
        attackers = [a.every_strategy(tuple(x.shape[-2:])) for a in attackers]
    attackers = [with_cleaning(a, cleaning) if cleaning else a for a in attackers]

    generator = torch.Generator().manual_seed(seed)
    shape = _parameter_shape(x[:1] if grey else x, recipe.stride)
    param = (torch.rand(shape, generator=generator) * recipe.init_high).to(x.device, x.dtype)
    param = _project(param, x, bound).requires_grad_(True)
    optimiser = make_optimiser(recipe.optimiser, param, lr=recipe.lr, betas=recipe.betas,
                               budget=recipe.budget, steps=recipe.steps)
    losses: list[float] = []
    for step in range(recipe.steps):
        optimiser.zero_grad(set_to_none=True)
        perturbed = (x + _delta(param, x, bound)).clamp(0, 1)
        if step >= recipe.steps - recipe.quantise_steps:
            # the file holds 8 bits: the last steps see exactly what the saved PNG will hold
            perturbed = straight_through_round(perturbed)
        masks, goals, weights, attacker_rows = edits.draw()
        loss = 0.0
        for j, (member, attacker) in enumerate(zip(members, attackers)):
            # without cleaning every edit goes to the same model: one batched pass per step
            groups = ([(member, torch.ones_like(attacker_rows))] if attacker is member
                      else [(attacker, attacker_rows), (member, ~attacker_rows)])
            for model, rows in groups:
                loss += _accumulate_gradient(perturbed, masks[rows], goals[j][rows], weights[rows] / len(members),
                                             model, max_batch)
        optimiser.step()
        with torch.no_grad():
            param.copy_(_project(param, x, bound))
        losses.append(loss)
        if on_step is not None:
            on_step(step + 1, recipe.steps, loss)
        if on_image is not None:
            with torch.no_grad():
                on_image(step + 1, (x + _delta(param, x, bound)).clamp(0, 1))

    with torch.no_grad():
        # 8 bits, as the file will hold it, without rounding past the budget (a 16-bit photo's x is off-grid)
        protected = quantize(x + _delta(param, x, bound), low=x - bound, high=x + bound)
    return protected, losses, edits.clean_fills()


def _check_inputs(image: Tensor, region: Tensor, recipe: Recipe) -> None:
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be 3×H×W, got {tuple(image.shape)}")
    if region.shape != image.shape[1:]:
        raise ValueError(f"region must be H×W = {tuple(image.shape[1:])}, got {tuple(region.shape)}")
    if not 0 < region.sum() < region.numel():
        raise ValueError("region must select some pixels and leave some context")
    if not 0 < recipe.budget <= 1:
        raise ValueError(f"budget must be in (0, 1] pixel units, got {recipe.budget}")
    if recipe.steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {recipe.steps}")


class _EditSource:
    """The edits of every step: the recipe's fixed masks (their goals computed once), plus sampled masks
    drawn afresh, whose clean fills are computed when drawn."""

    def __init__(self, x: Tensor, region: Tensor, target: Tensor, recipe: Recipe, members: list[Inpainter],
                 seed: int):
        self.x, self.terms, self.members, self.region = x, recipe.terms, members, region
        sampled = [i for i, t in enumerate(recipe.terms) if t.sampled]
        self.sampler = EditSampler(region, seed=seed) if sampled else None
        self.fixed = {i: term_mask(region, t, recipe.dilation) for i, t in enumerate(recipe.terms)
                      if i not in sampled}
        self.sampled_benign = [i for i in sampled if recipe.terms[i].role == "benign"]
        benign = [i for i in self.fixed if recipe.terms[i].role == "benign"]
        # per model: the target for attacker terms, the clean fill for fixed benign terms
        self.goals = [target.expand(len(recipe.terms), -1, -1, -1).clone() for _ in members]
        if benign:
            stacked = torch.stack([self.fixed[i] for i in benign])[:, None]
            for goal, member in zip(self.goals, members):
                goal[benign] = _clean_fills(x, stacked, member)
        self.weights = torch.tensor([t.weight for t in recipe.terms], device=x.device, dtype=x.dtype)
        self.attacker_rows = torch.tensor([t.role == "attacker" for t in recipe.terms], device=x.device)

    def clean_fills(self) -> list[list[tuple[Tensor, Tensor]]]:
        """Per model, ``(mask, clean fill)`` of every fixed benign term, where the surrogate is the real edit."""
        benign = [i for i in self.fixed if self.terms[i].role == "benign"]
        return [[(self.fixed[i].cpu(), goal[i].cpu()) for i in benign] if member.surrogate_is_edit else []
                for goal, member in zip(self.goals, self.members)]

    def draw(self) -> tuple[Tensor, list[Tensor], Tensor, Tensor]:
        """masks (K×1×H×W), goals per model (K×3×H×W each), weights (K), attacker-term flags (K)."""
        masks = torch.stack([self.fixed[i] if i in self.fixed else term_mask(self.region, t, 0, self.sampler)
                             for i, t in enumerate(self.terms)])[:, None]
        if not self.sampled_benign:
            return masks, self.goals, self.weights, self.attacker_rows
        goals = []
        for goal, member in zip(self.goals, self.members):
            goal = goal.clone()
            goal[self.sampled_benign] = _clean_fills(self.x, masks[self.sampled_benign], member)
            goals.append(goal)
        return masks, goals, self.weights, self.attacker_rows


@torch.no_grad()
def _clean_fills(x: Tensor, masks: Tensor, inpainter: Inpainter) -> Tensor:
    """What a benign edit of the original produces: the goal of every benign term."""
    return inpainter.surrogate(x.expand(len(masks), -1, -1, -1), masks).to(x.device, x.dtype)


def _accumulate_gradient(perturbed: Tensor, masks: Tensor, goals: Tensor, weights: Tensor,
                         inpainter: Inpainter, max_batch: int | None) -> float:
    """Backpropagate the weighted loss of every edit, ``max_batch`` edits at a time; return the loss."""
    if len(masks) == 0:
        return 0.0
    chunk = max_batch or len(masks)
    total = 0.0
    for start in range(0, len(masks), chunk):
        part = slice(start, start + chunk)
        inputs = perturbed.expand(len(masks[part]), -1, -1, -1).to(inpainter.device)
        fills = inpainter.surrogate(inputs, masks[part].to(inpainter.device)).to(goals)
        loss = (weights[part] * masked_mse(fills, goals[part], masks[part])).sum()
        # the graph from δ to ``perturbed`` is shared by every chunk, role and model of the step
        loss.backward(retain_graph=True)
        total += loss.item()
    return total


def _parameter_shape(x: Tensor, stride: int) -> tuple[int, ...]:
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    return (x.shape[0], math.ceil(x.shape[1] / stride), math.ceil(x.shape[2] / stride))


def _expand(param: Tensor, x: Tensor) -> Tensor:
    """δ at full resolution and on every channel (a greyscale δ is one channel). Bilinear upsampling mixes
    values convexly, so it never leaves the L∞ ball."""
    if param.shape[-2:] != x.shape[-2:]:
        param = F.interpolate(param[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    return param.expand_as(x)


def _delta(param: Tensor, x: Tensor, bound: float | Tensor) -> Tensor:
    """The perturbation the image receives: ``param`` at full resolution, within a per-pixel bound."""
    delta = _expand(param, x)
    if isinstance(bound, Tensor):
        delta = torch.maximum(torch.minimum(delta, bound), -bound)
    return delta


def _project(param: Tensor, x: Tensor, bound: float | Tensor) -> Tensor:
    """Clip δ to the L∞ ball and, at full resolution, so that x + δ stays a valid image.

    A coarse δ cannot be clipped per pixel to the image's bounds (nor to a per-pixel bound); there
    it is clipped to the largest bound, and :func:`_delta` and the clamp of ``x + δ`` do the rest.
    """
    if param.shape[-2:] != x.shape[-2:]:
        largest = float(bound.max()) if isinstance(bound, Tensor) else bound
        return param.clamp(-largest, largest).detach()
    x = x[: param.shape[0]]  # a greyscale δ is clipped against one of the (equal) channels
    clipped = torch.maximum(torch.minimum(param, torch.as_tensor(bound, device=param.device)),
                            -torch.as_tensor(bound, device=param.device))
    return ((x + clipped).clamp(0, 1) - x).detach()
