"""MAT, the Mask-Aware Transformer (Li et al., CVPR 2022): the network, its weight files, its randomness.

Our own implementation of MAT's generator in plain torch (no custom CUDA ops): a mapping network
(z → w), a first stage (partial convolutions down to 64², mask-aware window-attention stages
64 → 32 → 16 → 32 → 64 whose masks grow as windows see valid tokens, a style-modulated decoder back
to full size) and a second stage (a convolutional encoder on the coarse fill, a StyleGAN2-style
synthesis decoder modulated by w and a global style). Parameter and buffer names are those of the
released weights, so the files people hold load directly:

- ``Places_512_FullData_G.pth`` (IOPaint / lama-cleaner): a generator state dict, built without
  noise inputs (``use_noise=False``), hence no ``noise_strength`` / ``noise_const`` keys;
- the official network pickles (github.com/fenglinglwb/MAT: ``Places_512_FullData.pkl``,
  ``CelebA-HQ_256.pkl``, ``FFHQ_512.pkl`` …): StyleGAN-style snapshots whose modules carry their
  own source code. :func:`backfire.inpainters.weights.read_network_pickle` reads them WITHOUT running
  any of it and collects the ``G_ema`` generator's tensors by dotted name.

The network's resolution (256 or 512 in the released files) and sizes are read from the weights.

Randomness. MAT's fill depends on a latent ``z``, on two dropout masks that the official code draws
on every call even in eval mode (half the entries of each stage's 16×16 bottleneck are replaced by a
w-derived pattern), and, in
the official pickles' second-stage decoder, on per-layer noise (mode ``const``: the stored
``noise_const`` buffers; ``random``: fresh normals; ``none``). :class:`MATInpainter` makes all of it
explicit and records it (:attr:`MATInpainter.randomness`):

- convention ``"iopaint"`` (default): IOPaint's ``z`` (``np.random.seed(240)``, one
  ``randn(1, 512)``) and ``noise_mode="none"``;
- convention ``"official"``: ``generate_image.py``'s ``z`` (the same first draw after seed 240) and its
  noise mode (``const`` at 512², ``random`` otherwise).

Both tools draw the dropout masks (and random noise) from torch's global RNG, whose state there
depends on everything the process did before (``generate_image.py`` draws on the GPU); no fixed
choice reproduces every run. Here they come from a ``torch.Generator`` seeded with ``seed`` and
reseeded on every call: deterministic, the same for each image of a batch, and drawn where the
chosen tool's code draws them (see :class:`_Randomness`), so that IOPaint called right after
``torch.manual_seed(240)`` gives the same fill (checked with IOPaint 1.6.0 on a 512² photo with
random weights: the same 8-bit output; raw outputs within 2e-6 of their range). With
``resample=True`` they come from one generator that keeps advancing, with a fresh ``z`` per image and
call: an expectation over the generator's randomness.

Examples::

    >>> model = load_mat("Places_512_FullData_G.pth")      # or the official .pkl
    >>> filled = model(image, mask)                          # (N, 3, H, W) in [0, 1]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.base import ModuleInpainter, build_with_weights, draw_seed
from backfire.inpainters.weights import load_torch, read_network_pickle, read_safetensors, sniff

__all__ = [
    "CONVENTIONS",
    "MAT_256",
    "MAT_512",
    "NOISE_MODES",
    "SEED",
    "WEIGHTS_HELP",
    "Generator",
    "MATConfig",
    "MATInpainter",
    "infer_config",
    "load_mat",
    "load_mat_generator",
    "tool_latent",
    "weights_format",
]

WEIGHTS_HELP = ("download IOPaint's Places_512_FullData_G.pth or an official MAT network pickle "
                "(github.com/fenglinglwb/MAT: Places_512_FullData.pkl, CelebA-HQ_256.pkl, ...) and pass --weights PATH")

NOISE_MODES = ("none", "const", "random")
CONVENTIONS = ("iopaint", "official")
"""Whose ``z`` and noise mode to use: IOPaint's erase model, or the official ``generate_image.py``."""

SEED = 240
"""The seed both IOPaint and the official ``generate_image.py`` set before drawing ``z``."""

_LRELU_GAIN = math.sqrt(2)
_STYLE_TOKENS = 16  # the w-derived pattern mixed into the bottleneck is 16×16 in every MAT


