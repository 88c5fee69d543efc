"""The one optimisation loop: build the recipe's edits → forward (batched) → loss → step → project."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from backfire import masks as mask_ops
from backfire.inpainters.base import Inpainter
from backfire.protect.optimisers import make_optimiser
from backfire.protect.recipes import DEFAULT_RECIPE, Recipe, Term, get_recipe
from backfire.protect.targets import make_target

StepCallback = Callable[[int, int, float], None]
ImageCallback = Callable[[int, Tensor], None]


@dataclass
class Protection:
    """What :func:`protect` returns.

    ``protected`` is already quantised to 8 bits (round, never truncate): exactly what a saved PNG
    reads back as. ``losses`` holds the loss before each step.
    """

    protected: Tensor
    target: Tensor
    recipe: Recipe
    seconds: float
    losses: list[float] = field(default_factory=list)


def term_mask(region: Tensor, term: Term, dilation: int) -> Tensor:
    """The edit mask (H×W) a recipe term names, built from the protected region M."""
    if term.mask == "exact":
        return region.clone()
    if term.mask == "dilated":
        return mask_ops.dilate(region, dilation, shape="square")
    if term.mask == "ring":
        return mask_ops.ring(region, dilation, shape="square")
    raise ValueError(f"unknown term mask {term.mask!r}")


def masked_mse(output: Tensor, goal: Tensor, mask: Tensor) -> Tensor:
    """Per-sample MSE over the pixels inside ``mask`` (N×3×H×W, N×3×H×W, N×1×H×W → N)."""
    squared = ((output - goal) ** 2 * mask).sum(dim=(1, 2, 3))
    return squared / (mask.sum(dim=(1, 2, 3)) * output.shape[1]).clamp_min(1)


def protect(
    image: Tensor,
    region: Tensor,
    inpainter: Inpainter,
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    budget: float | None = None,
    steps: int | None = None,
    target: str | None = None,
    seed: int = 0,
    max_batch: int | None = None,
    on_step: StepCallback | None = None,
    on_image: ImageCallback | None = None,
) -> Protection:
    """Add a perturbation that makes inpainting over ``region`` fail while other edits still work.

    Arguments:
        image: the photo, (3, H, W) in [0, 1], any size.
        region: the protected region M, (H, W) in {0, 1}.
        inpainter: the model to protect against.
        recipe: a :class:`Recipe` or its name.
        budget: L∞ bound in [0, 1] units (overrides the recipe's).
        steps, target: override the recipe's.
        seed: seeds the random start, so a run can be repeated.
        max_batch: at most this many edits per forward pass (gradients are accumulated, the result
            is the same); ``None`` puts all of the recipe's edits in one batch.
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
    _check_inputs(image, region, recipe)
    started = time.perf_counter()
    # δ and the loss stay in fp32 whatever the model computes in: Adam on fp16 values loses small steps.
    device, dtype = inpainter.device, torch.float32
    x = image.to(device, dtype)
    masks = torch.stack([term_mask(region, t, recipe.dilation) for t in recipe.terms])[:, None]
    masks = masks.to(device, dtype)
    goal_image = make_target(x, recipe.target)
    goals = _goals(x, goal_image, masks, recipe.terms, inpainter)
    weights = torch.tensor([t.weight for t in recipe.terms], device=device, dtype=dtype)

    generator = torch.Generator().manual_seed(seed)
    shape = _parameter_shape(x, recipe.stride)
    param = (torch.rand(shape, generator=generator) * recipe.init_high).to(device, dtype)
    param = _project(param, x, recipe.budget).requires_grad_(True)
    optimiser = make_optimiser(recipe.optimiser, param, lr=recipe.lr, betas=recipe.betas,
                               budget=recipe.budget, steps=recipe.steps)
    losses: list[float] = []
    for step in range(recipe.steps):
        optimiser.zero_grad(set_to_none=True)
        loss = _accumulate_gradient(x + _expand(param, x), masks, goals, weights, inpainter, max_batch)
        optimiser.step()
        with torch.no_grad():
            param.copy_(_project(param, x, recipe.budget))
        losses.append(loss)
        if on_step is not None:
            on_step(step + 1, recipe.steps, loss)
        if on_image is not None:
            with torch.no_grad():
                on_image(step + 1, (x + _expand(param, x)).clamp(0, 1))

    with torch.no_grad():
        protected = torch.round((x + _expand(param, x)).clamp(0, 1) * 255) / 255
    return Protection(protected=protected.cpu(), target=goal_image.cpu(), recipe=recipe,
                      seconds=time.perf_counter() - started, losses=losses)


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


@torch.no_grad()
def _goals(x: Tensor, target: Tensor, masks: Tensor, terms: tuple[Term, ...], inpainter: Inpainter) -> Tensor:
    """What each edit should produce: the target for attacks, the clean fill for keeps (computed once)."""
    goals = target.expand(len(terms), -1, -1, -1).clone()
    keep = [i for i, t in enumerate(terms) if t.role == "keep"]
    if keep:
        goals[keep] = inpainter.surrogate(x.expand(len(keep), -1, -1, -1), masks[keep]).to(goals.dtype)
    return goals


def _accumulate_gradient(perturbed: Tensor, masks: Tensor, goals: Tensor, weights: Tensor,
                         inpainter: Inpainter, max_batch: int | None) -> float:
    """Backpropagate the weighted loss of every edit, ``max_batch`` edits at a time; return the loss."""
    chunk = max_batch or len(masks)
    total = 0.0
    for start in range(0, len(masks), chunk):
        part = slice(start, start + chunk)
        inputs = perturbed.clamp(0, 1).expand(len(masks[part]), -1, -1, -1)
        fills = inpainter.surrogate(inputs, masks[part])
        loss = (weights[part] * masked_mse(fills, goals[part], masks[part])).sum()
        loss.backward(retain_graph=start + chunk < len(masks))
        total += loss.item()
    return total


def _parameter_shape(x: Tensor, stride: int) -> tuple[int, ...]:
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    return (x.shape[0], math.ceil(x.shape[1] / stride), math.ceil(x.shape[2] / stride))


def _expand(param: Tensor, x: Tensor) -> Tensor:
    """δ at full resolution. Bilinear upsampling mixes values convexly, so it never leaves the L∞ ball."""
    if param.shape == x.shape:
        return param
    return F.interpolate(param[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]


def _project(param: Tensor, x: Tensor, budget: float) -> Tensor:
    """Clip δ to the L∞ ball and, at full resolution, so that x + δ stays a valid image.

    A coarse δ cannot be clipped per pixel to the image's bounds; there ``x + δ`` is clamped instead
    (in every forward pass and in the result).
    """
    if param.shape != x.shape:
        return param.clamp(-budget, budget).detach()
    return ((x + param.clamp(-budget, budget)).clamp(0, 1) - x).detach()
