#!/usr/bin/env python
"""Write a random-weight big-LaMa generator in a real big-LaMa file format.

A stand-in for the released weights in tests, benchmarks and demos: it has the architecture and
file format of big-LaMa but is NOT a trained model (its fills are noise-like).

    python scripts/make_random_lama.py big-lama-random.ckpt                 # Lightning best.ckpt style
    python scripts/make_random_lama.py big-lama-random.pt --format torchscript
    python scripts/make_random_lama.py tiny.ckpt --tiny --seed 3            # a few-thousand-parameter model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import backfire  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backfire.inpainters.fixtures import TINY_LAMA, random_lama_generator, save_lama_checkpoint  # noqa: E402
from backfire.inpainters.lama import BIG_LAMA, LamaModule, export_torchscript  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="file to write")
    parser.add_argument("--format", choices=("ckpt", "torchscript"), default="ckpt",
                        help="ckpt: LaMa's Lightning best.ckpt layout; torchscript: big-lama.pt (model(image, mask))")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--tiny", action="store_true", help=f"a tiny configuration ({TINY_LAMA}) instead of big-LaMa")
    args = parser.parse_args(argv)

    config = TINY_LAMA if args.tiny else BIG_LAMA
    generator = random_lama_generator(config, seed=args.seed)
    if args.format == "ckpt":
        save_lama_checkpoint(generator, args.out)
    else:
        export_torchscript(LamaModule(generator), args.out)
    n_params = sum(p.numel() for p in generator.parameters())
    print(f"wrote {args.out}: random-weight {'tiny' if args.tiny else 'big'} LaMa "
          f"({n_params / 1e6:.2f} M parameters, {args.format}, seed {args.seed}) - not a trained model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
