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
    for models whose surrogate is their real edit — so the verdict need not run them again. ``delta`` is the
    optimised variable as the loop holds it (float, not quantised; its shape follows the recipe's stride,
    a greyscale photo's one channel and a cropping tool's window): what a further run starts from
    (``protect(..., init=delta)``, the warm start of :mod:`backfire.protect.search`).
    """

    protected: Tensor
    target: Tensor
    recipe: Recipe
    seconds: float
    losses: list[float] = field(default_factory=list)
    clean_fills: list[list[tuple[Tensor, Tensor]]] = field(default_factory=list)
    delta: Tensor | None = None


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


@dataclass(frozen=True)
class Photo:
    """One photo of a batch for :func:`protect_batch`: the image (3, H, W) in [0, 1], its region (H, W) in
    {0, 1}, the seed of its random start and sampled edits, whether it is greyscale, and the δ to start from
    instead of the random start (``init``: an earlier run's ``Protection.delta``; see :func:`protect`)."""

    image: Tensor
    region: Tensor
    seed: int = 0
    grey: bool = False
    init: Tensor | None = None


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
    init: Tensor | None = None,
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
        init: start from this δ instead of the random start: an earlier run's ``Protection.delta`` on the same
            photo, region, models and recipe but for its budget (which may differ: δ is clipped into this run's
            bound before the first step).
        on_step: called as ``on_step(step, steps, loss)`` after every step; ``loss`` is a float on the CPU
            and, on an accelerator, every :data:`LOSS_EVERY` steps and at the last (None between: reading
            it waits for the device).
        on_image: called as ``on_image(step, x + δ)`` (float, not yet quantised) after every step, for
            studies that follow the protection as it grows.

    Returns:
        A :class:`Protection` whose ``protected`` image is quantised to 8 bits.

    Examples::

        >>> result = protect(image, region, load_inpainter("lama", weights="big-lama.pt"))
        >>> save_image(result.protected, "protected.png")
    """
    watch = None if on_image is None else (lambda step, index, current: on_image(step, current))
    return protect_batch([Photo(image, region, seed, grey, init)], inpainter, recipe, budget=budget, steps=steps,
                         target=target, max_batch=max_batch, on_step=on_step, on_image=watch)[0]


def protect_batch(
    photos: Sequence[Photo],
    inpainter: Inpainter | Sequence[Inpainter],
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    budget: float | None = None,
    steps: int | None = None,
    target: str | None = None,
    max_batch: int | None = None,
    shared_passes: bool | None = None,
    on_step: StepCallback | None = None,
    on_image: Callable[[int, int, Tensor], None] | None = None,
) -> list[Protection]:
    """:func:`protect` for several photos at once: one optimisation each, their edits in shared passes.

    Each photo keeps its own region, δ, seed-derived start, goals and optimiser, so its result is the one
    :func:`protect` gives it alone up to float rounding (Adam is elementwise; the networks compute each row
    of a batch on its own). Edits of several photos share a pass when they go to the same model at the same
    size (``shared_passes``; by default on an accelerator only: on the CPU a batch costs what its photos cost
    one by one, docs/benchmarks.md, and the LaMa-family CPU path encodes the context one photo's edits share
    once); a model that draws something per call (``stochastic``: MAT's dropout, a sampler's noise) and a
    photo the attacker's tool crops (IOPaint's Crop) get passes of their own, as do the attack edits of a
    recipe that cleans them (the cleaning is drawn per photo). ``on_step(step, steps, loss)`` gets the mean
    loss of the photos; ``on_image(step, index, x + δ)`` the photo ``index``'s image. Every photo's
    ``seconds`` is the batch's time shared equally.
    """
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).but(
        budget=budget, steps=steps, target=target)
    members = [inpainter] if isinstance(inpainter, Inpainter) else list(inpainter)
    if not members:
        raise ValueError("protect needs at least one inpainter")
    if not photos:
        return []
    for photo in photos:
        _check_inputs(photo.image, photo.region, recipe)
    started = time.perf_counter()
    try:
        jobs = [_Job(photo, members, recipe) for photo in photos]
        share = members[0].device.type != "cpu" if shared_passes is None else shared_passes
        _clean_goals(jobs, recipe, share)
        _optimise(jobs, recipe, share=share, max_batch=max_batch, on_step=on_step, on_image=on_image)
    except torch.OutOfMemoryError as error:
        raise _out_of_memory(error, photos, members) from None
    seconds = (time.perf_counter() - started) / len(jobs)
    return [job.result(recipe, seconds) for job in jobs]


LOSS_EVERY = 5
"""On an accelerator, the loss reaches ``on_step`` every this many steps (and at the last): reading it waits
for the device's queue to drain, so the loop does not read it at every step."""


