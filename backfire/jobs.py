"""The road from files to verdict: read → protect → save → read back → judge → reports.

The CLI, ``backfire evaluate`` and the app call these, on one :class:`Request` (made and checked once, where
the user's words come in); they hold the file-level rules (which paths are written, what is checked before
any work starts, that every verdict is computed on the saved file read back and over every trial of
:mod:`backfire.judge.outcome`, that an interrupted image leaves no half-written set behind and an earlier run's set as it was).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from backfire import io
from backfire.inpainters.base import Inpainter
from backfire.inpainters.pipelines import AUTO, default_pipeline, wrap
from backfire.inpainters.registry import CHOICES, DEFAULT_MODEL, load_inpainter, resolve_models
from backfire.judge import curve
from backfire.judge.outcome import DEFAULT_DRAWS, Outcome, Trial, check_draws, judge_every
from backfire.judge.preview import preview
from backfire.judge.verdict import VERDICT_FAMILIES, EditImages
from backfire.protect.engine import Protection, StepCallback, protect
from backfire.protect.recipes import DEFAULT_RECIPE, MIN_BUDGET_255, PAPER, Recipe, get_recipe
from backfire.protect.search import DEFAULT_MAX_BUDGET_255, DEFAULT_MIN_PSNR, AutoBudget, Searched, Tried, search
from backfire.protect.targets import TARGET_KINDS, make_target

Log = Callable[[str], None]


@dataclass(frozen=True)
class Task:
    """One image to work on and where its outputs go."""

    image: Path
    mask: Path
    out: Path

    @property
    def inputs(self) -> tuple[Path, ...]:
        return (self.image, self.mask)


@dataclass(frozen=True)
class Plan:
    """The tasks of a run, and the images of a folder that were left out (no mask) — reported, not fatal."""

    tasks: list[Task]
    unpaired: list[Path] = field(default_factory=list)


MAX_BUDGET_255 = 255.0  # the whole 8-bit range
MIN_STEPS = 1  # 0 steps would write the random start


def check_budget_255(budget_255: float) -> float:
    """A budget in /255 as the user gives it, or a ValueError saying why (one line): the CLI's ``--budget`` and
    the app's field are checked by this one rule (the field's bounds are its limits)."""
    if not MIN_BUDGET_255 <= budget_255 <= MAX_BUDGET_255:
        raise ValueError(f"budget {budget_255:g} must be in [{MIN_BUDGET_255:g}, {MAX_BUDGET_255:g}] — the budget is "
                         f"in /255 (the paper's is {PAPER.budget * 255:g}); under {MIN_BUDGET_255:g}/255 8-bit rounding "
                         "erases it")
    return float(budget_255)


BUDGET_AUTO = "auto"
"""The budget that is searched for (``--budget auto``, the app's choice): :mod:`backfire.protect.search`."""


def check_min_psnr(psnr: float) -> float:
    """A smallest PSNR in dB as the user gives it, or a ValueError saying why (one line)."""
    if not psnr > 0 or psnr == float("inf"):
        raise ValueError(f"min PSNR {psnr:g} must be a number of dB > 0 (the default is {DEFAULT_MIN_PSNR:g}; "
                         f"the paper's 6.375/255 gives about 33)")
    return float(psnr)


SEED_RANGE = (0, 2**64 - 1)
"""Seeds every generator of the road takes: torch's ``manual_seed`` ends at 2**64 − 1 and numpy's (the sampled
edits of recipe ``robust``) refuses negative seeds."""


def check_seed(seed: int) -> int:
    """A seed as the user gives it, or a ValueError saying why (one line): what fails in the generators only once
    the model is loaded is refused where the user typed it."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or int(seed) != seed or not low <= seed <= high:
        raise ValueError(f"seed must be a whole number in [{low}, 2**64 − 1 = {high}], got {seed}")
    return int(seed)


def check_steps(steps: int) -> int:
    """Optimisation steps as the user gives them, or a ValueError saying why (one line)."""
    if isinstance(steps, bool) or int(steps) != steps or steps < MIN_STEPS:
        raise ValueError(f"steps must be a whole number ≥ 1 (0 steps would write the random start, not a "
                         f"protection), got {steps}")
    return int(steps)


@dataclass(frozen=True)
class Request:
    """What the user asked for, from the CLI's flags or the app's page: the models and the attacker's tool, the
    protection (the recipe with the user's overrides applied), and how the verdict is judged.

    Made once at the edge with :meth:`of` (names and /255 units, each value checked by the rules above, the
    recipe's overrides applied here and nowhere else); the road below reads it and checks nothing again.
    ``protect_task`` reads the protection and verdict fields, :meth:`load_models` the model fields. ``auto``: the
    budget is searched for under that ceiling (:mod:`backfire.protect.search`), the recipe's own budget unused.
    """

    recipe: Recipe = field(default_factory=lambda: get_recipe(DEFAULT_RECIPE))
    model: str = DEFAULT_MODEL
    weights: Path | None = None
    pipeline: str = AUTO
    device: str = "auto"
    options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    draws: int = DEFAULT_DRAWS
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS
    auto: AutoBudget | None = None

    def __post_init__(self) -> None:
        # a page's text fields: blank weights are none, a path is a Path
        weights = self.weights.strip() or None if isinstance(self.weights, str) else self.weights
        object.__setattr__(self, "weights", None if weights is None else Path(weights))
        object.__setattr__(self, "model", self.model.strip())
        object.__setattr__(self, "draws", check_draws(self.draws))
        object.__setattr__(self, "seed", check_seed(self.seed))

    @classmethod
    def of(cls, *, recipe: str = DEFAULT_RECIPE, budget_255: float | str | None = None, steps: int | None = None,
           target: str | None = None, max_budget_255: float | None = None, min_psnr: float | None = None,
           **rest: Any) -> Request:
        """The request in the user's terms: a recipe name, its budget in /255 or ``"auto"`` (searched for up to
        ``max_budget_255`` and down to ``min_psnr`` dB, each defaulting to :mod:`backfire.protect.search`'s),
        steps and target (``None``: the recipe's own), and the other fields as they are named here."""
        if target is not None and target not in TARGET_KINDS:
            raise ValueError(f"unknown target {target!r}; choose from {', '.join(TARGET_KINDS)}")
        searched = isinstance(budget_255, str) and budget_255.strip().lower() == BUDGET_AUTO
        if not searched and (max_budget_255 is not None or min_psnr is not None):
            given = "--max-budget" if max_budget_255 is not None else "--min-psnr"
            raise ValueError(f"{given} is the ceiling of --budget auto; with a fixed --budget it means nothing")
        auto = None
        if searched:
            auto = AutoBudget(check_budget_255(DEFAULT_MAX_BUDGET_255 if max_budget_255 is None else max_budget_255)
                              / 255, DEFAULT_MIN_PSNR if min_psnr is None else check_min_psnr(min_psnr))
            budget_255 = None
        elif isinstance(budget_255, str):
            raise ValueError(f"budget {budget_255!r} is not a number in /255 nor {BUDGET_AUTO!r}")
        chosen = get_recipe(recipe).but(budget=None if budget_255 is None else check_budget_255(budget_255) / 255,
                                        steps=None if steps is None else check_steps(steps), target=target)
        return cls(chosen, **rest, auto=auto)

    @property
    def models_key(self) -> tuple:
        """What decides which models :meth:`load_models` loads (a cache's key)."""
        return (self.model, self.weights, self.pipeline, self.device, tuple(sorted(self.options.items())))

    def identity(self) -> dict:
        """What decides a photo's files (the recipe with its overrides, the models, the tool, the seed, the
        draws, the pixel cap, a budget search's ceiling), as JSON values: the ``run`` key of ``OUT.json``, which tells a rerun with other
        settings from one with the same (:func:`finished`)."""
        settings = {"recipe": self.recipe.as_dict(), "model": self.model,
                    "weights": None if self.weights is None else str(self.weights), "pipeline": self.pipeline,
                    "device": self.device, "options": dict(self.options), "seed": self.seed, "draws": self.draws,
                    "max_pixels": self.max_pixels,
                    "auto": None if self.auto is None else {"max_budget": self.auto.max_budget,
                                                            "min_psnr": self.auto.min_psnr}}
        return json.loads(json.dumps(_finite(settings)))  # tuples as lists: equal to the JSON read back

    def load_models(self, log: Log = lambda message: None, status: Log = lambda message: None) -> list[Inpainter]:
        """The request's models, each inside its attacker's tool (:func:`load_models`)."""
        return load_models(self.model, self.weights, self.device, pipeline=self.pipeline, options=dict(self.options),
                           log=log, status=status)


@dataclass
class Judged:
    """One image protected, saved, read back and judged on every trial: what ``protect`` and ``evaluate`` keep.

    ``fills[i]`` are the fills of ``trials[i]`` (``outcome.verdicts[i]``); ``record`` is the JSON written."""

    image: Tensor
    region: Tensor
    saved: Tensor
    protection: Protection
    outcome: Outcome
    trials: list[Trial]
    fills: list[list[EditImages]]
    record: dict

    @property
    def psnr(self) -> float:
        """The saved file's PSNR against the original, dB (the first trial's invisibility: the same file for all)."""
        return self.outcome.verdicts[0].invisibility["psnr"]

    def light(self) -> Judged:
        """The outcome and the record alone, what a worker in another process sends back (its files are
        written already): the pixel fields, the protection and the trials (which hold the models) are left
        out (None, empty)."""
        return replace(self, image=None, region=None, saved=None, protection=None, trials=[], fills=[])


def load_models(spec: str, weights: Path | None = None, device: str = "auto", *, pipeline: str | None = AUTO,
                options: dict | None = None, log: Log = lambda message: None,
                status: Log = lambda message: None) -> list[Inpainter]:
    """The models of an ensemble ``spec`` = ``NAME[=WEIGHTS],…`` (``auto`` and ``all`` resolved against the
    pulled models, with a notice when the choice falls back to the stand-in), each inside the attacker's tool
    ``pipeline`` (``auto``: IOPaint's for the erase models, plain for the others; ``None``: the bare model).
    ``weights`` is the weights file of a one-model spec."""
    entries = [e.strip() for e in spec.split(",")]
    if not all(entries):
        raise ValueError(f"--model {spec!r}: empty model name; write NAME or NAME=WEIGHTS, comma-separated")
    if len(entries) > 1 and weights is not None:
        raise ValueError("--weights names one model's weights; with several models write --model NAME=WEIGHTS,...")
    named = []
    for entry in entries:
        name, _, own = entry.partition("=")
        if name.strip().lower() in CHOICES and (own or weights):
            if name.strip().lower() == "all":
                raise ValueError("--model all takes the pulled models' own weights; name one model for a weights "
                                 "file, e.g. --model lama --weights FILE")
            name = "lama"  # auto with a weights file: the LaMa-family reader (big-lama.pt, best.ckpt, retrains)
        chosen, notice = resolve_models(name)
        if notice:
            log(f"note: {notice}")
        named += [(n, own or weights) for n in chosen]
    loaded = []
    for name, file in named:
        status(f"loading model {name.strip()}…")
        model = load_inpainter(name, weights=file, device=device, **(options or {}))
        for notice in model.notices:
            log(f"note: {notice}")
        loaded.append(model if pipeline is None else
                      wrap(model, default_pipeline(model.name) if pipeline == AUTO else pipeline))
    return loaded


def report_paths(out: Path) -> tuple[Path, Path]:
    """``out.json`` and ``out.preview.png`` beside the protected image."""
    return out.with_suffix(".json"), out.with_suffix(".preview.png")


def plan(image: Path, mask: Path | None, out: Path, suffix: str = ".png", *, keep_alpha: bool = False,
         max_pixels: int | None = io.DEFAULT_MAX_PIXELS) -> Plan:
    """The tasks for a file or a folder, every output checked (format, folder, writable) before any work;
    ``keep_alpha`` (the outputs keep their image's transparency, as :func:`protect_task` writes them): also that
    each output's format can hold it (:func:`io.check_image_output`, the image read up to ``max_pixels``).

    A folder's images are paired with ``NAME_mask.png`` and written as ``out/NAME.png`` (PNG always:
    a lossy copy would weaken the protection); images without a mask are listed in ``Plan.unpaired``.
    The output folder is created once every check passed. Raises :class:`io.InputError` when a planned
    output would overwrite any input or cannot be written.
    """
    unpaired: list[Path] = []
    if image.is_dir():
        if mask is not None:
            raise io.InputError(f"{image}: --mask is not used with a folder: masks are found as NAME_mask.png")
        if out.exists() and not out.is_dir():
            raise io.InputError(f"{out}: is a file; with a folder of images, -o must be a folder")
        pairs, unpaired = io.pair_images(image)
        if not pairs:
            raise io.InputError(f"{image}: no image has a mask; add NAME_mask.png next to each image NAME.ext")
        tasks = [Task(img, msk, out / (img.stem + suffix)) for img, msk in pairs]
    else:
        if not image.exists():
            raise io.InputError(f"{image}: no such file or folder")
        if mask is None:
            raise io.InputError(f"{image}: --mask is required for a single image")
        tasks = [Task(image, mask, out / (image.stem + suffix) if out.is_dir() else out)]
    inputs = [p for t in tasks for p in t.inputs]
    for task in tasks:
        for target in (task.out, *report_paths(task.out)):
            io.check_not_input(target, inputs)
    if image.is_dir():
        io.check_not_input(out / "batch.csv", inputs)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io.InputError(f"{out}: cannot create the output folder: {exc.strerror or exc}") from None
    for task in tasks:
        io.check_image_output(task.out, inputs, transparency_of=task.image if keep_alpha else None,
                              max_pixels=max_pixels)
    return Plan(tasks, unpaired)


def check_size(image: Path, size: tuple[int, int], inpainters: Sequence[Inpainter]) -> None:
    """Refuse, in one line, a photo (``size`` = (H, W)) with a side shorter than one of ``inpainters`` (each in
    its attacker's tool) takes (:attr:`Inpainter.smallest_side`): before any work, not as a crash inside it."""
    h, w = size
    for model in inpainters:
        smallest = model.smallest_side
        if min(h, w) < smallest:
            tool = model.describe((h, w))["pipeline"]
            raise io.InputError(f"{image}: {w}×{h} px is too small for {model.name} in the {tool} pipeline: every "
                                f"side must be at least {smallest} px")


def finished(task: Task, request: Request) -> dict | None:
    """The JSON record of an earlier run of ``task`` that a rerun keeps, or None when the photo must be done
    (again): its image, ``.json`` and preview all there (:class:`backfire.io.FileSet` writes them as one set),
    the JSON recording the same settings (``run``: :meth:`Request.identity`), and no input newer than it. The
    one rule of a folder run's resumption, in this process or on Ray."""
    json_path, preview_path = report_paths(task.out)
    if not all(p.is_file() for p in (task.out, json_path, preview_path)):
        return None
    try:
        record = json.loads(json_path.read_text())
        newest_input = max(p.stat().st_mtime_ns for p in task.inputs)
        if newest_input > json_path.stat().st_mtime_ns:
            return None  # the photo or its mask changed since
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("run") != request.identity() or "verdicts" not in record:
        return None
    return record


def load(task: Task, max_pixels: int | None, log: Log, keep_alpha: bool = False,
         inpainters: Sequence[Inpainter] = ()) -> tuple[io.LoadedImage, Tensor]:
    """The image and region of a task, with every conversion said aloud; the photo's size checked against
    ``inpainters`` (:func:`check_size`)."""
    image = io.read_image(task.image, max_pixels=max_pixels, keep_alpha=keep_alpha)
    check_size(task.image, tuple(image.pixels.shape[-2:]), inpainters)
    region = io.read_mask(task.mask, size=image.size, max_pixels=max_pixels)
    for note in (*image.notes, *region.notes):
        log(f"note: {note}")
    return image, region.mask


JudgeProgress = Callable[[str, int, int], None]
"""``on_judge(model name, edits done, edits in all)``, called as the verdict goes (over every trial)."""


RungLog = Callable[[Tried], None]
"""``on_rung(tried)``: a rung of a ``--budget auto`` search was judged (the CLI prints a line per rung)."""


def protect_task(task: Task, inpainters: Sequence[Inpainter], request: Request, *,
                 families: Sequence[str] = VERDICT_FAMILIES, on_step: StepCallback | None = None,
                 on_judge: JudgeProgress | None = None, log: Log = lambda message: None,
                 loaded: tuple[io.LoadedImage, Tensor] | None = None, protection: Protection | None = None,
                 on_rung: RungLog | None = None) -> Judged:
    """The road of one image: read it (modes kept: a greyscale photo gets a greyscale perturbation and is written
    greyscale, a transparent one keeps its alpha untouched), protect it against every model of ``inpainters``,
    save it, read it back, judge the saved file on every trial (:func:`backfire.judge.outcome.judge_every`:
    every model × every strategy its tool applies × every draw of a stochastic model), and write ``.json`` and
    the preview beside it. ``backfire protect``, ``backfire evaluate`` and the app all take this road.

    With ``request.auto`` the budget is searched for (:func:`backfire.protect.search.search`): every rung is
    protected, saved, read back and judged exactly so, the kept rung's file and verdict are what is written, and
    the JSON's ``search`` lists every rung tried. ``on_step`` then follows each rung's steps in turn and
    ``on_rung`` hears of each rung judged.

    ``loaded`` (:func:`load`'s image and region) and ``protection``: a runner (:mod:`backfire.runners`) already
    read the task and protected it in a batch with others.

    The clean fills the optimisation already computed are reused by the verdict, never run twice. The new set
    (image, ``.json``, preview) is written beside the old one and swapped in only once it is complete
    (:class:`backfire.io.FileSet`): interrupted (Ctrl-C, the app's Cancel, any error), nothing of it is left
    and an earlier run's set stays as it was — a protected file never stands without its verdict.
    """
    loaded, region = loaded or load(task, request.max_pixels, log, keep_alpha=True, inpainters=inpainters)
    image, recipe = loaded.pixels, request.recipe
    if task.out.suffix.lower() in io.LOSSY_SUFFIXES:
        log(f"warning: {task.out.suffix} is lossy; the compression weakens the protection (PNG keeps it)")
    if on_step is not None and protection is None and request.auto is None:
        on_step(0, recipe.steps, None)  # the wait for the first step shows too
    files = io.FileSet((task.out, *report_paths(task.out)), protect_inputs=task.inputs)
    try:
        with files:
            new_out = files[task.out]

            def save(result: Protection) -> Tensor:
                io.save_image(result.protected, new_out, protect_inputs=task.inputs, grey=loaded.grey,
                              alpha=loaded.alpha)
                # every verdict is about the file as written
                return io.read_image(new_out, max_pixels=request.max_pixels,
                                     keep_alpha=loaded.alpha is not None).pixels

            def judged(result: Protection) -> Judged:
                saved = save(result)

                def known(trial: Trial) -> Sequence[tuple[Tensor, Tensor]]:
                    reusable = trial.default_strategy and trial.draw == 0 and result.clean_fills
                    return result.clean_fills[trial.index] if reusable else ()

                progress = None if on_judge is None else (
                    lambda trial, done, total: on_judge(trial.model.name, done, total))
                outcome, found, fills = judge_every(image, saved, region, inpainters, result.target,
                                                    draws=request.draws, families=families, seed=request.seed,
                                                    target_kind=result.recipe.target, clean_fills=known,
                                                    on_edit=progress)
                return Judged(image, region, saved, result, outcome, found, fills, {})

            if request.auto is None:
                done = judged(protection or protect(image, region, inpainters, recipe, seed=request.seed,
                                                    grey=loaded.grey, on_step=on_step))
                extra = {}
            else:
                keepable: list[Judged] = []

                def heard(index: int, tried: Tried[Judged]) -> None:
                    # only the latest rung within the ceiling can still be kept: the fills (images of every edit
                    # of every trial, the preview's) of the others go, or a large photo's search would hold them all
                    if tried.within or not keepable:
                        for old in keepable:
                            old.fills = []
                        keepable[:] = [tried.judged]
                    else:
                        tried.judged.fills = []
                    if on_rung is not None:
                        on_rung(tried)

                searched = search(image, region, inpainters, recipe, request.auto, judged,
                                  holds=lambda j: j.outcome.protected, psnr=lambda j: j.psnr, seed=request.seed,
                                  grey=loaded.grey, on_rung=lambda index, rung: on_step, on_tried=heard)
                done = searched.kept.judged
                if searched.kept is not searched.tried[-1]:
                    save(done.protection)  # the kept rung's file again: the same bytes its verdict was judged on
                extra = {"search": search_record(request.auto, searched)}
            result, outcome = done.protection, done.outcome
            done.record = {
                "image": str(task.image), "mask": str(task.mask), "protected_image": str(task.out),
                "recipe": result.recipe.as_dict(), "budget_255": result.recipe.budget * 255,
                "seed": request.seed, "seconds": result.seconds, "losses": result.losses,
                **outcome.as_dict(), "run": request.identity(), **extra,
            }
            write_reports(task, done.record, image, done.saved, done.fills[0], files)
    except KeyboardInterrupt:
        if files.committed:  # Ctrl-C held through the swap: this image's set is complete
            raise
        raise Interrupted(task, [p for p in files.targets if p.exists()]) from None
    return done


def rung_record(tried: Tried[Judged]) -> dict:
    """One rung of a search in the JSON: its setting, times and ceiling (the search's), and its verdict — the edit
    that decided it (its distance to the target, the distance at which it fails, its region SSIM)."""
    outcome = tried.judged.outcome
    weakest = outcome.weakest
    deciding = None if weakest is None else next(d for d in outcome.attacker_edits if d.name == weakest.edit)
    return {**tried.as_dict(), "deciding_edit": None if weakest is None else weakest.edit,
            "fill_distance": None if weakest is None else weakest.distance_to_target,
            "fail_distance": None if weakest is None else weakest.fail_distance,
            "region_ssim": None if deciding is None else deciding.edit.metrics["region_ssim_protected"]}


def search_record(ceiling: AutoBudget, searched: Searched[Judged]) -> dict:
    """The JSON's ``search``: the ceiling, why it stopped, the kept rung (its index) and every rung tried."""
    return {**ceiling.as_dict(), "stopped": searched.stopped, "kept": searched.tried.index(searched.kept),
            "protected": searched.protected, "seconds": sum(t.protection.seconds + t.judge_seconds
                                                            for t in searched.tried),
            "rungs": [rung_record(t) for t in searched.tried]}


CURVE_BUDGETS_255: tuple[float, ...] = (4.0, 6.375, 16.0, 32.0, 64.0)
"""``protect --curve``'s budgets unless told: from under the paper's 6.375/255 to 64/255, past where the stand-ins'
edits start failing and the published defences stopped (docs/curves.md, docs/literature.md)."""


def curve_paths(out: Path) -> tuple[Path, Path]:
    """``OUT.curve.csv`` and ``OUT.curve.svg`` beside the protected image."""
    return out.with_suffix(".curve.csv"), out.with_suffix(".curve.svg")


def check_curve_outputs(task: Task) -> None:
    """Everything writing the curve of ``task`` would refuse, checked before any work."""
    for path in curve_paths(task.out):
        io.check_not_input(path, task.inputs)
        io.check_output(path, task.inputs)


def curve_settings(recipe: Recipe, budgets_255: Sequence[float], steps: Sequence[int]) -> tuple[list[Recipe], Recipe]:
    """Every budget × steps of a curve as recipes, in the order they run, and the one whose protection is the
    command's output, run last: the request's own budget and steps, or where the curve leaves them out, its
    nearest budget and nearest steps (ties: the smaller). The curve costs no run more than its settings."""
    budgets_255, steps = list(dict.fromkeys(budgets_255)), list(dict.fromkeys(steps))  # each setting once
    budget = min(budgets_255, key=lambda b: (abs(b - recipe.budget_255), b))
    kept = recipe.but(budget=budget / 255, steps=min(steps, key=lambda s: (abs(s - recipe.steps), s)))
    others = [recipe.but(budget=b / 255, steps=s) for b in budgets_255 for s in steps]
    return [r for r in others if r != kept] + [kept], kept


def curve_task(task: Task, inpainters: Sequence[Inpainter], request: Request, budgets_255: Sequence[float],
               steps: Sequence[int], *, on_step: Callable[[Recipe], StepCallback | None] = lambda recipe: None,
               on_judge: Callable[[Recipe], JudgeProgress | None] = lambda recipe: None,
               log: Log = lambda message: None) -> tuple[Judged, list[dict]]:
    """``backfire protect --curve``: the photo protected and judged at every budget × steps, each on the one road
    (:func:`protect_task`: saved, read back, judged on every trial); the setting :func:`curve_settings` keeps is
    written as ``task.out`` with its JSON and preview, the others in a scratch folder that is removed. Then the
    curve (:mod:`backfire.judge.curve`) as ``OUT.curve.csv`` and ``OUT.curve.svg``. The kept setting runs last,
    so an interruption before it leaves nothing written. ``on_step(recipe)``, ``on_judge(recipe)``: the step and
    verdict callbacks of a setting.
    Returns the kept setting's :class:`Judged` and the curve's rows (by budget, then steps)."""
    settings, kept = curve_settings(request.recipe, budgets_255, steps)
    loaded = load(task, request.max_pixels, log, keep_alpha=True)  # read once, its notes said once
    found: list[curve.Point] = []
    with tempfile.TemporaryDirectory(prefix="backfire-curve-") as scratch:
        for recipe in settings:
            mine = task if recipe == kept else Task(task.image, task.mask, Path(scratch) / task.out.name)
            judged = protect_task(mine, inpainters, replace(request, recipe=recipe), loaded=loaded,
                                  on_step=on_step(recipe), on_judge=on_judge(recipe),
                                  log=log if recipe == kept else (lambda message: None))
            found += curve.points(judged.outcome, recipe)
    rows = sorted(curve.rows(found), key=lambda r: (r["model"], r["recipe"], r["budget_255"], r["steps"]))
    csv_path, svg_path = curve_paths(task.out)
    io.write_text_atomic(csv_path, curve.csv_text(rows), protect_inputs=task.inputs)
    io.write_text_atomic(svg_path, curve.svg(rows), protect_inputs=task.inputs)
    return judged, rows


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a task: nothing of its new set was written; ``kept`` lists the files of an earlier run at
    its outputs, left as they were."""

    def __init__(self, task: Task, kept: list[Path]):
        super().__init__(task.image.name)
        self.task, self.kept = task, kept


@dataclass(frozen=True)
class BatchRow:
    """One photo of a folder run (``protect`` or ``edit``): a line of the CLI's ``batch.csv`` and of the app's
    ``verdicts.csv``, one row type for all. The columns: the CLI's first (``status``, ``attacker_failed`` as
    ``k/n`` …), then the app's (``protected``, the counts, invisibility, ``error``), then the edit that decided
    (``weakest_*``).
    Every count is the outcome's, over every trial (:class:`backfire.judge.outcome.Outcome`)."""

    image: str
    status: str  # "protected" | "not protected" | "edited" (``backfire edit``) | "skipped" | "failed" (on Ray: its worker died on every attempt)
    output: str = ""
    attacker_failed: str = ""
    benign_intact: str = ""
    why: str = ""
    protected_image: str = ""
    model: str = ""
    protected: bool | str = ""
    attacker_edits_failed: int | str = ""
    attacker_edits: int | str = ""
    benign_edits_intact: int | str = ""
    benign_edits: int | str = ""
    psnr_db: float | str = ""
    ssim: float | str = ""
    linf_255: float | str = ""
    mask: str = ""
    error: str = ""
    draws: int | str = ""
    weakest_model: str = ""
    weakest_strategy: str = ""
    weakest_draw: int | str = ""
    weakest_edit: str = ""
    weakest_distance: float | str = ""
    retries: int | str = ""  # a run on Ray: the photo's attempts after a worker died (backfire.ray_runner)

    @classmethod
    def skipped(cls, image: Path, why: str, mask: Path | None = None) -> BatchRow:
        return cls(image.name, "skipped", why=why, error=why, mask="" if mask is None else mask.name)

    @classmethod
    def edited(cls, task: Task, model: str) -> BatchRow:
        """The row of a photo ``backfire edit`` inpainted with ``model`` (no verdict: nothing was protected)."""
        return cls(task.image.name, "edited", str(task.out), model=model, mask=task.mask.name)

    @classmethod
    def of(cls, task: Task, outcome: Outcome, output: str | None = None) -> BatchRow:
        """The row of a protected photo; ``output``: how the row names the written file (default: its path)."""
        return cls.of_record(task, outcome.as_dict(), output)

    @classmethod
    def of_record(cls, task: Task, record: Mapping[str, Any], output: str | None = None) -> BatchRow:
        """The row of a protected photo from its verdict's JSON (:meth:`Outcome.as_dict`, what ``OUT.json``
        holds): the one way a row is made, for a photo just judged or one an earlier run finished."""
        inv, weakest = record["invisibility"], record.get("weakest")
        deciding = {} if weakest is None else dict(
            weakest_model=weakest["model"], weakest_strategy=weakest["strategy"], weakest_draw=weakest["draw"],
            weakest_edit=weakest["edit"], weakest_distance=round(weakest["distance_to_target"], 4))
        failed, attacks = record["attacker_edits_failed"], record["attacker_edits"]
        intact, benign = record["benign_edits_intact"], record["benign_edits"]
        models = ",".join(dict.fromkeys(v["model"] for v in record["verdicts"]))
        return cls(task.image.name, "protected" if record["protected"] else "not protected",
                   str(task.out) if output is None else output, f"{failed}/{attacks}", f"{intact}/{benign}",
                   protected_image=task.out.name, model=models, protected=record["protected"],
                   attacker_edits_failed=failed, attacker_edits=attacks, benign_edits_intact=intact,
                   benign_edits=benign, psnr_db=round(inv["psnr"], 2), ssim=round(inv["ssim"], 5),
                   linf_255=round(inv["linf_255"], 2), mask=task.mask.name, draws=record["draws"], **deciding)

    def as_dict(self) -> dict:
        return asdict(self)


BATCH_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(BatchRow))


def write_batch_csv(path: Path, rows: Sequence[BatchRow], protect_inputs: Sequence[Path]) -> Path:
    """``rows`` sorted by image name as CSV at ``path`` (atomic): a folder run's ``batch.csv``, the app's
    ``verdicts.csv``."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=BATCH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_dict() for r in sorted(rows, key=lambda r: r.image))
    io.write_text_atomic(path, buffer.getvalue(), protect_inputs=protect_inputs)
    return path


def write_batch_summary(out_dir: Path, rows: Sequence[BatchRow], protect_inputs: Sequence[Path]) -> Path:
    """``out_dir/batch.csv``: every image of a folder run, protected or skipped and why."""
    return write_batch_csv(out_dir / "batch.csv", rows, protect_inputs)


SHEET_ATTACK, SHEET_BENIGN = "exact", "ring"  # the edits the preview sheet shows, when judged


def sheet_edits(names: Sequence[str]) -> tuple[str, str | None]:
    """Which of the judged edits ``names`` the preview sheet shows: the attacker's and the benign edit's names."""
    return (SHEET_ATTACK if SHEET_ATTACK in names else names[0]), (SHEET_BENIGN if SHEET_BENIGN in names else None)


def write_reports(task: Task, record: dict, image: Tensor, saved: Tensor, fills: list[EditImages],
                  files: io.FileSet | None = None) -> None:
    """``OUT.json`` and ``OUT.preview.png``; with ``files``, their new versions in that set (swapped in with it)."""
    json_path, preview_path = (files[p] if files is not None else p for p in report_paths(task.out))
    write_json(json_path, record, task.inputs)
    attack_name, benign_name = sheet_edits([f.name for f in fills])
    attack = next(f for f in fills if f.name == attack_name)
    benign = next((f for f in fills if f.name == benign_name), None)
    buffer = _io.BytesIO()
    preview(image, saved, attack, benign).save(buffer, format="PNG")
    io.write_bytes_atomic(preview_path, buffer.getvalue(), protect_inputs=task.inputs)


def edit_task(task: Task, inpainter: Inpainter, max_pixels: int | None, log: Log) -> None:
    """Plain inpainting of the masked region — exactly what an attacker runs."""
    image, region = load(task, max_pixels, log, inpainters=[inpainter])
    filled = inpainter(image.pixels[None], region[None, None])[0].detach().float().cpu()
    io.save_image(filled, task.out, protect_inputs=task.inputs, grey=image.grey)


def verify_files(original: Path, protected: Path, mask: Path, inpainters: Sequence[Inpainter], request: Request,
                 log: Log) -> Outcome:
    """Judge an already protected file against its original on the set ``protect`` judges (every model, strategy
    and draw), both read as ``protect`` reads them; the target is the request's recipe's."""
    image = io.read_image(original, max_pixels=request.max_pixels, keep_alpha=True)
    check_size(original, tuple(image.pixels.shape[-2:]), inpainters)
    saved = io.read_image(protected, max_pixels=request.max_pixels, keep_alpha=True)
    if saved.size != image.size:
        raise io.InputError(f"{protected} is {saved.size[0]}×{saved.size[1]} but {original} is "
                            f"{image.size[0]}×{image.size[1]}: not a protected copy of it")
    region = io.read_mask(mask, size=image.size, max_pixels=request.max_pixels)
    for note in (*image.notes, *saved.notes, *region.notes):
        log(f"note: {note}")
    kind = request.recipe.target
    outcome, _, _ = judge_every(image.pixels, saved.pixels, region.mask, inpainters, make_target(image.pixels, kind),
                                draws=request.draws, seed=request.seed, target_kind=kind)
    return outcome


def write_json(path: Path, record: dict, protect_inputs) -> None:
    io.write_text_atomic(path, json.dumps(_finite(record), indent=2) + "\n", protect_inputs=protect_inputs)


def export_torchscript(inpainter: Inpainter, out: Path, inputs: list[Path]) -> Path:
    """Write a LaMa-family model as a TorchScript ``model(image, mask)``, as IOPaint's big-lama.pt is."""
    from backfire.inpainters.lama import LamaModule, export_torchscript as trace_and_save

    module = getattr(inpainter, "module", None)
    if not isinstance(module, LamaModule):
        raise io.InputError(f"{inpainter.name}: only LaMa-family models loaded from weights can be exported "
                            f"(a TorchScript file already is one)")
    io.check_output(out, inputs)
    return trace_and_save(module, out)


def _finite(value):
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
