#!/usr/bin/env python3
"""Build the inpainter's training set: multi-scale 128² training crops and fixed 256² validation crops.

    python scripts/prepare_data.py OUTDIR [--photos DIR]

Without ``--photos`` the photos are fetched first with ``../shared/data/fetch_photos.sh OUTDIR/photos``
(Debian packages, needs ``apt-get update`` once). Only ``train_scene/`` and ``train_object/`` are read;
``eval_face/`` and ``eval_text/`` are held out for evaluation and never opened here.

Validation split: by file, deterministic. Files with identical bytes, or whose 64-bit difference hashes
are within 6 bits (the same picture resized or recompressed), form one group; a group goes to
validation when ``int(sha1(first file name)) % 1000 < 1000 * val_fraction``, so a validation photo
never appears, in any copy, in the training crops.

Training crops: for each training photo, a scale factor s is drawn log-uniformly in
[max(128 / short side, 1/8), 1]; on the photo downscaled by s, a square of side drawn in 128–256 px
(at most the downscaled short side) is cut at a random position and resized to 128×128. Crops per
photo grow with the square root of its area (bigger photos hold more distinct content). ``--train-side
256`` makes 256² crops the same way (squares of 256–512 px), for a GPU run. Validation
crops: the photo is downscaled so its short side is at most 512 px, and ``--val-per-file`` 256×256
squares are cut at positions drawn from a generator seeded by the file name. Photos whose short side
is under 128 px (training) or 256 px (validation) are skipped. Resampling is Pillow's antialiased
Lanczos. Everything is seeded: the same photos and options give the same arrays.

Output: uint8 RGB crops, N×H×W×3, total at most ``--max-mib`` (default 56 MiB; training crops are
thinned evenly to fit), read back by :func:`backfire.train.data.load_crops`. Default
``OUTDIR/crops.npz`` holding each crop as lossless WebP (arrays ``{train,val}_bytes``,
``{train,val}_offsets``, ``{train,val}_shape``: the pixels are exact, and about 1.8× more crops fit than
with zlib); ``--format npz``: ``OUTDIR/crops.npz`` with plain arrays ``train`` and ``val``;
``--format npy``: ``OUTDIR/crops_train.npy`` and ``OUTDIR/crops_val.npy``. Also ``OUTDIR/copyright/`` (the
packages' licences) and ``OUTDIR/SOURCES.md`` (which package each training photo came from, with the
licence names its copyright file lists), ``OUTDIR/splits.json`` (the file lists).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from backfire.train.data import encode_webp, pack_webp  # noqa: E402

TRAIN_DIRS = ("train_scene", "train_object")
TRAIN_SIDE = 128
VAL_SIDE = 256
REPO = Path(__file__).resolve().parent.parent
FETCH = REPO.parent / "shared" / "data" / "fetch_photos.sh"

# File-name prefix written by fetch_photos.sh (path under /usr/share, "/" → "__") → Debian package.
PACKAGE_OF_PREFIX = [
    ("backgrounds__mate__", "mate-backgrounds"),
    ("wallpapers__", "plasma-workspace-wallpapers"),
    ("lxqt__", "lxqt-themes"),
    ("net.sourceforge.Lifeograph__", "lifeograph"),
    ("scratch__", "scratch"),
    ("libjxl-testdata__", "libjxl-testdata"),
    ("psychtoolbox-3__", "psychtoolbox-3-common"),
    ("pixmaps__faces__", "gnome-control-center-data"),
    ("plasma__avatars__", "plasma-workspace-data"),
    ("doc__opencv-doc__", "opencv-doc"),
    ("gcompris__", "gcompris-qt-data"),
]


def package_of(name: str) -> str:
    for prefix, package in PACKAGE_OF_PREFIX:
        if name.startswith(prefix):
            return package
    return "unknown"


def log(msg: str) -> None:
    print(f"prepare_data: {msg}", flush=True)


def fetch(photos: Path) -> None:
    if not FETCH.is_file():
        sys.exit(f"prepare_data: error: {FETCH} not found (pass --photos DIR instead)")
    log(f"fetching photos into {photos} with {FETCH} (~1 min, ~80 MB)")
    run = subprocess.run(["bash", str(FETCH), str(photos)], capture_output=True, text=True)
    if run.returncode != 0 and shutil.which("apt-get"):
        # Usually 'apt-get download' cannot locate the packages: the package lists were never fetched.
        log(f"the fetch failed ({run.stderr.strip().splitlines()[-1] if run.stderr.strip() else 'no message'}); "
            "running 'apt-get update' once and retrying")
        update = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
        if update.returncode != 0:
            sys.exit("prepare_data: error: 'apt-get update' failed (no network or no permission?):\n"
                     + update.stderr[-2000:])
        run = subprocess.run(["bash", str(FETCH), str(photos)], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"prepare_data: error: {FETCH} failed (exit {run.returncode}). If apt-get could not "
                 f"download, run 'apt-get update' first.\n{run.stderr[-2000:]}")


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            rgba = im.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return im.convert("RGB")


def dhash(im: Image.Image) -> int:
    small = np.asarray(im.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def name_hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def group_files(files: list[Path]) -> tuple[list[list[int]], dict[int, tuple[int, int]], set[int]]:
    """Groups of duplicate / near-duplicate photos (union-find on byte hash and dHash distance ≤ 6),
    each photo's size, and the photos that are byte-for-byte copies of an earlier one."""
    parent = list(range(len(files)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    byte_hash: dict[str, int] = {}
    copies: set[int] = set()
    hashes: list[int] = []
    sizes: dict[int, tuple[int, int]] = {}
    for i, f in enumerate(files):
        digest = hashlib.sha1(f.read_bytes()).hexdigest()
        if digest in byte_hash:
            parent[find(i)] = find(byte_hash[digest])
            copies.add(i)
        byte_hash.setdefault(digest, i)
        im = load_rgb(f)
        sizes[i] = im.size
        hashes.append(dhash(im))
    for i in range(len(files)):
        for j in range(i):
            if bin(hashes[i] ^ hashes[j]).count("1") <= 6:
                parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(files)):
        groups.setdefault(find(i), []).append(i)
    return sorted(groups.values(), key=lambda g: files[g[0]].name), sizes, copies


def train_crops(im: Image.Image, n: int, rng: np.random.Generator, out_side: int = TRAIN_SIDE) -> list[np.ndarray]:
    w, h = im.size
    short = min(w, h)
    lo = max(out_side / short, 1 / 8)
    out = []
    for _ in range(n):
        s = math.exp(rng.uniform(math.log(lo), 0.0)) if lo < 1 else 1.0
        max_side = min(2 * out_side, int(short * s))
        side_scaled = int(rng.integers(out_side, max(out_side, max_side) + 1))
        side = min(short, side_scaled / s)  # the square in original pixels
        x0, y0 = rng.uniform(0, w - side), rng.uniform(0, h - side)
        crop = im.resize((out_side, out_side), Image.LANCZOS, box=(x0, y0, x0 + side, y0 + side))
        out.append(np.asarray(crop, dtype=np.uint8))
    return out


def val_crops(im: Image.Image, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    w, h = im.size
    scale = min(1.0, 512 / min(w, h))
    if scale < 1:
        im = im.resize((max(VAL_SIDE, round(w * scale)), max(VAL_SIDE, round(h * scale))), Image.LANCZOS)
        w, h = im.size
    out = []
    for _ in range(n):
        x0, y0 = int(rng.integers(0, w - VAL_SIDE + 1)), int(rng.integers(0, h - VAL_SIDE + 1))
        out.append(np.asarray(im.crop((x0, y0, x0 + VAL_SIDE, y0 + VAL_SIDE)), dtype=np.uint8))
    return out


def npz_bytes(compressed: bool, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def licence_lines(copyright_file: Path, limit: int = 8) -> list[str]:
    """The distinct licence names a Debian copyright file declares (its ``License:`` lines), in order."""
    names: list[str] = []
    for line in copyright_file.read_text(errors="replace").splitlines():
        m = re.match(r"\s*License:\s*(\S.*)$", line)
        if m and m.group(1).strip() not in names:
            names.append(m.group(1).strip())
    if not names:  # old-style copyright file: its first lines that name a licence
        names = [ln.strip() for ln in copyright_file.read_text(errors="replace").splitlines()
                 if re.search(r"licen[cs]e|GPL|Creative Commons|CC[- ]BY|public domain", ln, re.I)]
    return names[:limit]


def write_sources(out: Path, photos: Path, train_files: list[Path], val_files: list[Path]) -> None:
    counts: dict[str, list[int]] = {}
    for files, col in ((train_files, 0), (val_files, 1)):
        for f in files:
            counts.setdefault(package_of(f.name), [0, 0])[col] += 1
    lines = [
        "# Sources of the inpainter's training data",
        "",
        f"Built by `scripts/prepare_data.py` from `{photos.name}/` ({', '.join(TRAIN_DIRS)} only; the",
        "`eval_face` and `eval_text` folders are held out for evaluation and were not read).",
        "The photos come from Debian packages, fetched by `../shared/data/fetch_photos.sh`; each package's",
        "`copyright` file is in `copyright/`. Keep attribution in the model card of anything trained on them.",
        "The licence column lists every licence the package's copyright file names (it covers the whole",
        "package); which licence covers which photo is in that file's `Files:` stanzas, and `splits.json`",
        "lists the photos used (file names are their paths under /usr/share, with `/` written `__`).",
        "",
        "| package | training photos | validation photos | licences named in its copyright file |",
        "|---|---|---|---|",
    ]
    for package in sorted(counts):
        cfile = out / "copyright" / package
        names = "; ".join(licence_lines(cfile)) if cfile.is_file() else "(no copyright file found)"
        n_train, n_val = counts[package]
        lines.append(f"| {package} | {n_train} | {n_val} | {names} |")
    lines.append("")
    atomic_write(out / "SOURCES.md", "\n".join(lines).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--photos", type=Path, help="an existing fetch_photos.sh output (default: fetch into OUTDIR/photos)")
    ap.add_argument("--val-fraction", type=float, default=0.08)
    ap.add_argument("--val-per-file", type=int, default=2)
    ap.add_argument("--train-crops", type=int, default=4000, help="crops to draw before thinning to --max-mib")
    ap.add_argument("--max-mib", type=float, default=56.0)
    ap.add_argument("--format", choices=("webp", "npz", "npy"), default="webp",
                    help="webp: lossless WebP per crop inside crops.npz (≈1.8× more crops in the budget "
                         "than npz); npz: plain uint8 arrays, zlib; npy: crops_train.npy + crops_val.npy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--webp-quality", type=int, default=0,
                    help="0: lossless training crops; 1-100: lossy WebP at that quality (several times more "
                         "crops in --max-mib, e.g. 92 for 256² crops that must travel)")
    ap.add_argument("--train-side", type=int, default=TRAIN_SIDE,
                    help="training crop side (squares of side … 2·side px resized to it; 256 for a GPU run)")
    args = ap.parse_args(argv)

    out: Path = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    photos = args.photos
    if photos is None:
        photos = out / "photos"
        # fetch_photos.sh writes copyright/ last: without it, an earlier fetch did not finish
        complete = (photos / "copyright").is_dir() and all(
            (photos / d).is_dir() and any((photos / d).iterdir()) for d in TRAIN_DIRS)
        if not complete:
            fetch(photos)
        else:
            log(f"using the photos already in {photos}")
    files = sorted(f for d in TRAIN_DIRS if (photos / d).is_dir() for f in (photos / d).iterdir() if f.is_file())
    if not files:
        sys.exit(f"prepare_data: error: no photos in {photos}/{{{','.join(TRAIN_DIRS)}}}")

    groups, sizes, copies = group_files(files)
    threshold = round(1000 * args.val_fraction)
    train_idx, val_idx = [], []
    for g in groups:
        if name_hash(files[g[0]].name) % 1000 < threshold:
            val_idx += [i for i in g if i not in copies]
        else:
            train_idx += [i for i in g if i not in copies]  # a byte-identical copy would only add weight
    n_dupes = sum(len(g) - 1 for g in groups)
    train_ids = [i for i in sorted(train_idx) if min(sizes[i]) >= args.train_side]
    val_ids = [i for i in sorted(val_idx) if min(sizes[i]) >= VAL_SIDE]
    train_files, val_files = [files[i] for i in train_ids], [files[i] for i in val_ids]
    log(f"{len(files)} photos, {len(groups)} distinct ({n_dupes} duplicates or near-duplicates grouped); "
        f"validation {len(val_idx)} files ({len(val_files)} with short side ≥ {VAL_SIDE}), "
        f"training {len(train_idx)} ({len(train_files)} with short side ≥ {args.train_side})")

    weights = np.array([math.sqrt(min(sizes[i][0] * sizes[i][1], 2048 ** 2)) for i in train_ids])
    per_file = np.maximum(1, np.round(args.train_crops * weights / weights.sum())).astype(int)
    train: list[np.ndarray] = []
    for k, f in enumerate(train_files):
        rng = np.random.default_rng([args.seed, name_hash(f.name) % 2**32])
        train += train_crops(load_rgb(f), int(per_file[k]), rng, args.train_side)
    val: list[np.ndarray] = []
    for f in val_files:
        rng = np.random.default_rng([args.seed + 1, name_hash(f.name) % 2**32])
        val += val_crops(load_rgb(f), args.val_per_file, rng)
    train_arr = np.stack(train)
    val_arr = np.stack(val) if val else np.zeros((0, VAL_SIDE, VAL_SIDE, 3), np.uint8)
    drawn = len(train_arr)

    budget = args.max_mib * 2**20
    if args.format == "webp":  # encode once; a subset's size is then the sum of its crops' sizes
        train_blobs = [encode_webp(c, args.webp_quality) for c in train_arr]
        val_blobs = [encode_webp(c) for c in val_arr]  # validation stays exact
    keep = np.arange(len(train_arr))
    for _ in range(8):
        if args.format == "webp":
            payload = {"crops.npz": npz_bytes(compressed=False, **pack_webp("train", [train_blobs[i] for i in keep]),
                                              **pack_webp("val", val_blobs))}
        elif args.format == "npz":
            payload = {"crops.npz": npz_bytes(compressed=True, train=train_arr[keep], val=val_arr)}
        else:
            payload = {"crops_train.npy": npy_bytes(train_arr[keep]), "crops_val.npy": npy_bytes(val_arr)}
        size = sum(len(b) for b in payload.values())
        if size <= budget:
            break
        n = int(len(keep) * (budget / size) * 0.995) - 1
        if n < 1:
            sys.exit("prepare_data: error: the validation crops alone exceed --max-mib")
        # thin evenly (a seeded subset), so every photo and scale keeps its share
        keep = np.sort(np.random.default_rng(args.seed + 2).permutation(len(train_arr))[:n])
    else:
        sys.exit("prepare_data: error: could not fit --max-mib")
    n_train = len(keep)
    for name in ("crops.npz", "crops_train.npy", "crops_val.npy"):  # no stale file of another format
        if name not in payload and (out / name).exists():
            (out / name).unlink()
    for name, data in payload.items():
        atomic_write(out / name, data)

    src_copyright = photos / "copyright"
    if src_copyright.is_dir():
        if (out / "copyright").resolve() != src_copyright.resolve():
            shutil.copytree(src_copyright, out / "copyright", dirs_exist_ok=True)
    else:
        log(f"warning: {src_copyright} is missing; SOURCES.md will have no licence names")
    write_sources(out, photos, train_files, val_files)
    splits = {"train": [f.name for f in train_files], "val": [f.name for f in val_files],
              "val_fraction": args.val_fraction, "seed": args.seed}
    atomic_write(out / "splits.json", json.dumps(splits, indent=1).encode())

    log(f"training crops: {n_train} × {args.train_side}×{args.train_side} (drawn {drawn}) from {len(train_files)} photos")
    log(f"validation crops: {len(val_arr)} × {VAL_SIDE}×{VAL_SIDE} from {len(val_files)} photos")
    for name, data in payload.items():
        log(f"wrote {out / name}: {len(data) / 2**20:.1f} MiB")
    log(f"total {size / 2**20:.1f} MiB (limit {args.max_mib:g}); wrote {out / 'SOURCES.md'}, {out / 'splits.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
