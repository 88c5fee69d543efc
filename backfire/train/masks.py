"""Training masks for the inpainting model, LaMa-style, drawn from a seeded ``np.random.Generator``.

Families (all sizes are fractions of ``side = min(h, w)``, so a mask drawn at 128² and one drawn at
256² look alike):

- ``strokes``: LaMa's "thick irregular" masks — 1–5 brush strokes, each a random walk of 1–5
  segments, width 5–35 % of the side, round joints and caps (LaMa's thick setting at 256² is width
  5–105 px, segment length 10–210 px, 1–5 strokes).
- ``boxes``: 1–3 axis-aligned rectangles, sides 10–70 % (LaMa's box masks).
- ``blobs``: smoothed Gaussian noise on a coarse grid, upsampled bicubically and thresholded at the
  quantile that gives a coverage of 8–45 % (organic object-like holes).
- ``ellipses``: 1–2 upright-ish ellipses, taller than wide, rotated ±20° — the shape of faces.
- ``text``: 1–4 lines of words; a word is either one solid bar or a row of letter-sized
  rectangles — the shape of captions, signs and watermarks.
- ``logo``: a regular polygon, a star, a rounded rectangle, a disc or a ring, sometimes two of them
  overlapping — the shape of logos and badges.

With probability 0.15 a mask is the union of two families (LaMa mixes irregular and box masks).
Every mask covers 5–50 % of the frame: a draw outside that range is redrawn (the redraws come from
the same generator, so the result stays a pure function of its state); after 30 misses a box of a
random in-range area is returned.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["FAMILIES", "MAX_COVERAGE", "MIN_COVERAGE", "mask_family", "random_mask"]

MIN_COVERAGE = 0.05
MAX_COVERAGE = 0.50
FAMILIES = ("strokes", "boxes", "blobs", "ellipses", "text", "logo")
_WEIGHTS = np.array([0.34, 0.12, 0.15, 0.13, 0.13, 0.13])
_UNION_PROBA = 0.15
_MAX_TRIES = 30


def _canvas(h: int, w: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (w, h), 0)
    return img, ImageDraw.Draw(img)


def _to_bool(img: Image.Image) -> np.ndarray:
    return np.asarray(img) > 127


def _strokes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    side = min(h, w)
    img, draw = _canvas(h, w)
    for _ in range(int(rng.integers(1, 6))):
        width = max(2, int(round(side * rng.uniform(0.05, 0.35))))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(1, 6))):
            angle += rng.uniform(-1.2, 1.2)
            length = side * rng.uniform(0.04, 0.8)
            x = float(np.clip(x + length * math.cos(angle), 0, w - 1))
            y = float(np.clip(y + length * math.sin(angle), 0, h - 1))
            points.append((x, y))
        draw.line(points, fill=255, width=width, joint="curve")
        r = width / 2
        for px, py in (points[0], points[-1]):  # round caps
            draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
    return _to_bool(img)


def _boxes(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    side = min(h, w)
    img, draw = _canvas(h, w)
    for _ in range(int(rng.integers(1, 4))):
        bh, bw = side * rng.uniform(0.1, 0.7), side * rng.uniform(0.1, 0.7)
        y0, x0 = rng.uniform(-0.1 * bh, h - 0.9 * bh), rng.uniform(-0.1 * bw, w - 0.9 * bw)
        draw.rectangle((x0, y0, x0 + bw, y0 + bh), fill=255)
    return _to_bool(img)


def _blobs(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    grid = int(rng.integers(3, 9))
    gh, gw = max(2, round(grid * h / min(h, w))), max(2, round(grid * w / min(h, w)))
    noise = rng.standard_normal((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(noise, mode="F").resize((w, h), Image.BICUBIC))
    coverage = rng.uniform(0.08, 0.45)
    return field > np.quantile(field, 1.0 - coverage)


def _polygon(cx: float, cy: float, rx: float, ry: float, rot: float, n: int = 48) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(rot), math.sin(rot)
    return list(zip((cx + c * x - s * y).tolist(), (cy + s * x + c * y).tolist()))


def _ellipses(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    side = min(h, w)
    img, draw = _canvas(h, w)
    for _ in range(int(rng.integers(1, 3))):
        rx = side * rng.uniform(0.1, 0.3)
        ry = rx * rng.uniform(1.1, 1.45)
        cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
        draw.polygon(_polygon(cx, cy, rx, ry, math.radians(rng.uniform(-20, 20))), fill=255)
    return _to_bool(img)


def _text(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    side = min(h, w)
    img, draw = _canvas(h, w)
    line_h = side * rng.uniform(0.05, 0.14)
    n_lines = int(rng.integers(1, 5))
    pitch = line_h * rng.uniform(1.2, 2.0)
    y = rng.uniform(0, max(1.0, h - n_lines * pitch))
    x_start = rng.uniform(0, 0.5 * w)
    for _ in range(n_lines):
        x_end = min(w, x_start + w * rng.uniform(0.3, 0.95))
        x = x_start + rng.uniform(0, 0.1 * w)
        while x < x_end:
            word = line_h * rng.uniform(1.0, 5.0)
            if rng.random() < 0.5:  # the word as one bar
                draw.rectangle((x, y, min(x + word, x_end), y + line_h), fill=255)
            else:  # the word as letters
                letter_x = x
                while letter_x < min(x + word, x_end):
                    lw = line_h * rng.uniform(0.35, 0.75)
                    top = y + (line_h * rng.uniform(0, 0.3) if rng.random() < 0.5 else 0)
                    draw.rectangle((letter_x, top, letter_x + lw, y + line_h), fill=255)
                    letter_x += lw + line_h * rng.uniform(0.08, 0.2)
            x += word + line_h * rng.uniform(0.3, 0.7)
        y += pitch
    return _to_bool(img)


def _logo_shape(draw: ImageDraw.ImageDraw, h: int, w: int, rng: np.random.Generator) -> None:
    side = min(h, w)
    r = side * rng.uniform(0.08, 0.3)
    cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
    rot = rng.uniform(0, 2 * math.pi)
    kind = int(rng.integers(5))
    if kind == 0:  # regular polygon
        draw.polygon(_polygon(cx, cy, r, r, rot, int(rng.integers(3, 9))), fill=255)
    elif kind == 1:  # star
        n = int(rng.integers(5, 9))
        outer = np.array(_polygon(cx, cy, r, r, rot, n))
        inner = np.array(_polygon(cx, cy, r * rng.uniform(0.4, 0.6), r * rng.uniform(0.4, 0.6), rot + math.pi / n, n))
        star = np.empty((2 * n, 2))
        star[0::2], star[1::2] = outer, inner
        draw.polygon([tuple(p) for p in star.tolist()], fill=255)
    elif kind == 2:  # rounded rectangle
        aspect = rng.uniform(0.4, 2.5)
        bw, bh = 2 * r * math.sqrt(aspect), 2 * r / math.sqrt(aspect)
        draw.rounded_rectangle((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2),
                               radius=min(bw, bh) * rng.uniform(0.05, 0.45), fill=255)
    elif kind == 3:  # disc
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    else:  # ring
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ri = r * rng.uniform(0.4, 0.75)
        draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)


def _logo(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    img, draw = _canvas(h, w)
    for _ in range(1 if rng.random() < 0.7 else 2):
        _logo_shape(draw, h, w, rng)
    return _to_bool(img)


_DRAW = {"strokes": _strokes, "boxes": _boxes, "blobs": _blobs, "ellipses": _ellipses, "text": _text,
         "logo": _logo}


def mask_family(family: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """One draw of ``family`` (bool H×W), with no coverage constraint."""
    if family not in _DRAW:
        raise ValueError(f"unknown mask family {family!r}; expected one of {FAMILIES}")
    return _DRAW[family](h, w, rng)


def _fallback_box(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    area = rng.uniform(0.1, 0.4) * h * w
    aspect = rng.uniform(0.5, 2.0)
    bh = int(np.clip(round(math.sqrt(area / aspect)), 1, h))
    bw = int(np.clip(round(area / bh), 1, w))
    y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    m = np.zeros((h, w), bool)
    m[y0:y0 + bh, x0:x0 + bw] = True
    return m


def random_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A training mask (bool H×W, True = hole) covering 5–50 % of the frame."""
    if h < 8 or w < 8:
        raise ValueError(f"mask too small: {h}×{w}")
    for _ in range(_MAX_TRIES):
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=_WEIGHTS))]
        m = mask_family(family, h, w, rng)
        if rng.random() < _UNION_PROBA:
            other = FAMILIES[int(rng.choice(len(FAMILIES), p=_WEIGHTS))]
            m = m | mask_family(other, h, w, rng)
        if MIN_COVERAGE <= m.mean() <= MAX_COVERAGE:
            return m
    return _fallback_box(h, w, rng)
