"""The road from files to verdict: read → protect → save → read back → judge → reports.

The CLI, ``backfire evaluate`` and the app call these; they hold the file-level rules (which paths are
written, what is checked before any work starts, that every verdict is computed on the saved file read
back, that an interrupted image leaves no half-written set behind).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from torch import Tensor

from backfire import io
from backfire.inpainters.base import Inpainter
from backfire.inpainters.pipelines import AUTO, default_pipeline, wrap
from backfire.inpainters.registry import CHOICES, load_inpainter, resolve_models
from backfire.judge.preview import preview
from backfire.judge.verdict import VERDICT_FAMILIES, EditImages, Verdict, judge
from backfire.protect.engine import Protection, StepCallback, protect
from backfire.protect.recipes import Recipe
from backfire.protect.targets import TargetKind, make_target

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


@dataclass(frozen=True)
class Settings:
    """How to protect: the recipe (with any budget/steps/target override applied), the seed, the pixel cap."""

    recipe: Recipe
    seed: int = 0
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS


@dataclass
class Judged:
    """One image protected, saved, read back and judged: what ``protect`` and ``evaluate`` both keep."""

    image: Tensor
    region: Tensor
    saved: Tensor
    protection: Protection
    verdicts: list[Verdict]
    fills: list[list[EditImages]]


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


def plan(image: Path, mask: Path | None, out: Path, suffix: str = ".png") -> Plan:
    """The tasks for a file or a folder, every output checked (format, folder, writable) before any work.

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
        io.check_image_output(task.out, inputs)
    return Plan(tasks, unpaired)


def load(task: Task, max_pixels: int | None, log: Log, keep_alpha: bool = False) -> tuple[io.LoadedImage, Tensor]:
    """The image and region of a task, with every conversion said aloud."""
    image = io.read_image(task.image, max_pixels=max_pixels, keep_alpha=keep_alpha)
    region = io.read_mask(task.mask, size=image.size, max_pixels=max_pixels)
    for note in (*image.notes, *region.notes):
        log(f"note: {note}")
    return image, region.mask


JudgeProgress = Callable[[str, int, int], None]
"""``on_judge(model name, edits done, edits in all)``, called as the verdict goes."""


def protect_and_judge(image: Tensor | io.LoadedImage, region: Tensor, inpainters: Sequence[Inpainter],
                      settings: Settings, out: Path, *, protect_inputs: Sequence[Path],
                      judged_by: Sequence[Inpainter] | None = None, families: Sequence[str] = VERDICT_FAMILIES,
                      on_step: StepCallback | None = None, on_judge: JudgeProgress | None = None,
                      every_strategy: bool = True, protection: Protection | None = None) -> Judged:
    """Protect ``image`` against ``inpainters``, save it to ``out``, read it back and judge the saved file.

    The one home of protect-and-judge (``backfire protect`` and ``backfire evaluate`` both call it).
    ``image`` read with :func:`backfire.io.read_image` keeps its mode: a greyscale photo gets a greyscale
    perturbation and is written greyscale, a transparent one keeps its alpha untouched.
    ``judged_by``: the models whose edits are judged (default: every model of the ensemble), each with every
    strategy its tool applies to a photo this size (``every_strategy``; else the default one only). The
    clean fills the optimisation already computed are reused by the verdict, never run twice. ``protection``:
    the optimisation already ran (a runner protected a batch of photos at once): save and judge its result.
    """
    loaded = image if isinstance(image, io.LoadedImage) else None
    pixels = image.pixels if loaded is not None else image
    grey, alpha = (loaded.grey, loaded.alpha) if loaded is not None else (False, None)
    result = protection or protect(pixels, region, inpainters, settings.recipe, seed=settings.seed, grey=grey,
                                   on_step=on_step)
    io.save_image(result.protected, out, protect_inputs=protect_inputs, grey=grey, alpha=alpha)
    # every verdict is about the file as written
    saved = io.read_image(out, max_pixels=settings.max_pixels, keep_alpha=alpha is not None).pixels
    verdicts, fills = [], []
    for model in judged_by or inpainters:
        index = list(inpainters).index(model) if model in inpainters else -1
        known = result.clean_fills[index] if index >= 0 and result.clean_fills else ()
        progress = None if on_judge is None else (lambda done, total, name=model.name: on_judge(name, done, total))
        for strategy, tool in _strategies(model, tuple(pixels.shape[-2:]))[:None if every_strategy else 1]:
            verdict, images = judge(pixels, saved, region, tool, result.target, tuple(families), seed=settings.seed,
                                    clean_fills=known if strategy is None else (), target_kind=result.recipe.target,
                                    on_edit=progress)
            verdict.default_strategy = strategy is None
            verdicts.append(verdict)
            fills.append(images)
    return Judged(pixels, region, saved, result, verdicts, fills)


def _strategies(model: Inpainter, size: tuple[int, int]) -> list[tuple[str | None, Inpainter]]:
    """The attacker's default edit (``None``: the model as given) and, for a tool with settings (IOPaint's
    HD strategies), every other edit that tool makes of a photo this size: the verdict judges them all."""
    default = model.strategy_for(size)
    return [(None, model)] + [(s, model.with_strategy(s)) for s in model.strategies(size) if s != default]


