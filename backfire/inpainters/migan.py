"""MI-GAN (Sargsyan et al., ICCV 2023): the generator and its weight files.

MI-GAN is a small mobile inpainting GAN (5.9 M parameters at 256² and at 512²); IOPaint offers it as
its fast erase model. Our :class:`MiganGenerator` computes what the official inference network
(``lib/model_zoo/migan_inference.py`` of github.com/Picsart-AI-Research/MI-GAN) computes and uses
its parameter names, so the released files load into it unchanged. Two file formats exist, and
:func:`load_migan` reads both, telling them apart by content:

- the official ``migan_256_places2.pt`` / ``migan_512_places2.pt`` / ``migan_256_ffhq.pt``: a plain
  ``torch.save(generator.state_dict())``; the resolution is read off the weights;
- IOPaint's ``migan_traced.pt``: the 512² generator traced to TorchScript (the official
  ``scripts/export_inference_model.py`` writes it with ``torch.jit.trace``), called as
  ``model(x)``. It is used as it is, so the graph an attacker runs is the one we differentiate.

The network's convention (both formats): ``x = cat([known − 0.5, image · known])`` with
``known = 1 − hole`` and the image in [−1, 1] — IOPaint writes it ``cat([0.5 − mask, erased])`` —
a 4×R×R tensor in, a 3×R×R image in about [−1, 1] out, the whole frame predicted (no
compositing). R is fixed by the weights: the upsampling pattern (``filter_const``) and the
synthesis noise (``noise_const``) are stored at the training resolution, so the network runs at
R×R only.

:class:`MiganInpainter` (the bare model) therefore takes any H×W by stretching the frame to R×R,
as the official ``demo.py`` and ONNX pipeline do, and stretching the prediction back; at R×R it
runs the network directly. IOPaint's own procedure (crop around each region, shrink to ≤ 512,
pad to a 512 square) is a wrapper around this Inpainter that feeds it R×R frames
(``backfire.inpainters.pipelines``); it reads :attr:`MiganInpainter.resolution`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.base import ModuleInpainter, build_with_weights
from backfire.inpainters.weights import load_torch, load_torchscript, sniff

__all__ = [
    "NAME",
    "RESOLUTIONS",
    "WEIGHTS_HELP",
    "MiganGenerator",
    "MiganInpainter",
    "MiganModule",
    "infer_resolution",
    "load_migan",
    "load_migan_generator",
]

NAME = "migan"

RESOLUTIONS = (256, 512)
"""The released models' resolutions (any power of two from 8 up builds)."""

WEIGHTS_HELP = (
    "download IOPaint's migan_traced.pt (github.com/Sanster/models/releases/download/migan/migan_traced.pt) "
    "or an official MI-GAN checkpoint (migan_512_places2.pt, migan_256_places2.pt, migan_256_ffhq.pt; "
    "links in github.com/Picsart-AI-Research/MI-GAN's README) and pass --weights PATH"
)

_SLOPE, _GAIN, _CLAMP = 0.2, math.sqrt(2.0), 256.0
"""MI-GAN's activation: leaky ReLU (slope 0.2) times √2, clamped to ±256 (StyleGAN2's lrelu with clamp)."""

_TORGB = re.compile(r"(?:^|\.)synthesis\.b(\d+)\.torgb\.weight$")

_FIR = (1.0, 3.0, 3.0, 1.0)
"""The binomial resampling filter (StyleGAN2's [1, 3, 3, 1])."""


def _activation(x: Tensor) -> Tensor:
    return (F.leaky_relu(x, _SLOPE) * _GAIN).clamp(-_CLAMP, _CLAMP)


