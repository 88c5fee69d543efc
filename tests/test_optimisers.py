import pytest
import torch

from backfire.judge import metrics
from backfire.protect import PAPER, make_target, protect
from backfire.protect.optimisers import SignDescent, make_optimiser


def test_sign_step_decays_from_first_step_to_a_tenth():
    opt = SignDescent(torch.zeros(3), first_step=0.01, steps=20)
    sizes = [opt.step_size(t) for t in range(20)]
    assert sizes[0] == pytest.approx(0.01) and sizes[-1] == pytest.approx(0.001)
    assert all(a >= b for a, b in zip(sizes, sizes[1:]))


def test_sign_step_moves_every_element_by_the_step_against_the_gradient():
    param = torch.zeros(4, requires_grad=True)
    opt = SignDescent(param, first_step=0.5, steps=10)
    param.grad = torch.tensor([3.0, -0.001, 0.0, -7.0])
    opt.step()
    assert torch.equal(param.detach(), torch.tensor([-0.5, 0.5, 0.0, 0.5]))


def test_momentum_keeps_the_direction_of_a_larger_earlier_gradient():
    param = torch.zeros(2, requires_grad=True)
    opt = SignDescent(param, first_step=1.0, steps=100, momentum=1.0)
    param.grad = torch.tensor([1.0, 1.0])
    opt.step()
    param.grad = torch.tensor([-0.5, 10.0])  # normalised: [-0.095, 1.9]; accumulated: [0.905, 2.9]
    before = param.detach().clone()
    opt.step()
    assert (param.detach() < before).all()


def test_make_optimiser_scales_sign_steps_with_the_budget_and_rejects_unknown_kinds():
    param = torch.zeros(2, requires_grad=True)
    opt = make_optimiser("sign", param, lr=0.25, betas=(0.5, 0.5), budget=0.04, steps=10)
    assert opt.step_size(0) == pytest.approx(0.01)
    assert isinstance(make_optimiser("adam", param, lr=0.1, betas=(0.5, 0.5), budget=0.04, steps=10),
                      torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown optimiser"):
        make_optimiser("lbfgs", param, lr=0.1, betas=(0.5, 0.5), budget=0.04, steps=10)


@pytest.mark.parametrize("optimiser", ["sign", "momentum"])
def test_sign_optimisers_pull_the_fill_toward_the_target_within_budget(tiny_model, photo, optimiser, one_thread):
    x, region = photo
    target = make_target(x, "solid")

    def distance(image):
        with torch.no_grad():
            return metrics.mean_abs_in(tiny_model(image[None], region[None, None])[0], target, region)

    recipe = PAPER.but(optimiser=optimiser, lr=0.25, budget=16 / 255, steps=20)
    result = protect(x, region, tiny_model, recipe)
    assert metrics.linf_255(x, result.protected) <= 16 + 0.5 + 1e-3
    assert distance(result.protected) < distance(x) - 0.005


def test_coarse_perturbation_is_smooth_and_within_budget(tiny_model, photo, one_thread):
    x, region = photo
    recipe = PAPER.but(optimiser="sign", lr=0.5, budget=8 / 255, steps=4, stride=4)
    coarse, fine = {}, {}
    protect(x, region, tiny_model, recipe, on_image=lambda step, image: coarse.__setitem__(step, image))
    protect(x, region, tiny_model, recipe.but(stride=1), on_image=lambda step, image: fine.__setitem__(step, image))
    assert sorted(coarse) == [1, 2, 3, 4]
    assert (coarse[4] - x).abs().max() <= 8 / 255 + 1e-6
    inner = ((x > 0.05) & (x < 0.95)).float()  # where clamping to [0, 1] cannot cut δ

    def roughness(delta):
        delta = delta * inner
        return (delta[:, :, 1:] - delta[:, :, :-1]).abs().mean() / delta.abs().mean()

    # A δ upsampled from a 4× coarser grid changes little between neighbours; a per-pixel one does not.
    assert roughness(coarse[4] - x) < 0.5 * roughness(fine[4] - x)


def test_bad_stride_raises(tiny_model, photo):
    x, region = photo
    with pytest.raises(ValueError, match="stride"):
        protect(x, region, tiny_model, PAPER.but(stride=0, steps=1))
