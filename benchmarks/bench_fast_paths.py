#!/usr/bin/env python
"""What each change of the LaMa-family CPU path buys: one fwd+bwd of the paper's three edits, change by change.

    python benchmarks/bench_fast_paths.py [--model backfire-s|lama] [--sizes 256,512] [--rounds 5] [--threads N]

Every variant computes the same fills and gradient (checked against the first, to float rounding) of the
recipe's three edits of one photo (exact, dilated, ring) and the gradient to the photo; they run in
interleaved rounds in one process, and the table gives each one's best round as a fraction of the first
variant's, wall clock and CPU seconds (``time.process_time``: steadier than the wall clock when other work
shares the machine). ``--model lama`` is the big-LaMa architecture with random weights.

The variants add one change each: the module as loaded (what the engine computed before); BatchNorm folded
into the convolutions; the decoder and the coarse fill cut to the hole's box (``local``); the context shared
by the three edits encoded once; channels-last memory order (the shipped CPU path). To switch the shared
encoding off alone, the benchmark replaces ``FFCResNetGenerator._shared_encoding`` for that variant.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from collections.abc import Callable

import torch

from backfire import masks as mask_ops
from backfire.examples import example_photo
from backfire.inpainters import load_inpainter
from backfire.inpainters.ffc import FFCResNetGenerator, fold_batchnorm
from backfire.inpainters.fixtures import random_lama_generator
from backfire.inpainters.lama import BIG_LAMA, LamaInpainter


def variants(model: LamaInpainter, image: torch.Tensor, masks: torch.Tensor) -> dict[str, Callable]:
    folded = fold_batchnorm(model.module.generator)
    last = copy.deepcopy(folded).to(memory_format=torch.channels_last)
    sharing = FFCResNetGenerator._shared_encoding

    def edits(network, channels_last=False, share=True, **kwargs):
        def run():
            FFCResNetGenerator._shared_encoding = sharing if share else (lambda self, x, hole: None)
            x = image.clone().requires_grad_(True)
            rows = x[None].expand(len(masks), -1, -1, -1)
            inputs = torch.cat([rows * (1 - masks), masks], dim=1)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            out = network(inputs, **kwargs)
            out = masks * out + (1 - masks) * rows
            (out * masks).square().sum().backward()
            FFCResNetGenerator._shared_encoding = sharing
            return out.detach(), x.grad
        return run

    return {
        "module as loaded": edits(model.module.generator),
        "+ BatchNorm folded": edits(folded),
        "+ decoder, coarse fill on the hole's box": edits(folded, share=False, local=True),
        "+ shared context encoded once": edits(folded, local=True),
        "+ channels-last (the CPU path)": edits(last, channels_last=True, local=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "lama":
        model = LamaInpainter(random_lama_generator(BIG_LAMA), device="cpu")
    else:
        model = load_inpainter(args.model, device="cpu")
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; model {args.model}")
    for size in (int(s) for s in args.sizes.split(",")):
        image, region = example_photo(size, size)
        plus = mask_ops.dilate(region, 8, shape="square")
        masks = torch.stack([region, plus, plus - region])[:, None].float()
        box = plus.any(1).sum() * plus.any(0).sum() / plus.numel()
        runs = variants(model, image, masks)
        reference = None
        for name, run in runs.items():  # warm-up, and every variant checked against the first
            out, grad = run()
            if reference is None:
                reference = out, grad
            else:
                assert (out - reference[0]).abs().max() < 1e-3, name
                error = float((grad - reference[1]).norm() / reference[1].norm())
                assert error < 1e-2, (name, error)
        wall = {name: [] for name in runs}
        cpu = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                started, used = time.perf_counter(), time.process_time()
                run()
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - used)
        first = next(iter(runs))
        print(f"\n{size}×{size}, the three edits' box {float(box):.0%} of the photo; best of {args.rounds} rounds")
        print(f"| variant | wall s | × first | CPU s | × first |\n|---|---|---|---|---|")
        for name in runs:
            print(f"| {name} | {min(wall[name]):.2f} | {min(wall[name]) / min(wall[first]):.2f} | "
                  f"{min(cpu[name]):.2f} | {min(cpu[name]) / min(cpu[first]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
