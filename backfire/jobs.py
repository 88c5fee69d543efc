"""The road from files to verdict: read → protect → save → read back → judge → reports.

The CLI calls these; they hold the file-level rules (which paths are written, what is checked before
any work starts, that every verdict is computed on the saved file read back).
"""

from __future__ import annotations

import io as _io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from backfire import io
from backfire.inpainters.base import Inpainter
from backfire.judge.verdict import Verdict, judge, preview
from backfire.protect.engine import StepCallback, protect
from backfire.protect.recipes import Recipe
from backfire.protect.targets import make_target

Log = Callable[[str], None]
LOSSY_SUFFIXES = {".jpg", ".jpeg", ".webp"}


@dataclass(frozen=True)
class Task:
    """One image to work on and where its outputs go."""

    image: Path
    mask: Path
    out: Path

    @property
    def inputs(self) -> tuple[Path, ...]:
        return (self.image, self.mask)


def report_paths(out: Path) -> tuple[Path, Path]:
    """``out.json`` and ``out.preview.png`` beside the protected image."""
    return out.with_suffix(".json"), out.with_suffix(".preview.png")


def plan(image: Path, mask: Path | None, out: Path, suffix: str = ".png") -> list[Task]:
    """The tasks for a file or a folder, checked before any work starts.

    A folder's images are paired with ``NAME_mask.png`` and written as ``out/NAME.png`` (PNG always:
    a lossy copy would weaken the protection); the output folder is created once every check passed.
    Raises :class:`io.InputError` when a planned output would overwrite any input.
    """
    if image.is_dir():
        if mask is not None:
            raise io.InputError(f"{image}: --mask is not used with a folder: masks are found as NAME_mask.png")
        if out.exists() and not out.is_dir():
            raise io.InputError(f"{out}: is a file; with a folder of images, -o must be a folder")
        tasks = [Task(img, msk, out / (img.stem + suffix)) for img, msk in io.find_pairs(image)]
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
        out.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        io.check_output(task.out, inputs)
    return tasks


def load(task: Task, max_pixels: int, log: Log) -> tuple[Tensor, Tensor]:
    """The image and region of a task, with every conversion said aloud."""
    image = io.read_image(task.image, max_pixels=max_pixels)
    region = io.read_mask(task.mask, size=image.size, max_pixels=max_pixels)
    for note in (*image.notes, *region.notes):
        log(f"note: {note}")
    return image.pixels, region.mask


def protect_task(task: Task, inpainters: Sequence[Inpainter], recipe: Recipe, *, budget: float | None,
                 steps: int | None, target: str | None, seed: int, max_pixels: int,
                 on_step: StepCallback | None, log: Log) -> list[Verdict]:
    """Protect one image against every model of ``inpainters``, save it, and judge the saved file read back
    on each model; write ``.json`` (the first model's verdict, the others under ``ensemble``) and preview."""
    image, region = load(task, max_pixels, log)
    if task.out.suffix.lower() in LOSSY_SUFFIXES:
        log(f"warning: {task.out.suffix} is lossy; the compression weakens the protection (PNG keeps it)")
    result = protect(image, region, inpainters, recipe, budget=budget, steps=steps, target=target,
                     seed=seed, on_step=on_step)
    io.save_image(result.protected, task.out, protect_inputs=task.inputs)
    saved = io.read_image(task.out, max_pixels=max_pixels).pixels
    judged = [judge(image, saved, region, model, result.target, seed=seed) for model in inpainters]
    verdicts = [verdict for verdict, _ in judged]
    record = {
        "image": str(task.image), "mask": str(task.mask), "protected_image": str(task.out),
        "recipe": result.recipe.as_dict(), "budget_255": result.recipe.budget * 255, "seed": seed,
        "seconds": result.seconds, "losses": result.losses, **verdicts[0].as_dict(),
    }
    if len(verdicts) > 1:
        record["ensemble"] = [v.as_dict() for v in verdicts]
    write_reports(task, record, image, saved, judged[0][1])
    return verdicts


def write_reports(task: Task, record: dict, image: Tensor, saved: Tensor, fills: list) -> None:
    json_path, preview_path = report_paths(task.out)
    write_json(json_path, record, task.inputs)
    attack = next((f for f in fills if f.name == "exact"), fills[0])
    benign = next((f for f in fills if f.name == "ring"), None)
    buffer = _io.BytesIO()
    preview(image, saved, attack, benign).save(buffer, format="PNG")
    io.write_bytes_atomic(preview_path, buffer.getvalue(), protect_inputs=task.inputs)


def edit_task(task: Task, inpainter: Inpainter, max_pixels: int, log: Log) -> None:
    """Plain inpainting of the masked region — exactly what an attacker runs."""
    image, region = load(task, max_pixels, log)
    filled = inpainter(image[None], region[None, None])[0].detach().float().cpu()
    io.save_image(filled, task.out, protect_inputs=task.inputs)


def verify_files(original: Path, protected: Path, mask: Path, inpainter: Inpainter, target: str, seed: int,
                 max_pixels: int, log: Log) -> Verdict:
    """Judge an already protected file against its original."""
    image = io.read_image(original, max_pixels=max_pixels)
    saved = io.read_image(protected, max_pixels=max_pixels)
    if saved.size != image.size:
        raise io.InputError(f"{protected} is {saved.size[0]}×{saved.size[1]} but {original} is "
                            f"{image.size[0]}×{image.size[1]}: not a protected copy of it")
    region = io.read_mask(mask, size=image.size, max_pixels=max_pixels)
    for note in (*image.notes, *saved.notes, *region.notes):
        log(f"note: {note}")
    target_image = make_target(image.pixels, target)
    return judge(image.pixels, saved.pixels, region.mask, inpainter, target_image, seed=seed)[0]


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
