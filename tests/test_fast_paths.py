"""The inpainters' speed paths compute what the plain modules compute: BatchNorm folded into the convolutions,
and on the CPU the fills of the hole's box only (decoder and coarse fill cut to it)."""

import copy

import pytest
import torch
from torch import nn

from backfire import masks as mask_ops
from backfire.examples import example_photo
from backfire.inpainters.ffc import FFCConfig, coarse_fill, fold_batchnorm
from backfire.inpainters.fixtures import random_lama_generator
from backfire.inpainters.lama import LamaInpainter

PREFILL = FFCConfig(ngf=8, n_downsampling=2, n_blocks=2, ratio_g=0.75, max_features=64, prefill=True)
THREE = FFCConfig(ngf=8, n_downsampling=3, n_blocks=1, ratio_g=0.75, max_features=64)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _paper_masks(h, w, seed=0):
    image, region = example_photo(w, h, seed=seed)
    plus = mask_ops.dilate(region, 8, shape="square")
    return image, torch.stack([region, plus, plus - region])[:, None].float()


def _generator(config, seed=1):
    generator = random_lama_generator(config, seed=seed).eval()
    if config.prefill:  # the prefill's last convolution starts at zero: give it weights, so the network counts
        with torch.no_grad():
            generator.model[-2].weight.normal_(0, 0.05)
    for p in generator.parameters():
        p.requires_grad_(False)
    return generator


def _fill_and_gradient(network, image, masks, **kwargs):
    """The fills of ``image`` under each mask and the gradient of their weighted sum with respect to the image
    (one image under several holes, as the engine's edits of a photo)."""
    image = image.clone().requires_grad_(True)
    x = image[None].expand(len(masks), -1, -1, -1)
    out = network(torch.cat([x * (1 - masks), masks], dim=1), **kwargs)
    out = masks * out + (1 - masks) * x
    weights = torch.linspace(0, 1, out.shape[-1])
    gradient, = torch.autograd.grad((out * weights).sum(), image)
    return out.detach(), gradient


@pytest.mark.parametrize("config", [PREFILL, THREE], ids=["prefill", "three-downsamplings"])
def test_folded_batchnorm_computes_the_same_fill_and_gradient(config):
    generator = _generator(config)
    folded = fold_batchnorm(generator)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in generator.modules())  # the original is left alone
    image, masks = _paper_masks(64, 80)
    reference = _fill_and_gradient(generator.double(), image.double(), masks.double())
    generator.float()
    for ours, theirs in zip(_fill_and_gradient(folded, image, masks), reference):
        # measured: ≤ 2e-6 relative (fp32 rounding); the unfolded fp32 module is no closer to fp64
        assert (ours.double() - theirs).norm() / theirs.norm() < 1e-4


@pytest.mark.parametrize("config", [PREFILL, THREE], ids=["prefill", "three-downsamplings"])
@pytest.mark.parametrize("size", [(160, 240), (96, 320), (256, 176)])
def test_local_fills_equal_the_whole_frames_inside_the_hole(config, size):
    generator = fold_batchnorm(_generator(config))
    image, masks = _paper_masks(*size)
    decoded, encoded = [], []
    first_upsampling = next(m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d))
    first_upsampling.register_forward_hook(lambda module, args, out: decoded.append(args[0].shape[-2:]))
    generator.model[1].register_forward_hook(lambda module, args, out: encoded.append(args[0].shape))
    whole, whole_gradient = _fill_and_gradient(generator, image, masks)
    local, local_gradient = _fill_and_gradient(generator, image, masks, local=True)
    assert decoded[1].numel() < decoded[0].numel()  # the decoder ran on a cut of the bottleneck
    # the stem saw the first edit whole and the two others on a cut around the hole
    assert encoded[0][0] == 3 and [e[0] for e in encoded[1:]] == [1, 2] and encoded[2][-2:].numel() < encoded[1][-2:].numel()
    assert (local - whole).abs().max() < 1e-5  # measured ≤ 2e-6: the same sums, cut to other shapes
    assert (local_gradient - whole_gradient).norm() / whole_gradient.norm() < 1e-5


def test_local_coarse_fill_is_bit_exact_and_leaves_known_pixels():
    image = torch.rand(3, 3, 90, 70, generator=torch.Generator().manual_seed(0))
    known = torch.ones(3, 1, 90, 70)
    known[0, :, 30:50, 20:40] = 0
    known[1, :, 35:45, 25:60] = 0   # the box is the union over the batch
    known[2, :, 0:8, 0:10] = 0      # touching the frame: the replicate padding is the frame's
    assert torch.equal(coarse_fill(image, known, local=True), coarse_fill(image, known))
    assert torch.equal(coarse_fill(image, torch.ones_like(known), local=True), image)


def test_the_lama_inpainter_fills_through_the_fast_copy_and_keeps_its_module():
    generator = _generator(THREE)
    state = copy.deepcopy(generator.state_dict())
    model = LamaInpainter(generator)
    assert model.local  # on the CPU
    image, masks = _paper_masks(64, 80)
    fast = model(image[None].expand(3, -1, -1, -1), masks)
    with torch.no_grad():
        plain = model.module(image[None].expand(3, -1, -1, -1) * (1 - masks), masks)
    assert (fast - plain).abs().max() < 1e-5
    assert model.compute_network() is model.compute_network()  # made once
    assert all(torch.equal(v, state[k]) for k, v in model.module.generator.state_dict().items())
    with torch.inference_mode():  # first made inside a clean pass, its weights still serve autograd
        fresh = LamaInpainter(_generator(THREE))
        fresh(image[None], masks[:1])
    x = image[None].clone().requires_grad_(True)
    fresh.surrogate(x, masks[:1]).sum().backward()
    assert x.grad is not None
