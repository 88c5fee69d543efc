"""Build an evaluation set (NAME.png + NAME_mask.png pairs) offline from the fetched Debian photos.

    python scripts/make_sample_set.py OUTDIR [--photos DIR]

Without ``--photos`` the photos are fetched first with ``../shared/data/fetch_photos.sh`` into a temporary
folder. Only the held-out ``eval_face/`` and ``eval_text/`` photos are read, never the training photos.
The set (about 32 cases):

- ``face-*``: the dlib example photos with their face boxes from dlib's XML files (every face of the
  photo as an ellipse on its box), and other portraits whose faces OpenCV's Haar cascade finds;
- ``text-*``: the OpenCV scene-text photos with their word masks (``*_mask.png``);
- ``logo-*``, ``watermark-*``, ``signature-*``: portraits and scenes with an overlay drawn here (an opaque
  logo, a semi-transparent text watermark, a handwritten-looking signature of Bézier strokes), each with
  the exact mask of the pixels the overlay touched.

Every photo is downscaled so its long side is at most 384 px (``--max-side``): the protocol runs dozens of
inpainting passes per image, which on a CPU is what a bigger image cannot afford. Masks are drawn or
resized at that size (nearest neighbour), so each mask fits its image exactly. ``SOURCES.md`` lists, for
each case, the photo it came from and its Debian package; the packages' licences are in the photos
folder's ``copyright/``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backfire import io as bio  # noqa: E402
from backfire import regions  # noqa: E402

FETCH = ROOT.parent / "shared" / "data" / "fetch_photos.sh"
DLIB_XML = "doc__libdlib19.1__examples__faces__training.xml", "doc__libdlib19.1__examples__faces__testing.xml"
HAAR_FACES = ("doc__opencv-doc__examples__data__messi5.jpg", "kphotoalbum__demo__donna.jpg",
              "kphotoalbum__demo__jesper.jpg", "kphotoalbum__demo__anne_helene.jpg",
              "doc__gramps__example__gramps__654px-Aksel_Andersson.jpg", "doc__gramps__example__gramps__E_W_Dahlgren.jpg",
              "xemacs-21.4.24__etc__photos__jwz.png", "xemacs-21.4.24__etc__photos__larsi.png")
OVERLAY_PHOTOS = ("kphotoalbum__demo__grand_canyon_3.jpg", "kphotoalbum__demo__skagen.jpg",
                  "kphotoalbum__demo__sunset.jpg", "kphotoalbum__demo__snow.jpg",
                  "doc__opencv-doc__examples__text__scenetext01.jpg", "kphotoalbum__demo__pool.jpg",
                  "kphotoalbum__demo__new_wave_2.jpg", "kphotoalbum__demo__bar55.jpg",
                  "kphotoalbum__demo__spiff.jpg", "kphotoalbum__demo__cold_water.jpg",
                  "kphotoalbum__demo__grand_canyon_2.jpg", "kphotoalbum__demo__skagen_2.jpg")
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")


def package_of(name: str) -> str:
    """The Debian package a fetched file came from (file names are /usr/share paths with / as __)."""
    for prefix, package in (("doc__libdlib19.1", "libdlib19.1"), ("doc__opencv-doc", "opencv-doc"),
                            ("doc__gramps", "gramps"), ("kphotoalbum", "kphotoalbum"),
                            ("xemacs-21.4.24", "xemacs21-support")):
        if name.startswith(prefix):
            return package
    return "unknown"


def load(path: Path, max_side: int) -> tuple[Image.Image, float]:
    """The photo in RGB, downscaled (LANCZOS) so its long side is ≤ ``max_side``; and the scale used."""
    with Image.open(path) as picture:
        picture = ImageOps.exif_transpose(picture).convert("RGB")  # upright, as a viewer shows it
    scale = min(1.0, max_side / max(picture.size))
    if scale < 1:
        picture = picture.resize((round(picture.width * scale), round(picture.height * scale)),
                                 Image.Resampling.LANCZOS)
    return picture, scale


def pixels(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture, dtype=np.float32).transpose(2, 0, 1) / 255)


def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), size) if FONT.is_file() else ImageFont.load_default(size=size)


def overlay(picture: Image.Image, alpha: Image.Image, colour: tuple[int, int, int], opacity: float):
    """Blend ``colour`` where ``alpha`` is drawn; the mask is every pixel the overlay touched."""
    a = np.asarray(alpha, dtype=np.float32)[..., None] / 255 * opacity
    base = np.asarray(picture, dtype=np.float32)
    blended = base * (1 - a) + np.array(colour, dtype=np.float32) * a
    image = torch.from_numpy(blended.transpose(2, 0, 1).copy() / 255)
    return image, torch.from_numpy((np.asarray(alpha) > 0).astype(np.float32))


def logo(picture: Image.Image, rng: np.random.Generator):
    """An opaque badge (disc + bar + letters) in a corner."""
    w, h = picture.size
    s = round(0.09 * min(w, h))
    cx, cy = rng.choice([2 * s, w - 3 * s]), rng.choice([1.5 * s, h - 1.5 * s])
    alpha = Image.new("L", picture.size, 0)
    pen = ImageDraw.Draw(alpha)
    pen.ellipse([cx - s, cy - s, cx + s, cy + s], fill=255)
    pen.rounded_rectangle([cx - 0.2 * s, cy - 0.45 * s, cx + 2.6 * s, cy + 0.45 * s], radius=0.3 * s, fill=255)
    colour = tuple(int(v) for v in rng.integers(0, 255, 3))
    image, mask = overlay(picture, alpha, colour, 1.0)
    letters = Image.new("L", picture.size, 0)
    ImageDraw.Draw(letters).text((cx - 0.55 * s, cy - 0.6 * s), "bf", font=font(round(1.1 * s)), fill=255)
    ink = np.asarray(letters, dtype=np.float32)[None] / 255 * mask.numpy()  # letters stay inside the badge
    image = image * (1 - torch.from_numpy(ink)) + torch.from_numpy(ink)  # white letters
    return image, mask


def watermark(picture: Image.Image, rng: np.random.Generator):
    """A semi-transparent white text watermark across the middle (35 % opacity)."""
    w, h = picture.size
    alpha = Image.new("L", picture.size, 0)
    size = max(10, round(0.12 * min(w, h)))
    text = "© SAMPLE"
    pen = ImageDraw.Draw(alpha)
    box = pen.textbbox((0, 0), text, font=font(size))
    x = (w - (box[2] - box[0])) / 2 + rng.uniform(-0.05, 0.05) * w
    pen.text((x, h * rng.uniform(0.35, 0.6)), text, font=font(size), fill=255)
    return overlay(picture, alpha, (255, 255, 255), 0.35)


def _bezier(points: np.ndarray, n: int = 40) -> list[tuple[float, float]]:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = points
    curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return [tuple(p) for p in curve.tolist()]


def signature(picture: Image.Image, rng: np.random.Generator):
    """A handwritten-looking signature: a few joined cubic Bézier strokes and an underline, dark ink."""
    w, h = picture.size
    x0, y0, width, height = 0.5 * w, 0.72 * h, 0.4 * w, 0.16 * h
    alpha = Image.new("L", picture.size, 0)
    pen = ImageDraw.Draw(alpha)
    stroke = max(2, round(0.012 * min(w, h)))
    x = x0
    for _ in range(int(rng.integers(4, 7))):
        step = width / 5
        pts = np.array([[x, y0], [x + rng.uniform(0, step), y0 - rng.uniform(0.3, 1) * height],
                        [x + rng.uniform(0, step), y0 + rng.uniform(0, 0.6) * height], [x + step, y0]])
        pen.line(_bezier(pts), fill=255, width=stroke, joint="curve")
        x += step
    pen.line(_bezier(np.array([[x0, y0 + 0.7 * height], [x0 + width / 3, y0 + 0.9 * height],
                               [x0 + 2 * width / 3, y0 + 0.5 * height], [x0 + width, y0 + 0.75 * height]])),
             fill=255, width=stroke)
    return overlay(picture, alpha, (20, 25, 60), 0.95)


def dlib_faces(photos: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """Face boxes (left, top, width, height) per dlib example photo, from the XML files."""
    boxes: dict[str, list] = {}
    for name in DLIB_XML:
        for image in ET.parse(photos / "eval_face" / name).getroot().iter("image"):
            found = [tuple(float(b.get(k)) for k in ("left", "top", "width", "height")) for b in image.iter("box")
                     if b.get("ignore") != "1"]
            boxes[f"doc__libdlib19.1__examples__faces__{image.get('file')}"] = found
    return boxes


def build(photos: Path, out: Path, max_side: int) -> list[tuple[str, str, str, str]]:
    """Write every case into ``out``; return (case, kind, source file, package) rows."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []

    def save(case: str, kind: str, source: str, image: torch.Tensor, mask: torch.Tensor) -> None:
        if not 0 < mask.sum() < mask.numel():
            print(f"skipped {case}: empty mask", file=sys.stderr)
            return
        bio.save_image(image, out / f"{case}.png")
        bio.save_mask(mask, out / f"{case}_mask.png")
        rows.append((case, kind, source, package_of(source)))

    for i, (name, boxes) in enumerate(sorted(dlib_faces(photos).items())):
        if not boxes or not (photos / "eval_face" / name).is_file():
            continue
        picture, scale = load(photos / "eval_face" / name, max_side)
        mask = regions.ellipse_mask(picture.size, [tuple(v * scale for v in b) for b in boxes])
        save(f"face-dlib-{i:02d}", "face (dlib XML box)", name, pixels(picture), mask)
    for i, name in enumerate(HAAR_FACES):
        if not (photos / "eval_face" / name).is_file():
            continue
        picture, _ = load(photos / "eval_face" / name, max_side)
        try:
            mask = regions.face_mask(pixels(picture))
        except bio.InputError:
            print(f"skipped {name}: no face found by the Haar cascade", file=sys.stderr)
            continue
        save(f"face-haar-{i:02d}", "face (Haar cascade)", name, pixels(picture), mask)
    for i, mask_path in enumerate(sorted((photos / "eval_text").glob("*_mask.png"))):
        source = mask_path.name.replace("_mask.png", ".jpg")
        picture, _ = load(photos / "eval_text" / source, max_side)
        with Image.open(mask_path) as m:
            m = m.convert("L").resize(picture.size, Image.Resampling.NEAREST)
        save(f"text-{i:02d}", "scene-text words (OpenCV word mask)", source, pixels(picture),
             torch.from_numpy((np.asarray(m) > 127).astype(np.float32)))
    rng = np.random.default_rng(0)
    makers = (("logo", logo), ("watermark", watermark), ("signature", signature))
    for i, name in enumerate(OVERLAY_PHOTOS):
        folder = "eval_text" if "scenetext" in name else "eval_face"
        if not (photos / folder / name).is_file():
            continue
        kind, maker = makers[i % len(makers)]
        picture, _ = load(photos / folder / name, max_side)
        image, mask = maker(picture, rng)
        save(f"{kind}-{i:02d}", f"{kind} (drawn here; exact mask)", name, image, mask)
    return rows


def write_sources(out: Path, rows: list[tuple[str, str, str, str]]) -> None:
    lines = ["# Sources of this evaluation set", "",
             "Made by `scripts/make_sample_set.py` from the held-out `eval_face/` and `eval_text/` photos of",
             "`../shared/data/fetch_photos.sh` (Debian packages; licences in their `copyright` files).", "",
             "| case | region | photo | package |", "|---|---|---|---|"]
    lines += [f"| {c} | {k} | {s} | {p} |" for c, k, s, p in rows]
    bio.write_text_atomic(out / "SOURCES.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", type=Path, default=None, help="a fetch_photos.sh output folder")
    parser.add_argument("--max-side", type=int, default=384, help="downscale so the long side is ≤ this (px)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        photos = args.photos
        if photos is None:
            photos = Path(scratch) / "photos"
            subprocess.run(["bash", str(FETCH), str(photos)], check=True)
        rows = build(photos, args.out, args.max_side)
    write_sources(args.out, rows)
    print(f"{args.out}: {len(rows)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
