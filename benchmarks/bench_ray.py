#!/usr/bin/env python
"""A folder's throughput in this process beside a local Ray run, side by side in one run:
``backfire protect DIR`` vs ``backfire protect DIR --ray --workers 2 --cpus-per-worker 1``.

    unshare --net --pid --fork --mount-proc bash -c 'ip link set lo up; RAY_USAGE_STATS_ENABLED=0 \\
        .venv/bin/python benchmarks/bench_ray.py [--photos 8] [--size 128x96] [--steps 5] [--rounds 2]; \\
        .venv/bin/ray stop --force'

Run it inside a network namespace of its own, as above (as root), like tests/test_ray.py: the Ray runtime
then listens on loopback alone. The folder holds ``--photos`` photos of one size
(``backfire.examples.example_photo``, a seed each, the logo as the region). Each measurement is the CLI in a
fresh process, wall clock from start to exit (model loading, for Ray also the runtime's start and each
worker's model loading; every photo protected, saved, read back and judged; batch.csv), the modes alternating
``--rounds`` times so that whatever else runs on the machine weighs on all alike. Modes: the folder mode as a
user runs it (torch's default threads), the folder mode at one thread, and Ray with 2 workers of 1 CPU (one
thread each). The table gives each mode's best round and whether its files are byte-identical to the
one-thread folder mode's (they must be, at equal thread counts).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from backfire import io
from backfire.examples import example_photo

MODES = {
    "folder mode (default threads)": ([], {}),
    "folder mode, 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
    "--ray --workers 2 --cpus-per-worker 1": (["--ray", "--workers", "2", "--cpus-per-worker", "1"], {}),
}


def make_folder(folder: Path, photos: int, width: int, height: int) -> None:
    for index in range(photos):
        image, region = example_photo(width, height, seed=index)
        io.save_image(image, folder / f"photo-{index:02d}.png")
        io.save_mask(region, folder / f"photo-{index:02d}_mask.png")


def run_cli(folder: Path, out: Path, flags: list[str], env: dict[str, str], args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "backfire.cli", "protect", str(folder), "-o", str(out), "--model", args.model,
               "--steps", str(args.steps), "--device", "cpu", "--quiet", *flags]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **env})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"backfire protect {' '.join(flags)} failed ({done.returncode}): {done.stderr.strip()[-600:]}")
    return seconds


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("photo-*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", default="128x96", help="WIDTHxHEIGHT")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        make_folder(root / "in", args.photos, width, height)
        best: dict[str, float] = {}
        files: dict[str, dict[str, bytes]] = {}
        for round_ in range(args.rounds):
            for i, (mode, (flags, env)) in enumerate(MODES.items()):
                out = root / f"out-{i}-{round_}"  # a fresh folder: a rerun would keep the done photos
                seconds = run_cli(root / "in", out, flags, env, args)
                best[mode] = min(best.get(mode, float("inf")), seconds)
                files.setdefault(mode, outputs(out))
                print(f"round {round_ + 1}: {mode}: {seconds:.1f} s", file=sys.stderr)
    reference = files["folder mode, 1 thread"]
    first = next(iter(best.values()))
    print(f"{args.photos} photos {width}×{height}, --model {args.model} --steps {args.steps}, best of {args.rounds} "
          f"rounds; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average (1 min) at the end {os.getloadavg()[0]:.1f}\n")
    print("| mode | seconds (wall, whole run) | photos / s | × first | files = folder mode at 1 thread |")
    print("|---|---|---|---|---|")
    for mode, seconds in best.items():
        same = "yes" if files[mode] == reference else "no"
        print(f"| {mode} | {seconds:.1f} | {args.photos / seconds:.3f} | {first / seconds:.2f} | {same} |")


if __name__ == "__main__":
    main()
