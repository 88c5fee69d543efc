"""The preview sheet written beside every protected file (``OUT.preview.png``): the photo, the protection,
the perturbation made visible and the edits, side by side."""

from __future__ import annotations

from PIL import Image, ImageDraw
from torch import Tensor

from backfire.judge.verdict import EditImages
from backfire.pixels import to_pil

__all__ = ["PREVIEW_TILE", "captions", "preview"]

PREVIEW_TILE = 384  # px, the long side of each tile


def preview(original: Tensor, protected: Tensor, attack: EditImages, benign: EditImages | None) -> Image.Image:
    """original | protected | perturbation | attacker's edit of original | of protected | benign edit.

    The perturbation is centred on grey and stretched to its own largest change (−peak → black, +peak →
    white), so its structure shows even when it sits at the budget almost everywhere.
    """
    delta = protected - original
    peak = float(delta.abs().max())
    perturbation = (0.5 + 0.5 * delta / max(peak, 1e-8)).clamp(0, 1)
    pictures = [original, protected, perturbation, attack.original, attack.protected]
    if benign is not None:
        pictures.append(benign.protected)
    tiles = list(zip(captions(peak * 255, attack.name, None if benign is None else benign.name), pictures))
    h, w = original.shape[-2:]
    scale = min(1.0, PREVIEW_TILE / max(h, w))
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    label_h, gap = 16, 4
    sheet = Image.new("RGB", (len(tiles) * (tw + gap) - gap, th + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, tile) in enumerate(tiles):
        picture = to_pil(tile).resize((tw, th), Image.Resampling.LANCZOS)
        sheet.paste(picture, (i * (tw + gap), label_h))
        draw.text((i * (tw + gap) + 2, 2), label, fill="black")
    return sheet


def captions(peak_255: float, attack: str, benign: str | None) -> list[str]:
    """The sheet's tile captions, left to right: what each tile shows (the perturbation's grey scale is its own
    largest change, ``peak_255`` in /255); also what the app writes under the sheet."""
    names = ["original", "protected", f"perturbation (±{peak_255:.1f}/255 = black…white)",
             f"{attack} edit of original", f"{attack} edit of protected"]
    return names if benign is None else [*names, f"{benign} edit of protected"]
