"""One training run of backfire's compact FFC inpainter (LaMa's generator, :mod:`backfire.inpainters.ffc`):
the networks, the optimisation step, validation and checkpoints.

The model is trained only to inpaint well: the losses of :mod:`backfire.train.losses` on photo crops
with random holes (:mod:`backfire.train.data`, :mod:`backfire.train.masks`), nothing else; what a run
is, is its :class:`~backfire.train.config.TrainConfig`. :func:`backfire.train.run.run_training` drives a
:class:`Trainer` to the end and exports its EMA generator.

**Pretrained encoder** (``encoder = "inception-stem"``): the generator is a
:class:`~backfire.inpainters.stemfed.StemFedGenerator` (the same frozen stem feeds its bottleneck);
the stem is shared by the generator, its EMA and the perceptual loss, never updated, and left out of
the exported weights.

With ``adv_weight == 0`` (or before ``adv_start``) the discriminator is neither run nor updated.

**Optimisation.** AdamW for both networks (weight decay on conv weights only), linear learning-rate
warm-up, optional gradient-norm clipping, a step whose loss is not finite is skipped (counted). An EMA
of the generator (decay ``ema_decay``, warmed up as min(decay, (1+s)/(10+s)); BatchNorm statistics
copied) is what validation measures and what is exported. On CUDA the generator and the losses run
under bf16 autocast (the Fourier units run their FFTs in fp32 themselves); the discriminator runs in
fp32 so its spectral-norm power iteration stays accurate.

**Checkpoints** (atomic) hold both networks, the EMA, both optimisers, the step, the training time so
far (wall seconds and this process's CPU seconds, ``time.process_time``: the budget that stays fair on
a shared machine) and the torch / CUDA / numpy / python RNG states: a resumed run continues identically
(bit for bit on CPU).

**Validation** runs the EMA generator on the fixed validation crops with fixed masks (seeded
independently of the training seed, so runs compare): hole PSNR (:func:`backfire.judge.metrics.psnr_batch`
over hole pixels) and hole SSIM (:func:`backfire.judge.metrics.ssim_batch` on each mask's bounding box,
as the evaluation protocol measures a region).
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from backfire.inpainters.ffc import FFCResNetGenerator, build_generator
from backfire.inpainters.stemfed import ENCODERS, InceptionStem, StemFedGenerator, build_stemfed
from backfire.inpainters.weights import save_torch
from backfire.judge.metrics import psnr_batch, ssim_batch
from backfire.train.config import TrainConfig
from backfire.train.data import BatchMaker
from backfire.train.discriminator import PatchDiscriminator
from backfire.train.losses import (discriminator_loss, generator_adversarial, hole_fraction, masked_l1,
                                   masked_ms_ssim, perceptual_loss)
from backfire.train.masks import random_mask

__all__ = ["Trainer", "VAL_MASK_SEED"]

VAL_MASK_SEED = 20_241_018  # the validation masks do not depend on the training seed


class Trainer:
    """Generator, discriminator, EMA, optimisers and the data stream of one training run.

    ``train`` and ``val`` are uint8 N×H×W×3 arrays (H, W multiples of 2**n_downsampling).
    """

    def __init__(self, cfg: TrainConfig, train: np.ndarray, val: np.ndarray | None = None,
                 device: str | torch.device = "auto"):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.cfg = cfg
        if train.ndim != 4 or train.shape[-1] != 3 or train.dtype != np.uint8 or len(train) == 0:
            raise ValueError(f"training crops must be a non-empty uint8 N×H×W×3 array, got {train.shape} {train.dtype}")
        multiple = 2 ** cfg.n_downsampling
        for name, arr in (("train", train), ("val", val)):
            if arr is not None and len(arr) and (arr.shape[1] % multiple or arr.shape[2] % multiple):
                raise ValueError(f"{name} crops {arr.shape[1]}×{arr.shape[2]} are not multiples of {multiple}")
        self.train_data = train
        self.val_data = val if val is not None else np.zeros((0, *train.shape[1:]), np.uint8)
        self.cuda = self.device.type == "cuda"
        self.amp = bool(cfg.amp and self.cuda)
        self.memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format

        if cfg.encoder and cfg.encoder not in ENCODERS:
            raise ValueError(f"unknown pretrained encoder {cfg.encoder!r}; expected one of {ENCODERS}")
        # one frozen Inception stem, shared by the generator, its EMA and the perceptual loss
        self.stem = InceptionStem().to(self.device) if (cfg.encoder or cfg.perceptual_weight > 0) else None
        torch.manual_seed(cfg.seed)
        self.G = self._build_generator()
        self.D = PatchDiscriminator(3, cfg.ndf, cfg.d_layers).to(self.device, memory_format=self.memory_format)
        self.ema = self._build_generator()
        self.ema.load_state_dict(self.G.state_dict())
        self.ema.eval().requires_grad_(False)
        self.opt_g = torch.optim.AdamW(self._param_groups(self.G), lr=cfg.lr, betas=(0.9, 0.99))
        self.opt_d = torch.optim.AdamW(self._param_groups(self.D), lr=cfg.lr_d, betas=(0.5, 0.99))
        self.step = 0
        self.skipped = 0
        self.train_seconds = 0.0  # summed over this run's processes (resumes included)
        self.train_cpu_seconds = 0.0  # process CPU time (time.process_time), likewise
        trainable = [name for name, p in self.G.named_parameters() if p.requires_grad]
        ema_named = dict(self.ema.named_parameters())
        g_named = dict(self.G.named_parameters())
        self._ema_params = [ema_named[n] for n in trainable]
        self._g_params = [g_named[n] for n in trainable]

        self.batches = BatchMaker(train, cfg.batch, cfg.seed, cfg.hflip)
        self.workers = cfg.workers if cfg.workers >= 0 else (min(6, max(1, (os.cpu_count() or 2) - 2)) if self.cuda else 0)
        self._loader: Any = None
        self._loader_next = -1
        self._val_masks: np.ndarray | None = None

    # ----------------------------------------------------------------------------- parameters
    def _build_generator(self) -> FFCResNetGenerator | StemFedGenerator:
        config = self.cfg.generator_config()
        net = build_stemfed(config, self.cfg.encoder, self.stem) if self.cfg.encoder else build_generator(config)
        return net.to(self.device, memory_format=self.memory_format)

    def _param_groups(self, net: nn.Module) -> list[dict]:
        params = [p for p in net.parameters() if p.requires_grad]  # a frozen encoder is not optimised
        decay = [p for p in params if p.ndim >= 2]
        other = [p for p in params if p.ndim < 2]
        return [{"params": decay, "weight_decay": self.cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]

    @staticmethod
    def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)

    # ----------------------------------------------------------------------------------- data
    def _batch(self, step: int):
        """The batch of ``step``, from the worker processes when there are any (they run ahead)."""
        if self.workers == 0:
            return self.batches[step]
        if self._loader is None or self._loader_next != step:
            self.close()
            loader = torch.utils.data.DataLoader(
                self.batches, batch_size=None, sampler=range(step, 2**62), num_workers=self.workers,
                pin_memory=self.cuda, prefetch_factor=4, persistent_workers=False)
            self._loader = iter(loader)
        self._loader_next = step + 1
        return next(self._loader)

    def to_tensors(self, imgs: np.ndarray | Tensor, masks: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
        img = torch.as_tensor(imgs)
        mask = torch.as_tensor(masks)
        if self.cuda and not img.is_pinned():
            img, mask = img.pin_memory(), mask.pin_memory()
        img = img.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        mask = mask.to(self.device, non_blocking=True)[:, None].float()
        return (img.contiguous(memory_format=self.memory_format),
                mask.contiguous(memory_format=self.memory_format))

    # --------------------------------------------------------------------------------- losses
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp) if self.cuda else torch.autocast("cpu", enabled=False)

    def adv_factor(self, step: int) -> float:
        cfg = self.cfg
        if cfg.adv_weight <= 0 or step < cfg.adv_start:
            return 0.0
        return cfg.adv_weight * min(1.0, (step - cfg.adv_start + 1) / max(1, cfg.adv_ramp))

    def lr_at(self, step: int) -> float:
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup_steps))

    def predict(self, net: nn.Module, img: Tensor, mask: Tensor) -> Tensor:
        with self._autocast():
            pred = net(torch.cat([img * (1 - mask), mask], dim=1))
        return pred.float()

    def train_step(self, batch: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Tensor]:
        """One optimisation step (G, then D when the adversarial loss is on) on ``batch`` or on the
        batch of the current step. Returns the losses (0-d tensors, before the update)."""
        cfg, step = self.cfg, self.step
        img, mask = self.to_tensors(*(batch if batch is not None else self._batch(step)))
        adv_w = self.adv_factor(step)
        for group in self.opt_g.param_groups:
            group["lr"] = self.lr_at(step)
        self.G.train()
        self.D.train()

        loss_g, out, comp, real_logits = self._generator_losses(img, mask, adv_w)
        if not bool(torch.isfinite(loss_g)):
            self.skipped += 1
            self.step += 1
            out["skipped"] = torch.ones((), device=self.device)
            return out
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        # the global gradient norm, logged; clipped only when grad_clip > 0 (a factor of 1 otherwise)
        out["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.G.parameters(), cfg.grad_clip if cfg.grad_clip > 0
                                                          else math.inf).detach()
        self.opt_g.step()
        if real_logits is not None:
            out.update(self._discriminator_step(real_logits, comp, mask))
        self._update_ema(step)
        self.step += 1
        return out

    def _generator_losses(self, img: Tensor, mask: Tensor,
                          adv_w: float) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
        """The generator's weighted loss, every term detached (zeros for those that are off), the
        composite, and the discriminator's real logits with their graph (for the D step; None when the
        adversarial loss is off)."""
        cfg = self.cfg
        pred = self.predict(self.G, img, mask)
        comp = mask * pred + (1 - mask) * img
        l1_hole, l1_ctx = masked_l1(pred, img, mask)
        zero = torch.zeros((), device=self.device)
        ssim_loss = 1 - masked_ms_ssim(comp, img, mask).mean() if cfg.ssim_weight > 0 else zero
        percept = perceptual_loss(self.stem, pred, img) if cfg.perceptual_weight > 0 else zero
        loss_g = (cfg.l1_hole * l1_hole + cfg.l1_context * l1_ctx + cfg.ssim_weight * ssim_loss
                  + cfg.perceptual_weight * percept)
        out = {"l1_hole": l1_hole.detach(), "l1_context": l1_ctx.detach(), "ssim": ssim_loss.detach(),
               "perceptual": percept.detach(), "adv_g": zero, "fm": zero, "loss_d": zero, "d_real": zero,
               "d_fake": zero}
        real_logits = None
        if adv_w > 0:
            # Real logits with their graph (used by the D step), computed before any update so that
            # the G and D steps see the same discriminator.
            self.D.requires_grad_(True)
            real_logits, real_feats = self.D(img)
            self.D.requires_grad_(False)
            fake_logits, fake_feats = self.D(comp)
            adv_g, fm = generator_adversarial(fake_logits, fake_feats, real_feats, mask)
            loss_g = loss_g + adv_w * adv_g + (cfg.fm_weight if cfg.fm_weight else 0.0) * fm
            out["adv_g"], out["fm"] = adv_g.detach(), fm.detach()
        out["loss_g"] = loss_g.detach()
        return loss_g, out, comp, real_logits

    def _discriminator_step(self, real_logits: Tensor, comp: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Update D on the real logits and the (detached) composite; returns its loss and mean logits."""
        self.D.requires_grad_(True)
        fake_logits, _ = self.D(comp.detach())
        hole = hole_fraction(mask, fake_logits)
        loss_d = discriminator_loss(real_logits, fake_logits, hole)
        self.opt_d.zero_grad(set_to_none=True)
        if bool(torch.isfinite(loss_d)):
            loss_d.backward()
            if self.cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.D.parameters(), self.cfg.grad_clip)
            self.opt_d.step()
        return {"loss_d": loss_d.detach(), "d_real": real_logits.detach().mean(),
                "d_fake": (fake_logits.detach() * hole).sum() / hole.sum().clamp_min(1e-6)}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._ema_params, self._g_params, 1 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # ----------------------------------------------------------------------------- validation
    def val_masks(self) -> np.ndarray:
        if self._val_masks is None:
            h, w = self.val_data.shape[1:3]
            self._val_masks = np.stack([random_mask(h, w, np.random.default_rng([VAL_MASK_SEED, i]))
                                        for i in range(len(self.val_data))]) if len(self.val_data) else None
        return self._val_masks

    @torch.no_grad()
    def validate(self, net: nn.Module | None = None, fill: str = "model") -> dict[str, float]:
        """Hole PSNR / SSIM / L1 of ``net`` (default: the EMA generator) on the validation crops.
        ``fill="mean"`` measures the trivial baseline that fills each hole with its context's mean colour."""
        if not len(self.val_data):
            return {}
        net = net if net is not None else self.ema
        was_training = net.training
        net.eval()
        masks = self.val_masks()
        psnrs, ssims, l1s = [], [], []
        for a in range(0, len(self.val_data), self.cfg.val_batch):
            img, mask = self.to_tensors(self.val_data[a:a + self.cfg.val_batch], masks[a:a + self.cfg.val_batch])
            if fill == "mean":
                mean = (img * (1 - mask)).sum((2, 3), keepdim=True) / (1 - mask).sum((2, 3), keepdim=True).clamp_min(1)
                pred = mean.expand_as(img)
            else:
                pred = self.predict(net, img, mask)
            comp = (mask * pred + (1 - mask) * img).clamp(0, 1)
            psnrs.append(psnr_batch(comp, img, mask).cpu())
            l1s.append((((comp - img).abs() * mask).sum((1, 2, 3)) / (mask.sum((1, 2, 3)) * 3)).cpu())
            for i in range(len(img)):
                ys, xs = torch.nonzero(mask[i, 0], as_tuple=True)
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                ssims.append(ssim_batch(comp[i:i + 1, :, y0:y1, x0:x1], img[i:i + 1, :, y0:y1, x0:x1]).cpu())
        net.train(was_training)
        return {"val_psnr_hole": float(torch.cat(psnrs).mean()), "val_ssim_hole": float(torch.cat(ssims).mean()),
                "val_l1_hole": float(torch.cat(l1s).mean())}

    # ---------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"version": 1, "config": asdict(self.cfg), "step": self.step, "skipped": self.skipped,
                "train_seconds": self.train_seconds, "train_cpu_seconds": self.train_cpu_seconds,
                "G": self.G.state_dict(), "D": self.D.state_dict(),
                "EMA": self.ema.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "rng": rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = TrainConfig.from_dict(state["config"])
        for name in TrainConfig.ARCH_FIELDS:
            if getattr(saved, name) != getattr(self.cfg, name):
                raise ValueError(f"checkpoint has {name}={getattr(saved, name)}, this run {getattr(self.cfg, name)}")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.ema.load_state_dict(state["EMA"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.step, self.skipped = int(state["step"]), int(state["skipped"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.train_cpu_seconds = float(state.get("train_cpu_seconds", 0.0))
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.close()  # batches prepared ahead belong to the old position

    def save_checkpoint(self, path: str | Path) -> None:
        """The state (atomically): both networks, the EMA, both optimisers, the step, the training time so
        far and every RNG state, so that a resumed run continues identically (bit for bit on CPU)."""
        save_torch(self.state_dict(), path)

    def load_checkpoint(self, path: str | Path) -> None:
        # Loaded on the CPU: the RNG states must stay CPU tensors; load_state_dict moves the weights
        # and the optimiser states to the networks' device.
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))

    def close(self) -> None:
        """Stop the batch-preparing worker processes (they restart on the next step)."""
        if self._loader is not None:
            shutdown = getattr(self._loader, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self._loader = None
