"""Fast Fourier convolutions and the FFC ResNet generator of LaMa.

This is an independent implementation of the generator described in *Resolution-robust Large Mask
Inpainting with Fourier Convolutions* (Suvorov et al., WACV 2022). The module tree, attribute names
and channel layout follow LaMa's ``saicinpainting/training/modules/ffc.py`` so that the
``generator.*`` weights of LaMa's ``best.ckpt`` load with ``strict=True``.

One implementation serves every size: :data:`BIG_LAMA` is the released big-LaMa generator, and
smaller :class:`FFCConfig` values give compact models of the same architecture.

Features travel as a pair ``(x_l, x_g)``: local channels (ordinary convolutions) and global
channels (a convolution in the frequency domain). A side with no channels is the int ``0``, as in
LaMa, so that ``0 + tensor`` and ``Identity(0)`` keep the arithmetic uniform.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BIG_LAMA",
    "ConcatTupleLayer",
    "FFC",
    "FFCConfig",
    "FFCResNetGenerator",
    "FFCResnetBlock",
    "FFC_BN_ACT",
    "FourierUnit",
    "SpectralTransform",
    "build_generator",
    "coarse_fill",
    "fft_device",
    "fold_batchnorm",
]

# A feature map that may be missing: LaMa writes the absent side of a (local, global) pair as 0.
MaybeTensor = Union[Tensor, int]


STEMFED_FORMAT = "backfire-stemfed-generator"
"""The ``format`` metadata of an FFC generator fed by a frozen pretrained stem (:mod:`backfire.inpainters.stemfed`):
its ``model.*`` weights alone would load as a plain FFC generator, minus the encoder, so readers check it."""


@dataclass(frozen=True)
class FFCConfig:
    """Size of an :class:`FFCResNetGenerator` (input 4 channels: RGB + mask; output 3)."""

    ngf: int = 64
    """Channels after the first convolution; doubled by each downsampling."""
    n_downsampling: int = 3
    """Stride-2 stages before the residual blocks (the input side must be a multiple of 2**n)."""
    n_blocks: int = 18
    """FFC residual blocks at the bottleneck."""
    ratio_g: float = 0.75
    """Fraction of the bottleneck channels that are global (Fourier)."""
    max_features: int = 1024
    """Cap on any layer's channel count."""
    prefill: bool = False
    """Start from :func:`coarse_fill` and predict a correction to it (the embedded model); LaMa: False.

    The hole is pre-filled with a smooth membrane interpolation of its border before the network
    sees it, and the network's output is added to that fill in logit space. It adds no weights, so
    it is recorded in the weight file's metadata rather than inferred from the keys."""


BIG_LAMA = FFCConfig(ngf=64, n_downsampling=3, n_blocks=18, ratio_g=0.75, max_features=1024)
"""The configuration of the released big-LaMa generator (≈51 M parameters)."""


def _split(channels: int, ratio_g: float) -> tuple[int, int]:
    """(local, global) channel counts, rounded the way LaMa rounds them."""
    if not 0.0 <= ratio_g <= 1.0:
        raise ValueError(f"global ratio must be in [0, 1], got {ratio_g}")
    global_ = int(channels * ratio_g)
    return channels - global_, global_


