import dataclasses

import pytest
import torch

from backfire import masks as mask_ops
from backfire.inpainters.base import Network
from backfire.judge import metrics
from backfire.protect import PAPER, Term, get_recipe, make_target, protect
from backfire.protect.engine import masked_mse, texture_budget


class CountingInpainter(Network):
    """Passes through to a real model and counts calls and images filled."""

    def __init__(self, inner):
        super().__init__(inner.name, inner.device, inner.dtype, inner.multiple)
        self.inner, self.calls, self.images = inner, 0, 0

    def fill(self, masked_image, mask):
        self.calls += 1
        self.images += masked_image.shape[0]
        return self.inner.fill(masked_image, mask)


def test_paper_recipe_is_the_papers():
    assert PAPER.steps == 20 and PAPER.budget == 0.025 and PAPER.lr == 0.1
    assert PAPER.betas == (0.5, 0.5) and PAPER.init_high == 0.01 and PAPER.dilation == 8
    assert [(t.mask, t.role, t.weight) for t in PAPER.terms] == [
        ("exact", "attacker", 1.0), ("dilated", "attacker", 1.0), ("ring", "benign", 2.0)]
    assert PAPER.target == "solid"
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("nope")


def _naive_paper(x, region, model, steps, seed):
    """The paper's loop written out plainly: three separate forward passes per step."""
    plus = mask_ops.dilate(region, 8, shape="square")
    ring = plus - region
    target = make_target(x, "solid")
    with torch.no_grad():
        ring_ref = model(x[None], ring[None, None])[0]
    delta = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) * 0.01
    delta = ((x + delta.clamp(-0.025, 0.025)).clamp(0, 1) - x).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=0.1, betas=(0.5, 0.5))

    def mse(y, goal, m):
        return ((y - goal) ** 2 * m).sum() / (m.sum() * 3)

    for _ in range(steps):
        opt.zero_grad()
        xa = (x + delta).clamp(0, 1)[None]
        loss = (mse(model(xa, region[None, None])[0], target, region)
                + mse(model(xa, plus[None, None])[0], target, plus)
                + 2 * mse(model(xa, ring[None, None])[0], ring_ref, ring))
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.copy_((x + delta.clamp(-0.025, 0.025)).clamp(0, 1) - x)
    return torch.round((x + delta).clamp(0, 1) * 255) / 255


def test_engine_reproduces_the_papers_loop_exactly(tiny_model, photo):
    x, region = photo
    one = protect(x, region, tiny_model, "paper", steps=1, seed=3).protected
    assert torch.equal(one, _naive_paper(x, region, tiny_model, steps=1, seed=3))
    # Batched and separate passes differ in the last float bits; with betas (0.5, 0.5) Adam's step is
    # nearly sign(g), so near-zero gradients can flip later on: compare two steps, to one 8-bit level.
    ours = protect(x, region, tiny_model, "paper", steps=2, seed=3).protected
    theirs = _naive_paper(x, region, tiny_model, steps=2, seed=3)
    assert (ours - theirs).abs().max() <= 1 / 255 + 1e-6
    assert (ours != theirs).float().mean() < 0.001


def test_clean_reference_is_computed_once_and_edits_are_batched(tiny_model, photo):
    x, region = photo
    counting = CountingInpainter(tiny_model)
    protect(x, region, counting, "paper", steps=5)
    assert counting.calls == 1 + 5          # one clean ring fill, then one batched pass per step
    assert counting.images == 1 + 5 * 3


def test_result_respects_budget_range_and_8_bit_grid(tiny_model, photo):
    x, region = photo
    result = protect(x, region, tiny_model, "paper", budget=4 / 255, steps=6)
    y = result.protected
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= y.min() and y.max() <= 1
    assert torch.allclose(y * 255, torch.round(y * 255), atol=1e-4)
    assert metrics.linf_255(x, y) <= 4 + 0.5 + 1e-3   # the budget, plus rounding to the 8-bit grid
    assert metrics.linf_255(x, y) > 1                   # it did perturb
    assert len(result.losses) == 6


