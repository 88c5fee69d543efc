"""What the app asks of backfire: every call into backfire's jobs, CLI and verdict API, in one place.

The app runs the CLI's own jobs (:mod:`backfire.jobs`) and loads models the CLI's way (ensembles written
``NAME[=WEIGHTS],...``), so a protection made in the browser is the one ``backfire protect`` makes. When
that API changes, this module is the one to adapt; the UI (:mod:`backfire.app.ui`) and the batch runner
(:mod:`backfire.app.batch`) only speak to it. Nothing here imports Gradio.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from backfire import io, jobs
from backfire.judge.text import format_verdict
from backfire.errors import ModelError
from backfire.inpainters.registry import DEFAULT_MODEL, available_models
from backfire.judge.verdict import Verdict
from backfire.protect.recipes import DEFAULT_RECIPE, MIN_BUDGET_255, RECIPES, get_recipe

MAX_PIXELS = io.DEFAULT_MAX_PIXELS
InputError = io.InputError
IMAGE_EXTENSIONS = io.IMAGE_EXTENSIONS
PROBLEMS: tuple[type[Exception], ...] = (io.InputError, ModelError, ValueError)
"""Errors a user can fix (bad file, model, setting): shown as a message, never a crash."""

OnStep = Callable[[int, int, float], None]
Log = Callable[[str], None]


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Cancel; nothing is written."""


@dataclass(frozen=True)
class Settings:
    """The protect/verify settings of the page, in the CLI's units (budget in /255)."""

    model: str = DEFAULT_MODEL
    weights: str | None = None
    recipe: str = DEFAULT_RECIPE
    budget_255: float | None = None
    steps: int | None = None
    target: str | None = None
    seed: int = 0
    device: str = "auto"


@dataclass
class ProtectedPhoto:
    """One protected photo: the files written beside it and a verdict per model."""

    protected: Path
    report: Path
    preview: Path
    verdicts: list[Verdict]
    notes: list[str] = field(default_factory=list)


def available_choices() -> list[str]:
    """Model names for the page's menu: the default model first, then every name the registry loads
    (those that need weights take them in the weights field; ``a,b`` is an ensemble, as on the CLI)."""
    return [DEFAULT_MODEL, *(name for name in available_models() if name != DEFAULT_MODEL)]


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def default_recipe() -> str:
    return DEFAULT_RECIPE


def recipe_defaults(name: str) -> tuple[float, int]:
    """A recipe's budget in /255 and its steps, for the page's defaults."""
    recipe = get_recipe(name)
    return recipe.budget * 255, recipe.steps


def resists_recompression(recipe: str) -> bool:
    """Whether the recipe trains against JPEG and other cleaning (else: warn against recompressing)."""
    return bool(get_recipe(recipe).cleaning)


# ------------------------------------------------------------------------------------------ files

def read_photo(path: Path) -> tuple[Tensor, list[str]]:
    """A photo as 3×H×W in [0, 1], read as the CLI reads it (pixel cap, EXIF, modes), and its notes."""
    loaded = io.read_image(path, max_pixels=MAX_PIXELS)
    return loaded.pixels, loaded.notes


def read_region(path: Path, size: tuple[int, int]) -> Tensor:
    """A mask file (white or opaque = region) as H×W in {0, 1} for an image of ``size`` = (W, H)."""
    return io.read_mask(path, size=size, max_pixels=MAX_PIXELS).mask


def save_region(mask: Tensor, path: Path) -> None:
    io.save_mask(mask, path)


def save_photo(pixels: Tensor, path: Path) -> None:
    io.save_image(pixels, path)


def detect(kind: str, image: Tensor) -> Tensor:
    """The ``backfire mask`` detectors: ``faces`` or ``text`` → H×W mask (``InputError`` when none)."""
    from backfire import regions

    if kind == "faces":
        return regions.face_mask(image)
    if kind == "text":
        return regions.text_mask(image)
    raise ValueError(f"unknown detector {kind!r}; faces or text")


def box(size: tuple[int, int], text: str) -> Tensor:
    """``"x,y,w,h"`` → the rectangle's mask in an image of ``size`` = (W, H)."""
    from backfire import regions

    return regions.box_mask(size, regions.parse_box(text))


# ----------------------------------------------------------------------------------------- models

_models: dict[tuple, list] = {}
_models_lock = threading.Lock()


def load_models(settings: Settings) -> list:
    """The models of ``settings.model`` (one, or an ensemble ``a,b``), loaded as ``--model`` loads them;
    kept for the next job."""
    weights = (settings.weights or "").strip() or None
    key = (settings.model.strip(), weights, settings.device)
    with _models_lock:
        if key not in _models:
            _models[key] = jobs.load_models(key[0], None if weights is None else Path(weights), settings.device)
        return _models[key]


