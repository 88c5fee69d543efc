"""LPIPS (Zhang et al. 2018), version 0.1, as the ``lpips`` package computes it:
``lpips.LPIPS(net="alex" | "vgg")(x, y, normalize=True)`` for images x, y in [0, 1].

1. x ↦ 2x − 1 (lpips's ``normalize=True``: its networks take [−1, 1]), then lpips's ``ScalingLayer``,
   (x − shift) / scale with shift (−0.030, −0.088, −0.188) and scale (0.458, 0.448, 0.450);
2. torchvision's ImageNet AlexNet (or VGG-16) ``features``, with torchvision's parameter names
   (``features.N.*``), read after the ReLUs lpips taps (AlexNet: relu1–relu5; VGG-16: relu1_2, relu2_2,
   relu3_3, relu4_3, relu5_3);
3. each tapped map unit-normalised over its channels (x / (‖x‖₂ + 1e-10), lpips's ``normalize_tensor``),
   the two images' maps subtracted and squared;
4. lpips's linear layer of that tap (a 1×1 convolution without bias, ``linK.model.1.weight``), then the
   mean over the map's pixels (``spatial_average``), summed over the five taps.

Images are compared at their own size, as lpips compares them (nothing is resized): AlexNet needs at
least 31 px on each side, VGG-16 16 px. The weights are torchvision's file (``alexnet-owt-7be5be79.pth``,
``vgg16-397923af.pth``; only ``features.*`` is read) and lpips's (``weights/v0.1/alex.pth``, ``vgg.pth``),
told apart by what they hold, not by their names. Faithful to the official code: ``tests/test_lpips.py``,
fixture from ``tests/fixtures/make_lpips_fixture.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from backfire.errors import ModelError
from backfire.inpainters.weights import load_torch
from backfire.judge.metrics import validate

__all__ = ["NETS", "LPIPS", "LpipsNet", "find_lpips_weights", "load_lpips", "lpips"]

Layer = tuple  # ("conv", out_channels, kernel, stride, padding) | ("relu",) | ("pool", kernel, stride)


@dataclass(frozen=True)
class LpipsNet:
    """One of LPIPS's backbones: torchvision's ``features`` up to lpips's last tap, and lpips's files."""

    name: str
    label: str
    layers: tuple[Layer, ...]
    taps: tuple[int, ...]
    """The indices in ``features`` after which lpips reads a map (its slices' ends)."""
    channels: tuple[int, ...]
    min_side: int
    """The smallest image side the backbone takes (a smaller one pools to nothing)."""
    backbone_file: str
    linear_file: str


def _vgg16() -> tuple[Layer, ...]:
    config = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    return tuple(layer for c in config for layer in ((("pool", 2, 2),) if c == "M" else (("conv", c, 3, 1, 1),
                                                                                          ("relu",))))


NETS: dict[str, LpipsNet] = {
    "alex": LpipsNet("alex", "AlexNet",
                     (("conv", 64, 11, 4, 2), ("relu",), ("pool", 3, 2), ("conv", 192, 5, 1, 2), ("relu",),
                      ("pool", 3, 2), ("conv", 384, 3, 1, 1), ("relu",), ("conv", 256, 3, 1, 1), ("relu",),
                      ("conv", 256, 3, 1, 1), ("relu",)),
                     taps=(1, 4, 7, 9, 11), channels=(64, 192, 384, 256, 256), min_side=31,
                     backbone_file="alexnet-owt-7be5be79.pth", linear_file="alex.pth"),
    "vgg": LpipsNet("vgg", "VGG-16", _vgg16(), taps=(3, 8, 15, 22, 29), channels=(64, 128, 256, 512, 512),
                    min_side=16, backbone_file="vgg16-397923af.pth", linear_file="vgg.pth"),
}
"""lpips's ``net`` name → backbone (lpips's default is ``alex``)."""


def _features(layers: Iterable[Layer]) -> nn.Sequential:
    """torchvision's ``features`` Sequential: the same modules at the same indices, so its keys load."""
    modules: list[nn.Module] = []
    channels = 3
    for kind, *args in layers:
        if kind == "conv":
            out, kernel, stride, padding = args
            modules.append(nn.Conv2d(channels, out, kernel, stride, padding))
            channels = out
        elif kind == "relu":
            modules.append(nn.ReLU())
        else:
            modules.append(nn.MaxPool2d(*args))
    return nn.Sequential(*modules)


class LPIPS(nn.Module):
    """LPIPS v0.1 of one backbone: ``(x, y)``, N×3×H×W in [0, 1] each → N distances."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        self.net = NETS[net]
        self.features = _features(self.net.layers)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.net.channels)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The maps lpips reads of ``x`` in [−1, 1]."""
        x = (x - self.shift) / self.scale
        maps = []
        for index, layer in enumerate(self.features[: self.net.taps[-1] + 1]):
            x = layer(x)
            if index in self.net.taps:
                maps.append(x)
        return maps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        validate(x, y)
        if min(x.shape[-2:]) < self.net.min_side:
            raise ValueError(f"LPIPS ({self.net.label}) needs images of at least {self.net.min_side} px a side, "
                             f"got {tuple(x.shape[-2:])}")
        total = torch.zeros(len(x), device=x.device)
        for a, b, lin in zip(self.taps(2 * x - 1), self.taps(2 * y - 1), self.lins):
            total = total + lin((_unit(a) - _unit(b)) ** 2).mean((2, 3)).flatten()
        return total


def _unit(maps: Tensor, eps: float = 1e-10) -> Tensor:
    return maps / (torch.sqrt((maps**2).sum(1, keepdim=True)) + eps)


@torch.no_grad()
def lpips(x: Tensor, y: Tensor, model: LPIPS) -> Tensor:
    """LPIPS between ``x`` and ``y`` (N×3×H×W or 3×H×W in [0, 1]) with a loaded ``model``: N distances."""
    x, y = (t if t.ndim == 4 else t[None] for t in (x, y))
    device = next(model.parameters()).device
    return model(x.to(device, torch.float32), y.to(device, torch.float32)).cpu()


# ------------------------------------------------------------------------------------------ weights


def _kind(state: Mapping, path: Path) -> tuple[str, str]:
    """("backbone" | "linear", net) of a weight file's tensors, told by its keys and shapes."""
    if "features.0.weight" in state:
        for net in sorted(NETS.values(), key=lambda n: -len(n.layers)):  # VGG's keys include AlexNet's indices
            if f"features.{net.taps[-1] - 1}.weight" in state:
                return "backbone", net.name
    if "lin0.model.1.weight" in state and "lin1.model.1.weight" in state:
        for net in NETS.values():
            if state["lin1.model.1.weight"].shape[1] == net.channels[1]:
                return "linear", net.name
    raise ModelError(f"{path} is neither an LPIPS backbone (torchvision's alexnet-owt-7be5be79.pth, "
                     "vgg16-397923af.pth) nor LPIPS linear layers (lpips's weights/v0.1/alex.pth, vgg.pth)")


def find_lpips_weights(paths: Iterable[str | Path]) -> dict[str, dict[str, Path]]:
    """net → {"backbone": file, "linear": file} among ``paths`` (files, told apart by content, or folders
    holding the files under their published names), each net with both files.

    Raises:
        ModelError: a path missing or unreadable, a file of neither kind, two files of one kind, or a net
            with only one of its two files.
    """
    found: dict[str, dict[str, Path]] = {}
    for given in map(Path, paths):
        if given.is_dir():
            files = [given / name for net in NETS.values() for name in (net.backbone_file, net.linear_file)
                     if (given / name).is_file()]
            if not files:
                raise ModelError(f"{given}: no LPIPS weights in this folder (looked for "
                                 f"{', '.join(n for net in NETS.values() for n in (net.backbone_file, net.linear_file))})")
        elif given.is_file():
            files = [given]
        else:
            raise ModelError(f"{given}: no such LPIPS weights file or folder")
        for file in files:
            kind, net = _kind(load_torch(file, "LPIPS weights", strict=True), file)
            if kind in found.setdefault(net, {}) and found[net][kind] != file:
                raise ModelError(f"two LPIPS {NETS[net].label} {kind} files: {found[net][kind]} and {file}")
            found[net][kind] = file
    for net, files in found.items():
        if len(files) < 2:
            missing = "linear layers (lpips's weights/v0.1/" + NETS[net].linear_file + ")" \
                if "linear" not in files else "backbone (torchvision's " + NETS[net].backbone_file + ")"
            raise ModelError(f"LPIPS ({NETS[net].label}) needs two files, its backbone and its linear layers; "
                             f"the {missing} is missing")
    return found


def load_lpips(net: str, backbone: str | Path, linear: str | Path, device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS of backbone ``net`` from torchvision's weight file and lpips's linear layers.

    Raises:
        ModelError: unreadable files, or tensors that do not fit.
    """
    model = LPIPS(net)
    features = {k.removeprefix("features."): v.float()
                for k, v in load_torch(backbone, "LPIPS backbone", strict=True).items() if k.startswith("features.")}
    features = {k: v for k, v in features.items() if int(k.split(".")[0]) <= model.net.taps[-1]}
    lins = load_torch(linear, "LPIPS linear layers", strict=True)
    linear_state = {f"{k}.weight": lins.get(f"lin{k}.model.1.weight") for k in range(len(model.net.channels))}
    try:
        model.features.load_state_dict(features)
        model.lins.load_state_dict({k: v.float() for k, v in linear_state.items() if v is not None})
    except (RuntimeError, AttributeError) as exc:
        raise ModelError(f"LPIPS ({model.net.label}): {backbone} and {linear} do not fit its layers "
                         f"({str(exc).strip().splitlines()[-1].strip()})") from exc
    return model.eval().requires_grad_(False).to(device)
