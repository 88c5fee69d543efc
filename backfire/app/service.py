"""What the app asks of backfire: every call into backfire's jobs, CLI and verdict API, in one place.

The app runs the CLI's own jobs (:mod:`backfire.jobs`) on the CLI's own request (:class:`backfire.jobs.Request`,
made and checked by ``Request.of`` from the page's fields), and loads models the CLI's way (ensembles written
``NAME[=WEIGHTS],...``), so a protection made in the browser is the one ``backfire protect`` makes. When
that API changes, this module is the one to adapt; the UI (:mod:`backfire.app.ui`) and the batch runner
(:mod:`backfire.app.batch`) only speak to it. Nothing here imports Gradio.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from backfire import io, jobs
from backfire.errors import ModelError
from backfire.inpainters.registry import DEFAULT_MODEL, available_models
from backfire.jobs import Request
from backfire.judge.outcome import Outcome
from backfire.judge.preview import captions
from backfire.judge.text import format_outcome
from backfire.judge.verdict import Verdict
from backfire.protect.recipes import DEFAULT_RECIPE, RECIPES, Recipe, get_recipe

MAX_PIXELS = io.DEFAULT_MAX_PIXELS
InputError = io.InputError
IMAGE_EXTENSIONS = io.IMAGE_EXTENSIONS
pair_files = io.pair_files  # the CLI's rule pairing NAME with NAME_mask
is_image = io.is_image
Task, BatchRow, BATCH_COLUMNS, write_batch_csv = jobs.Task, jobs.BatchRow, jobs.BATCH_COLUMNS, jobs.write_batch_csv
BUDGET_AUTO = jobs.BUDGET_AUTO
"""The budget field's "auto": ``Request.of(budget_255=BUDGET_AUTO, max_budget_255=…, min_psnr=…)`` searches for the
budget (:mod:`backfire.protect.search`); the photo's ``search`` then lists the budgets tried."""
PROBLEMS: tuple[type[Exception], ...] = (io.InputError, ModelError, ValueError)
"""Errors a user can fix (bad file, model, setting): shown as a message, never a crash."""

BUDGET_255_LIMITS = (jobs.MIN_BUDGET_255, jobs.MAX_BUDGET_255)  # the CLI's --budget rule, for the page's field
MIN_STEPS = jobs.MIN_STEPS
PROTECTED_SUFFIX = "_protected"  # NAME.png → NAME_protected.png: a download never takes the original's name

OnStep = Callable[[int, int, float], None]
Log = Callable[[str], None]


class Cancelled(Exception):
    """Raised from the step callback when the user pressed Cancel; nothing is written."""


@dataclass
class ProtectedPhoto:
    """One protected photo: the files written beside it and its outcome (a verdict per model, strategy, draw);
    ``search``: with the budget ``auto``, the JSON's record of the budgets tried (else None)."""

    protected: Path
    report: Path
    preview: Path
    outcome: Outcome
    notes: list[str] = field(default_factory=list)
    search: dict | None = None

    @property
    def verdicts(self) -> list[Verdict]:
        return self.outcome.verdicts


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


def resists_recompression(recipe: str | Recipe) -> bool:
    """Whether the recipe (a name, or a request's recipe) trains against JPEG and other cleaning (else: warn
    against recompressing)."""
    return bool((get_recipe(recipe) if isinstance(recipe, str) else recipe).cleaning)


# --------------------------------------------------------------------------------------- messages

# The CLI's advice, as the page gives it: the app has no flags, it has fields and buttons (the first match of a
# flag's phrase wins; every message that names a flag the page can reach is tested in tests/test_app.py).
_PAGE_WORDS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"; raise the limit with --max-pixels \d+ \(or more\) if you trust this file",
     "; scale it down to protect it here"),
    (r"draw the region with --box", "paint the region, or draw it with Add box"),
    (r"--box\b", "Box"),
    (r"--faces\b", "Detect faces"),
    (r"--text\b", "Detect text"),
    (r"--weights\b", "the Weights field"),
    (r"--model\b", "the Model field"),
))


def page_message(error: BaseException, private: Iterable[Path] = ()) -> str:
    """An error's one line as the page shows it: the files named as the user named them (the folders the app
    keeps its copies in, ``private``, are left out) and the page's controls instead of the CLI's flags."""
    text = str(error)
    for folder in private:
        for spelling in {str(folder), str(folder.resolve())}:
            text = re.sub(re.escape(spelling) + r"/(?:[^\s/]+/)*", "", text)
    for pattern, words in _PAGE_WORDS:
        text = pattern.sub(words, text)
    return text


# ------------------------------------------------------------------------------------------ files