class _Job:
    """One photo's optimisation: its pixels on the models' device, the models it sees (the members, or their
    framed twins when the attacker's tool crops), its edits and goals, δ, bound and optimiser."""

    def __init__(self, photo: Photo, members: list[Inpainter], recipe: Recipe):
        # δ and the loss stay in fp32 whatever the model computes in: Adam on fp16 values loses small steps.
        device, dtype = members[0].device, torch.float32
        self.members, self.grey, self.seed = members, photo.grey, photo.seed
        self.full = photo.image.to(device, dtype)
        region = (photo.region.to(device) > 0.5).to(dtype)  # binary once: the hot loop's masks are built from it
        self.target = make_target(self.full, recipe.target)
        frame = _crop_frame(members, region, recipe)
        framed = None if frame is None else [m.framed(self.full, frame[0]) for m in members]
        self.window: tuple[slice, slice, slice] | None = None
        seen = None
        self.models = members
        if framed is not None and all(f is not None for f in framed):
            # The attacker's tool inpaints crop windows only: δ lives in them, and the optimisation runs on
            # the box around them (a 12 MP photo then costs what its crops cost).
            (left, top, right, bottom), seen = frame
            self.window = (slice(None), slice(top, bottom), slice(left, right))
            self.models = framed
        self.x = self.full if self.window is None else self.full[self.window]
        self.region = region if self.window is None else region[self.window[1:]]
        goal_image = self.target if self.window is None else self.target[self.window]
        if seen is not None:
            seen = seen[self.window[1:]]
        bound = texture_budget(self.x, recipe.budget) if recipe.budget_shape == "texture" else recipe.budget
        if seen is not None:
            bound = bound * seen  # a zero bound outside the windows: δ is exactly zero there
        self.bound = bound
        # what the projection clips to, made once (not per step: each would be a copy to the device)
        self.clip = bound if isinstance(bound, Tensor) else torch.tensor(bound, device=device, dtype=dtype)
        self.largest = float(bound.max()) if isinstance(bound, Tensor) else bound
        self.edits = _EditSource(self.x, self.region, goal_image, recipe, len(self.models), photo.seed)
        cleaning = CleaningSampler(recipe.cleaning, recipe.cleaning_rate, seed=photo.seed) if recipe.cleaning else None
        attackers = [m.redrawn() for m in self.models] if recipe.redraw else list(self.models)
        if recipe.tool_strategies == "every":  # attack edits through every setting of the attacker's tool, in turn
            attackers = [a.every_strategy(tuple(self.x.shape[-2:])) for a in attackers]
        self.attackers = [with_cleaning(a, cleaning) if cleaning else a for a in attackers]

        shape = _parameter_shape(self.x[:1] if photo.grey else self.x, recipe.stride)
        if photo.init is None:
            generator = torch.Generator().manual_seed(photo.seed)
            param = (torch.rand(shape, generator=generator) * recipe.init_high).to(device, dtype)
        elif tuple(photo.init.shape) != shape:
            raise ValueError(f"init δ is {tuple(photo.init.shape)}, this photo and recipe optimise {shape}: a warm "
                             "start needs the same photo, region, models and recipe")
        else:
            param = photo.init.to(device, dtype)  # projected below: clipped into this run's bound
        self.param = _project(param, self.x, self.clip, self.largest).requires_grad_(True)
        self.optimiser = make_optimiser(recipe.optimiser, self.param, lr=recipe.lr, betas=recipe.betas,
                                        budget=recipe.budget, steps=recipe.steps)
        self.losses = torch.zeros(recipe.steps, device=device, dtype=dtype)

    def current(self) -> Tensor:
        """x + δ, clamped to the image range (differentiable in δ)."""
        return (self.x + _delta(self.param, self.x, self.bound)).clamp(0, 1)

    def step(self) -> None:
        self.optimiser.step()
        with torch.no_grad():
            self.param.copy_(_project(self.param, self.x, self.clip, self.largest))

    def result(self, recipe: Recipe, seconds: float) -> Protection:
        with torch.no_grad():
            # 8 bits, as the file will hold it, without rounding past the budget (a 16-bit photo's x is off-grid)
            part = quantize(self.x + _delta(self.param, self.x, self.bound),
                            low=self.x - self.bound, high=self.x + self.bound)
        protected = part
        if self.window is not None:
            protected = quantize(self.full)
            protected[self.window] = part
        return Protection(protected=protected.cpu(), target=self.target.cpu(), recipe=recipe, seconds=seconds,
                          losses=self.losses.tolist(), clean_fills=self.edits.clean_fills(self.models, self.full,
                                                                                          self.window),
                          delta=self.param.detach().cpu())


