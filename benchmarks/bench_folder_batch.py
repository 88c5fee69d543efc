#!/usr/bin/env python
"""A folder's throughput with and without batching, side by side in one run: ``backfire protect DIR --batch N``.

    python benchmarks/bench_folder_batch.py [--photos 8] [--size 256x192] [--batches 1,4] [--steps 20]
                                            [--model backfire-s] [--rounds 2] [--device auto] [--out FILE]

The folder holds ``--photos`` photos of one size (``backfire.examples.example_photo`` with a seed each, its logo
as the region), so a batched run can group them all. Each measurement is the CLI itself in a fresh process
(model load, every photo protected, saved, read back and judged, batch.csv), the batch sizes alternating
``--rounds`` times so that whatever else runs on the machine weighs on all alike. The table gives each batch
size's best round (photos per second, seconds per photo, the ratio to the first batch size) and whether its
protected files are byte-identical to the first's: batching must not change a result.
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


def make_folder(folder: Path, photos: int, width: int, height: int) -> None:
    for index in range(photos):
        image, region = example_photo(width, height, seed=index)
        io.save_image(image, folder / f"photo-{index:02d}.png")
        io.save_mask(region, folder / f"photo-{index:02d}_mask.png")


def run_cli(folder: Path, out: Path, batch: int, args: argparse.Namespace) -> float:
    command = [str(Path(sys.executable).with_name("backfire")), "protect", str(folder), "-o", str(out), "--model", args.model,
               "--steps", str(args.steps), "--batch", str(batch), "--device", args.device, "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1):  # 1: NOT PROTECTED, a verdict, not a failure of the run
        raise SystemExit(f"backfire protect failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return seconds


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("photo-*.png")) if "_preview" not in p.name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    batches = [int(b) for b in args.batches.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        make_folder(folder, args.photos, width, height)
        best: dict[int, float] = {}
        files: dict[int, dict[str, bytes]] = {}
        for round_ in range(args.rounds):
            for batch in batches:
                out = Path(tmp) / f"out-{batch}-{round_}"
                seconds = run_cli(folder, out, batch, args)
                best[batch] = min(best.get(batch, float("inf")), seconds)
                files.setdefault(batch, outputs(out))
                print(f"round {round_ + 1}/{args.rounds}: --batch {batch}: {seconds:.1f} s", file=sys.stderr, flush=True)

    first = batches[0]
    lines = [
        f"{args.photos} photos {width}×{height}, `--model {args.model} --steps {args.steps} --device {args.device}`, "
        f"best of {args.rounds} rounds; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}", "",
        "| --batch | s per folder | s per photo | photos per s | × first | files identical to --batch "
        f"{first} |", "|---|---|---|---|---|---|",
    ]
    for batch in batches:
        seconds = best[batch]
        same = "yes" if files[batch] == files[first] and files[batch] else "NO"
        lines.append(f"| {batch} | {seconds:.1f} | {seconds / args.photos:.2f} | {args.photos / seconds:.3f} | "
                     f"{best[first] / seconds:.2f} | {same} |")
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        io.write_text_atomic(args.out, table + "\n")


if __name__ == "__main__":
    main()