# --------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class MATConfig:
    """A MAT generator's sizes. The released networks are :data:`MAT_512` and :data:`MAT_256`.

    ``channel_base`` / ``channel_max`` give the second stage's widths, ``nf(r) = min(max, base // r)``
    at resolution r (MAT: 512² → 64 … 64² and below → 512); ``dim`` is the first stage's width
    (a multiple of ``num_heads``). Smaller values build the same architecture cheaply (tests).
    """

    resolution: int = 512
    z_dim: int = 512
    w_dim: int = 512
    dim: int = 180
    num_heads: int = 6
    channel_base: int = 32768
    channel_max: int = 512
    mapping_layers: int = 8
    use_noise: bool = True

    def __post_init__(self) -> None:
        log2 = int(round(math.log2(self.resolution))) if self.resolution > 0 else 0
        if self.resolution != 2 ** log2 or self.resolution < 128:
            raise ModelError(f"MAT resolution must be a power of two ≥ 128, got {self.resolution}")
        if self.dim % self.num_heads:
            raise ModelError(f"MAT dim {self.dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def log2(self) -> int:
        return int(round(math.log2(self.resolution)))

    @property
    def num_ws(self) -> int:
        return 2 * self.log2 - 6

    def nf(self, log2: int) -> int:
        return min(self.channel_max, self.channel_base // 2 ** log2)


MAT_512 = MATConfig(resolution=512)
"""``Places_512_FullData`` (official pickle: noise inputs; IOPaint's ``_G.pth``: ``use_noise=False``)."""
MAT_256 = MATConfig(resolution=256)
"""``CelebA-HQ_256``."""


# --------------------------------------------------------------------------------------------
# StyleGAN2 primitives in plain torch (what bias_act / upfirdn2d / conv2d_resample compute)


def _setup_filter(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0)) -> Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def _upfirdn(x: Tensor, f: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0),
             gain: float = 1.0) -> Tensor:
    """Upsample by zero insertion, pad (before, after) on both axes, convolve with the FIR ``f``, subsample."""
    b, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(b, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0): x.shape[2] - max(-p1, 0), max(-p0, 0): x.shape[3] - max(-p1, 0)]
    kernel = (f * gain).to(x.dtype).flip([0, 1])  # gain ** (ndim / 2) with a 2-D filter
    x = F.conv2d(x, kernel[None, None].repeat(c, 1, 1, 1), groups=c)
    return x[:, :, ::down, ::down]


def _upsample2d(x: Tensor, f: Tensor, up: int = 2) -> Tensor:
    taps = f.shape[-1]
    return _upfirdn(x, f, up=up, pad=((taps + up - 1) // 2, (taps - up) // 2), gain=up * up)


def _conv_resample(x: Tensor, w: Tensor, f: Tensor, up: int = 1, down: int = 1, groups: int = 1) -> Tensor:
    """A 'same' convolution with odd kernel ``w``, optionally 2× up- or downsampled through ``f``.

    The padding arithmetic is StyleGAN2's ``conv2d_resample``: downsampling blurs then strides,
    upsampling is a strided transposed convolution followed by a blur.
    """
    k = w.shape[-1]
    padding = k // 2
    if up == 1 and down == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    taps = f.shape[-1]
    if up == 1:
        p0, p1 = padding + (taps - down + 1) // 2, padding + (taps - down) // 2
        return F.conv2d(_upfirdn(x, f, pad=(p0, p1)), w, stride=down, groups=groups)
    if down != 1:
        raise ValueError("MAT never up- and downsamples in one convolution")
    p0 = padding + (taps + up - 1) // 2 - (k - 1)
    p1 = padding + (taps - up) // 2 - (k - up)
    out_ch, in_per_group = w.shape[:2]
    w = w.reshape(groups, out_ch // groups, in_per_group, k, k).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_ch // groups, k, k).flip([2, 3])
    trim = max(min(-p0, -p1), 0)
    x = F.conv_transpose2d(x, w, stride=up, padding=trim, groups=groups)
    return _upfirdn(x, f, pad=(p0 + trim, p1 + trim), gain=up * up)


def _bias_act(x: Tensor, b: Tensor | None, activation: str, dim: int = 1) -> Tensor:
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    if activation == "lrelu":
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN
    return x


class FullyConnectedLayer(nn.Module):
    """A linear layer with equalised learning rate (weights scaled by ``lr_multiplier / sqrt(in)``)."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.activation = activation
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        return _bias_act(x.matmul(w.t()), b, self.activation, dim=x.ndim - 1)


class Conv2dLayer(nn.Module):
    """An equalised-learning-rate convolution, optionally 2× resampled, with bias and activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "linear",
                 up: int = 1, down: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", _setup_filter())
        self.activation, self.up, self.down = activation, up, down
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: Tensor) -> Tensor:
        x = _conv_resample(x, self.weight * self.weight_gain, self.resample_filter, self.up, self.down)
        return _bias_act(x, self.bias, self.activation)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight (de)modulation by a per-sample style, as one grouped convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, up: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("resample_filter", _setup_filter())
        self.affine = FullyConnectedLayer(style_dim, in_channels, bias_init=1)
        self.demodulate, self.up = demodulate, up
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        batch, in_channels, height, width = x.shape
        style = self.affine(style).view(batch, 1, in_channels, 1, 1)
        weight = self.weight * self.weight_gain * style
        if self.demodulate:
            weight = weight * (weight.pow(2).sum(dim=[2, 3, 4]) + 1e-8).rsqrt().view(batch, -1, 1, 1, 1)
        out_channels, k = weight.shape[1], weight.shape[-1]
        weight = weight.view(batch * out_channels, in_channels, k, k)
        x = _conv_resample(x.reshape(1, batch * in_channels, height, width), weight, self.resample_filter,
                           up=self.up, groups=batch)
        return x.view(batch, out_channels, *x.shape[2:])


class _Randomness:
    """Where a forward pass draws its dropout masks and noise: one CPU ``torch.Generator``.

    Draws happen in the official code's order (first-stage dropout, second-stage dropout, then the
    decoder's noise layer by layer), with the same calls (``bernoulli_(0.5)``, ``randn``), so a
    generator seeded like torch's global RNG reproduces the official draws on the CPU.

    Dropout draws into ``empty_like(like)``, i.e. in ``like``'s memory layout, which torch derives
    from the input tensors' strides, the batch size and the implementation: the same seed lands on
    different entries of the first stage's tokens when they are a transposed view (filled
    channel-major: the official code, for single images from files or from N×C×H×W tensors) or
    contiguous (row-major: IOPaint's copy of the code, for its single images). ``layout`` chooses:
    ``"follow"`` draws into ``like``'s layout for the whole batch (the official code's draws for the
    tensors given); ``"official"`` / ``"iopaint"`` draw one image's masks in that tool's layout and
    broadcast them over the batch, so each image gets what the tool gives it alone. Noise is
    drawn per image for ``"follow"``, once and broadcast otherwise.
    """

    LAYOUTS = ("follow", "official", "iopaint")

    def __init__(self, generator: torch.Generator | None, noise_mode: str, layout: str = "follow"):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(self.LAYOUTS)}, got {layout!r}")
        self.generator, self.noise_mode, self.layout = generator, noise_mode, layout
        self.shared = layout != "follow"

    def keep_mask(self, like: Tensor) -> Tensor:
        """``F.dropout(0.5 · ones_like(like), 0.5)``: a {0, 1} mask, half of it ones."""
        if self.layout == "follow":
            drawn = torch.empty_like(like, dtype=torch.float32, device="cpu").bernoulli_(0.5, generator=self.generator)
        elif like.ndim == 3 and self.layout == "official":  # tokens (N, L, C) filled as (1, C, L)
            drawn = torch.empty(1, like.shape[2], like.shape[1]).bernoulli_(0.5, generator=self.generator)
            drawn = drawn.transpose(1, 2)
        else:
            drawn = torch.empty(1, *like.shape[1:]).bernoulli_(0.5, generator=self.generator)
        return drawn.to(like.device, like.dtype).expand_as(like)

    def noise(self, like: Tensor) -> Tensor:
        shape = (1 if self.shared else like.shape[0], 1, *like.shape[2:])
        return torch.randn(shape, generator=self.generator).to(like).expand(like.shape[0], -1, -1, -1)


class StyleConv(nn.Module):
    """Modulated convolution, per-pixel noise (optional), bias and leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int, resolution: int,
                 kernel_size: int = 3, up: int = 1, use_noise: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, up=up)
        self.use_noise = use_noise
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, style: Tensor, rand: _Randomness) -> Tensor:
        x = self.conv(x, style)
        if self.use_noise and rand.noise_mode == "random":
            x = x + rand.noise(x) * self.noise_strength
        elif self.use_noise and rand.noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return _bias_act(x, self.bias, "lrelu")


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", _setup_filter())

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = _bias_act(self.conv(x, style), self.bias, "linear")
        if skip is not None:
            if skip.shape != out.shape:
                skip = _upsample2d(skip, self.resample_filter)
            out = out + skip
        return out


class MappingNet(nn.Module):
    """z → w: 2nd-moment normalisation and ``mapping_layers`` leaky-ReLU layers (lr multiplier 0.01)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8):
        super().__init__()
        self.num_ws, self.num_layers = num_ws, num_layers
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], "lrelu", lr_multiplier=0.01))
        self.register_buffer("w_avg", torch.zeros(w_dim))  # used only for truncation, which MAT tools do not

    def forward(self, z: Tensor) -> Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


