"""Is the protection real? Run the attacker's and benign edits on original and protected image.

The verdict follows ../shared/EVALUATION.md: an attacker's edit *failed* (the backdoor fired) when
its fill inside the protected region is within ``FAIL_DISTANCE`` of the target (for a restoring target,
when it is at most ``RESTORE_RATIO`` × as far from the original as a clean edit); a benign edit is
*intact* when its fill on the protected image matches the fill on the original with SSIM ≥
``INTACT_SSIM``. Every figure compares fills only: outside the edit mask the original is pasted back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from backfire import masks as mask_ops
from backfire.inpainters.base import Inpainter
from backfire.io import to_pil
from backfire.judge import metrics

FAIL_DISTANCE = 0.15
RESTORE_RATIO = 0.5
INTACT_SSIM = 0.98
VERDICT_FAMILIES: tuple[str, ...] = ("exact", "dilate-8", "ring", "away-16")


@dataclass
class EditResult:
    """One edit, done on the original and on the protected image."""

    name: str
    kind: str  # "attacker" | "benign"
    mask_fraction: float
    # attacker edits: the backdoor fired on the protected image (and, as a control, on the original)
    failed: bool | None = None
    failed_on_original: bool | None = None
    target_distance_original: float | None = None
    target_distance_protected: float | None = None
    region_ssim_original: float | None = None
    region_ssim_protected: float | None = None
    region_psnr_original: float | None = None
    region_psnr_protected: float | None = None
    # benign edits: the fill on the protected image matches the fill on the original
    intact: bool | None = None
    fidelity_ssim: float | None = None
    fidelity_psnr: float | None = None
    family: str = ""  # the mask family of ../shared/EVALUATION.md the edit belongs to


@dataclass
class Verdict:
    """The whole per-image verdict, as written to ``OUT.json``."""

    model: str
    target_colour: list[float] | None
    invisibility: dict[str, float]
    edits: list[EditResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def protected(self) -> bool:
        """Every attacker edit failed."""
        attacks = [e for e in self.edits if e.kind == "attacker"]
        return bool(attacks) and all(e.failed for e in attacks)

    @property
    def benign_intact(self) -> bool:
        return all(e.intact for e in self.edits if e.kind == "benign")

    def as_dict(self) -> dict:
        return {"protected": self.protected, "benign_intact": self.benign_intact, **asdict(self)}


@dataclass
class EditImages:
    """The fills of one edit, kept for the preview."""

    name: str
    original: Tensor
    protected: Tensor


def judge(
    original: Tensor,
    protected: Tensor,
    region: Tensor,
    inpainter: Inpainter,
    target: Tensor,
    families: tuple[str, ...] = VERDICT_FAMILIES,
    seed: int = 0,
    clean_fills: dict[str, Tensor] | None = None,
) -> tuple[Verdict, list[EditImages]]:
    """Run the edits of ``families`` on both images and measure them.

    Arguments:
        original: x, (3, H, W) in [0, 1].
        protected: x̃ as saved and read back, (3, H, W) in [0, 1].
        region: the protected region M, (H, W) in {0, 1}.
        inpainter: the model the attacker uses.
        target: the protection target T, (3, H, W).
        families: mask families of the protocol (``backfire.masks``).
        seed: seeds the random families.
        clean_fills: edits of the original already made (edit name → fill composited over the original,
            as :class:`EditImages` holds it), reused instead of run again; a robustness sweep judges many
            cleaned copies of one protected image against the same edits of the original.

    Returns:
        The verdict and the fills of every edit (for the preview).
    """
    metrics.validate(original, protected, target, mask=region)
    results, images = [], []
    edits = [e for e in mask_ops.edits(region, families, seed=seed) if e.mask.sum() > 0]
    for edit in edits:
        m = edit.mask.to(original)
        known = (clean_fills or {}).get(edit.name)
        with torch.no_grad():
            inputs = torch.stack([original, protected]) if known is None else protected[None]
            fills = inpainter(inputs, m[None, None]).float().cpu()
        clean_fill = m * fills[0] + (1 - m) * original if known is None else known
        protected_fill = m * fills[-1] + (1 - m) * original
        images.append(EditImages(edit.name, clean_fill, protected_fill))
        measure = _attacker_edit if edit.kind == "attacker" else _benign_edit
        result = measure(edit.name, original, clean_fill, protected_fill, m, region, target)
        result.family = edit.family
        results.append(result)
    produced = {e.family for e in edits}
    verdict = Verdict(
        model=inpainter.name,
        target_colour=_solid_colour(target),
        invisibility=invisibility(original, protected),
        edits=results,
        skipped=[f for f in families if f not in produced],
    )
    return verdict, images


def invisibility(original: Tensor, protected: Tensor) -> dict[str, float]:
    """How visible the perturbation is: whole-image PSNR (dB), SSIM and L∞ (/255)."""
    return {
        "psnr": metrics.psnr(protected, original),
        "ssim": metrics.ssim(protected, original),
        "linf_255": metrics.linf_255(protected, original),
    }


def _crop(image: Tensor, mask: Tensor) -> Tensor:
    top, left, bottom, right = mask_ops.bbox(mask)
    return image[:, top:bottom, left:right]


def _attacker_edit(name, original, clean_fill, protected_fill, m, region, target) -> EditResult:
    inside = m * region
    d_clean = metrics.mean_abs_in(clean_fill, target, inside)
    d_protected = metrics.mean_abs_in(protected_fill, target, inside)
    if torch.equal(target, original):
        # a restoring target: the edit failed when it paints the original back at least twice as
        # closely as a clean edit does (the protocol's rule; the clean edit is the reference, not a control)
        failed, failed_on_original = d_protected <= RESTORE_RATIO * d_clean, False
    else:
        failed, failed_on_original = d_protected <= FAIL_DISTANCE, d_clean <= FAIL_DISTANCE
    return EditResult(
        name=name, kind="attacker", mask_fraction=float(m.mean()),
        failed=failed,
        failed_on_original=failed_on_original,
        target_distance_original=d_clean,
        target_distance_protected=d_protected,
        region_ssim_original=metrics.ssim(_crop(clean_fill, m), _crop(original, m)),
        region_ssim_protected=metrics.ssim(_crop(protected_fill, m), _crop(original, m)),
        region_psnr_original=metrics.psnr(clean_fill, original, m),
        region_psnr_protected=metrics.psnr(protected_fill, original, m),
    )


def _benign_edit(name, original, clean_fill, protected_fill, m, region, target) -> EditResult:
    fidelity = metrics.ssim(_crop(protected_fill, m), _crop(clean_fill, m))
    return EditResult(
        name=name, kind="benign", mask_fraction=float(m.mean()),
        intact=fidelity >= INTACT_SSIM,
        fidelity_ssim=fidelity,
        fidelity_psnr=metrics.psnr(protected_fill, clean_fill, m),
    )


def _solid_colour(target: Tensor) -> list[float] | None:
    flat = target.reshape(3, -1)
    if torch.all(flat == flat[:, :1]):
        return [float(v) for v in flat[:, 0]]
    return None


# ---------------------------------------------------------------------------------------- preview

PREVIEW_TILE = 384  # px, the long side of each tile


def preview(original: Tensor, protected: Tensor, attack: EditImages, benign: EditImages | None) -> Image.Image:
    """original | protected | perturbation ×10 | attacker's edit of original | of protected | benign edit."""
    perturbation = (0.5 + 10 * (protected - original)).clamp(0, 1)
    tiles = [("original", original), ("protected", protected), ("perturbation x10", perturbation),
             (f"{attack.name} edit of original", attack.original),
             (f"{attack.name} edit of protected", attack.protected)]
    if benign is not None:
        tiles.append((f"{benign.name} edit of protected", benign.protected))
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
