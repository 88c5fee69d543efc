#!/usr/bin/env python
"""The CUDA path checked and timed in one run: correctness against the CPU, then recipe ``paper`` against the
big-LaMa architecture, MAT and MI-GAN, eager vs tuned, one photo and batched, with peak memory.

    bash benchmarks/gpu_check.sh                  # on a GPU machine: writes $OUT/gpu_table.md (≤ 8 minutes on an H200)
    python benchmarks/gpu_check.py --toy          # the same code on the CPU at toy sizes (what the tests run)

Models have random weights of the released architectures (cost depends on the architecture and the size).
*eager*: float32, no CUDA graphs, no autocast, PyTorch's default cuDNN settings (the engine as it ran before
issue 26); *tuned*: what ``backfire protect`` now does on CUDA (cuDNN autotuning and TF32, float16 autocast and
CUDA graphs for the LaMa family). Each timing is one recipe run after a warm-up run of the same shape (so the
captured graphs and the cuDNN choices are made outside it), synchronised, wall clock; ``s/photo`` is the run's
seconds over its photos; peak memory is ``torch.cuda.max_memory_allocated`` over the run.

Correctness (first table): the tuned CUDA fills and gradient of the paper's three edits against the CPU's
float32 ones (mean and max |Δ| of the fills inside the holes, relative error of the gradient), the graphed pass
against the eager one at the same settings, and a whole protection of a small photo on CUDA against the same
protection on the CPU: the fill distance of the exact edit on each protected file (the verdict's measure; the
stated tolerance is 0.01, the one the CPU changes meet) and the share of 8-bit values that differ.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from backfire import masks as mask_ops
from backfire.examples import example_photo
from backfire.inpainters import fixtures, mat
from backfire.inpainters.base import Inpainter
from backfire.inpainters.ffc import FFCConfig
from backfire.inpainters.lama import BIG_LAMA, LamaInpainter
from backfire.inpainters.migan import MiganInpainter
from backfire.protect import PAPER
from backfire.protect.engine import Photo, protect_batch

TOLERANCE = 0.01
"""The largest difference of fill distance the CUDA protection may show against the CPU's."""


@dataclass(frozen=True)
class Sizes:
    """What the run measures: photo sides, batches, steps, the architectures."""

    check: int
    lama: tuple[int, ...]
    batch: dict[int, int]
    steps: int
    lama_config: FFCConfig
    mat_config: mat.MATConfig
    migan_side: int


FULL = Sizes(check=256, lama=(512, 1024), batch={512: 8, 1024: 2}, steps=PAPER.steps, lama_config=BIG_LAMA,
             mat_config=mat.MAT_512, migan_side=512)
TOY = Sizes(check=64, lama=(64,), batch={64: 2}, steps=2, lama_config=fixtures.TINY_LAMA,
            mat_config=mat.MATConfig(resolution=128, z_dim=16, w_dim=16, dim=12, channel_base=1024, channel_max=16),
            migan_side=32)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_GENERATORS: dict[FFCConfig, torch.nn.Module] = {}


def lama(device: torch.device, config: FFCConfig, tuned: bool) -> LamaInpainter:
    """The random-weight generator of ``config`` (made once) on ``device``: as ``backfire protect`` runs it
    (``tuned``), or float32 without graphs or autocast."""
    if config not in _GENERATORS:
        _GENERATORS[config] = fixtures.random_lama_generator(config)
    model = LamaInpainter(copy.deepcopy(_GENERATORS[config]), device=device)
    if not tuned:
        model.cuda_graphs, model.autocast = False, None
    return model


def eager(model: Inpainter) -> Inpainter:
    """The engine as it was: the module as loaded (a LaMa generator's BatchNorm not folded), its plain float32
    edit as the surrogate, PyTorch's default settings."""
    model.surrogate = model.inpaint  # instance attributes: this object only
    if isinstance(model, LamaInpainter):
        model.compute_network = lambda: None
    return model


def photos(side: int, count: int) -> list[Photo]:
    return [Photo(*example_photo(side, side, seed=i), seed=i) for i in range(count)]


def run_recipe(model: Inpainter, batch: list[Photo], steps: int) -> tuple[float, float]:
    """(seconds, peak GiB) of recipe paper over ``batch``, after a warm-up run of the same shape."""
    device = model.device
    protect_batch(batch, model, PAPER.but(steps=min(steps, 2)))  # warm-up: graphs captured, cuDNN choices made
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    protect_batch(batch, model, PAPER.but(steps=steps))
    sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return seconds, peak