class FourierUnit(nn.Module):
    """A 1×1 convolution applied to the real and imaginary parts of the 2-D spectrum.

    The spectrum of a C-channel map is laid out as (N, C, 2, H, W//2+1) — real and imaginary
    parts adjacent per channel — and viewed as 2C channels, as in LaMa. The FFTs always run in
    float32 (cuFFT has no bfloat16 and half precision only works for power-of-two sizes); the
    1×1 convolution block runs in the input's dtype.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # Tracing notes (export_torchscript traces this in float32 and the archive may later be
        # converted to another dtype): the cast to float32 must copy, because a no-op x.float()
        # returns x itself and the tracer would then substitute the cast for x everywhere after it;
        # the result goes back to the input's dtype (the weights' after module.to(dtype); under autocast
        # the half-precision features' — the spectrum's convolution autocasts like any other).
        compute = self.conv_layer.weight
        size = x.shape[-2:]
        # a device without these FFTs (some MPS builds) hands them, and the complex values, to the CPU
        fft_on = fft_device(x.device)
        source = x.to(torch.float32, copy=True) if fft_on == x.device else x.to(fft_on, torch.float32)
        spectrum = torch.fft.rfftn(source, dim=(-2, -1), norm="ortho")
        # (N, C, H, W') complex -> (N, C, 2, H, W') -> (N, 2C, H, W'): real, imag adjacent per channel.
        y = torch.stack((spectrum.real, spectrum.imag), dim=2).flatten(1, 2)
        y = (y if fft_on == x.device else y.to(x.device)).type_as(compute)
        y = self.relu(self.bn(self.conv_layer(y)))
        y = y.float().unflatten(1, (-1, 2))
        y = y if fft_on == x.device else y.to(fft_on)
        spectrum = torch.complex(y[:, :, 0], y[:, :, 1])
        out = torch.fft.irfftn(spectrum, s=size, dim=(-2, -1), norm="ortho")
        return (out if fft_on == x.device else out.to(x.device)).type_as(x)


def fft_device(device: torch.device) -> torch.device:
    """Where the Fourier units' FFTs run for features on ``device``: there, or on the CPU when its backend lacks
    them (PyTorch's MPS backend has only part of ``torch.fft`` in some releases: checked once, on a tiny
    transform). A per-operation fallback: the rest of the network stays on the device."""
    if device.type == "mps" and not _mps_has_fft():
        return torch.device("cpu")
    return device


_MPS_FFT: list[bool] = []  # the probe's answer, once


def _mps_has_fft() -> bool:
    if not _MPS_FFT:
        try:
            probe = torch.fft.rfftn(torch.ones(1, 1, 6, 5, device="mps"), dim=(-2, -1), norm="ortho")
            torch.fft.irfftn(probe, s=(6, 5), dim=(-2, -1), norm="ortho").cpu()
            _MPS_FFT.append(True)
        except (RuntimeError, NotImplementedError, TypeError):
            _MPS_FFT.append(False)
    return _MPS_FFT[0]


class SpectralTransform(nn.Module):
    """The global-to-global path: 1×1 reduce, Fourier unit with a skip, 1×1 expand."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, enable_lfu: bool = False):
        super().__init__()
        if enable_lfu:
            # Big-LaMa and every LaMa release config use enable_lfu: false; the local Fourier
            # unit is not implemented rather than implemented untested.
            raise NotImplementedError("SpectralTransform: the local Fourier unit (enable_lfu=True) is not supported")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = out_channels // 2
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


def _is_real(module: nn.Module) -> bool:
    return not isinstance(module, nn.Identity)


class FFC(nn.Module):
    """Fast Fourier convolution: four paths between the local and global channel groups.

    ``convl2l``, ``convl2g`` and ``convg2l`` are spatial convolutions, ``convg2g`` a
    :class:`SpectralTransform`; a path whose input or output group is empty is ``nn.Identity``
    (it holds no weights, like LaMa's). ``forward`` takes ``(x_l, x_g)`` or a tensor (all local)
    and returns ``(out_l, out_g)`` with an empty side as the int 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: bool = False, padding_type: str = "reflect", enable_lfu: bool = False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        in_cl, in_cg = _split(in_channels, ratio_gin)
        out_cl, out_cg = _split(out_channels, ratio_gout)
        if 0 < ratio_gout < 1 and (out_cl == 0 or out_cg == 0):
            raise ValueError(f"ratio_gout={ratio_gout} leaves an empty side for {out_channels} channels")
        self.ratio_gin = ratio_gin
        self.ratio_gout = ratio_gout
        self.in_cl, self.in_cg, self.out_cl, self.out_cg = in_cl, in_cg, out_cl, out_cg
        self.global_in_num = in_cg

        def conv(cin: int, cout: int) -> nn.Module:
            if cin == 0 or cout == 0:
                return nn.Identity()
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, bias=bias,
                             padding_mode=padding_type)

        self.convl2l = conv(in_cl, out_cl)
        self.convl2g = conv(in_cl, out_cg)
        self.convg2l = conv(in_cg, out_cl)
        self.convg2g = (SpectralTransform(in_cg, out_cg, stride, enable_lfu)
                        if in_cg and out_cg else nn.Identity())

    def forward(self, x: tuple[MaybeTensor, MaybeTensor] | Tensor) -> tuple[MaybeTensor, MaybeTensor]:
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_l: MaybeTensor = 0
        out_g: MaybeTensor = 0
        if self.out_cl:
            out_l = _paths(self.convl2l, x_l, self.convg2l, x_g)
        if self.out_cg:
            out_g = _paths(self.convl2g, x_l, self.convg2g, x_g)
        return out_l, out_g


def _paths(from_local: nn.Module, x_l: MaybeTensor, from_global: nn.Module, x_g: MaybeTensor) -> MaybeTensor:
    """Sum of the paths that exist (an Identity path is an empty input group: it adds nothing)."""
    out: MaybeTensor = 0
    if _is_real(from_local):
        out = from_local(x_l)
    if _is_real(from_global):
        out = out + from_global(x_g)
    return out


class FFC_BN_ACT(nn.Module):  # noqa: N801 - LaMa's name, kept so the structure is recognisable
    """:class:`FFC` followed by BatchNorm and an activation on each non-empty side."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1,
                 bias: bool = False, padding_type: str = "reflect", activation: bool = True):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride,
                       padding, dilation, bias, padding_type)
        out_cl, out_cg = self.ffc.out_cl, self.ffc.out_cg
        self.bn_l = nn.BatchNorm2d(out_cl) if out_cl else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_cg) if out_cg else nn.Identity()
        self.act_l = nn.ReLU(inplace=True) if out_cl and activation else nn.Identity()
        self.act_g = nn.ReLU(inplace=True) if out_cg and activation else nn.Identity()

    def forward(self, x: tuple[MaybeTensor, MaybeTensor] | Tensor) -> tuple[MaybeTensor, MaybeTensor]:
        x_l, x_g = self.ffc(x)
        return self.act_l(self.bn_l(x_l)), self.act_g(self.bn_g(x_g))


