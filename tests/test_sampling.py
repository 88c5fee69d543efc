"""The edits drawn every step by the robust recipe: shapes, seeds, and where they fall relative to M."""

import pytest
import torch

from backfire import masks as mask_ops
from backfire.protect.sampling import ATTACKER_KINDS, BENIGN_KINDS, EditSampler


@pytest.fixture
def region() -> torch.Tensor:
    m = torch.zeros(96, 128)
    m[30:62, 40:90] = 1
    m[62:70, 60:70] = 1  # not a plain box, so erosion, shifts and partial cuts have something to do
    return m


def _draws(sampler, n, kind):
    return [getattr(sampler, kind)() for _ in range(n)]


@pytest.mark.parametrize("kind", ["attacker", "benign"])
def test_masks_are_binary_full_size_and_never_empty(region, kind):
    for mask in _draws(EditSampler(region, seed=0), 40, kind):
        assert mask.shape == region.shape and mask.dtype == torch.float32
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert mask.sum() > 0


@pytest.mark.parametrize("kind", ["attacker", "benign"])
def test_same_seed_same_masks_other_seed_other_masks(region, kind):
    a = _draws(EditSampler(region, seed=3), 12, kind)
    b = _draws(EditSampler(region, seed=3), 12, kind)
    c = _draws(EditSampler(region, seed=4), 12, kind)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_attacker_masks_cover_the_region(region):
    draws = _draws(EditSampler(region, seed=0), 60, "attacker")
    coverage = torch.tensor([float((m * region).sum() / region.sum()) for m in draws])
    assert coverage.min() >= 0.3           # even a partial or eroded edit takes a good part of M
    assert (coverage >= 0.95).float().mean() >= 0.5  # most edits take (nearly) all of it
    union = torch.stack(draws).amax(0)
    assert torch.equal(union * region, region)       # together they reach every pixel of M
    assert (union * (1 - region)).sum() > 0           # and spill beyond it, as real strokes do


@pytest.mark.parametrize("kind", ATTACKER_KINDS)
def test_every_attacker_kind_touches_the_region(region, kind):
    for mask in _draws(EditSampler(region, seed=1, attacker_kinds=(kind,)), 5, "attacker"):
        assert (mask * region).sum() >= 0.3 * region.sum()


@pytest.mark.parametrize("kind", BENIGN_KINDS)
def test_benign_masks_never_touch_the_region(region, kind):
    for mask in _draws(EditSampler(region, seed=1, benign_kinds=(kind,)), 5, "benign"):
        assert (mask * region).sum() == 0 and mask.sum() > 0


def test_families_that_do_not_fit_fall_back_to_a_ring():
    big = torch.ones(40, 40)
    big[:, :2] = 0  # M covers almost the whole frame: no object box fits beside it
    masks = _draws(EditSampler(big, seed=0, benign_kinds=("object",)), 3, "benign")
    assert all(m.sum() > 0 and (m * big).sum() == 0 for m in masks)


def test_a_region_eroded_away_is_edited_whole():
    thin = torch.zeros(40, 40)
    thin[20, 5:35] = 1  # a 1-px signature stroke: any erosion removes it
    masks = _draws(EditSampler(thin, seed=0, attacker_kinds=("erode",)), 3, "attacker")
    assert all(torch.equal(m, thin) for m in masks)


def test_bad_arguments_raise(region):
    with pytest.raises(ValueError, match="unknown"):
        EditSampler(region, attacker_kinds=("lasso",))
    with pytest.raises(ValueError, match="context"):
        EditSampler(torch.ones(8, 8))
    with pytest.raises(ValueError, match="context"):
        EditSampler(torch.zeros(8, 8))


def test_public_shape_helpers_match_their_families(region):
    import numpy as np

    cover = mask_ops.strokes_over(region, np.random.default_rng(0))
    assert (cover * region).sum() >= 0.95 * region.sum()
    away = mask_ops.away_from(region, 16, np.random.default_rng(0))
    assert away is not None and (away * mask_ops.within_distance(region, 16)).sum() == 0
    box = mask_ops.object_box(region, np.random.default_rng(0))
    assert box is None  # a 40×50 box cannot sit beside this region in a 96×128 frame
    small = torch.zeros_like(region)
    small[10:20, 10:30] = 1
    box = mask_ops.object_box(small, np.random.default_rng(0))
    assert box is not None and (box * small).sum() == 0 and box.sum() == small.sum()
    assert torch.equal(mask_ops.shifted(region, 0, 0), region)
    assert mask_ops.shifted(region, 5, 0)[35:67, 40:90].sum() == region[30:62, 40:90].sum()


def test_attacker_reach_covers_every_sampled_attacker_mask():
    from backfire.protect.sampling import EditSampler, attacker_reach

    region = torch.zeros(96, 120)
    region[40:52, 50:70] = 1
    reach = attacker_reach(region)
    sampler = EditSampler(region, seed=3)
    for _ in range(200):
        assert (sampler.attacker() * (1 - reach)).sum() == 0
    assert reach.mean() < 1  # a bound, not the whole photo
