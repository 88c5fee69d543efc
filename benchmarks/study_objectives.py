#!/usr/bin/env python
"""What should a failed edit look like? The objectives of the robust-recipe issue, measured on one model.

    python benchmarks/study_objectives.py DIR [--model backfire-s] [--images 3] [--crop 160] [--steps 30]
                                          [--out docs/objectives]

Same photos and crops as ``study_steerability.py`` (the first pair of each kind in DIR, cut to a square
around the region). Every run keeps the paper's edits (attack M and M⁺, keep the ring's fill) and its
optimiser is sign-PGD (which reaches the paper's result in ~5 steps, docs/steerability.md); only the
objective changes, at budgets 6.4 and 16/255:

- ``solid``: the paper's solid primary colour;
- ``inverted``: the inverted image (the paper's other variant);
- ``restore``: the original itself, after Markpainting (the removal fails by painting the content back);
- ``feature``: the generator's bottleneck features (the input of its decoder) for the masked input are
  pushed toward the features it computes when the hole is already painted with the solid colour
  (FFC/LaMa-family models only); the ring is still kept in pixel space.

Each result is judged on the 8-bit image by the protocol's rule for its target (``restore``: the fill is
at most half as far from the original as a clean edit's; the others: within 0.15 of the target), and
by region SSIM, the measure that compares different targets. Writes ``OUT.md``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from backfire import masks as mask_ops
from backfire.inpainters import Inpainter, load_inpainter
from backfire.inpainters.ffc import ConcatTupleLayer
from backfire.judge.verdict import judge
from backfire.pixels import quantize
from backfire.protect import PAPER, protect
from backfire.protect.engine import masked_mse
from backfire.protect.optimisers import SignDescent
from backfire.protect.targets import make_target
from study_steerability import load_photos, photo_arguments

OBJECTIVES = ("solid", "inverted", "restore", "feature")
BUDGETS_255 = (6.4, 16.0)
FAMILIES = ("exact", "dilate-8", "box", "strokes", "ring", "away-16")


def feature_protect(model: Inpainter, image: torch.Tensor, region: torch.Tensor, budget: float,
                    steps: int) -> torch.Tensor:
    """Sign-PGD on the bottleneck-feature objective; returns x̃ on the 8-bit grid."""
    generator = model.module.generator
    layers = list(generator.model)
    bottleneck = next(i for i, layer in enumerate(layers) if isinstance(layer, ConcatTupleLayer))
    captured: dict[str, torch.Tensor] = {}
    hook = layers[bottleneck].register_forward_hook(lambda _m, _i, out: captured.__setitem__("f", out))
    try:
        x = image.to(model.device)
        solid = make_target(x, "solid")
        plus = mask_ops.dilate(region, PAPER.dilation, shape="square")
        ring = plus - region
        attack = torch.stack([region, plus])[:, None].to(x)
        with torch.no_grad():
            # the decoder's input when the hole is already the solid colour: what we want it to "see"
            painted = torch.where(attack > 0, solid, x)
            inputs = torch.cat([model._pad(painted), model._pad(attack)], dim=1)
            goal = torch.nn.Sequential(*layers[:bottleneck + 1])(inputs)
            ring_goal = model(x[None], ring[None, None].to(x))
        delta = torch.zeros_like(x, requires_grad=True)
        optimiser = SignDescent(delta, 0.25 * budget, steps)
        for _ in range(steps):
            delta.grad = None
            perturbed = (x + delta).clamp(0, 1)
            model.surrogate(perturbed.expand(2, -1, -1, -1), attack)
            loss = ((captured["f"] - goal) ** 2).mean()
            keep = masked_mse(model.surrogate(perturbed[None], ring[None, None].to(x)), ring_goal,
                              ring[None, None].to(x))
            (loss + 2 * keep.sum()).backward()
            optimiser.step()
            with torch.no_grad():
                delta.copy_((x + delta.clamp(-budget, budget)).clamp(0, 1) - x)
        return quantize((x + delta).detach().clamp(0, 1)).cpu()
    finally:
        hook.remove()


def run_one(model: Inpainter, objective: str, image, region, budget: float, steps: int):
    if objective == "feature":
        protected = feature_protect(model, image, region, budget, steps)
        target = make_target(image, "solid")
    else:
        recipe = PAPER.but(optimiser="sign", lr=0.25, target=objective, steps=steps, budget=budget)
        result = protect(image, region, model, recipe)
        protected, target = result.protected, result.target
    verdict, _ = judge(image, protected, region, model, target, FAMILIES)
    return verdict


def main() -> None:
    args = photo_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]), 30,
                           "docs/objectives").parse_args()
    model = load_inpainter(args.model, weights=args.weights)
    photos = load_photos(args.folder, args.images, args.crop)
    rows = []
    for objective in OBJECTIVES:
        for budget_255 in BUDGETS_255:
            started, verdicts = time.perf_counter(), []
            for name, image, region in photos:
                verdicts.append(run_one(model, objective, image, region, budget_255 / 255, args.steps))
            seconds = (time.perf_counter() - started) / len(photos)
            rows.append(summarise(objective, budget_255, verdicts, seconds))
            print(" | ".join(rows[-1]), flush=True)
    write(args, photos, rows)


def summarise(objective: str, budget_255: float, verdicts, seconds: float) -> list[str]:
    attacks = [e for v in verdicts for e in v.edits if e.kind == "attacker"]
    exact = [e for v in verdicts for e in v.edits if e.name == "exact"]
    benign = [e for v in verdicts for e in v.edits if e.kind == "benign"]

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    return [objective, f"{budget_255:g}", f"{sum(e.failed for e in exact)}/{len(exact)}",
            f"{sum(e.failed for e in attacks)}/{len(attacks)}",
            f"{mean(e.metrics['target_distance_original'] for e in exact):.3f} → {mean(e.metrics['target_distance_protected'] for e in exact):.3f}",
            f"{mean(e.metrics['region_ssim_original'] for e in attacks):.3f} → {mean(e.metrics['region_ssim_protected'] for e in attacks):.3f}",
            f"{min(e.metrics['fidelity_ssim'] for e in benign):.4f}",
            f"{mean(v.invisibility['psnr'] for v in verdicts):.1f}", f"{seconds:.0f}"]


def write(args, photos, rows) -> None:
    header = ["objective", "budget /255", "exact fails", "attacker edits fail", "exact: distance to target (orig → prot)",
              "attacker region SSIM (orig → prot)", "benign fidelity SSIM (min)", "PSNR dB", "s / photo"]
    lines = [
        f"# Objectives against `{args.model}`: solid colour, inverted, restore, bottleneck features",
        "",
        f"`python benchmarks/study_objectives.py DIR --model {args.model} --images {args.images} --crop {args.crop} "
        f"--steps {args.steps}` — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Photos ({len(photos)}, each cut to a "
        f"{args.crop} px square around its region): {', '.join(p[0] for p in photos)}. Attacker edits: "
        f"{', '.join(f for f in FAMILIES if mask_ops.family_kind(f) == 'attacker')}; benign: "
        f"{', '.join(f for f in FAMILIES if mask_ops.family_kind(f) == 'benign')}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    Path(f"{args.out}.md").write_text("\n".join(lines))
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
