"""A project-made example photo (no licence questions): a landscape with a logo to protect.

Used by the README's demo, the benchmarks and the tests, so none of them needs a photo on disk.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor

from backfire.pixels import quantize


def example_photo(width: int = 256, height: int = 192, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A synthetic landscape and the mask of the logo stamped on it.

    Shape:
        - image: (3, height, width) in [0, 1]
        - mask: (height, width) in {0, 1}, the logo
    """
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([0.35, 0.55, 0.9]) + y * np.array([0.85, 0.8, 0.7])
    picture = Image.fromarray((np.broadcast_to(sky, (height, width, 3)) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    sun = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.3) * height
    r = 0.08 * min(width, height)
    draw.ellipse([sun[0] - r, sun[1] - r, sun[0] + r, sun[1] + r], fill=(250, 230, 160))
    for layer, colour in enumerate([(90, 120, 80), (60, 95, 55), (40, 70, 40)]):
        base = height * (0.55 + 0.12 * layer)
        xs = np.linspace(0, width, 12)
        ys = base + rng.normal(0, 0.06 * height, xs.size)
        draw.polygon([(0, height), *zip(xs.tolist(), ys.tolist()), (width, height)], fill=colour)
    picture = picture.filter(ImageFilter.GaussianBlur(0.8))
    pixels = np.asarray(picture, dtype=np.float32) / 255
    pixels = np.clip(pixels + rng.normal(0, 0.02, pixels.shape), 0, 1)  # sensor-like grain

    logo = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(logo)
    cx, cy, s = 0.7 * width, 0.7 * height, 0.12 * min(width, height)
    pen.ellipse([cx - s, cy - s, cx + s, cy + s], fill=255)
    pen.rectangle([cx - 2.2 * s, cy - 0.35 * s, cx + 2.2 * s, cy + 0.35 * s], fill=255)
    mask = np.asarray(logo, dtype=np.float32) / 255
    ink = np.array([0.95, 0.95, 0.95], dtype=np.float32)
    pixels = pixels * (1 - mask[..., None]) + ink * mask[..., None]
    image = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32))
    return quantize(image), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