def _out_of_memory(error: torch.OutOfMemoryError, photos: Sequence[Photo], members: list[Inpainter]) -> Exception:
    """The one line a user reads when a batch does not fit on the device (instead of the allocator's report)."""
    h, w = photos[0].image.shape[-2:]
    device = members[0].device
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        where = f"{device} ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
    else:
        where = str(device)
    batch = f"{len(photos)} photos of {w}×{h}" if len(photos) > 1 else f"a {w}×{h} photo"
    if len(photos) > 1:
        advice = f"use a smaller --batch (1 fits less than {len(photos)})"
    else:
        side = max(8, int(max(h, w) / math.sqrt(2)) // 8 * 8)
        advice = (f"try a photo of about {side} px on its long side (half the pixels), or --device cpu")
    return OutOfMemory(f"out of memory on {where} protecting {batch} against {members[0].name}: {advice}")


class OutOfMemory(MemoryError):
    """A batch of photos did not fit on the device; the message says what would."""


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


_Rows = tuple["_Job", Tensor]
"""A job and the indices (on its device) of its edits that go into one pass."""


def _passes(jobs: list[_Job], pick: Callable[[_Job], list[tuple[Inpainter, Tensor]]], share: bool
            ) -> list[tuple[Inpainter, list[_Rows]]]:
    """The passes that cover every job's edits: ``pick(job)`` says which model runs which rows of it, and rows
    of several jobs share a pass when ``share`` and their model is the same object at the same size that draws
    nothing per call (a stochastic model's draws would otherwise depend on who shares the batch). In the order
    the first job names them."""
    passes: dict[tuple, tuple[Inpainter, list[_Rows]]] = {}
    for index, job in enumerate(jobs):
        for model, rows in pick(job):
            if len(rows):
                alone = model.stochastic or not share
                key = (id(model), tuple(job.x.shape[-2:]), index if alone else None)
                passes.setdefault(key, (model, []))[1].append((job, rows))
    return list(passes.values())


def _clean_goals(jobs: list[_Job], recipe: Recipe, share: bool) -> None:
    """The goals of the fixed benign terms: each model's clean fills of the original, computed once, in shared
    passes."""
    benign = torch.tensor([i for i in jobs[0].edits.fixed if recipe.terms[i].role == "benign"], dtype=torch.long)
    if not len(benign):
        return
    for j in range(len(jobs[0].models)):
        for model, group in _passes(jobs, lambda job: [(job.models[j], benign.to(job.x.device))], share):
            fills = _clean_fills(model, [(job.x, job.edits.fixed_masks()[rows]) for job, rows in group])
            for (job, rows), fill in zip(group, fills):
                job.edits.goals[j][rows] = fill


def _optimise(jobs: list[_Job], recipe: Recipe, *, share: bool, max_batch: int | None, on_step: StepCallback | None,
              on_image: Callable[[int, int, Tensor], None] | None) -> None:
    """The loop: every job's δ, stepped together; each job's loss before every step lands in ``job.losses``."""
    device = jobs[0].x.device
    for step in range(recipe.steps):
        for job in jobs:
            job.optimiser.zero_grad(set_to_none=True)
            perturbed = job.current()
            if step >= recipe.steps - recipe.quantise_steps:
                # the file holds 8 bits: the last steps see exactly what the saved PNG will hold
                perturbed = straight_through_round(perturbed)
            job.perturbed = perturbed
            job.masks = job.edits.draw()
            job.goals_now = [goal.clone() if job.edits.sampled_benign else goal for goal in job.edits.goals]
        for j in range(len(jobs[0].members)):
            _sampled_goals(jobs, j, share)
            # without cleaning every edit goes to the same model: one batched pass per step; attack edits
            # that see their own (cleaned, redrawn) attacker go first, as they always have
            own = _passes(jobs, lambda job: [] if job.attackers[j] is job.models[j] else
                          [(job.attackers[j], job.edits.attacker_index)], share)
            shared = _passes(jobs, lambda job: [(job.models[j], job.edits.all_index if job.attackers[j] is
                                                 job.models[j] else job.edits.benign_index)], share)
            for model, group in own + shared:
                _accumulate_gradient(model, group, j, len(jobs[0].members), max_batch, step)
        for job in jobs:
            job.step()
        if on_step is not None:
            last = step + 1 == recipe.steps
            loss = None
            if device.type == "cpu" or last or (step + 1) % LOSS_EVERY == 0:
                loss = float(torch.stack([job.losses[step] for job in jobs]).mean())
            on_step(step + 1, recipe.steps, loss)
        if on_image is not None:
            with torch.no_grad():
                for index, job in enumerate(jobs):
                    current = job.current()
                    if job.window is not None:
                        whole = job.full.clone()
                        whole[job.window] = current
                        current = whole
                    on_image(step + 1, index, current)
    for job in jobs:
        job.perturbed = job.masks = job.goals_now = None  # the last step's graph goes


def _sampled_goals(jobs: list[_Job], j: int, share: bool) -> None:
    """The goals of this step's sampled benign edits for model ``j``: clean fills of the original, in shared passes."""
    if not jobs[0].edits.sampled_benign:
        return
    for model, group in _passes(jobs, lambda job: [(job.models[j], job.edits.sampled_benign_index)], share):
        fills = _clean_fills(model, [(job.x, job.masks[rows]) for job, rows in group])
        for (job, rows), fill in zip(group, fills):
            job.goals_now[j][rows] = fill


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
    """The edits of every step of one photo: the recipe's fixed masks (their goals computed once, by the
    engine, in passes shared with the batch's other photos), plus sampled masks drawn afresh, whose clean
    fills are computed when drawn."""

    def __init__(self, x: Tensor, region: Tensor, target: Tensor, recipe: Recipe, models: int, seed: int):
        self.x, self.terms, self.region = x, recipe.terms, region
        sampled = [i for i, t in enumerate(recipe.terms) if t.sampled]
        self.sampler = EditSampler(region, seed=seed) if sampled else None
        self.fixed = {i: term_mask(region, t, recipe.dilation) for i, t in enumerate(recipe.terms)
                      if i not in sampled}
        self.sampled_benign = [i for i in sampled if recipe.terms[i].role == "benign"]
        # per model: the target for attacker terms, the clean fill for benign terms (filled in by the engine)
        self.goals = [target.expand(len(recipe.terms), -1, -1, -1).clone() for _ in range(models)]
        self.weights = torch.tensor([t.weight for t in recipe.terms], device=x.device, dtype=x.dtype)
        # row selections as index tensors made once: a boolean mask would make every step wait for the device
        index = lambda rows: torch.tensor(rows, dtype=torch.long, device=x.device)  # noqa: E731
        roles = [t.role for t in recipe.terms]
        self.all_index = index(list(range(len(roles))))
        self.attacker_index = index([i for i, r in enumerate(roles) if r == "attacker"])
        self.benign_index = index([i for i, r in enumerate(roles) if r == "benign"])
        self.sampled_benign_index = index(self.sampled_benign)

    def fixed_masks(self) -> Tensor:
        """Every term's mask, the sampled ones as zeros (K×1×H×W): what the fixed terms' rows index into."""
        return torch.stack([self.fixed.get(i, torch.zeros_like(self.region)) for i in range(len(self.terms))])[:, None]

    def clean_fills(self, models: list[Inpainter], whole: Tensor, window: tuple[slice, slice, slice] | None
                    ) -> list[list[tuple[Tensor, Tensor]]]:
        """Per model, ``(mask, clean fill)`` of every fixed benign term on the whole photo, where the surrogate
        is the real edit. A framed model's fills cover its box: outside it the edit leaves the photo as it is
        (its windows lie inside the box), so the whole photo's fill is the photo with the box's fill in it."""
        benign = [i for i in self.fixed if self.terms[i].role == "benign"]
        out = []
        for goal, model in zip(self.goals, models):
            if not model.surrogate_is_edit:
                out.append([])
                continue
            pairs = []
            for i in benign:
                mask, fill = self.fixed[i], goal[i]
                if window is not None:
                    mask, fill = _pasted(torch.zeros_like(whole[0]), mask, window[1:]), _pasted(whole, fill, window)
                pairs.append((mask.cpu(), fill.cpu()))
            out.append(pairs)
        return out

    def draw(self) -> Tensor:
        """This step's masks (K×1×H×W): the fixed ones, and the sampled ones drawn afresh."""
        return torch.stack([self.fixed[i] if i in self.fixed else term_mask(self.region, t, 0, self.sampler)
                            for i, t in enumerate(self.terms)])[:, None]


def _pasted(whole: Tensor, part: Tensor, window: tuple[slice, ...]) -> Tensor:
    out = whole.clone()
    out[window] = part
    return out


def _clean_fills(model: Inpainter, items: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """What benign edits of the originals produce, the goals of benign terms: ``items`` are (x, masks K×1×H×W)
    pairs of photos of one size, filled in one pass without autograd's bookkeeping."""
    with torch.inference_mode():
        images = torch.cat([x.expand(len(masks), -1, -1, -1) for x, masks in items])
        masks = torch.cat([masks for _, masks in items])
        fills = model.surrogate(images.to(model.device), masks.to(model.device)).to(items[0][0])
    # out of inference mode: the goals are read by the loss, whose graph autograd records
    return [part.clone() for part in fills.split([len(m) for _, m in items])]


def _accumulate_gradient(model: Inpainter, group: list[_Rows], j: int, members: int, max_batch: int | None,
                         step: int) -> None:
    """Backpropagate the weighted loss of the edits in ``group`` through ``model`` (ensemble member ``j`` of
    ``members``), ``max_batch`` edits at a time; add each job's part of the loss to its ``losses[step]``
    (on the device: nothing here waits for it)."""
    perturbed = torch.cat([job.perturbed.expand(len(rows), -1, -1, -1) for job, rows in group])
    masks = torch.cat([job.masks[rows] for job, rows in group])
    goals = torch.cat([job.goals_now[j][rows] for job, rows in group])
    weights = torch.cat([job.edits.weights[rows] for job, rows in group]) / members
    owner = torch.cat([torch.full((len(rows),), g, dtype=torch.long) for g, (_, rows) in enumerate(group)])
    owner = owner.to(masks.device)
    chunk = max_batch or len(masks)
    for start in range(0, len(masks), chunk):
        part = slice(start, start + chunk)
        fills = model.surrogate(perturbed[part].to(model.device), masks[part].to(model.device)).to(goals)
        losses = weights[part] * masked_mse(fills, goals[part], masks[part])
        # the graph from δ to ``perturbed`` is shared by every chunk, role and model of the step
        losses.sum().backward(retain_graph=True)
        per_job = torch.zeros(len(group), device=losses.device, dtype=losses.dtype).index_add_(
            0, owner[part], losses.detach())
        for g, (job, _) in enumerate(group):
            job.losses[step] += per_job[g]


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


def _project(param: Tensor, x: Tensor, bound: Tensor, largest: float) -> Tensor:
    """Clip δ to the L∞ ball and, at full resolution, so that x + δ stays a valid image.

    A coarse δ cannot be clipped per pixel to the image's bounds (nor to a per-pixel bound); there
    it is clipped to the largest bound, and :func:`_delta` and the clamp of ``x + δ`` do the rest.
    """
    if param.shape[-2:] != x.shape[-2:]:
        return param.clamp(-largest, largest).detach()
    x = x[: param.shape[0]]  # a greyscale δ is clipped against one of the (equal) channels
    clipped = torch.maximum(torch.minimum(param, bound), -bound)
    return ((x + clipped).clamp(0, 1) - x).detach()
