#!/usr/bin/env python
"""The README's main job: protect a project-made example photo with the embedded model and print the verdict.

    python scripts/demo.py OUTDIR [--size 256x192] [--weights big-lama.pt]

Writes OUTDIR/photo.png and OUTDIR/photo_mask.png (drawn by the project, no licence questions), then
runs ``backfire protect`` on them with the default model, backfire-s (shipped inside the package;
nothing is downloaded). With ``--weights`` the model is big-LaMa from that file instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backfire import cli, io
from backfire.examples import example_photo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--size", default="256x192", help="WIDTHxHEIGHT of the example photo")
    parser.add_argument("--weights", type=Path, default=None, help="real big-LaMa weights, if you have them")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must be WIDTHxHEIGHT, got {args.size!r}")

    args.outdir.mkdir(parents=True, exist_ok=True)
    image, mask = example_photo(width, height)
    photo, mask_path = args.outdir / "photo.png", args.outdir / "photo_mask.png"
    io.save_image(image, photo)
    io.save_mask(mask, mask_path)
    # the embedded model, explicitly: the main job stays offline and the same whatever is pulled
    model = ["--model", "lama", "--weights", str(args.weights)] if args.weights else ["--model", "backfire-s"]
    return cli.main(["protect", str(photo), "--mask", str(mask_path), "-o", str(args.outdir / "protected.png"),
                     *model])


if __name__ == "__main__":
    sys.exit(main())