# ------------------------------------------------------------------------------------------- jobs

def check_settings(settings: Settings) -> None:
    """The CLI's checks of budget and steps, with its messages."""
    get_recipe(settings.recipe)
    if settings.budget_255 is not None and not MIN_BUDGET_255 <= settings.budget_255 <= 255:
        raise ValueError(f"budget must be in [{MIN_BUDGET_255:g}, 255] (/255; the paper's is 6.4), "
                         f"got {settings.budget_255}")
    if settings.steps is not None and settings.steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {settings.steps}")


def protect(image: Path, mask: Path, out: Path, settings: Settings, on_step: OnStep | None = None,
            log: Log | None = None) -> ProtectedPhoto:
    """``backfire protect IMAGE --mask MASK -o OUT`` with ``settings``: writes OUT (PNG), OUT.json and
    OUT.preview.png; the verdicts are computed on the saved file read back."""
    check_settings(settings)
    notes: list[str] = []
    task = jobs.plan(image, mask, out).tasks[0]
    inpainters = load_models(settings)
    budget = None if settings.budget_255 is None else settings.budget_255 / 255
    recipe = get_recipe(settings.recipe).but(budget=budget, steps=settings.steps, target=settings.target)
    verdicts = jobs.protect_task(task, inpainters, jobs.Settings(recipe, seed=settings.seed, max_pixels=MAX_PIXELS),
                                 on_step=on_step, log=_both(notes, log))
    report, preview = jobs.report_paths(task.out)
    return ProtectedPhoto(task.out, report, preview, verdicts, notes)


def attack(image: Path, mask: Path, out: Path, settings: Settings, log: Log | None = None) -> Path:
    """``backfire edit``: the attacker's plain inpainting of the region, written to ``out``."""
    task = jobs.plan(image, mask, out).tasks[0]
    jobs.edit_task(task, _one_model(settings), MAX_PIXELS, log or (lambda _: None))
    return task.out


def verify(original: Path, protected: Path, mask: Path, settings: Settings, log: Log | None = None) -> Verdict:
    """``backfire verify ORIGINAL PROTECTED --mask MASK``."""
    return jobs.verify_files(original, protected, mask, _one_model(settings), settings.target or "solid",
                             settings.seed, MAX_PIXELS, log or (lambda _: None))


def _one_model(settings: Settings):
    models = load_models(settings)
    if len(models) > 1:
        raise ValueError(f"model {settings.model}: verifying takes one model, not an ensemble")
    return models[0]


def _both(notes: list[str], log: Log | None) -> Log:
    def record(message: str) -> None:
        notes.append(message)
        if log is not None:
            log(message)
    return record


# ---------------------------------------------------------------------------------------- verdict

def verdict_numbers(verdict: Verdict) -> str:
    """The CLI's verdict table."""
    return format_verdict(verdict)


_COLOURS = {(1.0, 0.0, 0.0): "red", (0.0, 1.0, 0.0): "green", (0.0, 0.0, 1.0): "blue"}


def verdict_words(verdict: Verdict) -> str:
    """One or two sentences a person reads first: does masking the region and inpainting now fail?"""
    attacks = [e for e in verdict.edits if e.kind == "attacker"]
    benign = [e for e in verdict.edits if e.kind == "benign"]
    failed = sum(bool(e.failed) for e in attacks)
    intact = sum(bool(e.intact) for e in benign)
    colour = _colour_name(verdict.target_colour)
    fill = f"a solid {colour} fill" if colour else "the target"
    inv = verdict.invisibility
    if verdict.protected:
        head = (f"PROTECTED against {verdict.model}: masking this region and inpainting now gives {fill} "
                f"({failed}/{len(attacks)} attacker edits fail).")
    else:
        head = (f"NOT PROTECTED against {verdict.model}: masking this region and inpainting still works "
                f"({failed}/{len(attacks)} attacker edits fail; a failed edit gives {fill}).")
    tail = (f"Edits elsewhere: {intact}/{len(benign)} intact. The change is "
            f"{'invisible' if inv['psnr'] >= 35 else 'faint'} (PSNR {inv['psnr']:.1f} dB, "
            f"at most {inv['linf_255']:.1f}/255 per pixel).")
    return f"{head} {tail}"


def _colour_name(rgb: list[float] | None) -> str | None:
    if rgb is None:
        return None
    return _COLOURS.get(tuple(round(v, 3) for v in rgb))
