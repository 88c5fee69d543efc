import math

import pytest
import torch

from backfire.judge import metrics


def _images(seed=0, shape=(3, 40, 50)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def test_ssim_of_identical_images_is_one():
    x, _ = _images()
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)


def test_ssim_is_symmetric_and_below_one_for_different_images():
    x, y = _images()
    assert metrics.ssim(x, y) == pytest.approx(metrics.ssim(y, x), abs=1e-7)
    assert metrics.ssim(x, y) < 0.2


def test_ssim_falls_as_noise_grows():
    x, noise = _images()
    scores = [metrics.ssim(x, (x + s * (noise - 0.5)).clamp(0, 1)) for s in (0.02, 0.1, 0.4)]
    assert scores[0] > scores[1] > scores[2]


def test_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    x, y = _images(shape=(2, 3, 48, 64))
    y = (0.7 * x + 0.3 * y)
    ours = metrics.ssim_batch(x, y)
    theirs = pytorch_msssim.ssim(x, y, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    assert torch.allclose(ours, theirs.float(), atol=1e-5)


@pytest.mark.parametrize("side", [1, 2, 3, 5, 10])
def test_ssim_works_on_crops_smaller_than_the_window(side):
    x, y = _images(shape=(3, side, side + 1))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-6)
    assert metrics.ssim(x, y) < 1.0


def test_psnr_known_value_and_cap():
    x = torch.zeros(3, 8, 8)
    y = torch.full((3, 8, 8), 0.1)  # mse 0.01 → 20 dB
    assert metrics.psnr(x, y) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(x, x) == metrics.PSNR_CAP


def test_psnr_only_counts_pixels_inside_the_mask():
    x = torch.zeros(3, 8, 8)
    y = x.clone()
    y[:, :4] = 0.1           # differs in the top half only
    top = torch.zeros(8, 8)
    top[:4] = 1
    assert metrics.psnr(x, y, top) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(x, y, 1 - top) == metrics.PSNR_CAP


def test_mean_abs_in_mask_and_linf():
    x = torch.zeros(3, 4, 4)
    y = torch.zeros(3, 4, 4)
    y[0, 0, 0] = 0.6
    m = torch.zeros(4, 4)
    m[0, 0] = 1
    assert metrics.mean_abs_in(x, y, m) == pytest.approx(0.2)
    assert metrics.linf_255(x, y) == pytest.approx(0.6 * 255)
    assert math.isnan(metrics.mean_abs_in(x, y, torch.zeros(4, 4)))


def test_batched_forms_agree_with_single_forms():
    x, y = _images(shape=(3, 3, 20, 20))
    m = (torch.rand(20, 20) > 0.5).float()
    for i in range(3):
        assert metrics.ssim_batch(x, y)[i] == pytest.approx(metrics.ssim(x[i], y[i]), abs=1e-6)
        assert metrics.psnr_batch(x, y, m)[i] == pytest.approx(metrics.psnr(x[i], y[i], m), abs=1e-4)


@pytest.mark.parametrize("bad", [torch.rand(4, 8, 8), torch.rand(8, 8), torch.rand(1, 1, 3, 8, 8)])
def test_bad_shapes_raise(bad):
    with pytest.raises(ValueError):
        metrics.ssim(bad, bad)


def test_mismatched_shapes_and_masks_raise():
    x, _ = _images()
    with pytest.raises(ValueError):
        metrics.psnr(x, x[:, :10])
    with pytest.raises(ValueError):
        metrics.psnr(x, x, torch.ones(5, 5))