def _channels(resolution: int) -> int:
    """Feature width at a resolution: 32768 / resolution, at most 512 (the official ``ch_base``, ``ch_max``)."""
    return min(32768 // resolution, 512)


def _fir_weight(channels: int, gain: float) -> Tensor:
    """The depthwise 4×4 filter ``outer(f, f) / sum · gain`` for each channel (its initial value; files overwrite it)."""
    f = torch.tensor(_FIR)
    kernel = torch.outer(f, f)
    kernel = kernel / kernel.sum() * gain
    return kernel.expand(channels, 1, 4, 4).clone()


# --------------------------------------------------------------------------------------------
# The network


class Downsample2d(nn.Module):
    """Blur-and-subsample by 2: a depthwise 4×4 convolution, stride 2, padding 1 (weights in ``filter``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.filter = nn.Conv2d(channels, channels, 4, stride=2, padding=1, groups=channels, bias=False)
        with torch.no_grad():
            self.filter.weight.copy_(_fir_weight(channels, gain=1.0))

    def forward(self, x: Tensor) -> Tensor:
        return self.filter(x)


class Upsample2d(nn.Module):
    """Upsample by 2: zero insertion, then a depthwise 4×4 blur.

    Zero insertion is written as nearest-neighbour doubling times a stored pattern
    (``filter_const``, ones at even rows and columns) — which ties the block to one resolution.
    """

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        pattern = torch.zeros(2, 2)
        pattern[0, 0] = 1
        self.register_buffer("filter_const", pattern.repeat(resolution // 2, resolution // 2)[None, None])
        self.filter = nn.Conv2d(channels, channels, 4, groups=channels, bias=False)
        with torch.no_grad():
            self.filter.weight.copy_(_fir_weight(channels, gain=4.0))

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest") * self.filter_const
        return self.filter(F.pad(x, (2, 1, 2, 1)))


class SeparableConv2d(nn.Module):
    """Depthwise 3×3 (with bias) → activation → [down] → pointwise 1×1 → [up] → [+ noise] → activation.

    ``noise_resolution`` adds the fixed synthesis noise ``noise_const · noise_strength`` (MI-GAN's
    inference network keeps StyleGAN's per-pixel noise as a stored constant).
    """

    def __init__(self, in_channels: int, out_channels: int, down: bool = False, up_resolution: int | None = None,
                 noise_resolution: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.downsample = Downsample2d(in_channels) if down else None
        self.upsample = Upsample2d(out_channels, up_resolution) if up_resolution else None
        self.use_noise = noise_resolution is not None
        if noise_resolution is not None:
            self.register_buffer("noise_const", torch.randn(noise_resolution, noise_resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor) -> Tensor:
        x = _activation(self.conv1(x))
        if self.downsample is not None:
            x = self.downsample(x)
        x = self.conv2(x)
        if self.upsample is not None:
            x = self.upsample(x)
        if self.use_noise:
            x = x + self.noise_const * self.noise_strength
        return _activation(x)


class EncoderBlock(nn.Module):
    """Two separable convolutions; the first block also reads the 4-channel input (``fromrgb``)."""

    def __init__(self, in_channels: int, out_channels: int, reads_input: bool = False, down: bool = True):
        super().__init__()
        self.fromrgb = nn.Conv2d(4, in_channels, 1) if reads_input else None
        self.conv1 = SeparableConv2d(in_channels, in_channels)
        self.conv2 = SeparableConv2d(in_channels, out_channels, down=down)

    def forward(self, x: Tensor | None, image: Tensor) -> tuple[Tensor, Tensor]:
        if self.fromrgb is not None:
            y = _activation(self.fromrgb(image))
            x = y if x is None else x + y
        assert x is not None, "the first encoder block reads the input"
        feature = self.conv1(x)
        return self.conv2(feature), feature


class Encoder(nn.Module):
    """Blocks ``b{R}``, ``b{R/2}``, …, ``b8`` halve the frame; ``b4`` keeps 4×4. Each hands a skip feature on."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolutions = [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]  # R … 8
        for index, res in enumerate(self.resolutions):
            self.add_module(f"b{res}", EncoderBlock(_channels(res), _channels(res // 2), reads_input=index == 0))
        self.b4 = EncoderBlock(_channels(4), _channels(4), down=False)

    def forward(self, image: Tensor) -> tuple[Tensor, dict[int, Tensor]]:
        x: Tensor | None = None
        features: dict[int, Tensor] = {}
        for res in self.resolutions:
            x, features[res] = getattr(self, f"b{res}")(x, image)
        x, features[4] = self.b4(x, image)
        return x, features


class SynthesisBlockFirst(nn.Module):
    """The 4×4 block: conv, + encoder skip, conv, to RGB."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = SeparableConv2d(channels, channels)
        self.conv2 = SeparableConv2d(channels, channels)
        self.torgb = nn.Conv2d(channels, 3, 1)

    def forward(self, x: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv2(self.conv1(x) + skip)
        return x, self.torgb(x)


class SynthesisBlock(nn.Module):
    """Doubles the frame: upsampling conv, + encoder skip, conv; the RGB image is upsampled and added to."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int):
        super().__init__()
        self.conv1 = SeparableConv2d(in_channels, out_channels, up_resolution=resolution, noise_resolution=resolution)
        self.conv2 = SeparableConv2d(out_channels, out_channels, noise_resolution=resolution)
        self.torgb = nn.Conv2d(out_channels, 3, 1)
        self.upsample = Upsample2d(3, resolution)

    def forward(self, x: Tensor, skip: Tensor, rgb: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv2(self.conv1(x) + skip)
        return x, self.upsample(rgb) + self.torgb(x)


class Synthesis(nn.Module):
    """Blocks ``b4``, ``b8``, …, ``b{R}`` (skip-connected to the encoder), summing RGB outputs across scales."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolutions = [2 ** i for i in range(3, int(math.log2(resolution)) + 1)]  # 8 … R
        self.b4 = SynthesisBlockFirst(_channels(4))
        for res in self.resolutions:
            self.add_module(f"b{res}", SynthesisBlock(_channels(res // 2), _channels(res), res))

    def forward(self, x: Tensor, features: dict[int, Tensor]) -> Tensor:
        x, rgb = self.b4(x, features[4])
        for res in self.resolutions:
            x, rgb = getattr(self, f"b{res}")(x, features[res], rgb)
        return rgb


class MiganGenerator(nn.Module):
    """MI-GAN's inference generator at ``resolution`` (a power of two ≥ 8; released: 256 and 512).

    Parameter names are the official ones (``encoder.b256.fromrgb.weight``, …,
    ``synthesis.b512.upsample.filter_const``), so an official checkpoint loads with ``strict=True``.

    Shape:
        - x: (N, 4, R, R): ``known − 0.5`` (known = 1 outside the hole) and ``image · known``, image in [−1, 1]
        - output: (N, 3, R, R), the predicted frame in about [−1, 1] (not clamped, not composited)
    """

    def __init__(self, resolution: int = 512):
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise ValueError(f"MI-GAN's resolution must be a power of two ≥ 8, got {resolution}")
        self.resolution = resolution
        self.synthesis = Synthesis(resolution)
        self.encoder = Encoder(resolution)

    def forward(self, x: Tensor) -> Tensor:
        x, features = self.encoder(x)
        return self.synthesis(x, features)


class MiganModule(nn.Module):
    """An MI-GAN network (ours or a TorchScript) behind backfire's ``(masked_image, mask)`` convention, at R×R.

    Shape:
        - masked_image: (N, 3, R, R) in [0, 1], zero in the hole
        - mask: (N, 1, R, R), 1 = fill
        - output: (N, 3, R, R) in [0, 1], the network's frame (clamped, as IOPaint clamps it)
    """

    def __init__(self, network: nn.Module, resolution: int):
        super().__init__()
        self.network = network
        self.resolution = resolution

    def forward(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        known = 1 - mask
        x = torch.cat([known - 0.5, (masked_image * 2 - 1) * known], dim=1)
        return (self.network(x) * 0.5 + 0.5).clamp(0, 1)


class MiganInpainter(ModuleInpainter):
    """An :class:`~backfire.inpainters.base.Inpainter` around an MI-GAN network of native size ``resolution``.

    At R×R the network runs as IOPaint runs it. Any other H×W is stretched to R×R (bilinear,
    antialiased when shrinking; the hole by area, so every pixel touching the hole stays a hole)
    and the prediction stretched back — the official demo's convention, not IOPaint's (that is the
    ``iopaint`` pipeline around this Inpainter, which hands it R×R frames).
    """

    def __init__(self, network: nn.Module, resolution: int | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, name: str = NAME):
        own = network.resolution if isinstance(network, MiganGenerator) else None
        if resolution is None and own is None:
            raise ValueError("the resolution of a TorchScript MI-GAN must be given")
        if resolution is not None and own is not None and resolution != own:
            raise ValueError(f"the generator is {own}², not {resolution}²")
        self.resolution: int = own or resolution  # type: ignore[assignment]
        """The network's native side R: frames of R×R run as they are, others are stretched."""
        super().__init__(name, MiganModule(network, self.resolution), device, dtype, multiple=1)

    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        size = masked_image.shape[-2:]
        side = self.resolution
        if tuple(size) == (side, side):
            return self.module(masked_image, mask)
        small_mask = (F.interpolate(mask.float(), size=(side, side), mode="area") > 0).to(mask.dtype)
        small = _stretch(masked_image, (side, side)) * (1 - small_mask)
        return _stretch(self.module(small, small_mask), tuple(size)).clamp(0, 1)


def _stretch(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize, antialiased (plain bilinear along a side that grows, low-passed along one that shrinks).

    Computed in float32: the antialiased kernel has no reduced-precision version on every device,
    and the resize costs little next to the network.
    """
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=True).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Reading weight files


def load_migan(path: str | Path | None, device: torch.device = torch.device("cpu"),
               dtype: torch.dtype = torch.float32, name: str = NAME) -> MiganInpainter:
    """MI-GAN from IOPaint's ``migan_traced.pt`` or an official ``migan_*.pt`` state dict.

    Raises:
        WeightsNotFoundError: ``path`` does not exist.
        ModelError: ``path`` is None, or the file is not MI-GAN weights in a known format.
    """
    path = _find_weights(path)
    fmt = _weights_format(path)
    if fmt == "torchscript":
        module, resolution = _load_script(path, device)
        return MiganInpainter(module, resolution, device, dtype, name)
    return MiganInpainter(load_migan_generator(path), device=device, dtype=dtype, name=name)


def _find_weights(path: str | Path | None) -> Path:
    if path is None:
        raise ModelError(f"MI-GAN needs weights: {WEIGHTS_HELP}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"MI-GAN weights not found at {path}: {WEIGHTS_HELP}")
    return path


def _weights_format(path: Path) -> str:
    """``"torchscript"``, ``"torch"`` (a ``torch.save`` file, zip or legacy pickle) or ``"safetensors"``."""
    try:
        fmt = sniff(path)
    except ModelError:  # a damaged zip archive
        fmt = "unknown"
    if fmt in ("zip", "unknown"):
        raise ModelError(f"{path} is neither a TorchScript model (migan_traced.pt) nor a PyTorch state dict "
                         f"(migan_512_places2.pt); {WEIGHTS_HELP}")
    return "torch" if fmt == "pickle" else fmt


def _load_script(path: Path, device: torch.device) -> tuple[nn.Module, int]:
    """IOPaint's traced MI-GAN and its resolution, after checking it is one."""
    module = load_torchscript(path, device)
    arguments = getattr(getattr(module.forward, "schema", None), "arguments", None)
    if arguments is not None and len(arguments) != 2:  # self, x
        names = ", ".join(a.name for a in arguments[1:])
        raise ModelError(f"{path}: the TorchScript model takes ({names}); MI-GAN takes one 4-channel tensor")
    return module, infer_resolution(module.state_dict(), source=str(path))


def load_migan_generator(path: str | Path) -> MiganGenerator:
    """The :class:`MiganGenerator` in an official state dict file (CPU, float32, eval); resolution from the weights."""
    path = Path(path)
    fmt = _weights_format(path)
    if fmt == "torchscript":
        raise ModelError(f"{path} is a TorchScript model, not a state dict: load it with load_migan")
    if fmt != "torch":
        raise ModelError(f"{path} is a {fmt} file; MI-GAN's weights come as a torch.save state dict or TorchScript")
    raw = load_torch(path)
    state = _generator_state(raw, str(path))
    resolution = infer_resolution(state, source=str(path))
    return build_with_weights(lambda: MiganGenerator(resolution), state,
                              f"{path}: weights do not fit the {resolution}² MI-GAN generator")


def _generator_state(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise ModelError(f"{source} holds a {type(obj).__name__}, not an MI-GAN state dict")
    state = {k: v for k, v in obj.items() if isinstance(k, str) and k.split(".")[0] in ("encoder", "synthesis")}
    if not state:
        raise ModelError(f"{source} holds no MI-GAN generator weights (no 'encoder.*' / 'synthesis.*' keys); "
                         f"{WEIGHTS_HELP}")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelError(f"{source}: entry {bad[0]!r} is not a tensor")
    return state


def infer_resolution(state: Mapping[str, Tensor], source: str = "checkpoint") -> int:
    """R from the synthesis blocks' names (``synthesis.b{R}.torgb.weight`` is the last one; a prefix is allowed)."""
    found = (_TORGB.search(key) for key in state)
    sizes = [int(match.group(1)) for match in found if match]
    if not sizes:
        raise ModelError(f"{source}: not an MI-GAN generator (no 'synthesis.b*.torgb.weight'); {WEIGHTS_HELP}")
    resolution = max(sizes)
    if resolution < 8 or resolution & (resolution - 1):
        raise ModelError(f"{source}: MI-GAN's synthesis ends at {resolution}², not a power of two")
    return resolution