def edits(side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image, region = example_photo(side, side, seed=seed)
    plus = mask_ops.dilate(region, 8, shape="square")
    return image, region, torch.stack([region, plus, plus - region])[:, None].float()


def fills_and_gradient(model: Inpainter, image: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = image.to(model.device).clone().requires_grad_(True)
    rows = x[None].expand(len(masks), -1, -1, -1)
    m = masks.to(model.device)
    out = model.surrogate(rows, m)
    (out * m).square().sum().backward()
    return out.detach().float().cpu(), x.grad.float().cpu()


def correctness(device: torch.device, sizes: Sizes, lines: list[str]) -> None:
    lines += ["| check | model | result |", "|---|---|---|"]
    for name, config in (("big-LaMa arch.", sizes.lama_config), ("backfire-s arch. (prefill)",
                                                                 FFCConfig(32, 3, 6, 0.75, 1024, True))):
        image, region, masks = edits(sizes.check)
        reference = fills_and_gradient(lama(torch.device("cpu"), config, tuned=False), image, masks)
        tuned = lama(device, config, tuned=True)
        graphs = tuned.cuda_graphs
        tuned.cuda_graphs = False
        eagerly = fills_and_gradient(tuned, image, masks)  # the tuned settings, kernels launched one by one
        tuned.cuda_graphs = graphs
        fills_and_gradient(tuned, image, masks)  # captures the graphs (where they are on)
        ours = fills_and_gradient(tuned, image, masks)  # replays them
        inside = masks.expand_as(reference[0]) > 0
        fill = (ours[0] - reference[0])[inside].abs()
        grad = float((ours[1] - reference[1]).norm() / reference[1].norm())
        replay = float((ours[0] - eagerly[0]).abs().max())
        replay_grad = float((ours[1] - eagerly[1]).norm() / eagerly[1].norm())
        lines.append(f"| tuned fills vs CPU float32, {sizes.check}² | {name} | mean {float(fill.mean()):.1e}, max "
                     f"{float(fill.max()):.1e}; gradient {grad:.1e} relative; graphs {'on' if graphs else 'off'}: "
                     f"replay vs eager at the same settings {replay:.1e} (gradient {replay_grad:.1e}) |")
    image, region = example_photo(sizes.check, sizes.check, seed=0)
    distances = {}
    for where in (torch.device("cpu"), device):
        model = lama(where, sizes.lama_config, tuned=True)
        result = protect_batch([Photo(image, region, seed=0)], model, PAPER.but(steps=sizes.steps))[0]
        judge = lama(torch.device("cpu"), sizes.lama_config, tuned=False)  # one judge for both: the CPU float32 edit
        with torch.no_grad():
            fill = judge(result.protected[None], region[None, None])[0]
        distances[where.type] = (float(((fill - result.target).abs().mean(0) * region).sum() / region.sum()),
                                 result.protected)
    (d_cpu, a), (d_dev, b) = distances["cpu"], distances[device.type]
    differing = float((torch.round(a * 255) != torch.round(b * 255)).float().mean())
    verdict = "within" if abs(d_dev - d_cpu) <= TOLERANCE else "OUTSIDE"
    lines.append(f"| protect {sizes.check}², {sizes.steps} steps, {device.type} vs CPU | big-LaMa arch. | fill "
                 f"distance {d_cpu:.4f} (CPU) / {d_dev:.4f} ({device.type}): Δ {d_dev - d_cpu:+.4f}, {verdict} the "
                 f"{TOLERANCE} tolerance; {differing:.1%} of 8-bit values differ |")


def timings(device: torch.device, sizes: Sizes, lines: list[str]) -> None:
    lines += ["", "| model | size | photos | mode | s / photo | photos / s | peak GiB |", "|---|---|---|---|---|---|---|"]

    def row(name: str, side: int, count: int, mode: str, model: Inpainter) -> None:
        seconds, peak = run_recipe(model, photos(side, count), sizes.steps)
        scale = PAPER.steps / sizes.steps
        per_photo = seconds / count * scale
        lines.append(f"| {name} | {side}² | {count} | {mode} | {per_photo:.2f} | {1 / per_photo:.2f} | {peak:.2f} |")
        print(lines[-1], flush=True)

    for side in sizes.lama:
        row("big-LaMa arch.", side, 1, "eager fp32", eager(lama(device, sizes.lama_config, tuned=False)))
        tuned = lama(device, sizes.lama_config, tuned=True)
        row("big-LaMa arch.", side, 1, "tuned", tuned)
        row("big-LaMa arch.", side, sizes.batch[side], "tuned, batched", tuned)
        del tuned
        if device.type == "cuda":
            torch.cuda.empty_cache()
    side = sizes.mat_config.resolution
    network = fixtures.random_mat_generator(sizes.mat_config)
    row("MAT", side, 1, "eager fp32", eager(mat.MATInpainter(network, device=device)))
    row("MAT", side, 1, "tuned (TF32, cuDNN autotuning)", mat.MATInpainter(network, device=device))
    network = fixtures.random_migan_generator(sizes.migan_side)
    row("MI-GAN", sizes.migan_side, 1, "eager fp32", eager(MiganInpainter(network, device=device)))
    row("MI-GAN", sizes.migan_side, 1, "tuned (TF32, cuDNN autotuning)", MiganInpainter(network, device=device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="toy sizes (the CPU test of this script)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --toy")
    parser.add_argument("--out", type=Path, default=None, help="write the tables here too (Markdown)")
    args = parser.parse_args()
    sizes = TOY if args.toy else FULL
    device = torch.device(args.device or ("cpu" if args.toy else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here; use --toy to run it on the CPU")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    lines = [f"# GPU check: {name}, torch {torch.__version__}, {sizes.steps} steps"
             + (" (toy sizes)" if args.toy else ""), ""]
    started = time.perf_counter()
    correctness(device, sizes, lines)
    print("\n".join(lines), flush=True)
    timings(device, sizes, lines)
    lines += ["", f"whole check: {time.perf_counter() - started:.0f} s"]
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
