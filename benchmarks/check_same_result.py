#!/usr/bin/env python
"""Does the faster code protect as well? Recipe ``paper`` on a folder of photos, the base commit's code against
this tree's, photo by photo.

    python benchmarks/check_same_result.py SET [--base COMMIT] [--model backfire-s|lama] [--limit N]
                                           [--steps 20] [--threads 1] [--out FILE]

``SET`` is a folder of ``NAME.png`` + ``NAME_mask.png`` (``scripts/make_sample_set.py`` builds the sample set).
The base commit's package is unpacked with ``git archive`` and each side runs in its own process (this tree's
or the base's ``backfire`` first on the path), one after the other, with the same seed. For every photo it
reports the fill distance of the attacker's exact edit of the protected file as saved (8 bits; the mean
|fill − target| inside the region, the verdict's measure; the bare model edits), before and after, their
difference, and each side's seconds; then the largest difference and the mean of each side.
``--model lama`` is the big-LaMa architecture with random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DEFAULT_BASE = "2d5c81c"


def worker(folder: str, model_name: str, limit: int, steps: int, out: str) -> None:
    import torch

    from backfire import io
    from backfire.inpainters import load_inpainter
    from backfire.inpainters.fixtures import random_lama_generator
    from backfire.inpainters.lama import BIG_LAMA, LamaInpainter
    from backfire.protect import PAPER, protect

    if model_name == "lama":
        model = LamaInpainter(random_lama_generator(BIG_LAMA), device="cpu")
    else:
        model = load_inpainter(model_name, device="cpu")
    pairs = sorted(p for p in Path(folder).glob("*.png") if not p.stem.endswith("_mask"))[:limit]
    rows = {}
    for path in pairs:
        image = io.read_image(path).pixels
        region = io.read_mask(path.with_name(f"{path.stem}_mask.png"), size=(image.shape[2], image.shape[1])).mask
        result = protect(image, region, model, PAPER, steps=steps, seed=0)
        with torch.no_grad():
            fill = model(result.protected[None], region[None, None])[0]
        distance = float(((fill - result.target).abs().mean(0) * region).sum() / region.sum())
        rows[path.name] = {"distance": distance, "seconds": result.seconds}
        print(f"{path.name}: {distance:.4f} ({result.seconds:.1f} s)", file=sys.stderr, flush=True)
    Path(out).write_text(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--base", default=DEFAULT_BASE)
    parser.add_argument("--model", default="backfire-s")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    parser.add_argument("--worker", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        folder, model, limit, steps, out = args.worker
        worker(folder, model, int(limit), int(steps), out)
        return
    if args.folder is None:
        parser.error("give the folder of photos")
    limit = args.limit or 10**9
    with tempfile.TemporaryDirectory(prefix="backfire-base-") as scratch:
        base = Path(scratch) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(HERE), "archive", args.base, "backfire"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        found = {}
        for side, tree in (("before", base), ("after", HERE)):
            out = Path(scratch) / f"{side}.json"
            env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(args.threads)}
            subprocess.run([sys.executable, __file__, "--worker", str(args.folder.resolve()), args.model, str(limit),
                            str(args.steps), str(out)], env=env, check=True, cwd=scratch)
            found[side] = json.loads(out.read_text())
    names = sorted(found["before"])
    lines = [f"recipe paper, {args.steps} steps, seed 0, model {args.model}, {args.threads} thread(s); base {args.base}",
             "", "| photo | fill distance before | after | after − before | s before | s after |",
             "|---|---|---|---|---|---|"]
    for name in names:
        b, a = found["before"][name], found["after"][name]
        lines.append(f"| {name} | {b['distance']:.4f} | {a['distance']:.4f} | {a['distance'] - b['distance']:+.4f} | "
                     f"{b['seconds']:.1f} | {a['seconds']:.1f} |")
    differences = [found["after"][n]["distance"] - found["before"][n]["distance"] for n in names]
    mean = lambda side, key: sum(found[side][n][key] for n in names) / len(names)  # noqa: E731
    lines.append(f"| **{len(names)} photos** | mean {mean('before', 'distance'):.4f} | mean {mean('after', 'distance'):.4f} "
                 f"| largest |Δ| {max(abs(d) for d in differences):.4f} | {mean('before', 'seconds'):.1f} | "
                 f"{mean('after', 'seconds'):.1f} |")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
