#!/usr/bin/env python
"""Forward time, and seconds per image for recipe `paper` with its ratio to one fwd+bwd pass.

    python benchmarks/bench_paper_recipe.py [--model backfire-s|lama] [--weights W] [--sizes 256,512]
                                            [--steps 20] [--device cpu] [--threads N] [--recipes paper,robust]

With several ``--recipes`` each gets its own row, measured in the same run, and a last column gives its
cost as a multiple of the first recipe's.

``--model backfire-s`` (default) is the shipped embedded model. ``--model lama`` without ``--weights``
is a random-weight generator of the big-LaMa architecture (51 M parameters): cost depends on the
architecture and the image size, not on the weights. All figures of a row are measured in the same
run, on the same machine. With ``--steps`` below 20 the per-image figure is extrapolated as
setup + 20 × (measured seconds per step), and the table says so.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from backfire.examples import example_photo
from backfire.inpainters import Inpainter, load_inpainter
from backfire.inpainters.fixtures import random_lama_generator
from backfire.inpainters.lama import BIG_LAMA, LamaInpainter
from backfire.protect import PAPER, Recipe, get_recipe, protect


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pass_seconds(model: Inpainter, size: int, repeats: int, backward: bool) -> float:
    """Median seconds of one forward (+ backward) pass of one image (mask = the example logo)."""
    image, mask = example_photo(size, size)
    x = image[None].to(model.device).requires_grad_(backward)
    m = mask[None, None].to(model.device)
    times = []
    for _ in range(repeats + 1):  # the first pass warms up allocators and kernels
        _sync(model.device)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = model(x, m)
            if backward:
                out.sum().backward()
        _sync(model.device)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def recipe_seconds(model: Inpainter, size: int, steps: int, recipe: Recipe = PAPER) -> tuple[float, float]:
    """(seconds per image for the full recipe, seconds per step), measured over ``steps`` steps."""
    image, mask = example_photo(size, size)
    stamps: list[float] = []
    _sync(model.device)
    start = time.perf_counter()
    protect(image, mask, model, recipe, steps=steps, on_step=lambda *_: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else total
    setup = stamps[0] - start - per_step
    return setup + recipe.steps * per_step, per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--steps", type=int, default=PAPER.steps, help="steps to measure (≥ 2)")
    parser.add_argument("--repeats", type=int, default=3, help="fwd+bwd passes to time (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recipes", default="paper", help="comma-separated recipe names (default paper)")
    args = parser.parse_args()
    recipes = [get_recipe(r.strip()) for r in args.recipes.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.model == "lama" and args.weights is None:
        model: Inpainter = LamaInpainter(random_lama_generator(BIG_LAMA), device=device)
        what = "big-LaMa architecture, random weights"
    else:
        model = load_inpainter(args.model, weights=args.weights, device=device)
        what = model.name
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"machine: {platform.machine()} {name}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"model: {what}, {sum(p.numel() for p in model.module.parameters()) / 1e6:.2f} M parameters, fp32")
    print(f"recipes: {', '.join(f'{r.name} ({r.steps} steps × {len(r.terms)} edits)' for r in recipes)}")
    print(f"{'size':>9} {'recipe':>8} {'fwd s':>7} {'fwd+bwd s':>10} {'s/step':>8} {'s/image':>9} {'ratio':>7} "
          f"{'× first':>8}  note")
    for size in (int(s) for s in args.sizes.split(",")):
        forward = pass_seconds(model, size, args.repeats, backward=False)
        one = pass_seconds(model, size, args.repeats, backward=True)
        first = None
        for recipe in recipes:
            per_image, per_step = recipe_seconds(model, size, max(2, args.steps), recipe)
            first = first or per_image
            note = "measured" if args.steps >= recipe.steps else f"extrapolated from {max(2, args.steps)} steps"
            print(f"{size:>4}×{size:<4} {recipe.name:>8} {forward:>7.3f} {one:>10.2f} {per_step:>8.2f} "
                  f"{per_image:>9.1f} {per_image / one:>7.1f} {per_image / first:>8.2f}  {note}", flush=True)
    print("ratio = seconds per protected image / seconds of one fwd+bwd pass of one image")


if __name__ == "__main__":
    main()
