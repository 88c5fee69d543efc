"""MAT: faithful to the official network, loads the released formats, differentiable, batched.

How ``tests/fixtures/mat_official.npz`` was made (once, on the 2-core CPU of the development machine):

    git clone https://github.com/fenglinglwb/MAT /work/ext/MAT      # commit d273d891ecdad2e1df106516423a75bc45b2d800
    PYTHONPATH=. .venv/bin/python scripts/make_mat_fixture.py /work/ext/MAT tests/fixtures/mat_official.npz

with torch 2.13.0 (CPU), numpy 2.4. The script imports the official ``networks/mat.py`` unchanged; the only
stub is the ``timm`` import (``timm.models.layers``: MAT uses ``to_2tuple`` from it, here ``lambda x: (x, x)``;
``DropPath`` and ``trunc_normal_`` are imported but unused). The official StyleGAN ops fall back to their
reference (``ref``) torch implementations on the CPU, so no custom CUDA op is built. For each case the script
builds the official ``Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=R, img_channels=3)``, fills
every parameter and buffer by :func:`fill_by_name` (this module's, imported), builds the inputs with
:func:`case_inputs`, calls ``torch.manual_seed(NOISE_SEED)`` and then ``G(image, mask, z, None,
noise_mode=...)`` under ``torch.no_grad()``, and stores the output at the pixels of :func:`sample`. The
official forward draws its dropout masks (and, in mode ``random``, its noise) from torch's global CPU RNG;
ours draws them from a ``torch.Generator`` seeded with the same ``NOISE_SEED`` in the same order.

Cases: ``256`` (the CelebA-HQ_256 configuration, noise mode ``random``, as ``generate_image.py`` uses at
256) and ``512`` (Places_512, noise mode ``const``, its default at 512).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.examples import example_photo
from backfire.inpainters import mat
from backfire.inpainters.registry import load_inpainter

FIXTURE = Path(__file__).parent / "fixtures" / "mat_official.npz"
WEIGHT_SEED = 2022
NOISE_SEED = 7
CASES = {"256": dict(resolution=256, noise_mode="random", photo_seed=3),
         "512": dict(resolution=512, noise_mode="const", photo_seed=4)}
TINY = mat.MATConfig(resolution=256, z_dim=16, w_dim=16, dim=12, channel_base=1024, channel_max=16)
"""MAT's architecture at a few thousand channels' cost: every code path, seconds instead of minutes."""


def fill_by_name(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Deterministic weights by parameter name: one ``torch.Generator`` seeded with ``seed``, keys in
    sorted order, each a standard normal draw of its shape, scaled by 0.2 for 0-/1-D tensors (biases,
    noise strengths, ``noise_const``, ``w_avg``) and by 100 for ``mapping.*`` matrices. MAT's layers
    multiply their weights by ``lr_multiplier / sqrt(fan_in)`` in the forward (equalised learning
    rate; lr_multiplier 0.01 in the mapping network), so the effective weights are normal draws
    scaled by 1/sqrt(fan-in). ``resample_filter`` and ``attn_mask`` are constants of the architecture
    and are left out (the caller keeps the constructed values).
    """
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        if name.endswith("resample_filter") or name.endswith("attn_mask"):
            continue
        shape = tuple(shapes[name])
        scale = 0.2 if len(shape) <= 1 else (100.0 if name.startswith("mapping.") else 1.0)
        out[name] = torch.randn(shape, generator=generator) * scale
    return out


def fill_module(module: torch.nn.Module, seed: int = WEIGHT_SEED) -> torch.nn.Module:
    """``module``'s parameters and buffers set by :func:`fill_by_name` (official or ours alike)."""
    state = module.state_dict()
    values = fill_by_name({k: tuple(v.shape) for k, v in state.items()}, seed)
    with torch.no_grad():
        for name, value in values.items():
            state[name].copy_(value)
    return module.eval()


def case_inputs(resolution: int, photo_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official-convention inputs: image in [-1, 1], mask 1 = known (holes: the example's logo and a
    large box), z from a generator seeded with ``photo_seed``."""
    image, logo = example_photo(resolution, resolution, seed=photo_seed)
    hole = logo.clone()
    r = resolution
    hole[r // 8: r // 2, r // 8: 3 * r // 8] = 1
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(photo_seed))
    return (image * 2 - 1)[None], (1 - hole)[None, None], z


def sample(output: torch.Tensor) -> np.ndarray:
    """The stored part of an output: a strided grid of pixels and a dense 32×32 crop over a hole edge."""
    r = output.shape[-1]
    grid = output[0, :, 3::8, 5::8]
    crop = output[0, :, r // 2 - 16: r // 2 + 16, r // 8 - 16: r // 8 + 16]
    return np.concatenate([grid.reshape(-1), crop.reshape(-1)]).astype(np.float32)