def protected_name(photo: Path) -> str:
    """The protected file's name for ``photo``: ``NAME_protected.png`` (PNG: a lossy copy weakens the protection)."""
    return f"{photo.stem}{PROTECTED_SUFFIX}.png"


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


def faces_available() -> bool:
    """Whether the faces detector (OpenCV, extra ``eval``) can run here."""
    from backfire import regions

    return regions.faces_available()


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


def load_models(request: Request) -> list:
    """The models of ``request.model`` (one, or an ensemble ``a,b``), loaded as ``--model`` loads them;
    kept for the next job."""
    with _models_lock:
        if request.models_key not in _models:
            _models[request.models_key] = request.load_models()
        return _models[request.models_key]


# ------------------------------------------------------------------------------------------- jobs

def protect(image: Path, mask: Path, out: Path, request: Request, on_step: OnStep | None = None,
            log: Log | None = None) -> ProtectedPhoto:
    """``backfire protect IMAGE --mask MASK -o OUT`` with ``request`` (:meth:`backfire.jobs.Request.of`, which
    checked it): writes OUT (PNG), OUT.json and OUT.preview.png; the verdicts are computed on the saved file read
    back."""
    notes: list[str] = []
    task = jobs.plan(image, mask, out).tasks[0]
    judged = jobs.protect_task(task, load_models(request), request, on_step=on_step, log=_both(notes, log))
    report, preview = jobs.report_paths(task.out)
    return ProtectedPhoto(task.out, report, preview, judged.outcome, notes, judged.record.get("search"))


def attack(image: Path, mask: Path, out: Path, request: Request, log: Log | None = None) -> Path:
    """``backfire edit``: the attacker's plain inpainting of the region, written to ``out`` (an ensemble's first
    model's)."""
    task = jobs.plan(image, mask, out).tasks[0]
    jobs.edit_task(task, load_models(request)[0], request.max_pixels, log or (lambda _: None))
    return task.out


def verify(original: Path, protected: Path, mask: Path, request: Request, log: Log | None = None) -> Outcome:
    """``backfire verify ORIGINAL PROTECTED --mask MASK``: every model, strategy and draw, as ``protect`` judges."""
    return jobs.verify_files(original, protected, mask, load_models(request), request, log or (lambda _: None))


def _both(notes: list[str], log: Log | None) -> Log:
    def record(message: str) -> None:
        notes.append(message)
        if log is not None:
            log(message)
    return record


# ---------------------------------------------------------------------------------------- verdict

def sheet_caption(outcome: Outcome) -> str:
    """What the preview sheet's tiles show, left to right, as the sheet itself captions them."""
    first = outcome.verdicts[0]
    shown = jobs.sheet_edits([edit.name for edit in first.edits])
    return " | ".join(captions(first.invisibility["linf_255"], *shown))


def verdict_numbers(outcome: Outcome) -> str:
    """The CLI's verdict tables and its overall line."""
    return format_outcome(outcome)


_COLOURS = {(1.0, 0.0, 0.0): "red", (0.0, 1.0, 0.0): "green", (0.0, 0.0, 1.0): "blue"}


def verdict_words(outcome: Outcome) -> str:
    """One or two sentences a person reads first: does masking the region and inpainting now fail, however the
    attacker runs it (every model, strategy and draw judged)?"""
    attacks, benign = outcome.attacker_edits, outcome.benign_edits
    failed, intact = sum(d.ok for d in attacks), sum(d.ok for d in benign)
    first = outcome.verdicts[0]
    colour = _colour_name(first.target_colour)
    fill = f"a solid {colour} fill" if colour else "the target"
    against = " and ".join(outcome.models)
    ways = len(outcome.verdicts)
    every = "" if ways == 1 else f" on every one of the {ways} ways the attacker can run it"
    inv = first.invisibility
    if outcome.protected:
        head = (f"PROTECTED against {against}: masking this region and inpainting now gives {fill} "
                f"({failed}/{len(attacks)} attacker edits fail{every}).")
    else:
        weakest = outcome.weakest
        worst = "" if weakest is None or ways == 1 else f"; {weakest.edit} on {weakest.where} inpaints normally"
        head = (f"NOT PROTECTED against {against}: masking this region and inpainting still works "
                f"({failed}/{len(attacks)} attacker edits fail{every}; a failed edit gives {fill}{worst}).")
    tail = (f"Edits elsewhere: {intact}/{len(benign)} intact. The change is "
            f"{'invisible' if inv['psnr'] >= 35 else 'faint'} (PSNR {inv['psnr']:.1f} dB, "
            f"at most {inv['linf_255']:.1f}/255 per pixel).")
    return f"{head} {tail}"


def _colour_name(rgb: list[float] | None) -> str | None:
    if rgb is None:
        return None
    return _COLOURS.get(tuple(round(v, 3) for v in rgb))
