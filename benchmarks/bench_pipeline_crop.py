#!/usr/bin/env python
"""What protecting a phone photo costs when the attacker's tool crops: full frame vs the crop alone.

    python benchmarks/bench_pipeline_crop.py [--model backfire-s] [--size 4000x3000] [--region 300x200]
                                             [--steps 3] [--threads 1] [--device cpu]

IOPaint inpaints a photo whose long side is over 800 px one crop window at a time (its default HD
strategy ``Crop``: the region's bounding box plus 128 px a side), so protecting a 12-megapixel photo
against it needs gradients through those windows only. Side by side, in one run, recipe ``paper``
(3 edits a step) through the ``iopaint`` pipeline on:

- the whole photo, as ``backfire protect`` runs it: the engine sees that IOPaint crops this photo and
  optimises on the bounding box of the windows of the recipe's masks only (``pipelines.support`` +
  ``IOPaintPipeline.framed``: the same edits, δ zero outside), and
- the region's crop window alone, saved as a photo of its own (``Original``: the same pixels).

It prints seconds per step (from the time between steps, so the one-off setup is excluded), the
ratio, and, to split the full-frame cost, one forward+backward of the pipeline alone on each (the
model's share) — the rest of a full-frame step is the engine's per-pixel work on 12 M pixels.
Paper recipe: 20 steps; the per-image figure is setup + 20 × the measured seconds per step.
Seconds are this process's CPU seconds (``time.process_time``): with one thread they are the work
done, and they stay meaningful on a shared, busy machine where wall-clock time is not; the wall
clock is printed too.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from backfire.examples import example_photo
from backfire.inpainters import load_inpainter
from backfire.inpainters.pipelines import bounding_box, support, wrap
from backfire.protect import PAPER, protect
from backfire.protect.engine import term_mask


def _pair(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def recipe_seconds(image: torch.Tensor, region: torch.Tensor, attacker, steps: int
                   ) -> tuple[float, float, float]:
    """(setup CPU seconds, CPU seconds per step, wall seconds per step) of recipe paper over ``steps`` steps."""
    stamps: list[tuple[float, float]] = []
    start = time.process_time()

    def stamp(*_) -> None:
        stamps.append((time.process_time(), time.perf_counter()))

    protect(image, region, attacker, PAPER, steps=steps, on_step=stamp)
    per_step = (stamps[-1][0] - stamps[0][0]) / (len(stamps) - 1)
    wall = (stamps[-1][1] - stamps[0][1]) / (len(stamps) - 1)
    return stamps[0][0] - start - per_step, per_step, wall


def pass_seconds(image: torch.Tensor, region: torch.Tensor, attacker) -> float:
    """CPU seconds of one forward+backward of the pipeline for the paper recipe's three masks (one batch)."""
    masks = torch.stack([term_mask(region, term, PAPER.dilation) for term in PAPER.terms])[:, None]
    seconds = []
    for _ in range(2):  # the first pass warms up the allocator and the kernels
        x = image[None].expand(len(masks), -1, -1, -1).clone().requires_grad_(True)
        start = time.process_time()
        out = attacker(x, masks)
        (out * masks).sum().backward()
        seconds.append(time.process_time() - start)
    return seconds[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--size", type=_pair, default=(4000, 3000), help="photo WxH")
    parser.add_argument("--region", type=_pair, default=(300, 200), help="protected region WxH, centred")
    parser.add_argument("--steps", type=int, default=3, help="steps to measure (≥ 2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (width, height), (rw, rh) = args.size, args.region
    attacker = wrap(load_inpainter(args.model, weights=args.weights, device=args.device), "iopaint")

    image, _ = example_photo(width, height, seed=0)
    region = torch.zeros(height, width)
    left, top = (width - rw) // 2, (height - rh) // 2
    region[top:top + rh, left:left + rw] = 1
    (wl, wt, wr, wb), = attacker.windows(region)
    crop_image, crop_region = image[:, wt:wb, wl:wr].clone(), region[wt:wb, wl:wr].clone()
    recipe_masks = torch.stack([term_mask(region, term, PAPER.dilation) for term in PAPER.terms])
    bl, bt, br, bb = bounding_box(support(attacker, recipe_masks[:, None]))

    name = platform.processor() or platform.machine()
    print(f"machine: {name}, {torch.get_num_threads()} threads, torch {torch.__version__}; model {attacker.name}")
    print(f"photo {width}×{height}, region {rw}×{rh}; IOPaint's window {wr - wl}×{wb - wt}; "
          f"recipe paper ({len(PAPER.terms)} edits a step), {args.steps} steps measured")
    print(f"the windows of the recipe's masks fit in {br - bl}×{bb - bt}")
    rows = [("whole photo", image, region, attacker, "Crop"),
            ("crop alone", crop_image, crop_region, attacker, attacker.strategy_for(tuple(crop_image.shape[1:])))]
    results = []
    for label, img, reg, model, strategy in rows:
        seen = (attacker.support(reg).mean().item() if model is attacker else 1.0)
        one_pass = pass_seconds(img, reg, model)
        setup, per_step, wall = recipe_seconds(img, reg, model, max(2, args.steps))
        results.append(per_step)
        print(f"{label:>12}: {img.shape[2]}×{img.shape[1]} {strategy:<8} model sees {seen:6.2%} of it; "
              f"pipeline fwd+bwd {one_pass:6.2f} s; {per_step:6.2f} s/step (wall {wall:6.2f}); "
              f"setup {setup:5.1f} s; ≈ {setup + PAPER.steps * per_step:6.1f} s per image (20 steps)", flush=True)
    print(f"per step (CPU seconds), whole photo relative to the crop alone: {results[0] / results[1]:.2f} ×")


if __name__ == "__main__":
    main()
