"""CIEDE2000 ΔE (backfire.judge.colour) against Sharma, Wu & Dalal's published test pairs and scikit-image."""

import pytest
import torch

from backfire.judge.colour import JND, ciede2000, delta_e, delta_e_map, srgb_to_lab

skcolor = pytest.importorskip("skimage.color")

# (L1, a1, b1, L2, a2, b2, ΔE00): pairs from Sharma, Wu & Dalal (2005), Table 1 — the hue-wrap, zero-chroma
# and blue-region (R_T) cases that a careless implementation gets wrong.
SHARMA_PAIRS = [
    (50.0, 2.6772, -79.7751, 50.0, 0.0, -82.7485, 2.0425),
    (50.0, 3.1571, -77.2803, 50.0, 0.0, -82.7485, 2.8615),
    (50.0, 0.0, 0.0, 50.0, -1.0, 2.0, 2.3669),
    (50.0, -1.0, 2.0, 50.0, 0.0, 0.0, 2.3669),
    (50.0, 2.49, -0.001, 50.0, -2.49, 0.0009, 7.1792),
    (50.0, 2.5, 0.0, 50.0, 0.0, -2.5, 4.3065),
    (50.0, 2.5, 0.0, 73.0, 25.0, -18.0, 27.1492),
    (50.0, 2.5, 0.0, 56.0, -27.0, -3.0, 31.9030),
    (60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644),
    (2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082),
]


def _lab(values: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).view(3, 1, 1)


@pytest.mark.parametrize("pair", SHARMA_PAIRS)
def test_ciede2000_matches_sharmas_published_pairs(pair):
    *lab, expected = pair
    assert float(ciede2000(_lab(lab[:3]), _lab(lab[3:]))) == pytest.approx(expected, abs=1e-4)


def test_ciede2000_is_symmetric_and_zero_on_equal_colours():
    g = torch.Generator().manual_seed(1)
    lab1 = torch.rand(3, 8, 8, generator=g, dtype=torch.float64) * torch.tensor([100, 200, 200]).view(3, 1, 1) \
        - torch.tensor([0, 100, 100]).view(3, 1, 1)
    lab2 = lab1.flip(-1)
    assert torch.allclose(ciede2000(lab1, lab2), ciede2000(lab2, lab1))
    assert torch.count_nonzero(ciede2000(lab1, lab1)) == 0


def test_srgb_to_lab_and_delta_e_agree_with_scikit_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 12, generator=g, dtype=torch.float64)
    y = (x + (torch.rand(3, 16, 12, generator=g, dtype=torch.float64) - 0.5) * 0.1).clamp(0, 1)
    ours = srgb_to_lab(x)
    theirs = torch.from_numpy(skcolor.rgb2lab(x.permute(1, 2, 0).numpy())).permute(2, 0, 1)
    assert torch.allclose(ours, theirs, atol=1e-4)
    ref = skcolor.deltaE_ciede2000(skcolor.rgb2lab(x.permute(1, 2, 0).numpy()),
                                   skcolor.rgb2lab(y.permute(1, 2, 0).numpy()))
    assert torch.allclose(delta_e_map(x, y), torch.from_numpy(ref), atol=1e-4)


def test_delta_e_percentile_sees_a_small_visible_block_the_mean_hides():
    x = torch.full((3, 40, 40), 0.6)
    y = x.clone()
    y[2, :3, :] += 8 / 255  # a chroma step on 3 rows of 40: 7.5 % of the pixels
    mean, p99 = delta_e(x, y)
    assert mean < JND < p99
    region = torch.zeros(40, 40)
    region[20:, :] = 1  # where nothing changed
    assert delta_e(x, y, region) == (0.0, 0.0)


def test_delta_e_refuses_mismatched_images():
    with pytest.raises(ValueError, match="one shape"):
        delta_e(torch.zeros(3, 4, 4), torch.zeros(3, 4, 5))
