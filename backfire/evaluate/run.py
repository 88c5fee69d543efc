"""The folder-level protocol of docs/evaluation.md: the paper's table, on any folder of images.

For every ``NAME.png`` + ``NAME_mask.png`` pair and every recipe × budget × steps: the road ``backfire protect``
takes, one function (:func:`backfire.jobs.protect_task`: read with its modes kept, protect, save the 8-bit
file with its JSON and preview, read it back, judge the saved file on every model × strategy × draw) for every
attacker and benign family; with robustness, judge each cleaned copy of the saved file again on the same
trials (attacker families only). An edit counts as failed only when it failed on every trial, intact only
when intact on every trial (:meth:`backfire.judge.outcome.Outcome.decided`: the failure rates are over the
unit that decides "protected"). :mod:`backfire.evaluate.report` writes into ``out_dir``:

- ``cases.csv``: one row per image × recipe × budget × steps × edit × transform (``none`` = the saved file);
- ``curve.csv`` and ``curve.svg``: the strength curve per model (:mod:`backfire.judge.curve`): failure rate,
  fill distance and region SSIM against budget × steps and against the photo's visibility (PSNR, SSIM, ΔE00);
- ``summary.md``: the paper-style tables (attacker and benign families, invisibility, robustness, FID,
  CLIP-FID, LPIPS, cost, the machine);
- ``report.html``: the same tables and, per case, thumbnails (``thumbs/``) of the original, the protected
  image and their edits; relative links only, so the folder can be moved or zipped;
- ``config.json``: versions, arguments, model, weights, recipe values, the set-level measures' weights;
- ``images/``: the protected PNGs that were judged, each with the JSON and preview ``backfire protect`` writes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from backfire import io, jobs
from backfire import masks as mask_ops
from backfire.evaluate.report import COLUMNS, Case, row, write_reports, write_thumbs
from backfire.inpainters.base import Inpainter
from backfire.judge import curve
from backfire.judge.outcome import DEFAULT_DRAWS, Trial, judge_every
from backfire.judge.sets import FeatureSets
from backfire.judge.transforms import get_transforms
from backfire.protect.engine import Photo, Protection, protect_batch
from backfire.protect.recipes import Recipe
from backfire.runners import LocalRunner, Prepared, Runner

__all__ = ["COLUMNS", "EvaluationConfig", "evaluate"]


@dataclass(frozen=True)
class EvaluationConfig:
    """What an evaluation runs: recipes × budgets × steps on every image, the families and cleanings judged.

    Arguments:
        recipes: protection recipes to compare (side by side in one run: their seconds are comparable).
        budgets: L∞ budgets in [0, 1] units; ``None`` = each recipe's own.
        steps: optimisation step counts; ``None`` = each recipe's own.
        families: mask families (``backfire.masks``), attacker and benign.
        transforms: names of :data:`backfire.judge.transforms.TRANSFORMS` applied to x̃ before the
            attacker's edits (empty: none).
        limit: at most this many images (the first, by name).
        seed: seeds the protection's start and the random mask families.
        draws: draws judged per stochastic model (``--draws``).
        with_fid: compute FID over the set (needs the Inception weights, else "unavailable").
        clip_weights: CLIP ViT-B/32 weights for CLIP-FID (OpenAI's ``ViT-B-32.pt``); None: the pulled ones,
            else CLIP-FID is "unavailable".
        lpips_weights: files or folders with LPIPS's backbone and linear layers; empty: the pulled ones,
            else LPIPS is "unavailable".
        max_pixels: refuse images larger than this (``io.read_image``).
        arguments: extra values recorded in ``config.json`` (the CLI's arguments).
    """

    recipes: tuple[Recipe, ...]
    budgets: tuple[float | None, ...] = (None,)
    steps: tuple[int | None, ...] = (None,)
    families: tuple[str, ...] = mask_ops.FAMILIES
    transforms: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0
    draws: int = DEFAULT_DRAWS
    with_fid: bool = True
    clip_weights: Path | None = None
    lpips_weights: tuple[Path, ...] = ()
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS
    arguments: dict = field(default_factory=dict)

    @property
    def attacker_families(self) -> tuple[str, ...]:
        return tuple(f for f in self.families if mask_ops.family_kind(f) == "attacker")

    def check(self) -> None:
        """Every name known and every combination meaningful, before any work."""
        for family in self.families:
            mask_ops.family_kind(family)
        get_transforms(self.transforms)
        if self.transforms and not self.attacker_families:
            raise ValueError("robustness needs at least one attacker family")
        if not self.recipes:
            raise ValueError("give at least one recipe")
        jobs.check_seed(self.seed)


def _check_out_dir(folder: Path, out_dir: Path) -> None:
    """Never write into the input folder: refuse an ``out_dir`` equal to it or inside it."""
    source, target = folder.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise io.InputError(f"{out_dir}: the output folder must not be the input folder {folder} or inside it; "
                            f"choose another --out (default: {folder.name}-evaluation beside it)")
    if out_dir.exists() and not out_dir.is_dir():
        raise io.InputError(f"{out_dir}: is a file; --out must be a folder")


def evaluate(folder: Path, out_dir: Path, inpainter: Inpainter | Sequence[Inpainter], config: EvaluationConfig,
             progress: jobs.Log | None = None, runner: Runner | None = None) -> list[Case]:
    """Run the protocol on ``folder`` and write the reports into ``out_dir``; return the cases.

    Arguments:
        folder: ``NAME.png`` + ``NAME_mask.png`` pairs (``io.find_pairs``).
        out_dir: a new or existing folder outside ``folder``.
        inpainter: the model that protects and the model the attacker edits with (the same one); or
            several: the protection is against all of them (an ensemble), and each is judged.
        config: recipes, budgets, families, cleanings, seed (see :class:`EvaluationConfig`).
        progress: called with one line per case.
        runner: where the photos run (default: this process, one photo at a time on the CPU; batches of
            photos of one size on a GPU, :class:`backfire.runners.LocalRunner`). The cases come out in the
            folder's order whatever the order they finish in.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    ensemble = [inpainter] if isinstance(inpainter, Inpainter) else list(inpainter)
    config.check()
    _check_out_dir(folder, out_dir)
    pairs = io.find_pairs(folder)[:config.limit]
    inputs = [p for pair in pairs for p in pair]
    for image, _ in pairs:  # a photo the models cannot edit stops the run before any work, not halfway
        jobs.check_size(image, tuple(io.read_image(image, config.max_pixels).pixels.shape[-2:]), ensemble)
    features = FeatureSets(ensemble[0].device, fid=config.with_fid, clip_weights=config.clip_weights,
                           lpips_weights=config.lpips_weights, log=progress)  # named weights checked before work
    for sub in ("", "images", "thumbs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    budgets, steps = dict.fromkeys(config.budgets), dict.fromkeys(config.steps)  # a setting given twice runs once
    plans = [r.but(budget=b, steps=s) for r in config.recipes for b in budgets for s in steps]
    total = len(pairs) * len(plans)
    runner = runner or LocalRunner()
    found: dict[tuple[int, int], Case] = {}
    for j, recipe in enumerate(plans):
        work = _CaseWork(ensemble, recipe, config, out_dir, inputs, features if j == 0 else None, features,
                         progress)
        for done in runner.run(work, list(enumerate(pairs))):
            if done.error is not None:
                raise done.error
            found[done.task[0], j] = done.result
            if progress is not None:
                progress(_progress_line(len(found), total, done.result))
    cases = [found[key] for key in sorted(found)]
    write_reports(out_dir, cases, config, inputs, features, ensemble[0])
    return cases


def _key(image_path: Path, recipe: Recipe) -> str:
    return f"{image_path.stem}__{recipe.name}__b{recipe.budget_255:g}__s{recipe.steps}"


class _CaseWork:
    """One recipe plan over the folder, as a runner's work (:class:`backfire.runners.Work`): read a pair,
    protect a batch of photos, judge each case. ``originals``: where the originals' features go (the first
    plan only: each original once, whatever the recipes); ``features``: the fills'."""

    def __init__(self, ensemble: list[Inpainter], recipe: Recipe, config: EvaluationConfig, out_dir: Path,
                 inputs: list[Path], originals: FeatureSets | None, features: FeatureSets, log: jobs.Log | None):
        self.ensemble, self.recipe, self.config = ensemble, recipe, config
        self.out_dir, self.inputs, self.originals, self.features = out_dir, inputs, originals, features
        self.log = log or (lambda message: None)
        self._arrived: dict[int, tuple[Case, list]] = {}  # cases judged elsewhere, waiting for their turn
        self._next = 0

    @property
    def device(self) -> torch.device:
        return self.ensemble[0].device

    def read(self, task: tuple[int, tuple[Path, Path]]) -> Prepared:
        _, (image_path, mask_path) = task
        job = jobs.Task(image_path, mask_path, self.out_dir / "images" / f"{_key(image_path, self.recipe)}.png")
        loaded, region = jobs.load(job, self.config.max_pixels, self.log, keep_alpha=True, inpainters=self.ensemble)
        if self.originals is not None:
            self.originals.add("originals", loaded.pixels[None])
        return Prepared(task, Photo(loaded.pixels, region, self.config.seed), extra=(job, loaded, region))

    def protect(self, batch: Sequence[Prepared]) -> list[Protection]:
        return protect_batch([p.photo for p in batch], self.ensemble, self.recipe)

    def finish(self, prepared: Prepared, protection: Protection) -> Case:
        job, loaded, region = prepared.extra
        return _evaluate_case(job, (loaded, region), protection, self)

    def remote(self) -> _RemoteCases:
        return _RemoteCases(self.recipe, self.config, self.out_dir, self.inputs, self.originals is not None)

    def received(self, task: tuple[int, tuple[Path, Path]], sent: tuple[Case, list]) -> Case:
        """A case judged on a worker: its images' measures are added here, in the folder's order (as a run in
        this process adds them, so the set-level measures are the same)."""
        self._arrived[task[0]] = sent
        while self._next in self._arrived:
            for name, images, reference in self._arrived[self._next][1]:
                (self.features if name != "originals" else self.originals).add(name, images, reference=reference)
            self._arrived[self._next] = (self._arrived[self._next][0], [])
            self._next += 1
        return sent[0]


class _Recorded:
    """Stands in for :class:`FeatureSets` on a worker: the images a case would add, kept to be sent back."""

    def __init__(self):
        self.added: list[tuple[str, Tensor, Tensor | None]] = []

    def add(self, name: str, images: Tensor, reference: Tensor | None = None) -> None:
        self.added.append((name, images.detach().cpu(), None if reference is None else reference.detach().cpu()))


@dataclass(frozen=True)
class _RemoteCases:
    """:class:`_CaseWork` on a worker (:class:`backfire.runners.Remote`): the plan travels, the worker's models
    protect and judge, the case comes back with the images its measures need (``originals``: the first plan's
    originals too)."""

    recipe: Recipe
    config: EvaluationConfig
    out_dir: Path
    inputs: list[Path]
    originals: bool

    def bind(self, inpainters: Sequence[Inpainter]) -> _CaseWork:
        recorded = _Recorded()
        return _CaseWork(list(inpainters), self.recipe, self.config, self.out_dir, self.inputs,
                         recorded if self.originals else None, recorded, None)

    def reduce(self, work: _CaseWork, result: Case) -> tuple[Case, list]:
        return result, work.features.added


def _evaluate_case(task: jobs.Task, loaded: tuple[io.LoadedImage, Tensor], protection: Protection,
                   work: _CaseWork) -> Case:
    ensemble, recipe, config, features = work.ensemble, work.recipe, work.config, work.features
    # a batch's protection was timed with the batch: its share counts toward the case's total
    started = time.perf_counter() - protection.seconds
    request = jobs.Request(recipe, seed=config.seed, draws=config.draws, max_pixels=config.max_pixels)
    judged = jobs.protect_task(task, ensemble, request, families=config.families, log=work.log, loaded=loaded,
                               protection=protection)
    image, region, outcome = judged.image, judged.region, judged.outcome
    measured = [(d.edit, "none") for d in outcome.decided()]
    # the edits of the original do not change with the cleaning: each trial's are reused
    known = {_trial_key(t): [(f.mask, f.original) for f in fills] for t, fills in zip(judged.trials, judged.fills)}
    for name, transform in get_transforms(config.transforms).items():
        cleaned = transform(judged.saved, seed=config.seed)
        robust, _, _ = judge_every(image, cleaned, region, ensemble, judged.protection.target, draws=config.draws,
                                   families=config.attacker_families, seed=config.seed, target_kind=recipe.target,
                                   clean_fills=lambda trial: known.get(_trial_key(trial), ()))
        measured.extend((d.edit, name) for d in robust.decided())
    verdict, fills = outcome.verdicts[0], judged.fills[0]  # the set measures: the first model's default edit
    attacks = [f for e, f in zip(verdict.edits, fills) if e.kind == "attacker"]
    if attacks:
        features.add("original fills", torch.stack([f.original for f in attacks]), reference=image)
        features.add("protected fills", torch.stack([f.protected for f in attacks]), reference=image)
    case = Case(image=task.image.name, recipe=recipe.name, budget_255=recipe.budget_255, steps=recipe.steps,
                seconds_protect=judged.protection.seconds, seconds_total=time.perf_counter() - started,
                invisibility=verdict.invisibility, skipped=verdict.skipped, points=curve.points(outcome, recipe))
    case.rows = [row(case, e, t) for e, t in measured]
    case.thumbs = write_thumbs(work.out_dir, task.out.stem, image, judged.saved, verdict.edits, fills, work.inputs)
    return case


def _trial_key(trial: Trial) -> tuple[int, str, int]:
    return trial.index, trial.strategy, trial.draw


def _progress_line(done: int, total: int, case: Case) -> str:
    plain = [r for r in case.rows if r["transform"] == "none"]
    attacks = [r for r in plain if r["kind"] == "attacker"]
    benign = [r for r in plain if r["kind"] == "benign"]
    return (f"[{done}/{total}] {case.image} {case.recipe} {case.budget_255:g}/255 × {case.steps} steps: "
            f"{sum(r['failed'] == 1 for r in attacks)}/{len(attacks)} attacker edits failed, "
            f"{sum(r['intact'] == 1 for r in benign)}/{len(benign)} benign intact, "
            f"{case.seconds_total:.1f} s")