def test_optimisation_pulls_the_fill_toward_the_target_and_more_budget_pulls_harder(tiny_model, photo):
    x, region = photo
    target = make_target(x, "solid")
    m = region[None, None]

    def distance(image):
        with torch.no_grad():
            fill = tiny_model(image[None], m)[0]
        return metrics.mean_abs_in(fill, target, region)

    clean = distance(x)
    small = distance(protect(x, region, tiny_model, "paper", steps=30).protected)
    large = distance(protect(x, region, tiny_model, "paper", budget=32 / 255, steps=30).protected)
    assert large < small < clean - 0.005


def test_loss_goes_down(tiny_model, photo):
    x, region = photo
    losses = protect(x, region, tiny_model, "paper", budget=16 / 255, steps=25).losses
    assert min(losses[-5:]) < losses[0]


def test_seed_makes_runs_repeatable(tiny_model, photo):
    x, region = photo
    a = protect(x, region, tiny_model, steps=3, seed=7).protected
    b = protect(x, region, tiny_model, steps=3, seed=7).protected
    c = protect(x, region, tiny_model, steps=3, seed=8).protected
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_max_batch_accumulates_to_the_same_result(tiny_model, photo):
    x, region = photo
    full = protect(x, region, tiny_model, steps=3).protected
    chunked = protect(x, region, tiny_model, steps=3, max_batch=1).protected
    assert (full - chunked).abs().max() <= 1 / 255 + 1e-6


def test_inverted_target_and_odd_sizes(tiny_model):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 37, 53, generator=g)
    region = torch.zeros(37, 53)
    region[10:20, 20:35] = 1
    result = protect(x, region, tiny_model, target="inverted", steps=2)
    assert result.protected.shape == (3, 37, 53)
    assert torch.allclose(result.target, 1 - x)
    assert result.recipe.target == "inverted" and result.recipe.name == "paper"


def test_zero_steps_returns_the_quantised_start(tiny_model, photo):
    x, region = photo
    y = protect(x, region, tiny_model, steps=0).protected
    assert metrics.linf_255(x, y) <= 0.01 * 255 + 0.5 + 1e-3


@pytest.mark.parametrize("bad_region", [torch.zeros(48, 64), torch.ones(48, 64), torch.ones(10, 10)])
def test_bad_regions_raise(tiny_model, photo, bad_region):
    x, _ = photo
    with pytest.raises(ValueError):
        protect(x, bad_region, tiny_model, steps=1)


def test_bad_budget_raises(tiny_model, photo):
    x, region = photo
    with pytest.raises(ValueError, match="budget"):
        protect(x, region, tiny_model, budget=-0.1, steps=1)


def test_masked_mse_averages_over_mask_pixels_only():
    out = torch.zeros(1, 3, 4, 4)
    goal = torch.zeros(1, 3, 4, 4)
    goal[..., 0, 0] = 1.0
    m = torch.zeros(1, 1, 4, 4)
    m[..., 0, :2] = 1
    assert masked_mse(out, goal, m).item() == pytest.approx(0.5)


def test_recipe_but_overrides_only_given_fields():
    changed = PAPER.but(steps=50, budget=None)
    assert changed.steps == 50 and changed.budget == PAPER.budget
    assert dataclasses.replace(changed, steps=20) == PAPER


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (9, 17)])
def test_tiny_images_are_padded_enough_for_the_network(tiny_model, size):
    x = torch.rand(1, 3, *size)
    m = torch.zeros(1, 1, *size)
    m[..., 0, 0] = 1
    y = tiny_model(x, m)
    assert y.shape == x.shape
    assert torch.equal(y[m.expand_as(y) == 0], x[m.expand_as(x) == 0])


# ------------------------------------------------------------------ the robust recipe's parts


class RecordingInpainter(Network):
    """Passes through to a real model and records every image batch and mask batch it is given."""

    def __init__(self, inner, name=None):
        super().__init__(name or inner.name, inner.device, inner.dtype, inner.multiple)
        self.inner, self.images, self.masks = inner, [], []

    def fill(self, masked_image, mask):
        return self.inner.fill(masked_image, mask)

    def surrogate(self, image, mask):
        self.images.append(image.detach().clone())
        self.masks.append(mask.detach().clone())
        return super().surrogate(image, mask)


def _on_grid(t):
    return torch.allclose(t * 255, torch.round(t * 255), atol=1e-4)


def test_robust_recipe_is_registered_and_differs_from_the_paper():
    robust = get_recipe("robust")
    assert robust.cleaning and robust.quantise_steps > 0 and robust.budget_shape == "texture"
    assert {t.mask for t in robust.terms} >= {"sampled-attacker", "sampled-benign"}
    assert robust.budget == PAPER.budget  # the same hard L∞ bound: the comparison is fair