class FFCResnetBlock(nn.Module):
    """Two 3×3 :class:`FFC_BN_ACT` with reflect padding and a residual on both sides."""

    def __init__(self, dim: int, ratio_gin: float, ratio_gout: float, dilation: int = 1,
                 padding_type: str = "reflect"):
        super().__init__()
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, padding=dilation,
                                dilation=dilation, padding_type=padding_type)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio_gout, ratio_gout, padding=dilation,
                                dilation=dilation, padding_type=padding_type)

    def forward(self, x: tuple[MaybeTensor, MaybeTensor] | Tensor) -> tuple[MaybeTensor, MaybeTensor]:
        id_l, id_g = x if isinstance(x, tuple) else (x, 0)
        x_l, x_g = self.conv2(self.conv1((id_l, id_g)))
        return id_l + x_l, id_g + x_g


class ConcatTupleLayer(nn.Module):
    """``(x_l, x_g)`` → one tensor, local channels first."""

    def forward(self, x: tuple[MaybeTensor, MaybeTensor]) -> Tensor:
        x_l, x_g = x
        if not isinstance(x_g, Tensor):
            if not isinstance(x_l, Tensor):
                raise ValueError("ConcatTupleLayer: both sides are empty")
            return x_l
        if not isinstance(x_l, Tensor):
            return x_g
        return torch.cat((x_l, x_g), dim=1)


def coarse_fill(image: Tensor, known: Tensor, levels: int = 12, smoothing: int = 8, local: bool = False) -> Tensor:
    """A smooth fill of the unknown pixels from the known ones: multigrid membrane interpolation.

    Push-pull (Gortler et al. 1996): the known colours are averaged down a pyramid of ``levels``
    halvings with their coverage, then pulled back up, each level keeping its known part and taking
    the coarser level where it is unknown; ``smoothing`` Jacobi sweeps per level (a 3×3 average
    over the unknown pixels) relax it toward the solution of Laplace's equation, as the
    classical diffusion inpainters do. Differentiable, parameter-free, fixed work per pixel, and
    free of size-dependent control flow so that a traced module stays size-generic.

    ``local``: run the sweeps only on the box around the pixels each level does not fully know (plus one
    pixel), found on the host. A sweep leaves every fully known pixel at its known colour, so the result
    is the same to the last bit; on a small hole it saves most of the work (the CPU path). Off, the
    shapes never depend on the mask (traces, CUDA graphs).

    Shape:
        - image: (N, C, H, W); its values under ``known == 0`` are ignored
        - known: (N, 1, H, W) in [0, 1], 1 = known pixel
        - output: (N, C, H, W), equal to ``image`` where ``known == 1``
    """
    colour, cover = [image * known], [known]
    for _ in range(levels):
        colour.append(F.avg_pool2d(colour[-1], 2, ceil_mode=True))
        cover.append(F.avg_pool2d(cover[-1], 2, ceil_mode=True))
    hole = _hole_box(known) if local else None
    # the coarsest level starts from the mean known colour (a frame with nothing known stays 0)
    fill = (colour[-1].sum((2, 3), keepdim=True) / cover[-1].sum((2, 3), keepdim=True).clamp_min(1e-8))
    fill = fill.expand_as(colour[-1])
    for level, (c, w) in reversed(list(enumerate(zip(colour, cover)))):
        fill = c + (1 - w) * F.interpolate(fill, size=c.shape[-2:], mode="bilinear", align_corners=False)
        box = None if hole is None else _level_box(hole, level, tuple(c.shape[-2:]))
        if box is None:
            fill = _sweeps(fill, c, w, smoothing)
        elif box[2] > box[0] and box[3] > box[1]:  # else nothing unknown at this level: the sweeps keep c
            left, top, right, bottom = box
            window = (..., slice(top, bottom), slice(left, right))
            inner = _sweeps(fill[window], c[window], w[window], smoothing)
            fill = fill.clone()  # the sweeps changed the window only
            fill[window] = inner
    return fill


