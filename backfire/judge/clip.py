"""CLIP image features for CLIP-FID, as clean-fid computes them (its ``model_name="clip_vit_b_32"``).

CLIP-FID is the Fréchet distance (:func:`backfire.judge.fid.frechet_distance`) between the CLIP image
embeddings of two sets; most inpainting papers, the protection paper's "CLIP-FID 12.72 → 39.91" among
them, take it from clean-fid, so its preprocessing is reproduced here step by step
(``cleanfid/clip_features.py``: ``img_preprocess_clip`` then ``CLIP_fx``):

1. the image as 8 bits (clean-fid reads image files), then as a PIL picture;
2. torchvision's ``Resize(224, BICUBIC)`` on a PIL picture: the shorter side to 224, the longer to
   ``int(224 · long / short)``, by PIL's bicubic resampling (antialiased), untouched when already so;
3. torchvision's ``CenterCrop(224)``: offsets ``int(round((side − 224) / 2))`` (Python's rounding);
4. back to 8 bits (the picture is), / 255, then normalised with CLIP's mean and std;
5. ``encode_image``: the class token after ``ln_post``, times ``proj`` (512-d for ViT-B/32), not
   normalised.

224 is ViT-B/32's input size; a network read from other weights uses its own (clip's ``_transform``).
The network is OpenAI's ``VisionTransformer`` (``clip/model.py``) written again with its parameter names,
so OpenAI's ``ViT-B-32.pt`` (a TorchScript archive) and any state dict of the same keys (``clip.load``
takes both) load as they are; its size is read off the weights as clip's ``build_model`` reads it. It
runs in float32 wherever it runs: ``clip.load`` makes the model float16 on a GPU (clean-fid's features
there differ from these by float16's rounding, ~1e-3 relative) and float32 on the CPU, as here.
Faithful to the official code: ``tests/test_clip.py``, fixture from ``tests/fixtures/make_clip_fixture.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from backfire.errors import ModelError
from backfire.inpainters.weights import load_torch, load_torchscript, sniff
from backfire.judge.metrics import validate
from backfire.pixels import to_pil

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipFeatures", "VisionTransformer", "clip_input", "load_clip_visual",
           "read_clip_visual"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class QuickGELU(nn.Module):
    """OpenAI's GELU approximation, x·σ(1.702 x), which CLIP was trained with."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:  # L×N×D, as nn.MultiheadAttention takes it by default
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP's image encoder (OpenAI's names): N×3×R×R normalised pixels → N×output_dim embeddings."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int):
        super().__init__()
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # N × grid² × width
        x = torch.cat([self.class_embedding.expand(len(x), 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).transpose(0, 1)).transpose(0, 1)
        return self.ln_post(x[:, 0]) @ self.proj


# ------------------------------------------------------------------------------------------ weights


def read_clip_visual(path: str | Path) -> dict[str, Tensor]:
    """The image encoder's tensors (``visual.*``, prefix removed, float32) of a CLIP weight file: OpenAI's
    TorchScript archive (only its tensors are read, its code never runs) or a state dict of its keys.

    Raises:
        ModelError: unreadable, or no CLIP ViT image encoder in it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such CLIP weights file")
    kind = sniff(path)
    if kind == "torchscript":
        state = load_torchscript(path).state_dict()
    elif kind in ("torch", "pickle"):
        state = load_torch(path, "CLIP weights", strict=True)
    else:
        raise ModelError(f"{path} is not a CLIP weights file (OpenAI's ViT-B-32.pt or a state dict of its keys)")
    if not isinstance(state, Mapping) or "visual.proj" not in state:
        what = "a ResNet CLIP (only ViT image encoders are read)" if isinstance(state, Mapping) and any(
            str(k).startswith("visual.layer1.") for k in state) else "no CLIP ViT image encoder (visual.proj)"
        raise ModelError(f"{path}: {what}; expected OpenAI's ViT-B-32.pt or a state dict of its keys")
    return {k.removeprefix("visual."): v.float() for k, v in state.items() if k.startswith("visual.")}


def load_clip_visual(path: str | Path, device: torch.device | str = "cpu") -> VisionTransformer:
    """The image encoder of a CLIP weight file, its size read off the weights (clip's ``build_model``).

    Raises:
        ModelError: unreadable, not a CLIP ViT, or tensors that do not fit.
    """
    state = read_clip_visual(path)
    width, patch = state["conv1.weight"].shape[0], state["conv1.weight"].shape[-1]
    layers = sum(k.endswith(".attn.in_proj_weight") for k in state)
    grid = round((state["positional_embedding"].shape[0] - 1) ** 0.5)
    if width % 64:
        raise ModelError(f"{path}: a CLIP ViT of width {width}; CLIP's have 64 channels per head")
    model = VisionTransformer(patch * grid, patch, width, layers, width // 64, state["proj"].shape[1])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: the CLIP image encoder's tensors do not fit ({str(exc).splitlines()[-1].strip()})"
                         ) from exc
    return model.eval().requires_grad_(False).to(device)


# ------------------------------------------------------------------------------------------ features


def clip_input(images: Tensor, size: int = 224) -> Tensor:
    """N×3×H×W images in [0, 1] → N×3×size×size network input, clean-fid's steps 1–4 (see the module)."""
    validate(images)
    images = images if images.ndim == 4 else images[None]
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    out = []
    for image in images:
        picture = to_pil(image)  # rounded to 8 bits
        width, height = picture.size
        short, long = min(width, height), max(width, height)
        new_long = int(size * long / short)
        if (short, long) != (size, new_long):
            picture = picture.resize((size, new_long) if width <= height else (new_long, size),
                                     Image.Resampling.BICUBIC)
        width, height = picture.size
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
        picture = picture.crop((left, top, left + size, top + size))
        pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        out.append((pixels - mean) / std)
    return torch.stack(out)


class ClipFeatures:
    """CLIP image embeddings of images in [0, 1] (N×3×H×W → N×D, float64 on the CPU), for CLIP-FID."""

    def __init__(self, weights: str | Path, device: torch.device | str = "cpu", batch: int = 32):
        self.device = torch.device(device)
        self.batch = batch
        self.model = load_clip_visual(weights, self.device)

    @property
    def dimensions(self) -> int:
        return self.model.proj.shape[1]

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        out = []
        for start in range(0, len(images), self.batch):
            x = clip_input(images[start:start + self.batch].cpu(), self.model.input_resolution)
            out.append(self.model(x.to(self.device)).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dimensions, dtype=torch.float64)