# --------------------------------------------------------------------------------------------
# The mask-aware transformer (first stage)


def _to_feature(x: Tensor, size: tuple[int, int]) -> Tensor:
    b, _, c = x.shape
    return x.permute(0, 2, 1).reshape(b, c, *size)


def _to_tokens(x: Tensor) -> Tensor:
    b, c = x.shape[:2]
    return x.reshape(b, c, -1).transpose(1, 2)


def _window_partition(x: Tensor, ws: int) -> Tensor:
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def _window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    b = windows.shape[0] // ((h // ws) * (w // ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class Conv2dLayerPartial(nn.Module):
    """A :class:`Conv2dLayer` whose output is renormalised by the share of valid pixels it saw.

    The mask (1 = valid) is updated too: a pixel becomes valid once any input in its window was.
    Without a mask it is a plain convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activation: str = "linear",
                 up: int = 1, down: int = 1):
        super().__init__()
        self.conv = Conv2dLayer(in_channels, out_channels, kernel_size, activation, up, down)
        self.kernel_size, self.stride = kernel_size, down

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if mask is None:
            return self.conv(x), None
        with torch.no_grad():
            k = self.kernel_size
            ones = torch.ones(1, 1, k, k, device=mask.device, dtype=torch.float32)
            valid = F.conv2d(mask.float(), ones, stride=self.stride, padding=k // 2 if k % 2 else 0)
            updated = valid.clamp(0, 1)
            ratio = (k * k / (valid + 1e-8) * updated).to(x.dtype)
        return self.conv(x) * ratio, updated.to(mask.dtype)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = FullyConnectedLayer(in_features, hidden_features, "lrelu")
        self.fc2 = FullyConnectedLayer(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x))


class WindowAttention(nn.Module):
    """Multi-head attention inside windows; queries and keys see L2-normalised tokens, and only
    valid tokens (mask 1) are attended to. Returns the updated window mask: a window with any
    valid token becomes wholly valid."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q, self.k = FullyConnectedLayer(dim, dim), FullyConnectedLayer(dim, dim)
        self.v, self.proj = FullyConnectedLayer(dim, dim), FullyConnectedLayer(dim, dim)

    def forward(self, x: Tensor, mask_windows: Tensor | None = None,
                shift_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        b_, n, c = x.shape
        heads = self.num_heads
        # The hole's tokens are exactly zero. F.normalize's eps (1e-12) is 0 in float16 (0/0 forward) and its
        # gradient there, 1/eps, overflows float16 (inf · 0 backward): below float32, normalise in float32
        # with an eps that no real token's norm comes near (norms are O(sqrt(dim))).
        if x.dtype in (torch.float32, torch.float64):
            normed = F.normalize(x, p=2.0, dim=-1)
        else:
            normed = F.normalize(x.float(), p=2.0, dim=-1, eps=1e-3).to(x.dtype)
        q = self.q(normed).reshape(b_, n, heads, c // heads).permute(0, 2, 1, 3)
        k = self.k(normed).reshape(b_, n, heads, c // heads).permute(0, 2, 3, 1)
        v = self.v(x).reshape(b_, n, heads, c // heads).permute(0, 2, 1, 3)
        attn = (q @ k) * self.scale
        if shift_mask is not None:
            nw = shift_mask.shape[0]
            attn = (attn.view(b_ // nw, nw, heads, n, n) + shift_mask[None, :, None]).view(-1, heads, n, n)
        if mask_windows is not None:
            keys = mask_windows.squeeze(-1)[:, None, None, :]
            attn = attn + keys.masked_fill(keys == 0, -100.0).masked_fill(keys == 1, 0.0)
            with torch.no_grad():
                mask_windows = mask_windows.sum(dim=1, keepdim=True).clamp(0, 1).repeat(1, n, 1)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x), mask_windows


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention, a fuse layer over [input, attention] and an MLP.

    Window and shift are fixed at construction from the native token grid (a window no smaller
    than the grid means one unshifted window); other grid sizes reuse them, as the official code does.
    """

    def __init__(self, dim: int, input_resolution: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float = 2.0):
        super().__init__()
        if input_resolution <= window_size:
            window_size, shift_size = input_resolution, 0
        self.window_size, self.shift_size = window_size, shift_size
        self.input_resolution = input_resolution
        self.attn = WindowAttention(dim, num_heads)
        self.fuse = FullyConnectedLayer(dim * 2, dim, "lrelu")
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # Stored in the released weights; the official forward recomputes it from the grid every call.
        mask = self._shift_mask((input_resolution, input_resolution)) if shift_size else None
        self.register_buffer("attn_mask", mask)

    def _shift_mask(self, size: tuple[int, int]) -> Tensor:
        """−100 between tokens that the cyclic shift brought together from different regions."""
        h, w = size
        ws, s = self.window_size, self.shift_size
        region = torch.zeros(1, h, w, 1)
        count = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                region[:, hs, wsl, :] = count
                count += 1
        windows = _window_partition(region, ws).squeeze(-1)
        diff = windows.unsqueeze(1) - windows.unsqueeze(2)
        return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)

    def forward(self, x: Tensor, size: tuple[int, int], mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h, w = size
        b, length, c = x.shape
        if length != h * w:
            raise ValueError(f"{length} tokens do not form a {h}×{w} grid")
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = x.view(b, h, w, c)
        if mask is not None:
            mask = mask.view(b, h, w, 1)
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = torch.roll(mask, shifts=(-s, -s), dims=(1, 2)) if mask is not None else None
        mask_windows = _window_partition(mask, ws) if mask is not None else None
        shift_mask = self._shift_mask(size).to(x) if s else None
        attended, mask_windows = self.attn(_window_partition(x, ws), mask_windows, shift_mask)
        x = _window_reverse(attended.view(-1, ws, ws, c), ws, h, w)
        if mask_windows is not None:
            mask = _window_reverse(mask_windows.view(-1, ws, ws, 1), ws, h, w)
        if s:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
            mask = torch.roll(mask, shifts=(s, s), dims=(1, 2)) if mask is not None else None
        x = self.fuse(torch.cat([shortcut, x.reshape(b, h * w, c)], dim=-1))
        return self.mlp(x), (mask.reshape(b, h * w, 1) if mask is not None else None)


class PatchMerging(nn.Module):
    """Token grid resampling (2× down or up) by a partial convolution."""

    def __init__(self, dim: int, down: int = 1, up: int = 1):
        super().__init__()
        self.conv = Conv2dLayerPartial(dim, dim, 3, "lrelu", up=up, down=down)
        self.down, self.up = down, up

    def forward(self, x: Tensor, size: tuple[int, int],
                mask: Tensor | None = None) -> tuple[Tensor, tuple[int, int], Tensor | None]:
        x, mask = self.conv(_to_feature(x, size), _to_feature(mask, size) if mask is not None else None)
        size = (size[0] * self.up // self.down, size[1] * self.up // self.down)
        return _to_tokens(x), size, (_to_tokens(mask) if mask is not None else None)


class BasicLayer(nn.Module):
    """One transformer stage: optional resampling, ``depth`` blocks (every second one shifted), a
    partial convolution, and a residual connection around blocks and convolution."""

    def __init__(self, dim: int, input_resolution: int, depth: int, num_heads: int, window_size: int,
                 downsample: PatchMerging | None = None):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2)
            for i in range(depth)])
        self.conv = Conv2dLayerPartial(dim, dim, 3, "lrelu")

    def forward(self, x: Tensor, size: tuple[int, int],
                mask: Tensor | None = None) -> tuple[Tensor, tuple[int, int], Tensor | None]:
        if self.downsample is not None:
            x, size, mask = self.downsample(x, size, mask)
        identity = x
        for block in self.blocks:
            x, mask = block(x, size, mask)
        x, mask = self.conv(_to_feature(x, size), _to_feature(mask, size) if mask is not None else None)
        return _to_tokens(x) + identity, size, (_to_tokens(mask) if mask is not None else None)


class DecStyleBlock(nn.Module):
    """First-stage decoder block: 2× upsampling style convolution, skip connection, style convolution, RGB."""

    def __init__(self, channels: int, style_dim: int, img_channels: int = 3):
        super().__init__()
        self.conv0 = StyleConv(channels, channels, style_dim, 0, up=2)  # no noise in the first stage
        self.conv1 = StyleConv(channels, channels, style_dim, 0)
        self.toRGB = ToRGB(channels, img_channels, style_dim)

    def forward(self, x: Tensor, img: Tensor | None, style: Tensor, skip: Tensor,
                rand: _Randomness) -> tuple[Tensor, Tensor]:
        x = self.conv0(x, style, rand) + skip
        x = self.conv1(x, style, rand)
        return x, self.toRGB(x, style, skip=img)


_DEPTHS = (2, 3, 4, 3, 2)
_RATIOS = (1, 0.5, 0.5, 2, 2)
_WINDOWS = (8, 16, 16, 16, 8)


class FirstStage(nn.Module):
    """The coarse fill: partial convolutions to 64², five mask-aware transformer stages
    (64 → 32 → 16 → 32 → 64), a style-modulated decoder back to full size."""

    def __init__(self, config: MATConfig, img_channels: int = 3):
        super().__init__()
        dim, res = config.dim, 64
        self.conv_first = Conv2dLayerPartial(img_channels + 1, dim, 3, "lrelu")
        down_times = config.log2 - 6
        self.enc_conv = nn.ModuleList([Conv2dLayerPartial(dim, dim, 3, "lrelu", down=2) for _ in range(down_times)])
        self.tran = nn.ModuleList()
        for depth, ratio, window in zip(_DEPTHS, _RATIOS, _WINDOWS):
            res = int(res * ratio)
            merge = (PatchMerging(dim, down=int(1 / ratio)) if ratio < 1 else
                     PatchMerging(dim, up=int(ratio)) if ratio > 1 else None)
            self.tran.append(BasicLayer(dim, res, depth, config.num_heads, window, downsample=merge))
        self.down_conv = nn.Sequential(*[Conv2dLayer(dim, dim, 3, "lrelu", down=2) for _ in range(4)],
                                       nn.AdaptiveAvgPool2d((1, 1)))
        self.to_style = FullyConnectedLayer(dim, dim * 2, "lrelu")
        self.ws_style = FullyConnectedLayer(config.w_dim, dim, "lrelu")
        self.to_square = FullyConnectedLayer(dim, _STYLE_TOKENS ** 2, "lrelu")
        self.dec_conv = nn.ModuleList([DecStyleBlock(dim, dim * 3, img_channels) for _ in range(down_times)])

    def forward(self, images_in: Tensor, masks_in: Tensor, ws: Tensor, rand: _Randomness) -> Tensor:
        x = torch.cat([masks_in - 0.5, images_in * masks_in], dim=1)
        skips = []
        x, mask = self.conv_first(x, masks_in)
        skips.append(x)
        for i, block in enumerate(self.enc_conv):
            x, mask = block(x, mask)
            if i != len(self.enc_conv) - 1:
                skips.append(x)
        size = (x.shape[-2], x.shape[-1])
        x, mask = _to_tokens(x), _to_tokens(mask)
        mid = len(self.tran) // 2
        for i, block in enumerate(self.tran):
            if i < mid:
                x, size, mask = block(x, size, mask)
                skips.append(x)
            elif i > mid:
                x, size, _ = block(x, size, None)
                x = x + skips[mid - i]
            else:
                x, size, _ = block(x, size, None)
                keep = rand.keep_mask(x)
                w = self.ws_style(ws[:, -1])
                pattern = F.interpolate(self.to_square(w).unsqueeze(1), size=x.shape[1], mode="linear",
                                        align_corners=False).squeeze(1).unsqueeze(-1)
                x = x * keep + pattern * (1 - keep)
                gs = self.to_style(self.down_conv(_to_feature(x, size)).flatten(start_dim=1))
                style = torch.cat([gs, w], dim=1)
        x = _to_feature(x, size).contiguous()
        img = None
        for i, block in enumerate(self.dec_conv):
            x, img = block(x, img, style, skips[len(self.dec_conv) - i - 1], rand)
        return img * (1 - masks_in) + images_in * masks_in


# --------------------------------------------------------------------------------------------
# The second stage


class EncFromRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 1, "lrelu")
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, "lrelu")

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv0(x))


class ConvBlockDown(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, out_channels, 3, "lrelu", down=2)
        self.conv1 = Conv2dLayer(out_channels, out_channels, 3, "lrelu")

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1(self.conv0(x))


class Encoder(nn.Module):
    """Full size down to 16²; returns the feature map of each level by log2 resolution."""

    def __init__(self, config: MATConfig, img_channels: int = 3):
        super().__init__()
        self.levels = list(range(config.log2, 3, -1))
        for level in self.levels:
            block = (EncFromRGB(img_channels * 2 + 1, config.nf(level)) if level == config.log2
                     else ConvBlockDown(config.nf(level + 1), config.nf(level)))
            setattr(self, f"EncConv_Block_{2 ** level}x{2 ** level}", block)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        out = {}
        for level in self.levels:
            x = getattr(self, f"EncConv_Block_{2 ** level}x{2 ** level}")(x)
            out[level] = x
        return out


class ToStyle(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(*[Conv2dLayer(in_channels, in_channels, 3, "lrelu", down=2) for _ in range(3)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = FullyConnectedLayer(in_channels, out_channels, "lrelu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv(x)).flatten(start_dim=1))


class DecBlockFirstV2(nn.Module):
    def __init__(self, res: int, in_channels: int, out_channels: int, style_dim: int, use_noise: bool,
                 img_channels: int = 3):
        super().__init__()
        self.res = res
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, "lrelu")
        self.conv1 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, use_noise=use_noise)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x: Tensor, ws: Tensor, gs: Tensor, features: dict[int, Tensor],
                rand: _Randomness) -> tuple[Tensor, Tensor]:
        x = self.conv0(x) + features[self.res]
        x = self.conv1(x, torch.cat([ws[:, 0], gs], dim=1), rand)
        return x, self.toRGB(x, torch.cat([ws[:, 1], gs], dim=1))


class DecBlock(nn.Module):
    def __init__(self, res: int, in_channels: int, out_channels: int, style_dim: int, use_noise: bool,
                 img_channels: int = 3):
        super().__init__()
        self.res = res
        self.conv0 = StyleConv(in_channels, out_channels, style_dim, 2 ** res, up=2, use_noise=use_noise)
        self.conv1 = StyleConv(out_channels, out_channels, style_dim, 2 ** res, use_noise=use_noise)
        self.toRGB = ToRGB(out_channels, img_channels, style_dim)

    def forward(self, x: Tensor, img: Tensor, ws: Tensor, gs: Tensor, features: dict[int, Tensor],
                rand: _Randomness) -> tuple[Tensor, Tensor]:
        x = self.conv0(x, torch.cat([ws[:, self.res * 2 - 9], gs], dim=1), rand) + features[self.res]
        x = self.conv1(x, torch.cat([ws[:, self.res * 2 - 8], gs], dim=1), rand)
        return x, self.toRGB(x, torch.cat([ws[:, self.res * 2 - 7], gs], dim=1), skip=img)


class Decoder(nn.Module):
    def __init__(self, config: MATConfig, style_dim: int, img_channels: int = 3):
        super().__init__()
        self.log2 = config.log2
        self.Dec_16x16 = DecBlockFirstV2(4, config.nf(4), config.nf(4), style_dim, config.use_noise, img_channels)
        for res in range(5, config.log2 + 1):
            setattr(self, f"Dec_{2 ** res}x{2 ** res}",
                    DecBlock(res, config.nf(res - 1), config.nf(res), style_dim, config.use_noise, img_channels))

    def forward(self, x: Tensor, ws: Tensor, gs: Tensor, features: dict[int, Tensor], rand: _Randomness) -> Tensor:
        x, img = self.Dec_16x16(x, ws, gs, features, rand)
        for res in range(5, self.log2 + 1):
            x, img = getattr(self, f"Dec_{2 ** res}x{2 ** res}")(x, img, ws, gs, features, rand)
        return img


class SynthesisNet(nn.Module):
    def __init__(self, config: MATConfig, img_channels: int = 3):
        super().__init__()
        self.first_stage = FirstStage(config, img_channels)
        self.enc = Encoder(config, img_channels)
        self.to_square = FullyConnectedLayer(config.w_dim, _STYLE_TOKENS ** 2, "lrelu")
        self.to_style = ToStyle(config.nf(4), config.nf(2) * 2)
        self.dec = Decoder(config, config.w_dim + config.nf(2) * 2, img_channels)

    def forward(self, images_in: Tensor, masks_in: Tensor, ws: Tensor, rand: _Randomness) -> Tensor:
        coarse = self.first_stage(images_in, masks_in, ws, rand)
        x = images_in * masks_in + coarse * (1 - masks_in)
        features = self.enc(torch.cat([masks_in - 0.5, x, images_in * masks_in], dim=1))
        bottleneck = features[4]
        keep = rand.keep_mask(bottleneck)
        pattern = self.to_square(ws[:, 0]).view(-1, 1, _STYLE_TOKENS, _STYLE_TOKENS)
        pattern = F.interpolate(pattern, size=bottleneck.shape[-2:], mode="bilinear", align_corners=False)
        bottleneck = bottleneck * keep + pattern * (1 - keep)
        features[4] = bottleneck
        img = self.dec(bottleneck, ws, self.to_style(bottleneck), features, rand)
        return img * (1 - masks_in) + images_in * masks_in


class Generator(nn.Module):
    """MAT's generator: ``forward(images_in, masks_in, z)`` → the inpainted image.

    Shape (the official convention, not backfire's):
        - images_in: (N, 3, R, R) in [-1, 1] (R: a multiple of ``config.resolution``; only the
          product ``images_in * masks_in`` is read, so the hole's content never matters)
        - masks_in: (N, 1, R, R), **1 = known**, 0 = hole
        - z: (N, z_dim)
        - output: (N, 3, R, R) in about [-1, 1], equal to ``images_in`` where ``masks_in == 1``

    ``noise_mode``, ``generator`` and ``layout`` decide the randomness (see :class:`_Randomness`).
    """

    def __init__(self, config: MATConfig = MAT_512, img_channels: int = 3):
        super().__init__()
        self.config = config
        self.synthesis = SynthesisNet(config, img_channels)
        self.mapping = MappingNet(config.z_dim, config.w_dim, config.num_ws, config.mapping_layers)

    def forward(self, images_in: Tensor, masks_in: Tensor, z: Tensor, noise_mode: str = "none",
                generator: torch.Generator | None = None, layout: str = "follow") -> Tensor:
        ws = self.mapping(z.to(images_in.dtype))
        return self.synthesis(images_in, masks_in, ws, _Randomness(generator, noise_mode, layout))


# --------------------------------------------------------------------------------------------
# The Inpainter


def tool_latent(seed: int = SEED, z_dim: int = 512) -> Tensor:
    """The ``z`` IOPaint and ``generate_image.py`` use: ``np.random.seed(seed)``, then ``randn(1, z_dim)``."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def _symmetric_index(n: int, total: int, device: torch.device) -> Tensor:
    """Indices that extend 0..n-1 to ``total`` like ``np.pad(mode="symmetric")`` (edge pixel repeated)."""
    i = torch.arange(total, device=device) % (2 * n)
    return torch.where(i < n, i, 2 * n - 1 - i)


class MATInpainter(ModuleInpainter):
    """MAT behind backfire's :class:`~backfire.inpainters.base.Inpainter` interface.

    ``fill`` maps backfire's convention (image in [0, 1], mask 1 = fill) to MAT's ([-1, 1], mask
    1 = known) and back, clamping the output to [0, 1] as the tools' 8-bit conversion does.

    Sizes: the network runs on squares whose side is a multiple of its resolution (MAT's window
    grids and its 16×16 style pattern are laid out for it). The bare Inpainter pads an H×W input at
    the bottom and right, ``np.pad``-symmetric like IOPaint, to the smallest such square that holds
    it (a 512 model: 600×400 → 1024², 300×200 → 512²) and crops the result back; it never resizes.
    IOPaint's whole pipeline (crop strategy, then this padding) is a wrapper's job: it needs
    :attr:`resolution`.

    Arguments:
        convention: ``"iopaint"`` or ``"official"``: whose ``z`` and noise mode (module docstring).
        seed: seeds ``z`` (as the tools do) and the dropout/noise generator.
        noise_mode: override the convention's noise mode (``none``, ``const``, ``random``).
        resample: draw ``z``, dropout masks and noise afresh for every image and call (from one
            generator seeded with ``seed``), for an expectation over MAT's randomness.
    """

    def __init__(self, module: Generator, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 name: str = "mat", convention: str = "iopaint", seed: int = SEED, noise_mode: str | None = None,
                 resample: bool = False):
        if convention not in CONVENTIONS:
            raise ModelError(f"unknown MAT convention {convention!r}; use {' or '.join(CONVENTIONS)}")
        self.config: MATConfig = module.config
        self.resolution = self.config.resolution
        default_noise = "none" if convention == "iopaint" else ("const" if self.resolution == 512 else "random")
        noise_mode = default_noise if noise_mode is None else noise_mode
        if noise_mode not in NOISE_MODES:
            raise ModelError(f"unknown MAT noise mode {noise_mode!r}; use one of {', '.join(NOISE_MODES)}")
        super().__init__(name, module, device, dtype, multiple=self.resolution)
        self.convention, self.seed, self.noise_mode, self.resample = convention, int(seed), noise_mode, bool(resample)
        self.z = tool_latent(self.seed, self.config.z_dim)
        self.draw = 0
        self._stream = torch.Generator().manual_seed(self.seed)

    @property
    def _draw_seed(self) -> int:
        """What seeds the dropout and noise (and, resampling, everything): the seed for draw 0, else draw k's."""
        return draw_seed(self.seed, self.draw)

    def redrawn(self) -> MATInpainter:
        """A twin drawing ``z``, dropout masks and noise afresh at every call (recipe ``robust``)."""
        return self._twin(resample=True, _stream=torch.Generator().manual_seed(self._draw_seed))

    @property
    def stochastic(self) -> bool:
        """True: both tools draw MAT's dropout masks (and random noise) from torch's global RNG on every call,
        so an attacker's fill is one draw; :meth:`with_draw` gives each draw repeatably (``z`` stays the
        tool's, as it is drawn once when the tool loads the model)."""
        return True

    def with_draw(self, draw: int) -> MATInpainter:
        super().with_draw(draw)
        stream = torch.Generator().manual_seed(draw_seed(self.seed, draw))
        return self if draw == self.draw else self._twin(draw=int(draw), _stream=stream)

    @property
    def randomness(self) -> dict[str, Any]:
        """What decides the fill besides the image, for a verdict to report."""
        drawn = {} if self.draw == 0 else {"draw": self.draw}
        return {
            "convention": self.convention,
            "seed": self.seed,
            "z": "drawn per image and call" if self.resample else f"np.random.RandomState({self.seed}).randn(1, "
                                                                  f"{self.config.z_dim})",
            "noise_mode": self.noise_mode,
            "dropout": ("drawn per image and call" if self.resample else
                        f"torch.Generator().manual_seed({self._draw_seed}), reseeded every call"),
            "resample": self.resample,
            **drawn,
        }

    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        n = masked_image.shape[0]
        if self.resample:
            generator = self._stream
            z = torch.randn(n, self.config.z_dim, generator=generator)
        else:
            generator = torch.Generator().manual_seed(self._draw_seed)
            z = self.z.expand(n, -1)
        out = self.module(masked_image * 2 - 1, 1 - mask, z.to(masked_image.device), self.noise_mode,
                          generator, layout="follow" if self.resample else self.convention)
        return ((out + 1) / 2).clamp(0, 1)

    @property
    def smallest_frame(self) -> int:
        """One square of its resolution (the frame its window grids are laid out for)."""
        return self.multiple

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        side = max(1, -(-max(h, w) // self.multiple)) * self.multiple
        if (h, w) == (side, side):
            return x
        return x.index_select(-2, _symmetric_index(h, side, x.device)).index_select(
            -1, _symmetric_index(w, side, x.device))


# --------------------------------------------------------------------------------------------
# Reading weight files


def load_mat(weights: str | Path | None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             **options: Any) -> MATInpainter:
    """MAT from IOPaint's ``Places_512_FullData_G.pth``, an official network pickle or ``.safetensors``.

    ``options``: the arguments of :class:`MATInpainter` (``name``, ``convention``, ``seed``, ``noise_mode``,
    ``resample``); the registry checks them against the model's spec.

    Raises:
        WeightsNotFoundError: ``weights`` does not exist.
        ModelError: no weights given, or the file is not MAT weights in a known format.
    """
    if weights is None or not str(weights).strip():
        raise ModelError(f"MAT needs weights: {WEIGHTS_HELP}")
    return MATInpainter(load_mat_generator(weights), device=device, dtype=dtype, **options)


def weights_format(path: str | Path) -> str:
    """``"torch"`` (a ``torch.save`` zip), ``"pickle"`` (a network pickle or legacy ``torch.save``) or
    ``"safetensors"``, from the file's content (:func:`~backfire.inpainters.weights.sniff`).

    Raises:
        ModelError: none of these (TorchScript included: MAT has no TorchScript release).
    """
    path = Path(path)
    fmt = sniff(path)
    if fmt == "torchscript":
        raise ModelError(f"{path} is a TorchScript model, not MAT weights; {WEIGHTS_HELP}")
    if fmt == "zip":
        raise ModelError(f"{path} is a zip archive but not a PyTorch checkpoint; {WEIGHTS_HELP}")
    if fmt == "unknown":
        raise ModelError(f"{path} is neither a PyTorch state dict, a MAT network pickle nor a .safetensors file; "
                         f"{WEIGHTS_HELP}")
    return fmt


def load_mat_generator(path: str | Path) -> Generator:
    """The MAT generator in ``path`` (any format :func:`weights_format` knows): CPU, float32, eval.

    The configuration (resolution, widths, noise inputs) is read from the weights, which then load
    with ``strict=True``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"MAT weights not found at {path}: {WEIGHTS_HELP}")
    state = _read_state(path)
    config = infer_config(state, source=str(path))
    return build_with_weights(lambda: Generator(config), state, f"{path}: weights do not fit the MAT generator {config}")


def _read_state(path: Path) -> dict[str, Tensor]:
    fmt = weights_format(path)
    if fmt == "safetensors":
        return dict(read_safetensors(path)[0])
    if fmt == "pickle":
        state = read_network_pickle(path, "G_ema", kind="MAT")
        if state is not None:
            return state
    obj = load_torch(path, "a MAT state dict", strict=True)
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a MAT state dict")
    obj = obj.get("state_dict", obj)
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path} is not a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def infer_config(state: Mapping[str, Tensor], source: str = "weights") -> MATConfig:
    """The :class:`MATConfig` whose generator has these parameter names and shapes."""
    first, fc0 = "synthesis.first_stage.conv_first.conv.weight", "mapping.fc0.weight"
    if first not in state or fc0 not in state:
        raise ModelError(f"{source}: not a MAT generator (no {first!r} / {fc0!r}); {WEIGHTS_HELP}")
    prefix = "synthesis.enc.EncConv_Block_"
    sizes = sorted({int(k[len(prefix):].split("x")[0]) for k in state if k.startswith(prefix)})
    if not sizes or f"{prefix}16x16.conv1.weight" not in state:
        raise ModelError(f"{source}: the MAT encoder blocks are missing")
    top = sizes[-1]
    layers = 0
    while f"mapping.fc{layers}.weight" in state:
        layers += 1
    try:
        return MATConfig(
            resolution=top,
            z_dim=int(state[fc0].shape[1]),
            w_dim=int(state[fc0].shape[0]),
            dim=int(state[first].shape[0]),
            channel_base=int(state[f"{prefix}{top}x{top}.conv0.weight"].shape[0]) * top,
            channel_max=int(state[f"{prefix}16x16.conv1.weight"].shape[0]),
            mapping_layers=layers,
            use_noise="synthesis.dec.Dec_16x16.conv1.noise_strength" in state,
        )
    except (KeyError, IndexError) as exc:
        raise ModelError(f"{source}: not a MAT generator ({exc})") from exc