def _sweeps(fill: Tensor, c: Tensor, w: Tensor, smoothing: int) -> Tensor:
    for _ in range(smoothing):
        fill = c + (1 - w) * F.avg_pool2d(F.pad(fill, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return fill


Box = tuple[int, int, int, int]
"""(left, top, right, bottom), right and bottom exclusive (:data:`backfire.masks.Box`'s order)."""

_WHOLE_FRAME = 0.6
"""A box covering more than this fraction of the frame is not worth cutting out: the whole frame is used."""


def _hole_box(known: Tensor) -> Box | None:
    """The box around every pixel not fully known, over the whole batch; None if it is most of the frame."""
    return _box_of(known.amin(dim=(0, 1)) < 1)


def _box_of(selected: Tensor) -> Box | None:
    """The box around the true pixels of an (H, W) map (an empty box if none); None if it is most of the frame."""
    rows, cols = selected.any(dim=1), selected.any(dim=0)
    if not bool(rows.any()):
        return (0, 0, 0, 0)
    top, bottom = int(rows.nonzero()[0]), int(rows.nonzero()[-1]) + 1
    left, right = int(cols.nonzero()[0]), int(cols.nonzero()[-1]) + 1
    if (bottom - top) * (right - left) > _WHOLE_FRAME * selected.numel():
        return None
    return left, top, right, bottom


def _rows_sharing_context(x: Tensor, box: Box) -> list[list[int]]:
    """The rows of ``x`` (N, C, H, W) in groups equal outside ``box`` (host-side comparisons of the four strips
    around it), each group in the batch's order."""
    left, top, right, bottom = box
    strips = [(..., slice(0, top), slice(None)), (..., slice(bottom, None), slice(None)),
              (..., slice(top, bottom), slice(0, left)), (..., slice(top, bottom), slice(right, None))]
    groups: list[list[int]] = []
    for row in range(len(x)):
        for group in groups:
            if all(torch.equal(x[row][s], x[group[0]][s]) for s in strips):
                group.append(row)
                break
        else:
            groups.append([row])
    return groups


def _level_box(hole: Box, level: int, size: tuple[int, int]) -> Box:
    """The hole's box at pyramid level ``level`` (each pixel a 2**level block, the last ones clipped) with a
    one-pixel margin: every pixel that level does not fully know lies inside it, at least one pixel from an
    edge that is not the frame's, so the replicate padding of the window never reaches them."""
    left, top, right, bottom = hole
    if right <= left:
        return hole
    scale = 2 ** level
    h, w = size
    return (max(left // scale - 1, 0), max(top // scale - 1, 0),
            min(-(-right // scale) + 1, w), min(-(-bottom // scale) + 1, h))


class FFCResNetGenerator(nn.Module):
    """LaMa's generator: FFC encoder, FFC residual bottleneck, transposed-convolution decoder.

    ``self.model`` is one ``nn.Sequential`` with LaMa's indices. For big-LaMa (3 downsamplings,
    18 blocks): 0 pad, 1 stem, 2–4 downsampling, 5–22 residual blocks, 23 concat, 24–32 three
    (ConvTranspose2d, BatchNorm2d, ReLU) upsampling stages, 33 pad, 34 output conv, 35 sigmoid.

    With ``prefill`` (the embedded model, not LaMa), the hole of the input is first filled by
    :func:`coarse_fill` and the network's pre-sigmoid output is added to that fill's logit; the last
    convolution starts at zero, so an untrained network returns the coarse fill.

    Shape: (N, input_nc, H, W) → (N, output_nc, H, W) in [0, 1]; H and W multiples of
    ``2 ** n_downsampling``. The last input channel is the mask (1 = fill).
    """

    def __init__(self, input_nc: int = 4, output_nc: int = 3, ngf: int = 64, n_downsampling: int = 3,
                 n_blocks: int = 18, max_features: int = 1024, ratio_g: float = 0.75, prefill: bool = False):
        super().__init__()
        if n_blocks < 0 or n_downsampling < 1 or ngf < 1:
            raise ValueError(f"invalid generator size: ngf={ngf}, n_downsampling={n_downsampling}, n_blocks={n_blocks}")
        if prefill and input_nc - 1 != output_nc:
            raise ValueError("prefill needs the input to be the output's channels plus a mask")
        self.config = FFCConfig(ngf, n_downsampling, n_blocks, ratio_g, max_features, prefill)
        self.input_nc, self.output_nc = input_nc, output_nc

        def width(mult: int | float) -> int:
            return min(max_features, int(ngf * mult))

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(input_nc, ngf, kernel_size=7, ratio_gin=0, ratio_gout=0, padding=0),
        ]
        for i in range(n_downsampling):
            last = i == n_downsampling - 1
            layers.append(FFC_BN_ACT(width(2 ** i), width(2 ** (i + 1)), kernel_size=3, ratio_gin=0,
                                     ratio_gout=ratio_g if last else 0, stride=2, padding=1))
        bottleneck = width(2 ** n_downsampling)
        layers += [FFCResnetBlock(bottleneck, ratio_g, ratio_g) for _ in range(n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(width(mult), width(mult / 2), kernel_size=3, stride=2, padding=1,
                                   output_padding=1),
                nn.BatchNorm2d(width(mult / 2)),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        if prefill:
            nn.init.zeros_(self.model[-2].weight)
            nn.init.zeros_(self.model[-2].bias)

    @property
    def smallest_input(self) -> int:
        """The smallest side it fills: two cells of the bottleneck, whose 3×3 convolutions reflect-pad by one
        (reflection needs a side longer than the pad)."""
        return 2 * 2 ** self.config.n_downsampling

    def forward(self, x: Tensor, bottleneck_extra: Tensor | None = None, local: bool = False) -> Tensor:
        """``bottleneck_extra`` (N, C_bottleneck, H/2**n, W/2**n), optional: features added to the
        bottleneck's input (local channels first), the way a model built on a pretrained encoder
        (:mod:`backfire.inpainters.stemfed`) feeds it.

        ``local``: compute the prediction only where a composite reads it, on the box around the hole (the
        mask channel, over the batch) — the decoder and the coarse fill are local operations, so inside that
        box the result is the whole frame's up to float rounding — and return 0 outside it; rows equal outside
        that box are taken for one image under several holes (one photo's edits): their shared context is
        encoded once, so its gradient reaches the first of them (the sum over those rows, what an
        optimisation of that one image reads, is exact). The box is read on the host (a data-dependent shape:
        for the CPU path, not for traces or CUDA graphs)."""
        coarse = None
        hole = _box_of(x[:, -1].amax(dim=0) > 0.5) if local else None
        if self.config.prefill:
            image, mask = x[:, :-1], x[:, -1:]
            coarse = coarse_fill(image, 1 - mask, local=local)
            x = torch.cat([coarse, mask], dim=1)
        split = 2 + self.config.n_downsampling  # pad, stem, downsamplings → the (local, global) pair
        end = split + self.config.n_blocks + 1  # … the residual blocks, the concat: the decoder's input
        shared = None if hole is None or hole[2] <= hole[0] or len(x) < 2 else self._shared_encoding(x, hole)
        if bottleneck_extra is None and shared is None:
            features = self.model[:end](x)
        else:
            x_l, x_g = self.model[:split](x) if shared is None else shared
            if bottleneck_extra is not None:
                n_local = x_l.shape[1] if isinstance(x_l, Tensor) else 0
                x_l = x_l + bottleneck_extra[:, :n_local] if n_local else x_l
                x_g = x_g + bottleneck_extra[:, n_local:] if isinstance(x_g, Tensor) else x_g
            features = self.model[split:end]((x_l, x_g))
        window = None if hole is None or hole[2] <= hole[0] else self._decoder_window(hole, tuple(features.shape[-2:]))
        if window is None:
            logits = self.model[end:-1](features)
        else:
            (left, top, right, bottom), (cut_left, cut_top, cut_right, cut_bottom) = window
            logits = self.model[end:-1](features[..., cut_top:cut_bottom, cut_left:cut_right])
            scale = 2 ** self.config.n_downsampling
            inner = (..., slice(top - cut_top * scale, bottom - cut_top * scale),
                     slice(left - cut_left * scale, right - cut_left * scale))
            logits = logits[inner]
            if coarse is not None:
                coarse = coarse[..., top:bottom, left:right]
        out = self.model[-1](logits) if coarse is None else (
            # eps keeps the logit finite for saturated colours; the sigmoid maps the sum back into [0, 1]
            torch.sigmoid(logits + torch.logit(coarse.clamp(1e-3, 1 - 1e-3))))
        if window is None:
            return out
        height, width = x.shape[-2:]
        return F.pad(out, (left, width - right, top, height - bottom))  # 0 where no composite reads it

    def _shared_encoding(self, x: Tensor, hole: Box) -> tuple[MaybeTensor, MaybeTensor] | None:
        """The encoder's (local, global) pair for a batch whose rows are one image under different holes (the
        edits of one step): rows equal outside a box around ``hole`` are encoded once in full, the others only
        on that box; None when no two rows share their context, or the box is most of the frame.

        The encoder (stem and downsamplings) is local: an output pixel reads 2**n + 2 input pixels around its
        block at most, so outside the hole's box widened by two bottleneck pixels every row of a group equals
        its first, and inside it a row's encoding of the box widened by four equals its whole frame's."""
        scale = 2 ** self.config.n_downsampling
        height, width = x.shape[-2] // scale, x.shape[-1] // scale
        left, top, right, bottom = hole
        cut = (max(left // scale - 4, 0), max(top // scale - 4, 0),
               min(-(-right // scale) + 4, width), min(-(-bottom // scale) + 4, height))
        if (cut[2] - cut[0]) * (cut[3] - cut[1]) > _WHOLE_FRAME * height * width:
            return None
        pixels = tuple(v * scale for v in cut)
        groups = _rows_sharing_context(x, pixels)
        if all(len(g) == 1 for g in groups):
            return None
        # the part of the cut whose encoding is exact: two pixels in from every side that is not the frame's
        keep = (cut[0] + (2 if cut[0] > 0 else 0), cut[1] + (2 if cut[1] > 0 else 0),
                cut[2] - (2 if cut[2] < width else 0), cut[3] - (2 if cut[3] < height else 0))
        inner = (..., slice(keep[1] - cut[1], keep[3] - cut[1]), slice(keep[0] - cut[0], keep[2] - cut[0]))
        paste = (slice(None), slice(None), slice(keep[1], keep[3]), slice(keep[0], keep[2]))
        encoder = self.model[:2 + self.config.n_downsampling]
        sides: list[list[Tensor]] = [[], []]
        order = []
        for group in groups:
            first = encoder(x[group[:1]])
            rest = encoder(x[group[1:], :, pixels[1]:pixels[3], pixels[0]:pixels[2]]) if len(group) > 1 else None
            for side, whole in enumerate(first):
                if not isinstance(whole, Tensor):
                    continue
                rows = whole.expand(len(group), -1, -1, -1)
                if rest is not None:
                    rows = rows.clone()
                    rows[1:][paste] = rest[side][inner]
                sides[side].append(rows)
            order += group
        pair = [torch.cat(side) if side else 0 for side in sides]
        if order != sorted(order):  # back in the batch's order
            back = torch.argsort(torch.tensor(order, device=x.device))
            pair = [p.index_select(0, back) if isinstance(p, Tensor) else p for p in pair]
        return pair[0], pair[1]

    _DECODER_MARGIN = 3
    """Bottleneck pixels of context the decoder needs around a window: each of its transposed convolutions
    reads one pixel beyond its output's source and the last convolution three full-resolution pixels, so k
    upsamplings need 2 + 2**-k·… < 3 bottleneck pixels (2.125 for big-LaMa's three), whatever k."""

    def _decoder_window(self, hole: Box, grid: tuple[int, int]) -> tuple[Box, Box] | None:
        """(the hole's box in pixels, the bottleneck box the decoder runs on), or None if that is most of it."""
        scale = 2 ** self.config.n_downsampling
        margin = self._DECODER_MARGIN
        left, top, right, bottom = hole
        h, w = grid
        cut = (max(left // scale - margin, 0), max(top // scale - margin, 0),
               min(-(-right // scale) + margin, w), min(-(-bottom // scale) + margin, h))
        if (cut[2] - cut[0]) * (cut[3] - cut[1]) > _WHOLE_FRAME * h * w:
            return None
        return hole, cut

    @property
    def bottleneck_channels(self) -> int:
        """Channels of the bottleneck (local + global), the width ``bottleneck_extra`` must have."""
        return min(self.config.max_features, self.config.ngf * 2 ** self.config.n_downsampling)


def build_generator(config: FFCConfig = BIG_LAMA, input_nc: int = 4, output_nc: int = 3) -> FFCResNetGenerator:
    """The generator of ``config`` with PyTorch's default initialisation."""
    return FFCResNetGenerator(input_nc, output_nc, ngf=config.ngf, n_downsampling=config.n_downsampling,
                              n_blocks=config.n_blocks, max_features=config.max_features,
                              ratio_g=config.ratio_g, prefill=config.prefill)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (an :class:`FFCResNetGenerator`, or a module holding some) for inference: every
    BatchNorm folded into the convolution before it, in eval mode with frozen weights.

    In eval mode a BatchNorm is a per-channel affine map, and every one in the generator follows a linear
    map (a convolution, a transposed convolution, or the sum of an FFC's two paths into one side): its scale
    goes into those weights and its shift into one bias, so the copy computes the same function with a
    pass over each feature map less — equal up to float rounding (about 1e-7 relative). ``module`` itself is
    left as it is (its state dict is what weight files hold). Other modules inside it (a pretrained stem)
    are copied unchanged.
    """
    folded = copy.deepcopy(module).eval()
    for part in list(folded.modules()):
        if isinstance(part, FFC_BN_ACT):
            ffc = part.ffc
            if isinstance(part.bn_l, nn.BatchNorm2d):
                _fold(part.bn_l, [c for c in (ffc.convl2l, ffc.convg2l) if _is_real(c)])
                part.bn_l = nn.Identity()
            if isinstance(part.bn_g, nn.BatchNorm2d):
                spectral = ffc.convg2g.conv2 if isinstance(ffc.convg2g, SpectralTransform) else None
                _fold(part.bn_g, [c for c in (ffc.convl2g, spectral) if c is not None and _is_real(c)])
                part.bn_g = nn.Identity()
        elif isinstance(part, SpectralTransform) and isinstance(part.conv1[1], nn.BatchNorm2d):
            _fold(part.conv1[1], [part.conv1[0]])
            part.conv1[1] = nn.Identity()
        elif isinstance(part, FourierUnit) and isinstance(part.bn, nn.BatchNorm2d):
            _fold(part.bn, [part.conv_layer])
            part.bn = nn.Identity()
        elif isinstance(part, nn.Sequential):
            for i in range(len(part) - 1):
                if isinstance(part[i], (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(part[i + 1], nn.BatchNorm2d):
                    _fold(part[i + 1], [part[i]])
                    part[i + 1] = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


@torch.no_grad()
def _fold(bn: nn.BatchNorm2d, convs: list[nn.Module]) -> None:
    """``bn`` (eval) folded into ``convs``, whose outputs it normalises summed: scale every one, shift the first.
    Computed in float32 whatever the module's dtype, then stored in it."""
    var, mean = bn.running_var.float(), bn.running_mean.float()
    scale = (bn.weight.float() if bn.affine else torch.ones_like(var)) / torch.sqrt(var + bn.eps)
    shift = (bn.bias.float() if bn.affine else torch.zeros_like(mean)) - mean * scale
    for i, conv in enumerate(convs):
        # the output channels: dim 0 of a convolution's weight, dim 1 of a transposed convolution's
        view = (1, -1, 1, 1) if isinstance(conv, nn.ConvTranspose2d) else (-1, 1, 1, 1)
        conv.weight.copy_(conv.weight.float() * scale.reshape(view))
        bias = conv.bias.float() * scale if conv.bias is not None else None
        if i == 0:
            bias = shift if bias is None else bias + shift
        if bias is not None:
            conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
