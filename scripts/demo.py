#!/usr/bin/env python
"""The README's main job: protect a project-made example photo and print the verdict.

    python scripts/demo.py OUTDIR [--size 128x96] [--weights big-lama.pt]

Writes OUTDIR/photo.png and OUTDIR/photo_mask.png (drawn by the project, no licence questions), then
runs ``backfire protect`` on them. Without ``--weights`` the model is a random-weight generator of the
big-LaMa architecture (written to OUTDIR/big-lama-random.ckpt): the whole chain runs, but a random model
is not a real inpainter, so its verdict says nothing about protection.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backfire import cli, io
from backfire.examples import example_photo
from backfire.inpainters.lama import BIG_LAMA, random_generator, save_lama_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--size", default="128x96", help="WIDTHxHEIGHT of the example photo")
    parser.add_argument("--weights", type=Path, default=None, help="real big-LaMa weights, if you have them")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    args.outdir.mkdir(parents=True, exist_ok=True)
    image, mask = example_photo(width, height)
    photo, mask_path = args.outdir / "photo.png", args.outdir / "photo_mask.png"
    io.save_image(image, photo)
    io.save_mask(mask, mask_path)
    weights = args.weights
    if weights is None:
        weights = args.outdir / "big-lama-random.ckpt"
        if not weights.exists():
            print(f"writing a random-weight big-LaMa generator to {weights} (not a trained model)")
            save_lama_checkpoint(random_generator(BIG_LAMA, seed=0), weights)
    return cli.main(["protect", str(photo), "--mask", str(mask_path), "-o", str(args.outdir / "protected.png"),
                     "--model", "lama", "--weights", str(weights)])


if __name__ == "__main__":
    sys.exit(main())
