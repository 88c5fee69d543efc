"""What a training run is: :class:`TrainConfig` (sizes, optimisation, loss weights, data, bookkeeping),
the named loss-weight sets :data:`LOSSES` and the stand-in study's trainers :data:`VARIANTS`
(``docs/standin.md``).

:func:`loss_terms` says which terms of :mod:`backfire.train.losses` a config switches on. A config is
stored as a plain dict (``dataclasses.asdict``) in the checkpoint, ``config.json`` and ``summary.json``;
:data:`TrainConfig.ARCH_FIELDS` are the fields a resumed run must share with its checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from backfire.inpainters.ffc import FFCConfig

__all__ = ["LOSSES", "LOSS_FIELDS", "PERCEPTUAL_WEIGHT", "TrainConfig", "VARIANTS", "loss_terms", "variant_config"]

PERCEPTUAL_WEIGHT = 0.1  # perceptual 2.48 vs hole L1 0.244 at initialisation (ngf 32, 6 blocks, 128² crops)


@dataclass
class TrainConfig:
    # generator (FFCConfig) and discriminator sizes
    ngf: int = 32
    n_downsampling: int = 3
    n_blocks: int = 6
    ratio_g: float = 0.75
    max_features: int = 1024
    prefill: bool = True  # start from the parameter-free coarse fill (see FFCConfig.prefill)
    encoder: str = ""  # "" or a pretrained encoder feeding the bottleneck (stemfed.ENCODERS)
    ndf: int = 32
    d_layers: int = 3
    # optimisation
    batch: int = 16
    lr: float = 5e-4
    lr_d: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    grad_clip: float = 0.0  # 0 = off; max global gradient norm otherwise (both networks)
    ema_decay: float = 0.999
    # loss weights
    l1_hole: float = 1.0
    l1_context: float = 0.25
    ssim_weight: float = 0.5
    perceptual_weight: float = 0.0
    adv_weight: float = 0.05
    fm_weight: float = 1.0
    adv_start: int = 1000  # steps of pure reconstruction first
    adv_ramp: int = 500
    # data
    hflip: bool = True
    seed: int = 0
    # bookkeeping
    log_every: int = 50
    val_every: int = 1000
    ckpt_every: int = 1000
    val_batch: int = 16
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = False
    workers: int = -1  # processes preparing batches ahead; -1 = auto (min(6, CPUs − 2) on CUDA, 0 on CPU)

    def generator_config(self) -> FFCConfig:
        return FFCConfig(self.ngf, self.n_downsampling, self.n_blocks, self.ratio_g, self.max_features, self.prefill)

    ARCH_FIELDS = ("ngf", "n_downsampling", "n_blocks", "ratio_g", "max_features", "prefill", "encoder", "ndf",
                   "d_layers")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


LOSS_FIELDS = ("l1_hole", "l1_context", "ssim_weight", "perceptual_weight", "adv_weight", "fm_weight", "adv_start",
               "adv_ramp")
LOSSES: dict[str, dict[str, float]] = {
    # backfire-s's objective (the TrainConfig defaults)
    "backfire-s": dict(l1_hole=1.0, l1_context=0.25, ssim_weight=0.5, perceptual_weight=0.0, adv_weight=0.05,
                       fm_weight=1.0, adv_start=1000, adv_ramp=500),
    # reconstruction only
    "l1": dict(l1_hole=1.0, l1_context=0.25, ssim_weight=0.0, perceptual_weight=0.0, adv_weight=0.0,
               fm_weight=0.0, adv_start=0, adv_ramp=1),
    # LaMa's terms: L1 + adversarial (from the first step, as LaMa trains) + feature matching + perceptual.
    # L1 weights as in "l1" so that the two differ only by the added terms; the adversarial weights are
    # backfire-s's; the perceptual weight puts that term on the scale of the hole L1 at initialisation
    # (measured on the training crops; docs/standin.md).
    "lama": dict(l1_hole=1.0, l1_context=0.25, ssim_weight=0.0, perceptual_weight=PERCEPTUAL_WEIGHT,
                 adv_weight=0.05, fm_weight=1.0, adv_start=0, adv_ramp=100),
}
VARIANTS: dict[str, dict[str, Any]] = {
    "s-recipe": dict(prefill=True, encoder="", loss="backfire-s"),
    "l1": dict(prefill=False, encoder="", loss="l1"),
    "lama": dict(prefill=False, encoder="", loss="lama"),
    "lama-stem": dict(prefill=False, encoder="inception-stem", loss="lama"),
    # the study's fifth variant: the pilot's no-prefill variants were far below Telea after 6 CPU-minutes,
    # while the prefill starts above it; this keeps that start and adds LaMa's terms and the stem
    "prefill-lama-stem": dict(prefill=True, encoder="inception-stem", loss="lama"),
}
"""The stand-in study's trainers (issue 14): chosen on inpainting grounds only — no term rewards a
fill's sensitivity to its context, no adversarial examples."""


def variant_config(name: str, **overrides: Any) -> "TrainConfig":
    """The TrainConfig of study variant ``name`` (its architecture and loss weights), then ``overrides``."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")
    spec = dict(VARIANTS[name])
    values = {**LOSSES[spec.pop("loss")], **spec, **overrides}
    return TrainConfig.from_dict(values)


def loss_terms(cfg: "TrainConfig", step: int | None = None) -> set[str]:
    """The loss terms ``cfg`` switches on (at ``step``, if given: the adversarial pair starts later)."""
    terms = {name for name, weight in (("l1_hole", cfg.l1_hole), ("l1_context", cfg.l1_context),
                                       ("ssim", cfg.ssim_weight), ("perceptual", cfg.perceptual_weight)) if weight > 0}
    if cfg.adv_weight > 0 and (step is None or step >= cfg.adv_start):
        terms.add("adv_g")
        if cfg.fm_weight > 0:
            terms.add("fm")
    return terms
