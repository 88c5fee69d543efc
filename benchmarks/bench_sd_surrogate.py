#!/usr/bin/env python
"""The sd-inpaint surrogate against the real sampler: agreement (tiny pipeline) and cost (real sizes).

    python benchmarks/bench_sd_surrogate.py [--images 4] [--sampler-steps 25] [--threads N]
        [--surrogates one-step unrolled] [--surrogate-steps 3]
    python benchmarks/bench_sd_surrogate.py --real-arch --device cuda      # SD-1.5-inpainting sizes, 512²

Agreement (default, any device; a random-weight tiny pipeline of the real code, 48×40 photos): for each
photo and its logo mask M, δ is (a) the perturbation recipe `paper` finds through the surrogate
(budget 16/255, 10 steps) and (b) uniform noise of the same L∞. We compare, inside M, the change the
surrogate predicts, S(x+δ) − S(x), with the change the real sampler shows, F(x+δ) − F(x)
(Pearson correlation and norm ratio), and whether the distance to the target moves the same way.
Each surrogate (``one-step``: one UNet call at a fixed t; ``unrolled``: K deterministic DDIM steps from
the sampler's initial noise) is measured on the same photos with the same procedure: δ found through
that surrogate, ΔS through that surrogate, ΔF through the same real sampler; plus seconds per surrogate
forward+backward. Random weights say little about a trained Stable Diffusion: the numbers check the
plumbing, not the protection.

Cost (``--real-arch``: random weights of runwayml/stable-diffusion-inpainting's architecture, fp16 on CUDA):
seconds and peak memory of one forward+backward of each surrogate vs one full sampling pass (50 steps,
CFG) of a 512² image.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from backfire.examples import example_photo
from backfire.inpainters.fixtures import save_random_sd_checkpoint
from backfire.inpainters.registry import load_inpainter
from backfire.protect import protect
from backfire.protect.targets import make_target


def _hole(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x[..., mask[0, 0] > 0.5].flatten().double()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def agreement(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        save_random_sd_checkpoint(folder, arch="tiny", seed=0)
        model = load_inpainter("sd-inpaint", weights=folder, device=args.device,
                               num_inference_steps=args.sampler_steps, surrogate_steps=args.surrogate_steps)
    print(f"tiny pipeline, {args.sampler_steps} sampler steps, one-step t = {model.surrogate_timestep}, "
          f"unrolled K = {model.surrogate_steps}")
    print("| image | surrogate | δ | corr(ΔS, ΔF) in M | ‖ΔS‖/‖ΔF‖ | Δ target dist S | Δ target dist F | same direction |")
    print("|---|---|---|---|---|---|---|---|")
    rows, seconds, cases = [], {}, []
    for seed in range(args.images):
        image, region = example_photo(48, 40, seed=seed)
        x, m = image[None], region[None, None]
        noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1) * args.budget / 255
        with torch.no_grad():
            f0 = model(x, m)
        cases.append((seed, image, region, x, m, (x + noise).clamp(0, 1) - x, f0))
    for name in args.surrogates:
        model.surrogate_kind = name  # the same weights, sampler and photos; only the surrogate changes
        x, m = cases[0][3], cases[0][4]

        def step():
            xd = x.clone().requires_grad_(True)
            model.surrogate(xd, m).sum().backward()

        step()  # warm-up
        seconds[name] = min(_timed(model.device, step)[0] for _ in range(3))
        for seed, image, region, x, m, noise, f0 in cases:
            target = make_target(image, "solid")[None]
            result = protect(image, region, model, "paper", steps=args.protect_steps, budget=args.budget / 255,
                             seed=seed)
            found = result.protected[None] - x
            with torch.no_grad():
                s0 = model.surrogate(x, m)
                for kind, delta in (("paper", found), ("noise", noise)):
                    s1, f1 = model.surrogate(x + delta, m), model(x + delta, m)
                    ds, df = _hole(s1 - s0, m), _hole(f1 - f0, m)
                    dist = [float(((a - target) ** 2)[..., region > 0.5].mean()) for a in (s0, s1, f0, f1)]
                    d_s, d_f = dist[1] - dist[0], dist[3] - dist[2]
                    row = (_corr(ds, df), float(ds.norm() / df.norm().clamp_min(1e-12)), d_s, d_f,
                           (d_s > 0) == (d_f > 0))
                    rows.append((name, kind, *row))
                    print(f"| {seed} | {name} | {kind} | {row[0]:.3f} | {row[1]:.3f} | {d_s:+.5f} | {d_f:+.5f} | "
                          f"{'yes' if row[4] else 'no'} |", flush=True)
    print("\n| surrogate | δ | mean corr(ΔS, ΔF) | mean ‖ΔS‖/‖ΔF‖ | mean Δ target dist S → F | same direction "
          "| s per surrogate fwd+bwd |")
    print("|---|---|---|---|---|---|---|")
    for name in args.surrogates:
        for kind in ("paper", "noise"):
            chosen = [r for r in rows if r[:2] == (name, kind)]
            n = len(chosen)
            print(f"| {name} | {kind} | {sum(r[2] for r in chosen) / n:.3f} | {sum(r[3] for r in chosen) / n:.2f} | "
                  f"{sum(r[4] for r in chosen) / n:+.5f} → {sum(r[5] for r in chosen) / n:+.5f} | "
                  f"{sum(r[6] for r in chosen)}/{n} | {seconds[name]:.3f} |")


def _timed(device: torch.device, fn) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30
    return time.perf_counter() - start, float("nan")


def cost(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        save_random_sd_checkpoint(folder, arch="sd15", seed=0)
        model = load_inpainter("sd-inpaint", weights=folder, device=args.device, num_inference_steps=50,
                               surrogate_steps=args.surrogate_steps)
    image, region = example_photo(args.size, args.size, seed=0)
    x, m = image[None].to(model.device), region[None, None].to(model.device)

    def surrogate_step():
        xd = x.clone().requires_grad_(True)
        model.surrogate(xd, m).float().sum().backward()

    def sample():
        with torch.no_grad():
            model(x, m)

    timings = {}
    for name in args.surrogates:
        model.surrogate_kind = name
        surrogate_step()  # warm-up
        timings[name] = min(_timed(model.device, surrogate_step) for _ in range(3))
    sample()
    f = _timed(model.device, sample)
    print(f"SD-1.5-inpainting architecture (random weights), {args.size}², {model.dtype}, {model.device}"
          f" ({torch.cuda.get_device_name() if model.device.type == 'cuda' else 'cpu'})")
    print("| pass | seconds | peak GiB |\n|---|---|---|")
    for name, s in timings.items():
        label = f"unrolled K = {model.surrogate_steps}" if name == "unrolled" else name
        print(f"| surrogate {label} forward+backward | {s[0]:.3f} | {s[1]:.2f} |")
    print(f"| full sampling, 50 steps, CFG 7.5 | {f[0]:.3f} | {f[1]:.2f} |")
    for name, s in timings.items():
        print(f"recipe paper with {name} (20 steps × 3 edits in one batch) ≈ {20 * s[0]:.1f} s of surrogate passes"
              " (batch 1 timing × 20; the engine batches the 3 edits)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-arch", action="store_true", help="time the SD-1.5 architecture (needs a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--sampler-steps", type=int, default=25)
    parser.add_argument("--protect-steps", type=int, default=10)
    parser.add_argument("--budget", type=float, default=16.0, help="L∞ in /255")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--surrogates", nargs="+", default=["one-step", "unrolled"],
                        choices=["one-step", "unrolled"])
    parser.add_argument("--surrogate-steps", type=int, default=3, help="K of the unrolled surrogate")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cost(args) if args.real_arch else agreement(args)


if __name__ == "__main__":
    main()
