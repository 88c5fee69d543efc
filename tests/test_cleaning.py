"""The attacker's cleaning as differentiable stand-ins, and the model wrapper that applies them."""

import pytest
import torch

from backfire.examples import example_photo
from backfire.inpainters.cleaning import (CLEANING_KINDS, Cleaned, CleaningRange, CleaningSampler, gaussian_blur, jpeg, noise,
                                          resize, straight_through_round)
from backfire.judge import metrics
from backfire.judge import transforms as real


@pytest.fixture
def image() -> torch.Tensor:
    return example_photo(53, 37, seed=2)[0]  # odd sizes: neither a multiple of 8 nor of 16


def test_straight_through_round_is_8_bit_forward_identity_backward(image):
    x = (image + 0.001).clamp(0, 1).requires_grad_(True)
    y = straight_through_round(x)
    assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4)
    assert (y - x).abs().max() <= 0.5 / 255 + 1e-6
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("quality", [95, 75, 50])
def test_differentiable_jpeg_matches_pillows_encoder(image, quality):
    ours = jpeg(image[None], quality)[0]
    pillow = real.jpeg(image, quality)
    assert ours.shape == image.shape
    # the stand-in is about as far from Pillow as Pillow's own file is from the input, or closer
    assert metrics.psnr(ours, pillow) > 33
    assert abs(metrics.psnr(ours, image) - metrics.psnr(pillow, image)) < 3


def test_lower_jpeg_quality_loses_more(image):
    assert metrics.psnr(jpeg(image[None], 95)[0], image) > metrics.psnr(jpeg(image[None], 50)[0], image)


@pytest.mark.parametrize("clean", [lambda x: jpeg(x, 60), lambda x: resize(x, 0.6), lambda x: gaussian_blur(x, 1.0)])
def test_gradients_flow_through_every_cleaning(image, clean):
    x = image[None].clone().requires_grad_(True)
    (clean(x) * torch.linspace(0, 1, image.numel()).view_as(x)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("scale", [0.5, 0.75])
def test_resize_matches_pillows_bicubic(image, scale):
    ours = resize(image[None], scale)[0]
    assert ours.shape == image.shape
    assert metrics.psnr(ours, real.resize(image, scale)) > 30


def test_blur_keeps_constants_and_matches_the_measured_blur(image):
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat, atol=1e-6)
    assert (gaussian_blur(image[None], 1.0)[0] - real.blur(image, 1.0)).abs().max() <= 0.5 / 255 + 1e-6


def test_noise_is_seeded_and_of_the_asked_strength(image):
    a = noise(image[None], 4 / 255, torch.Generator().manual_seed(0))
    b = noise(image[None], 4 / 255, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    grey = torch.full((1, 3, 64, 64), 0.5)
    spread = (noise(grey, 4 / 255, torch.Generator().manual_seed(1)) - grey).std() * 255
    assert 3.5 < spread < 4.5


def test_sampler_is_repeatable_and_draws_every_kind(image):
    batch = image[None].expand(24, -1, -1, -1)
    first, second = CleaningSampler(seed=5), CleaningSampler(seed=5)
    assert torch.equal(first(batch), second(batch)) and first.last == second.last
    drawn = {name.split("-")[0] for name in first.last}
    assert drawn == {"none", *CLEANING_KINDS}


def test_sampler_rate_bounds(image):
    batch = image[None].expand(4, -1, -1, -1)
    assert torch.equal(CleaningSampler(rate=0.0)(batch), batch)
    always = CleaningSampler(rate=1.0, seed=1)
    assert not torch.equal(always(batch), batch) and "none" not in always.last
    with pytest.raises(ValueError, match="rate"):
        CleaningSampler(rate=1.5)
    with pytest.raises(ValueError, match="unknown"):
        CleaningSampler(("sharpen",))


def test_cleaned_model_edits_the_cleaned_image_and_passes_gradients(tiny_model, image):
    mask = torch.zeros(1, 1, *image.shape[-2:])
    mask[..., 10:25, 15:35] = 1
    attacker = Cleaned(tiny_model, CleaningSampler(("jpeg",), rate=1.0, seed=0, ranges=CleaningRange(jpeg=(70, 70))))
    x = image[None].clone().requires_grad_(True)
    out = attacker.surrogate(x, mask)
    assert out.shape == x.shape and attacker.name == "tiny-random+cleaning"
    cleaned = jpeg(image[None], 70)
    outside = (1 - mask).bool().expand_as(out)
    assert torch.allclose(out[outside], cleaned[outside], atol=2e-3)  # outside M: the cleaned file
    assert not torch.allclose(out[outside], image[None][outside], atol=1e-3)
    (out * mask).sum().backward()
    assert x.grad.abs().sum() > 0
