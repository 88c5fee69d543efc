#!/usr/bin/env python
"""What moves the fill? Optimisers, steps, budgets and a low-frequency δ, measured on one model.

    python benchmarks/study_steerability.py DIR [--model backfire-s] [--images 3] [--crop 160]
                                            [--steps 100] [--out docs/steerability]

DIR holds ``NAME.png`` + ``NAME_mask.png`` pairs (e.g. ``scripts/make_sample_set.py``'s set); the first
pair of each kind (the name before the first ``-``) is used, up to ``--images``. Each photo is cut to a
``--crop`` px square centred on its region (a CPU budget: the fill of the compact models depends mostly
on the context near the hole; the crop is stated in the output). Every configuration keeps the paper's
objective (attack M and M⁺ toward the solid colour, keep the ring's fill) and changes one thing:

- optimisers at the paper's budget 6.375/255: ``paper`` (Adam lr 0.1, betas 0.5/0.5), ``adam-small``
  (Adam lr 0.002, betas 0.9/0.999), ``sign`` (PGD, first step ε/4, cosine decay), ``momentum``
  (MI-FGSM, same steps), ``sign-lowfreq`` (sign-PGD on a 4× coarser δ, bilinearly upsampled);
- budgets 4, 8, 16, 32/255 with sign-PGD (with its 6.375 run: a curve of distance against budget).

Measured along each run, on the 8-bit image (as a saved file would be): the mean distance
|F(x̃, M) − T| over M of the attacker's exact edit (the protocol's failed-edit rule is ≤ 0.15) and the
number of photos whose exact edit fails. Writes ``OUT.md`` (tables) and ``OUT.svg`` (two plots).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from backfire import io as bio
from backfire import masks as mask_ops
from backfire.inpainters import Inpainter, load_inpainter
from backfire.judge.metrics import mean_abs_in
from backfire.judge.verdict import FAIL_DISTANCE as FAIL_AT
from backfire.pixels import quantize
from backfire.protect import PAPER, protect
from backfire.protect.recipes import Recipe
from backfire.protect.targets import make_target

@dataclass
class Run:
    name: str
    recipe: Recipe
    group: str  # "optimiser" or "budget"


def runs(steps: int) -> list[Run]:
    base = PAPER.but(steps=steps)
    sign = base.but(optimiser="sign", lr=0.25)
    result = [
        Run("paper", base, "optimiser"),
        Run("adam-small", base.but(lr=0.002, betas=(0.9, 0.999)), "optimiser"),
        Run("sign", sign, "optimiser"),
        Run("momentum", base.but(optimiser="momentum", lr=0.25), "optimiser"),
        Run("sign-lowfreq", sign.but(stride=4), "optimiser"),
    ]
    result += [Run(f"sign ε={b:g}", sign.but(budget=b / 255), "budget") for b in (4, 8, 16, 32)]
    return result


def crop_around(image: torch.Tensor, region: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``side`` px square centred on the region's box, grown to keep 32 px of context around it."""
    h, w = region.shape
    x0, y0, x1, y1 = mask_ops.bbox(region)
    side = max(side, y1 - y0 + 64, x1 - x0 + 64)
    sy, sx = min(side, h), min(side, w)
    top = min(max((y0 + y1) // 2 - sy // 2, 0), h - sy)
    left = min(max((x0 + x1) // 2 - sx // 2, 0), w - sx)
    return image[:, top:top + sy, left:left + sx], region[top:top + sy, left:left + sx]


def pick_pairs(folder: Path, count: int) -> list[tuple[Path, Path]]:
    chosen, kinds = [], set()
    for image_path, mask_path in bio.find_pairs(folder):
        kind = image_path.stem.split("-")[0]
        if kind not in kinds:
            kinds.add(kind)
            chosen.append((image_path, mask_path))
    return chosen[:count]


def distance(model: Inpainter, image: torch.Tensor, region: torch.Tensor, target: torch.Tensor) -> float:
    saved = quantize(image)
    with torch.no_grad():
        fill = model(saved[None].to(model.device), region[None, None].to(model.device))[0].cpu()
    return mean_abs_in(fill, target, region)


def follow(run: Run, model: Inpainter, image: torch.Tensor, region: torch.Tensor,
           checkpoints: list[int]) -> tuple[dict[int, float], float]:
    """Exact-edit distance to the target at each checkpoint step, and the run's seconds."""
    target = make_target(image, run.recipe.target)
    curve = {0: distance(model, image, region, target)}

    def probe(step: int, current: torch.Tensor) -> None:
        if step in checkpoints:
            curve[step] = distance(model, current.cpu(), region, target)

    started = time.perf_counter()
    protect(image, region, model, run.recipe, on_image=probe)
    return curve, time.perf_counter() - started


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
"""The series colours, in order (a legend drawn elsewhere uses the same)."""


def svg_legend(names: list[str], x: float, y: float) -> str:
    """One row of coloured series names starting at (x, y), for plots drawn with ``legend=False``."""
    parts, at = [], x
    for i, name in enumerate(names):
        parts.append(f'<text x="{at:.0f}" y="{y}" font-size="11" fill="{COLOURS[i % len(COLOURS)]}">{name}</text>')
        at += 16 + 5.6 * len(name)
    return "\n".join(parts)


def svg_plot(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, x: float, y: float,
             log_x: bool = False, y_range: tuple[float, float] = (0.0, 0.7), fail_line: bool = True,
             legend: bool = True) -> str:
    """A line plot of ``series`` (y in ``y_range``, by default a distance in 0–0.7 with the failed-edit
    rule drawn) against ``xlabel``, as an SVG group at (x, y); ``legend`` names the series in the corner."""
    width, height, pad = 420, 260, 50
    y_lo, y_hi = y_range
    xs = [p[0] for points in series.values() for p in points]
    fx = (lambda v: math.log(max(v, 1))) if log_x else (lambda v: v)
    lo, hi = fx(min(xs)), fx(max(xs))
    sx = lambda v: x + pad + (fx(v) - lo) / max(hi - lo, 1e-9) * (width - pad - 10)  # noqa: E731
    sy = lambda v: y + 20 + (1 - (min(max(v, y_lo), y_hi) - y_lo) / (y_hi - y_lo)) * (height - pad)  # noqa: E731
    parts = [f'<text x="{x + width / 2}" y="{y + 12}" text-anchor="middle" font-size="13">{title}</text>']
    if fail_line:
        parts += [f'<line x1="{sx(min(xs))}" y1="{sy(FAIL_AT)}" x2="{sx(max(xs))}" y2="{sy(FAIL_AT)}" '
                  'stroke="#999" stroke-dasharray="4 3"/>',
                  f'<text x="{sx(max(xs)) - 2}" y="{sy(FAIL_AT) - 4}" text-anchor="end" font-size="10" '
                  'fill="#666">fails below (0.15)</text>']
    step = 0.1 if y_hi - y_lo > 0.3 else 0.05 if y_hi - y_lo > 0.12 else 0.02
    for i in range(math.ceil(y_lo / step - 1e-9), math.floor(y_hi / step + 1e-9) + 1):
        tick = i * step
        parts.append(f'<text x="{x + pad - 6}" y="{sy(tick) + 4}" text-anchor="end" font-size="10">'
                     f'{tick:.{1 if step == 0.1 else 2}f}</text>')
    last = -math.inf
    for tick in sorted(set(xs)):
        if sx(tick) - last < 20:  # crowded ticks (the tail of a log scale): label every other one
            continue
        last = sx(tick)
        parts.append(f'<text x="{sx(tick)}" y="{y + height - 14}" text-anchor="middle" font-size="10">{tick:g}</text>')
    parts.append(f'<text x="{x + width / 2}" y="{y + height + 2}" text-anchor="middle" font-size="11">{xlabel}</text>')
    parts.append(f'<line x1="{x + pad}" y1="{y + 20}" x2="{x + pad}" y2="{sy(y_lo)}" stroke="#333"/>')
    parts.append(f'<line x1="{x + pad}" y1="{sy(max(y_lo, 0.0))}" x2="{x + width - 10}" y2="{sy(max(y_lo, 0.0))}" '
                 'stroke="#333"/>')
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if legend:
            parts.append(f'<text x="{x + width - 12}" y="{y + 34 + 13 * i}" text-anchor="end" font-size="10" '
                         f'fill="{colour}">{name}</text>')
    return "\n".join(parts)


def photo_arguments(parser: argparse.ArgumentParser, steps: int, out: str) -> argparse.ArgumentParser:
    """The arguments every study takes: the set, the model, how many photos and how they are cut."""
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--crop", type=int, default=160)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--out", type=Path, default=Path(out))
    return parser


def load_photos(folder: Path, count: int, side: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, image, region) of the first pair of each kind in ``folder``, cut around the region."""
    photos = []
    for image_path, mask_path in pick_pairs(folder, count):
        loaded = bio.read_image(image_path)
        region = bio.read_mask(mask_path, size=loaded.size).mask
        photos.append((image_path.stem, *crop_around(loaded.pixels, region, side)))
    return photos


def main() -> None:
    parser = photo_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 100, "docs/steerability")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_inpainter(args.model, weights=args.weights)
    checkpoints = sorted({c for c in (5, 10, 20, 50, 100, 200, 500, 1000) if c < args.steps} | {args.steps})
    photos = load_photos(args.folder, args.images, args.crop)
    all_runs = runs(args.steps)
    results: dict[str, list[dict[int, float]]] = {}
    seconds: dict[str, float] = {}
    for run in all_runs:
        for name, image, region in photos:
            curve, took = follow(run, model, image, region, checkpoints)
            results.setdefault(run.name, []).append(curve)
            seconds[run.name] = seconds.get(run.name, 0.0) + took
            print(f"{run.name:14s} {name:24s} distance {curve[0]:.3f} → {curve[args.steps]:.3f}  {took:.0f} s",
                  flush=True)
    write(args, photos, all_runs, results, seconds, checkpoints)


def _mean_curve(curves: list[dict[int, float]], steps: list[int]) -> list[float]:
    return [sum(c[s] for c in curves) / len(curves) for s in steps]


def write(args, photos, all_runs, results, seconds, checkpoints) -> None:
    steps = [0, *checkpoints]
    n = len(photos)
    lines = [
        f"# Steerability of `{args.model}`: what moves the fill toward the target",
        "",
        f"`python benchmarks/study_steerability.py DIR --model {args.model} --images {args.images} "
        f"--crop {args.crop} --steps {args.steps}` — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Photos ({n}, each cut to a "
        f"{args.crop} px square around its region): {', '.join(p[0] for p in photos)}.",
        "",
        "Mean distance |F(x̃, M) − T| over M of the exact edit, on the 8-bit image (fails at ≤ 0.15); "
        "in brackets, photos whose exact edit fails.",
        "",
        "| run | budget /255 | " + " | ".join(f"step {s}" for s in steps) + " | s / photo |",
        "|---|---|" + "---|" * len(steps) + "---|",
    ]
    for run in all_runs:
        curves = results[run.name]
        cells = [f"{v:.3f} ({sum(c[s] <= FAIL_AT for c in curves)}/{n})"
                 for s, v in zip(steps, _mean_curve(curves, steps))]
        lines.append(f"| {run.name} | {run.recipe.budget * 255:g} | " + " | ".join(cells)
                     + f" | {seconds[run.name] / n:.0f} |")
    lines.append("")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")

    by_steps = {r.name: list(zip(steps, _mean_curve(results[r.name], steps)))
                for r in all_runs if r.group == "optimiser"}
    budget_runs = [r for r in all_runs if r.name == "sign" or r.group == "budget"]
    by_budget = {"sign-PGD": sorted((r.recipe.budget * 255, _mean_curve(results[r.name], [args.steps])[0])
                                    for r in budget_runs)}
    svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="880" height="290" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>',
           svg_plot(by_steps, f"distance to target vs steps (ε = 6.375/255, {args.model})", "steps", 0, 0, log_x=True),
           svg_plot(by_budget, f"distance after {args.steps} steps vs budget", "budget (/255)", 440, 0),
           "</svg>"]
    Path(f"{args.out}.svg").write_text("\n".join(svg) + "\n")
    print(f"wrote {args.out}.md and {args.out}.svg")


if __name__ == "__main__":
    main()
