#!/usr/bin/env python
"""Recipe ``paper`` before and after, side by side in one run: the code of a base commit against this tree.

    python benchmarks/bench_before_after.py [--base COMMIT] [--models backfire-s,lama] [--sizes 256,512]
                                            [--steps 20] [--rounds 2] [--threads N] [--out FILE]

The base commit's package is unpacked (``git archive``) into a temporary folder; each measurement is a fresh
Python process with that folder or this tree first on ``sys.path`` (``--worker``), protecting the same photo
(``backfire.examples.example_photo``, its logo as the region) with the same model, steps and seed. Old and new
alternate, ``--rounds`` times, so that whatever else runs on the machine weighs on both alike; each row gives
the best round's seconds per step (wall clock and CPU seconds, ``time.process_time``, of the steps only) and
seconds per protected image (setup + ``steps`` steps: the clean fill, the model's first pass), the ratio old /
new of each, and how far apart the two results are: the mean |fill − target| of the exact-mask edit on each
protected image (the verdict's distance; the bare model edits both) and the share of 8-bit values that differ.

``--model lama`` is the big-LaMa architecture with random weights (cost depends on the architecture and the
size). With ``--steps`` below the recipe's 20 the per-image seconds are extrapolated as setup + 20 × s/step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "2d5c81c"  # main after issue 22's refactor, before issue 26


def worker(model_name: str, size: int, steps: int, out: str) -> None:
    """One measurement, in this process, with whichever backfire is first on the path."""
    import torch

    from backfire.examples import example_photo
    from backfire.inpainters import load_inpainter
    from backfire.inpainters.fixtures import random_lama_generator
    from backfire.inpainters.lama import BIG_LAMA, LamaInpainter
    from backfire.protect import PAPER, protect

    if model_name == "lama":
        model = LamaInpainter(random_lama_generator(BIG_LAMA), device="cpu")
    else:
        model = load_inpainter(model_name, device="cpu")
    image, region = example_photo(size, size)
    walls, cpus = [], []

    def stamp(done, total, loss=None):
        walls.append(time.perf_counter())
        cpus.append(time.process_time())

    started, used = time.perf_counter(), time.process_time()
    result = protect(image, region, model, PAPER, steps=steps, seed=0, on_step=stamp)
    steps_done = len(walls) - 1
    per_step = (walls[-1] - walls[0]) / steps_done
    per_step_cpu = (cpus[-1] - cpus[0]) / steps_done
    setup, setup_cpu = walls[0] - started - per_step, cpus[0] - used - per_step_cpu
    with torch.no_grad():
        fill = model(result.protected[None], region[None, None])[0]
    distance = float(((fill - result.target).abs().mean(0) * region).sum() / region.sum())
    torch.save(result.protected, out + ".pt")
    Path(out).write_text(json.dumps({
        "per_step": per_step, "per_step_cpu": per_step_cpu, "setup": setup, "setup_cpu": setup_cpu,
        "distance": distance, "threads": torch.get_num_threads()}))


def measure(tree: Path, model: str, size: int, steps: int, threads: int | None, scratch: Path) -> dict:
    out = str(scratch / f"{tree.name}-{model}-{size}-{time.monotonic_ns()}.json")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run([sys.executable, __file__, "--worker", model, str(size), str(steps), out], env=env, check=True,
                   cwd=scratch)
    found = json.loads(Path(out).read_text())
    found["protected"] = out + ".pt"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=DEFAULT_BASE, help=f"the commit to compare with (default {DEFAULT_BASE})")
    parser.add_argument("--models", default="backfire-s,lama")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--steps", type=int, default=20, help="steps measured (≥ 2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the workers (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    parser.add_argument("--worker", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, size, steps, out = args.worker
        worker(name, int(size), int(steps), out)
        return

    import torch

    steps = max(2, args.steps)
    with tempfile.TemporaryDirectory(prefix="backfire-base-") as folder:
        scratch = Path(folder)
        base = scratch / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(HERE), "archive", args.base, "backfire"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        lines = [f"machine: {platform.machine()} {platform.processor() or 'cpu'}, {os.cpu_count()} CPUs, torch "
                 f"{torch.__version__}, workers with {args.threads or 'torch’s default'} threads; base {args.base}, "
                 f"new {commit} (+ working tree); {steps} steps measured, best of {args.rounds} alternating rounds",
                 "",
                 "| model | size | s/step before | s/step after | × faster (wall) | CPU s/step before | after | "
                 "× faster (CPU) | s/image before | after | fill distance before / after | 8-bit values differing |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        print("\n".join(lines), flush=True)
        for model in args.models.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                old, new = [], []
                for _ in range(args.rounds):
                    old.append(measure(base, model, size, steps, args.threads, scratch))
                    new.append(measure(HERE, model, size, steps, args.threads, scratch))
                o = min(old, key=lambda r: r["per_step"])
                n = min(new, key=lambda r: r["per_step"])
                oc, nc = min(r["per_step_cpu"] for r in old), min(r["per_step_cpu"] for r in new)
                image_old, image_new = o["setup"] + 20 * o["per_step"], n["setup"] + 20 * n["per_step"]
                a, b = torch.load(o["protected"]), torch.load(n["protected"])
                differing = float((torch.round(a * 255) != torch.round(b * 255)).float().mean())
                label = "big-LaMa arch." if model == "lama" else model
                line = (f"| {label} | {size}² | {o['per_step']:.2f} | {n['per_step']:.2f} | "
                        f"{o['per_step'] / n['per_step']:.2f} | {oc:.2f} | {nc:.2f} | {oc / nc:.2f} | "
                        f"{image_old:.0f} | {image_new:.0f} | {o['distance']:.3f} / {n['distance']:.3f} | "
                        f"{differing:.1%} |")
                lines.append(line)
                print(line, flush=True)
        if args.out:
            args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
