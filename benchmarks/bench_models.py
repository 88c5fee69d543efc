#!/usr/bin/env python
"""The erase models side by side: seconds per forward and per forward+backward at 512² on this machine.

    python benchmarks/bench_models.py [--models backfire-s,lama,mat,migan] [--size 512] [--threads N]

Each model is built with random weights of its true architecture (cost depends on the architecture, not
the weights; backfire-s uses its shipped weights) and called as the optimisation calls it: the bare
Inpainter on a batch of one 512×512 photo with a 256×192 hole, gradient taken with respect to the image
(what one edit of one step of recipe ``paper`` costs; a step runs three). CPU seconds of this process
(``time.process_time``) are printed beside wall seconds: on a shared, busy machine the former stay
meaningful. Median of ``--repeats`` after one warm-up, every model in the same run.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from backfire.inpainters import Inpainter, load_inpainter
from backfire.inpainters.base import resolve_device

BUILDERS: dict[str, Callable[[torch.device], Inpainter]] = {}


def _builder(name: str):
    def register(function: Callable[[torch.device], Inpainter]):
        BUILDERS[name] = function
        return function
    return register


@_builder("backfire-s")
def _backfire_s(device: torch.device) -> Inpainter:
    return load_inpainter("backfire-s", device=device)


@_builder("lama")
def _lama(device: torch.device) -> Inpainter:
    from backfire.inpainters.fixtures import random_lama_generator
    from backfire.inpainters.lama import BIG_LAMA, LamaInpainter

    return LamaInpainter(random_lama_generator(BIG_LAMA), device=device)


@_builder("migan")
def _migan(device: torch.device) -> Inpainter:
    from backfire.inpainters.fixtures import random_migan_generator
    from backfire.inpainters.migan import MiganInpainter

    return MiganInpainter(random_migan_generator(512), device=device)


@_builder("mat")
def _mat(device: torch.device) -> Inpainter:
    from backfire.inpainters.fixtures import random_mat_generator
    from backfire.inpainters.mat import MAT_512, MATInpainter

    return MATInpainter(random_mat_generator(MAT_512), device=device)


def seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``fn`` after one warm-up."""
    fn()
    runs = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall))
    runs.sort()
    return runs[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUILDERS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    size = args.size
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: size // 4 + size * 3 // 8, size // 4: size // 4 + size // 2] = 1
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, device {device}; {size}×{size}, one photo, hole 37.5 % × 50 %")
    print("| model | parameters | forward CPU s (wall) | forward+backward CPU s (wall) |")
    print("|---|---|---|---|")
    for name in args.models.split(","):
        try:
            model = BUILDERS[name](device)
        except (ImportError, AttributeError) as error:  # a model this checkout does not have yet
            print(f"| {name} | unavailable: {error} | | |")
            continue
        params = sum(p.numel() for p in getattr(model, "module", torch.nn.Module()).parameters())

        def forward() -> None:
            with torch.no_grad():
                model(image, mask)

        def forward_backward() -> None:
            x = image.clone().requires_grad_(True)
            model(x, mask).sum().backward()

        f_cpu, f_wall = seconds(forward, args.repeats)
        b_cpu, b_wall = seconds(forward_backward, args.repeats)
        print(f"| {name} | {params / 1e6:.1f} M | {f_cpu:.2f} ({f_wall:.2f}) | {b_cpu:.2f} ({b_wall:.2f}) |", flush=True)


if __name__ == "__main__":
    main()
