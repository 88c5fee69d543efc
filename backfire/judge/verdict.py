"""Is the protection real? Run the attacker's and benign edits on original and protected image.

The verdict follows the evaluation protocol (docs/evaluation.md): an attacker's edit *failed* (the backdoor fired) when
its fill inside the protected region is within ``FAIL_DISTANCE`` of the target (for a restoring target,
when it is at most ``RESTORE_RATIO`` × as far from the original as a clean edit); a benign edit is
*intact* when its fill on the protected image matches the fill on the original with SSIM ≥
``INTACT_SSIM``. Every figure compares fills only: outside the edit mask the original is pasted back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from backfire import masks as mask_ops
from backfire.inpainters.base import Inpainter
from backfire.judge import colour, metrics
from backfire.masks import EditKind
from backfire.protect import TargetKind

FAIL_DISTANCE = 0.15
RESTORE_RATIO = 0.5
INTACT_SSIM = 0.98
VERDICT_FAMILIES: tuple[str, ...] = ("exact", "dilate-8", "ring", "away-16")

ATTACKER_METRICS: tuple[str, ...] = (
    "target_distance_original", "target_distance_protected",  # mean |fill − T| over m ∩ M
    "region_ssim_original", "region_ssim_protected",          # SSIM(fill, x) on bbox(m)
    "region_psnr_original", "region_psnr_protected",          # PSNR(fill, x) over m
)
"""What is measured of an attacker edit, on the original x and on the protected x̃ (one home: the JSON,
the CSV columns, the tables and the terminal read these names)."""
BENIGN_METRICS: tuple[str, ...] = ("fidelity_ssim", "fidelity_psnr")
"""What is measured of a benign edit: its fill on x̃ against its fill on x."""
INVISIBILITY_METRICS: tuple[str, ...] = ("psnr", "ssim", "linf_255", "delta_e_mean", "delta_e_p99")
"""What is measured of the whole protected photo x̃ against x (:func:`invisibility`): the JSON's ``invisibility``,
``cases.csv``'s and ``curve.csv``'s columns of the same names."""


@dataclass
class AttackerEdit:
    """An edit that touches the protected region, done on the original and on the protected image.

    ``failed``: the backdoor fired on the protected image (the protection worked for this edit);
    ``failed_on_original``: the same rule on the original, a control.
    """

    name: str
    family: str
    mask_fraction: float
    failed: bool
    failed_on_original: bool
    metrics: dict[str, float]
    kind: ClassVar[EditKind] = "attacker"

    def as_dict(self) -> dict:
        return _record(self, failed=self.failed, failed_on_original=self.failed_on_original)


@dataclass
class BenignEdit:
    """An edit that leaves the protected region alone: ``intact`` when its fill on x̃ matches its fill on x."""

    name: str
    family: str
    mask_fraction: float
    intact: bool
    metrics: dict[str, float]
    kind: ClassVar[EditKind] = "benign"

    def as_dict(self) -> dict:
        return _record(self, intact=self.intact)


EditResult = AttackerEdit | BenignEdit


def _record(edit: EditResult, **outcome) -> dict:
    """One edit as written to JSON: the same keys for both kinds (``None`` where a field is the other kind's),
    so readers of ``OUT.json`` can treat ``edits`` as one table."""
    record = {"name": edit.name, "kind": edit.kind, "family": edit.family, "mask_fraction": edit.mask_fraction,
              "failed": None, "failed_on_original": None, "intact": None}
    record.update(outcome)
    record.update({m: edit.metrics.get(m) for m in (*ATTACKER_METRICS, *BENIGN_METRICS)})
    return record


@dataclass
class Verdict:
    """The whole per-image verdict, as written to ``OUT.json``."""

    model: str
    target_kind: TargetKind
    target_colour: list[float] | None
    invisibility: dict[str, float]
    edits: list[EditResult]
    skipped: list[str] = field(default_factory=list)
    pipeline: str = "plain"
    strategy: str = ""
    default_strategy: bool = True
    randomness: dict | None = None  # what else decides the fill (MAT: latent, noise), as the tool draws it
    draw: int = 0  # which of the attacker's draws of a stochastic model (0: the model as loaded)
    stochastic: bool = False  # whether the tool draws afresh for every edit (so that this is one draw of many)

    @property
    def tool(self) -> str:
        """How the attacker ran the model, in words."""
        drawn = f", draw {self.draw}" if self.stochastic else ""
        if self.pipeline == "plain" or not self.strategy:
            return f"{self.model} on the whole photo{drawn}"
        default = "the attacker's default" if self.default_strategy else "if the attacker changes the setting"
        return f"{self.model} through IOPaint, strategy {self.strategy} ({default}){drawn}"

    def fail_distance(self, edit: AttackerEdit) -> float:
        """The largest distance to the target at which ``edit`` counts as failed (the protocol's rule)."""
        return fail_distance(self.target_kind, edit.metrics["target_distance_original"])

    def margin(self, edit: AttackerEdit) -> float:
        """How far ``edit`` is inside the failure rule: ≥ 0 failed (0: on the edge), < 0 not failed (by that
        much); -inf when the distance could not be measured."""
        margin = self.fail_distance(edit) - edit.metrics["target_distance_protected"]
        return margin if math.isfinite(margin) else -math.inf

    @property
    def attacker_edits(self) -> list[AttackerEdit]:
        return [e for e in self.edits if isinstance(e, AttackerEdit)]

    @property
    def benign_edits(self) -> list[BenignEdit]:
        return [e for e in self.edits if isinstance(e, BenignEdit)]

    @property
    def protected(self) -> bool:
        """Every attacker edit failed."""
        attacks = self.attacker_edits
        return bool(attacks) and all(e.failed for e in attacks)

    @property
    def benign_intact(self) -> bool:
        return all(e.intact for e in self.benign_edits)

    @property
    def summary(self) -> str:
        """The verdict in plain words (the raw fields stay beside it in the JSON)."""
        attacks, benign = self.attacker_edits, self.benign_edits
        failed, intact = sum(e.failed for e in attacks), sum(e.intact for e in benign)
        if self.protected:
            head = (f"PROTECTED against {self.model}: all {len(attacks)} attacker edits of the region fail "
                    f"(the inpainting shows the target instead of removing the region)")
        else:
            head = (f"NOT PROTECTED against {self.model}: {len(attacks) - failed} of {len(attacks)} attacker "
                    f"edits still inpaint the region normally (only {failed} fail)")
        tail = (f"{intact} of {len(benign)} edits elsewhere work as before" if benign else "no benign edit judged")
        return f"{head}; {tail}."

    def as_dict(self) -> dict:
        return {"protected": self.protected, "benign_intact": self.benign_intact, "summary": self.summary,
                "model": self.model, "pipeline": self.pipeline, "strategy": self.strategy,
                "default_strategy": self.default_strategy, "randomness": self.randomness, "draw": self.draw,
                "target_kind": self.target_kind,
                "target_colour": self.target_colour,
                "invisibility": self.invisibility, "edits": [e.as_dict() for e in self.edits],
                "skipped": self.skipped}


@dataclass
class EditImages:
    """The fills of one edit (composited over the original), kept for the preview and for reuse."""

    name: str
    mask: Tensor
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
    clean_fills: Sequence[tuple[Tensor, Tensor]] = (),
    target_kind: TargetKind = "solid",
    on_edit: Callable[[int, int], None] | None = None,
    visibility: dict[str, float] | None = None,
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
        clean_fills: edits of the original already made, as ``(mask, fill composited over the original)``;
            an edit with the same mask is not run again on the original.
            A robustness sweep judges many cleaned copies of one file against the same edits of the original,
            and ``backfire protect`` reuses the clean fills its optimisation already computed.
        target_kind: what ``target`` is (``make_target``'s kind): a ``restore`` target is judged by the
            protocol's relative rule, the others by the distance to T.
        on_edit: called as ``on_edit(done, total)`` after each edit (a verdict takes seconds per edit).
        visibility: :func:`invisibility` of this pair, when already measured (it depends on the two images
            only, not on the model: every trial of a photo shares it).

    Returns:
        The verdict and the fills of every edit (for the preview).
    """
    metrics.validate(original, protected, target, mask=region)
    results, images = [], []
    edits = [e for e in mask_ops.edits(region, families, seed=seed) if e.mask.sum() > 0]
    with torch.no_grad():  # one trip to the model's device for both images, not one per edit
        pair = torch.stack([original, protected]).to(inpainter.device)
    for edit in edits:
        m = edit.mask.to(original)
        known = next((fill.to(original) for mask, fill in clean_fills if torch.equal(mask.to(m), m)), None)
        with torch.no_grad():
            fills = inpainter(pair if known is None else pair[1:], m[None, None]).float().cpu()
        clean_fill = m * fills[0] + (1 - m) * original if known is None else known
        protected_fill = m * fills[-1] + (1 - m) * original
        images.append(EditImages(edit.name, edit.mask, clean_fill, protected_fill))
        if edit.kind == "attacker":
            results.append(_attacker_edit(edit, original, clean_fill, protected_fill, m, region, target, target_kind))
        else:
            results.append(_benign_edit(edit, clean_fill, protected_fill, m))
        if on_edit is not None:
            on_edit(len(results), len(edits))
    produced = {e.family for e in edits}
    tool = inpainter.describe(tuple(original.shape[-2:]))
    verdict = Verdict(
        pipeline=tool["pipeline"],
        strategy=tool["strategy"],
        model=tool["model"],
        randomness=tool["randomness"],
        stochastic=inpainter.stochastic,
        target_kind=target_kind,
        target_colour=_solid_colour(target),
        invisibility=visibility if visibility is not None else invisibility(original, protected),
        edits=results,
        skipped=[f for f in families if f not in produced],
    )
    return verdict, images


def fail_distance(target_kind: TargetKind, distance_original: float) -> float:
    """The largest mean distance to the target T at which an attacker edit of x̃ counts as failed: ``FAIL_DISTANCE``;
    for a restoring target, ``RESTORE_RATIO`` × the clean edit's distance (the edit paints the original back at
    least twice as closely as a clean edit does)."""
    return RESTORE_RATIO * distance_original if target_kind == "restore" else FAIL_DISTANCE


def invisibility(original: Tensor, protected: Tensor) -> dict[str, float]:
    """How visible the perturbation is (:data:`INVISIBILITY_METRICS`): whole-image PSNR (dB), SSIM, L∞ (/255), and
    CIEDE2000 ΔE as people see it, its mean and 99th percentile over the photo (one JND is
    :data:`backfire.judge.colour.JND`; the percentile says whether it shows *anywhere*)."""
    delta_e_mean, delta_e_p99 = colour.delta_e(protected, original)
    return {
        "psnr": metrics.psnr(protected, original),
        "ssim": metrics.ssim(protected, original),
        "linf_255": metrics.linf_255(protected, original),
        "delta_e_mean": delta_e_mean,
        "delta_e_p99": delta_e_p99,
    }


def _crop(image: Tensor, mask: Tensor) -> Tensor:
    left, top, right, bottom = mask_ops.bbox(mask)
    return image[:, top:bottom, left:right]


def _attacker_edit(edit: mask_ops.Edit, original: Tensor, clean_fill: Tensor, protected_fill: Tensor, m: Tensor,
                   region: Tensor, target: Tensor, target_kind: TargetKind) -> AttackerEdit:
    inside = m * region
    d_clean = metrics.mean_abs_in(clean_fill, target, inside)
    d_protected = metrics.mean_abs_in(protected_fill, target, inside)
    failed = d_protected <= fail_distance(target_kind, d_clean)
    # for a restoring target the clean edit is the reference, not a control
    failed_on_original = target_kind != "restore" and d_clean <= FAIL_DISTANCE
    measured = {
        "target_distance_original": d_clean,
        "target_distance_protected": d_protected,
        "region_ssim_original": metrics.ssim(_crop(clean_fill, m), _crop(original, m)),
        "region_ssim_protected": metrics.ssim(_crop(protected_fill, m), _crop(original, m)),
        "region_psnr_original": metrics.psnr(clean_fill, original, m),
        "region_psnr_protected": metrics.psnr(protected_fill, original, m),
    }
    return AttackerEdit(edit.name, edit.family, float(m.mean()), bool(failed), bool(failed_on_original), measured)


def _benign_edit(edit: mask_ops.Edit, clean_fill: Tensor, protected_fill: Tensor, m: Tensor) -> BenignEdit:
    fidelity = metrics.ssim(_crop(protected_fill, m), _crop(clean_fill, m))
    measured = {"fidelity_ssim": fidelity, "fidelity_psnr": metrics.psnr(protected_fill, clean_fill, m)}
    return BenignEdit(edit.name, edit.family, float(m.mean()), fidelity >= INTACT_SSIM, measured)


def _solid_colour(target: Tensor) -> list[float] | None:
    flat = target.reshape(3, -1)
    if torch.all(flat == flat[:, :1]):
        return [float(v) for v in flat[:, 0]]
    return None
