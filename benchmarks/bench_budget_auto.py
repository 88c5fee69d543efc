#!/usr/bin/env python
"""What the warm start of ``--budget auto`` buys: the search's rungs beside the same rungs run one by one from scratch.

    python benchmarks/bench_budget_auto.py [--model backfire-s] [--size 128x96] [--seed 0] [--steps 20]
                                           [--max-budget 64] [--recipe paper] [--no-chain] [--device cpu]
                                           [--threads N]

Per rung of the ladder (:mod:`backfire.protect.search`, up to ``--max-budget``, no PSNR floor so that every rung
runs): the search itself (:func:`backfire.protect.search.search`, each rung warm-started from the one before,
judged by the real verdict), the rung from scratch with the same steps, and the rung from scratch with as many
steps as the warm chain has run by then (what a cold run needs to have had the same optimisation; ``--no-chain``
leaves it out). Each column:
optimisation seconds, the deciding attacker edit's fill distance to the target (fails at ≤ 0.15) and the verdict;
the warm rung's visibility (PSNR, CIEDE2000 ΔE mean and 99th percentile). Every verdict is the protocol's
(every trial, the verdict families) on the 8-bit image the file holds. The photo is a project-made one
(:func:`backfire.examples.example_photo`): the numbers are a property of that photo and the model.
"""

from __future__ import annotations

import argparse
import platform

import torch

from backfire.examples import example_photo
from backfire.inpainters.pipelines import default_pipeline, wrap
from backfire.inpainters.registry import load_inpainter
from backfire.judge.colour import delta_e
from backfire.judge.outcome import Outcome, judge_every
from backfire.protect.engine import Protection, protect
from backfire.protect.recipes import PAPER, RECIPES, get_recipe
from backfire.protect.search import AutoBudget, Tried, search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--size", default="128x96", help="WxH of the project photo")
    parser.add_argument("--seed", type=int, default=0, help="the project photo's seed")
    parser.add_argument("--steps", type=int, default=PAPER.steps, help="steps per rung")
    parser.add_argument("--max-budget", type=float, default=64.0, help="the ceiling, /255")
    parser.add_argument("--recipe", default=PAPER.name, choices=sorted(RECIPES))
    parser.add_argument("--no-chain", action="store_true", help="leave out the cold runs with the chain's steps")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image, region = example_photo(width, height, seed=args.seed)
    model = load_inpainter(args.model, device=args.device)
    model = wrap(model, default_pipeline(model.name))
    recipe = get_recipe(args.recipe).but(steps=args.steps)
    protect(image, region, model, recipe, steps=1)  # warms allocators and kernels: the first rung is timed fairly

    def judged(protection: Protection) -> Outcome:
        outcome, _, _ = judge_every(image, protection.protected, region, [model], protection.target)
        return outcome

    ceiling = AutoBudget(args.max_budget / 255, None)
    print(f"# {args.model}, project photo {width}×{height} seed {args.seed}, recipe {recipe.name}, {args.steps} steps per "
          f"rung; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, device {args.device}")
    print("| budget (/255) | warm: s | warm: fill distance | warm: verdict | cold, same steps: s | fill distance | "
          "verdict | cold, the chain's steps | s | fill distance | verdict | PSNR (dB) | ΔE00 mean | ΔE00 p99 |")
    print("|" + "---|" * 14)
    totals = [0.0, 0.0, 0.0]

    def beside(index: int, tried: Tried[Outcome]) -> None:
        # the cold runs of a rung right after its warm one: a shared machine's load falls on both alike
        rung = tried.rung
        cold = protect(image, region, model, recipe, budget=rung.budget, steps=rung.steps)
        cells = [f"{rung.budget * 255:g}", *_cells(tried.protection, tried.judged), *_cells(cold, judged(cold))]
        totals[:2] = [totals[0] + tried.protection.seconds, totals[1] + cold.seconds]
        if args.no_chain:
            cells += ["—"] * 4
        else:
            chain = protect(image, region, model, recipe, budget=rung.budget, steps=(index + 1) * rung.steps)
            totals[2] += chain.seconds
            cells += [str((index + 1) * rung.steps), *_cells(chain, judged(chain))]
        mean, p99 = delta_e(image, tried.protection.protected)
        cells += [f"{tried.psnr:.1f}", f"{mean:.2f}", f"{p99:.2f}"]
        print("| " + " | ".join(cells) + " |", flush=True)

    # every rung runs: the search's own rule (stop at the first that holds) is reported, not applied here
    warm = search(image, region, model, recipe, ceiling, judged, holds=lambda outcome: False,
                  psnr=lambda outcome: outcome.verdicts[0].invisibility["psnr"], on_tried=beside)
    chain = "" if args.no_chain else f", from scratch with the chain's steps {totals[2]:.1f}"
    print(f"\nseconds in all: the search {totals[0]:.1f}, the rungs one by one from scratch {totals[1]:.1f}{chain}")
    holding = next((t for t in warm.tried if t.judged.protected), None)
    print("first rung whose verdict holds: " + ("none up to the ceiling" if holding is None else
                                                 f"{holding.rung.budget * 255:g}/255"))


def _cells(protection: Protection, outcome: Outcome) -> list[str]:
    weakest = outcome.weakest
    verdict = "protected" if outcome.protected else "not protected"
    return [f"{protection.seconds:.1f}", f"{weakest.distance_to_target:.3f} ({weakest.edit})", verdict]


if __name__ == "__main__":
    main()
