"""Run the official MAT generator on fixed inputs and weights; store the numbers tests/test_mat.py checks.

    PYTHONPATH=. python scripts/make_mat_fixture.py OFFICIAL_MAT_CHECKOUT tests/fixtures/mat_official.npz

OFFICIAL_MAT_CHECKOUT is a checkout of github.com/fenglinglwb/MAT (kept outside this repository). Its
``networks/mat.py`` runs unchanged; only the ``timm`` import is stubbed (see tests/test_mat.py).
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch


def _stub_timm() -> None:
    layers = types.ModuleType("timm.models.layers")
    layers.to_2tuple = lambda x: (x, x)
    layers.DropPath = layers.trunc_normal_ = None  # imported by networks/mat.py, never used
    sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                        "timm.models.layers": layers})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("official", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--cases", default="256,512,256-tool")
    args = parser.parse_args()
    torch.set_num_threads(1)
    _stub_timm()
    sys.path.insert(0, str(args.official.resolve()))
    from networks.mat import Generator  # the official code

    from tests.test_mat import CASES, NOISE_SEED, WEIGHT_SEED, case_inputs, fill_module, sample, tool_arrays

    arrays = {"weight_seed": np.array(WEIGHT_SEED), "noise_seed": np.array(NOISE_SEED)}
    if args.out.exists():  # keep the cases not recomputed
        arrays.update({k: v for k, v in np.load(args.out).items() if k.startswith("case_")})
    for name in args.cases.split(","):
        case = CASES[name]
        tool = name.endswith("-tool")  # read and called as generate_image.py reads and calls
        generator = Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=case["resolution"], img_channels=3)
        fill_module(generator)
        if tool:
            photo, hole = tool_arrays(case["resolution"], case["photo_seed"])
            image = (torch.from_numpy(photo.transpose(2, 0, 1)).float() / 127.5 - 1).unsqueeze(0)
            mask = torch.from_numpy(1 - hole.astype(np.float32) / 255).unsqueeze(0).unsqueeze(0)
            np.random.seed(240)
            z = torch.from_numpy(np.random.randn(1, 512))
            torch.manual_seed(240)
        else:
            image, mask, z = case_inputs(case["resolution"], case["photo_seed"])
            torch.manual_seed(NOISE_SEED)
        start = time.perf_counter()
        with torch.no_grad():
            output = generator(image, mask, z, None, noise_mode=case["noise_mode"])
        if tool:
            output = ((output + 1) / 2).clamp(0, 1)
        print(f"case {name}: {time.perf_counter() - start:.1f} s, output range "
              f"[{output.min():.3f}, {output.max():.3f}], std {output.std():.3f}")
        arrays[f"case_{name}"] = sample(output)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
