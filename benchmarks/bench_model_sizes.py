#!/usr/bin/env python
"""The size/speed trade-off behind backfire-s: FFC generator configurations side by side.

    python benchmarks/bench_model_sizes.py [--configs 24x6,32x6,32x9,48x6] [--threads N]

For each ``NGFxBLOCKS`` configuration (3 downsamplings, global ratio 0.75, coarse prefill as shipped):
parameters, one 512×512 forward pass, one forward+backward of a batch of 3 at 512² (what one step of
recipe `paper` costs) and one training step of the generator alone (batch 8 at 128², L1). Random
weights: cost depends on the architecture, not the weights. Median of ``--repeats`` after one warm-up.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from backfire.inpainters.ffc import FFCConfig, build_generator


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator and kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(config: FFCConfig, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    generator = build_generator(config)
    params = sum(p.numel() for p in generator.parameters())
    mask = torch.zeros(1, 1, 512, 512)
    mask[..., 128:384, 160:352] = 1
    x = torch.cat([torch.rand(1, 3, 512, 512) * (1 - mask), mask], dim=1)

    generator.eval().requires_grad_(False)
    with torch.no_grad():
        forward = median_seconds(lambda: generator(x), repeats)
    x3 = x.expand(3, -1, -1, -1).clone().requires_grad_(True)
    fwd_bwd = median_seconds(lambda: generator(x3).sum().backward(), repeats)

    generator.train().requires_grad_(True)
    batch = torch.rand(8, 4, 128, 128)
    batch[:, 3] = (batch[:, 3] > 0.7).float()
    train_step = median_seconds(lambda: (generator(batch) - batch[:, :3]).abs().mean().backward(), repeats)
    return {"params": params, "forward": forward, "fwd_bwd3": fwd_bwd, "train_step": train_step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="24x6,32x6,32x9,48x6")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, fp32")
    print(f"{'ngf×blocks':>10} {'params':>8} {'fwd 512²':>9} {'3×fwd+bwd 512²':>15} {'train step':>11}")
    for item in args.configs.split(","):
        ngf, blocks = (int(v) for v in item.lower().split("x"))
        row = measure(FFCConfig(ngf=ngf, n_blocks=blocks, prefill=True), args.repeats)
        print(f"{item:>10} {row['params'] / 1e6:>7.2f}M {row['forward']:>8.2f}s {row['fwd_bwd3']:>14.2f}s "
              f"{row['train_step']:>10.2f}s", flush=True)


if __name__ == "__main__":
    main()