def protect_task(task: Task, inpainters: Sequence[Inpainter], settings: Settings, *,
                 on_step: StepCallback | None = None, on_judge: JudgeProgress | None = None,
                 log: Log = lambda message: None, loaded: tuple[io.LoadedImage, Tensor] | None = None,
                 protection: Protection | None = None) -> list[Verdict]:
    """Protect one image against every model of ``inpainters``, save it, and judge the saved file read back
    on each model; write ``.json`` (the first model's verdict, the others under ``ensemble``) and preview.
    ``loaded`` (:func:`load`'s image and region) and ``protection``: a runner (:mod:`backfire.runners`) already
    read the task and protected it in a batch.

    Interrupted (Ctrl-C) after the image was saved, the task's outputs are removed again: a protected
    file never stands without its verdict.
    """
    loaded, region = loaded or load(task, settings.max_pixels, log, keep_alpha=True)
    image = loaded.pixels
    if task.out.suffix.lower() in io.LOSSY_SUFFIXES:
        log(f"warning: {task.out.suffix} is lossy; the compression weakens the protection (PNG keeps it)")
    if on_step is not None and protection is None:
        on_step(0, settings.recipe.steps, None)  # the wait for the first step shows too
    try:
        judged = protect_and_judge(loaded, region, inpainters, settings, task.out, protect_inputs=task.inputs,
                                   on_step=on_step, on_judge=on_judge, protection=protection)
        record = {
            "image": str(task.image), "mask": str(task.mask), "protected_image": str(task.out),
            "recipe": judged.protection.recipe.as_dict(), "budget_255": judged.protection.recipe.budget * 255,
            "seed": settings.seed, "seconds": judged.protection.seconds, "losses": judged.protection.losses,
            **judged.verdicts[0].as_dict(),
        }
        defaults = [v for v in judged.verdicts if v.default_strategy]
        if len(defaults) > 1:
            record["ensemble"] = [v.as_dict() for v in defaults]
        record["verdicts"] = [v.as_dict() for v in judged.verdicts]  # every model × every strategy that applies
        write_reports(task, record, image, judged.saved, judged.fills[0])
    except KeyboardInterrupt:
        removed = [p for p in (task.out, *report_paths(task.out)) if p.exists()]
        for path in removed:
            path.unlink()
        raise Interrupted(task, removed) from None
    return judged.verdicts


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a task; the files of the task already written were removed again (listed)."""

    def __init__(self, task: Task, removed: list[Path]):
        super().__init__(task.image.name)
        self.task, self.removed = task, removed


@dataclass(frozen=True)
class BatchRow:
    """One line of a folder run's ``batch.csv``."""

    image: str
    status: str  # "protected" | "not protected" | "skipped"
    output: str = ""
    attacker_failed: str = ""
    benign_intact: str = ""
    why: str = ""

    @classmethod
    def skipped(cls, image: Path, why: str) -> BatchRow:
        return cls(image.name, "skipped", why=why)

    @classmethod
    def of(cls, task: Task, verdicts: Sequence[Verdict]) -> BatchRow:
        first = verdicts[0]
        attacks, benign = first.attacker_edits, first.benign_edits
        return cls(task.image.name, "protected" if all(v.protected for v in verdicts) else "not protected",
                   str(task.out), f"{sum(e.failed for e in attacks)}/{len(attacks)}",
                   f"{sum(e.intact for e in benign)}/{len(benign)}")


def write_batch_summary(out_dir: Path, rows: Sequence[BatchRow], protect_inputs: Sequence[Path]) -> Path:
    """``out_dir/batch.csv``: every image of a folder run, protected or skipped and why."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(BatchRow)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in sorted(rows, key=lambda r: r.image))
    path = out_dir / "batch.csv"
    io.write_text_atomic(path, buffer.getvalue(), protect_inputs=protect_inputs)
    return path


def write_reports(task: Task, record: dict, image: Tensor, saved: Tensor, fills: list[EditImages]) -> None:
    json_path, preview_path = report_paths(task.out)
    write_json(json_path, record, task.inputs)
    attack = next((f for f in fills if f.name == "exact"), fills[0])
    benign = next((f for f in fills if f.name == "ring"), None)
    buffer = _io.BytesIO()
    preview(image, saved, attack, benign).save(buffer, format="PNG")
    io.write_bytes_atomic(preview_path, buffer.getvalue(), protect_inputs=task.inputs)


def edit_task(task: Task, inpainter: Inpainter, max_pixels: int | None, log: Log) -> None:
    """Plain inpainting of the masked region — exactly what an attacker runs."""
    image, region = load(task, max_pixels, log)
    filled = inpainter(image.pixels[None], region[None, None])[0].detach().float().cpu()
    io.save_image(filled, task.out, protect_inputs=task.inputs, grey=image.grey)


def verify_files(original: Path, protected: Path, mask: Path, inpainter: Inpainter, target: TargetKind, seed: int,
                 max_pixels: int | None, log: Log) -> Verdict:
    """Judge an already protected file against its original."""
    image = io.read_image(original, max_pixels=max_pixels)
    saved = io.read_image(protected, max_pixels=max_pixels)
    if saved.size != image.size:
        raise io.InputError(f"{protected} is {saved.size[0]}×{saved.size[1]} but {original} is "
                            f"{image.size[0]}×{image.size[1]}: not a protected copy of it")
    region = io.read_mask(mask, size=image.size, max_pixels=max_pixels)
    for note in (*image.notes, *saved.notes, *region.notes):
        log(f"note: {note}")
    return judge(image.pixels, saved.pixels, region.mask, inpainter, make_target(image.pixels, target), seed=seed,
                 target_kind=target)[0]


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