def test_sampled_edits_change_every_step_and_benign_goals_are_clean_fills(tiny_model, photo):
    x, region = photo
    recipe = PAPER.but(terms=(Term("sampled-attacker", "attacker", 1.0), Term("sampled-benign", "benign", 2.0)))
    rec = RecordingInpainter(tiny_model)
    protect(x, region, rec, recipe, steps=3)
    # per step: one no-grad clean fill of the benign draw, then one pass over both edits
    assert len(rec.masks) == 6
    step_masks = [rec.masks[i] for i in (1, 3, 5)]
    assert not torch.equal(step_masks[0], step_masks[1])
    for i in (0, 2, 4):
        assert torch.equal(rec.images[i][0], x)                       # the goal: an edit of the original
        assert torch.equal(rec.masks[i][0], rec.masks[i + 1][1])      # of the benign mask of that step
    for masks in step_masks:
        attacker, benign = masks[0, 0], masks[1, 0]
        assert (attacker * region).sum() > 0 and (benign * region).sum() == 0


def test_quantisation_aware_finish_feeds_8_bit_images_to_the_last_steps(tiny_model, photo):
    x, region = photo
    rec = RecordingInpainter(tiny_model)
    protect(x, region, rec, PAPER.but(quantise_steps=2), steps=5)
    per_step = rec.images[1:]  # after the clean ring fill
    assert [_on_grid(batch) for batch in per_step] == [False, False, False, True, True]


def test_cleaning_reaches_attack_edits_only(tiny_model, photo):
    x, region = photo
    rec = RecordingInpainter(tiny_model)
    recipe = PAPER.but(cleaning=("blur",), cleaning_rate=1.0)
    protect(x, region, rec, recipe, steps=2)
    attack, keep = rec.images[1], rec.images[2]  # step 1: the cleaned attack edits, then the ring edit
    assert attack.shape[0] == 2 and keep.shape[0] == 1
    assert (attack[0] - keep[0]).abs().max() > 0.01   # blurred before the attacker's edit
    assert (attack[0] - keep[0]).abs().max() < 0.5


def test_texture_budget_is_full_on_texture_and_smaller_on_flat_areas():
    flat = torch.full((3, 32, 32), 0.5)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float().expand(3, -1, -1)
    assert torch.allclose(texture_budget(flat, 0.025), torch.full((1, 32, 32), 0.4 * 0.025))
    assert torch.allclose(texture_budget(checker, 0.025), torch.full((1, 32, 32), 0.025))


def test_texture_budget_bounds_the_result_per_pixel(tiny_model, photo):
    x, region = photo
    result = protect(x, region, tiny_model, PAPER.but(budget_shape="texture"), budget=8 / 255, steps=4)
    bound = texture_budget(x, 8 / 255)
    assert ((result.protected - x).abs() <= bound + 0.5 / 255 + 1e-6).all()
    assert ((result.protected - x).abs() > bound * 0.5).any()  # and it uses it


def test_an_ensemble_asks_every_model_and_one_member_is_the_model_itself(tiny_model, photo):
    x, region = photo
    a, b = RecordingInpainter(tiny_model, "a"), RecordingInpainter(tiny_model, "b")
    protect(x, region, [a, b], "paper", steps=2)
    assert len(a.images) == len(b.images) == 1 + 2
    alone = protect(x, region, tiny_model, "paper", steps=3, seed=2).protected
    assert torch.equal(protect(x, region, [tiny_model], "paper", steps=3, seed=2).protected, alone)
    with pytest.raises(ValueError, match="at least one"):
        protect(x, region, [], "paper")


def test_robust_recipe_runs_end_to_end_within_budget(tiny_model, photo):
    x, region = photo
    result = protect(x, region, tiny_model, "robust", steps=4, seed=1)
    assert result.protected.shape == x.shape and _on_grid(result.protected)
    assert metrics.linf_255(x, result.protected) <= 0.025 * 255 + 0.5 + 1e-3
    assert len(result.losses) == 4 and all(torch.isfinite(torch.tensor(result.losses)))
    again = protect(x, region, tiny_model, "robust", steps=4, seed=1)
    assert torch.equal(again.protected, result.protected)  # sampled masks and cleaning are seeded too
