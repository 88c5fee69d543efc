"""The preview sheet written beside every protected file (``OUT.preview.png``): the photo, the protection,
the perturbation made visible and the edits, side by side."""

from __future__ import annotations

from PIL import Image, ImageDraw
from torch import Tensor

from backfire.judge.verdict import EditImages
from backfire.pixels import to_pil

__all__ = ["PREVIEW_TILE", "captions", "preview"]

PREVIEW_TILE = 384  # px, the long side of each tile (larger photos are shrunk to it)
MIN_TILE_WIDTH = 128  # px: narrower photos are enlarged by a whole factor (their pixels stay square) so captions fit
GAP, LINE_GAP, PAD = 4, 2, 2  # px between tiles, between a caption's lines, around a caption


def preview(original: Tensor, protected: Tensor, attack: EditImages, benign: EditImages | None) -> Image.Image:
    """original | protected | perturbation | attacker's edit of original | of protected | benign edit.

    The perturbation is centred on grey and stretched to its own largest change (−peak → black, +peak →
    white), so its structure shows even when it sits at the budget almost everywhere. Each caption is wrapped to
    its own tile's width and drawn inside it: none runs over its neighbours', however small the photo.
    """
    delta = protected - original
    peak = float(delta.abs().max())
    perturbation = (0.5 + 0.5 * delta / max(peak, 1e-8)).clamp(0, 1)
    pictures = [original, protected, perturbation, attack.original, attack.protected]
    if benign is not None:
        pictures.append(benign.protected)
    tiles = list(zip(captions(peak * 255, attack.name, None if benign is None else benign.name), pictures))
    h, w = original.shape[-2:]
    tw, th, resample = _tile_size(w, h)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [_wrap(measure, label, tw - 2 * PAD) for label, _ in tiles]
    line_h = measure.textbbox((0, 0), "Ag…±")[3] + LINE_GAP
    label_h = 2 * PAD + line_h * max(len(ls) for ls in lines)
    sheet = Image.new("RGB", (len(tiles) * (tw + GAP) - GAP, th + label_h), "white")
    for i, ((_, tile), text) in enumerate(zip(tiles, lines)):
        band = Image.new("RGB", (tw, label_h), "white")  # drawn apart: what does not fit is cut, never overlaps
        draw = ImageDraw.Draw(band)
        for k, line in enumerate(text):
            draw.text((PAD, PAD + k * line_h), line, fill="black")
        sheet.paste(band, (i * (tw + GAP), 0))
        sheet.paste(to_pil(tile).resize((tw, th), resample), (i * (tw + GAP), label_h))
    return sheet


def _tile_size(w: int, h: int) -> tuple[int, int, Image.Resampling]:
    """A tile's width and height for a w×h photo, and how it is resampled: large photos shrunk (Lanczos) to
    ``PREVIEW_TILE`` on their long side, narrow ones enlarged by a whole factor (nearest: the pixels as they are)
    toward ``MIN_TILE_WIDTH`` while the long side stays within ``PREVIEW_TILE``."""
    if max(w, h) > PREVIEW_TILE:
        scale = PREVIEW_TILE / max(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale)), Image.Resampling.LANCZOS
    factor = max(1, min(-(-MIN_TILE_WIDTH // w), PREVIEW_TILE // max(w, h)))
    return w * factor, h * factor, Image.Resampling.NEAREST


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` px, broken between words (a word wider than that keeps its line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def captions(peak_255: float, attack: str, benign: str | None) -> list[str]:
    """The sheet's tile captions, left to right: what each tile shows (the perturbation's grey scale is its own
    largest change, ``peak_255`` in /255); also what the app writes under the sheet."""
    names = ["original", "protected", f"perturbation (±{peak_255:.1f}/255 = black…white)",
             f"{attack} edit of original", f"{attack} edit of protected"]
    return names if benign is None else [*names, f"{benign} edit of protected"]
