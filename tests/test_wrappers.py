"""Networks fill, wrappers change part of the edit and forward the rest, and both say what they can do:
the capabilities protect/, the verdict and jobs ask instead of probing classes."""

from __future__ import annotations

import pytest
import torch

from backfire import masks as mask_ops
from backfire.examples import example_photo
from backfire.inpainters import mat
from backfire.inpainters.base import Inpainter, Network, Wrapper, draw_seed
from backfire.inpainters.cleaning import CleaningSampler, with_cleaning
from backfire.inpainters import fixtures
from backfire.inpainters.fixtures import TINY_LAMA, random_lama_generator
from backfire.inpainters.lama import LamaInpainter
from backfire.inpainters.pipelines import EveryStrategy, IOPaintPipeline, IOPaintSettings, wrap
from backfire.inpainters.specs import Conventions
from backfire.judge.verdict import judge
from backfire.protect import PAPER, make_target, protect

SMALL, LARGE = (48, 64), (96, 840)


@pytest.fixture(scope="module")
def lama() -> LamaInpainter:
    return LamaInpainter(random_lama_generator(TINY_LAMA, seed=3), name="lama")


@pytest.fixture(scope="module")
def tiny_mat() -> mat.MATInpainter:
    config = mat.MATConfig(resolution=128, z_dim=16, w_dim=16, dim=12, channel_base=1024, channel_max=16)
    return mat.MATInpainter(fixtures.random_mat_generator(config, seed=1))


def _case(size, seed=0):
    image, _ = example_photo(size[1], size[0], seed=seed)
    mask = torch.zeros(1, 1, *size)
    mask[..., size[0] // 3: size[0] // 3 + 16, 100 % size[1]: 100 % size[1] + 24] = 1
    return image[None], mask


def test_a_network_answers_for_the_bare_model_on_the_whole_photo(lama):
    _, mask = _case(SMALL)
    assert isinstance(lama, Network) and isinstance(lama, Inpainter)
    assert lama.surrogate_is_edit and not lama.stochastic and lama.randomness is None
    assert torch.equal(lama.support(mask), torch.ones(SMALL)) and lama.framed(torch.rand(3, *SMALL), (0, 0, 8, 8)) is None
    assert lama.strategies(SMALL) == ("",) and lama.with_strategy("Crop") is lama and lama.every_strategy(SMALL) is lama
    assert lama.redrawn() is lama and lama.with_draw(3) is lama
    assert lama.describe(SMALL) == {"model": "lama", "pipeline": "plain", "strategy": "", "randomness": None}
    with pytest.raises(ValueError, match="draw"):
        lama.with_draw(-1)


def test_wrappers_forward_what_they_do_not_change_and_never_fill(lama):
    tool, plain = wrap(lama, "iopaint"), wrap(lama, "plain")
    cleaned = with_cleaning(tool, CleaningSampler(("jpeg",), rate=1.0, seed=0))
    for wrapper in (tool, plain, cleaned):
        assert isinstance(wrapper, Wrapper) and not hasattr(wrapper, "fill")
        assert (wrapper.device, wrapper.dtype, wrapper.randomness, wrapper.stochastic) == (
            lama.device, lama.dtype, None, False)
        assert wrapper.surrogate_is_edit
    assert tool.name == plain.name == "lama" and cleaned.name == "lama+cleaning"
    assert plain.describe(SMALL) == {"model": "lama", "pipeline": "plain", "strategy": "plain", "randomness": None}
    assert tool.describe(SMALL)["strategy"] == "Original" and tool.describe(LARGE) == {
        "model": "lama", "pipeline": "iopaint", "strategy": "Crop", "randomness": None}
    # the cleaning spreads pixels over their neighbours: no framing, the whole photo is seen
    _, mask = _case(LARGE)
    assert tool.support(mask).mean() < 1 and torch.equal(cleaned.support(mask), torch.ones(LARGE))
    assert cleaned.framed(torch.rand(3, *LARGE), (0, 0, 8, 8)) is None
    assert cleaned.strategies(LARGE) == tool.strategies(LARGE) == ("Crop", "Original")
    assert cleaned.with_strategy("Original").inner.strategy == "Original"  # the cleaning stays around the twin


def test_every_strategy_is_a_capability_of_the_tool(lama):
    tool = wrap(lama, "iopaint")
    every = tool.every_strategy(LARGE)
    assert isinstance(every, EveryStrategy) and [v.strategy_for(LARGE) for v in every.variants] == ["Crop", "Original"]
    assert lama.every_strategy(LARGE) is lama  # a bare model has no settings
    assert every.every_strategy(LARGE) is every and every.framed(torch.rand(3, *LARGE), (0, 0, 8, 8)) is None
    _, mask = _case(LARGE)
    assert torch.equal(every.support(mask), torch.ones(LARGE))  # Original sees the whole photo
    twin = every.redrawn()
    assert isinstance(twin, EveryStrategy) and twin.inner is not tool and twin.size == LARGE


def test_framing_is_asked_and_a_framed_edit_forwards_its_models_randomness(lama, tiny_mat):
    image, mask = _case(LARGE)
    tool = wrap(lama, "iopaint")
    assert tool.framed(image[0, :, :SMALL[0], :SMALL[1]], (0, 0, 8, 8)) is None  # Original: the whole photo
    box = (0, 0, 400, 96)
    framed = tool.framed(image[0], box)
    assert framed is not None and framed.strategy_for((96, 400)) == "Crop" and framed.framed(image[0], box) is None
    part = mask[..., :, :400]
    seen = tool.support(mask)[:, :400]
    assert torch.equal(framed.support(part), seen)
    # the framed edit of a stochastic model redraws it like the tool does (it used to keep it fixed)
    mat_tool = IOPaintPipeline(tiny_mat, conventions=Conventions(pad_mod=128, pad_to_square=True, min_size=128,
                                                                 hole_above=127))
    framed_mat = mat_tool.framed(image[0], box)
    assert framed_mat.redrawn().inner.inner.resample and not framed_mat.inner.inner.resample
    assert framed_mat.with_draw(2).inner.inner.draw == 2 and framed_mat.with_draw(0) is framed_mat


def test_mat_is_stochastic_and_each_draw_is_repeatable_with_draw_0_as_loaded(tiny_mat):
    side = tiny_mat.resolution
    image = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, side, side)
    mask[..., 32:96, 32:96] = 1
    assert tiny_mat.stochastic and tiny_mat.with_draw(0) is tiny_mat
    first, second = tiny_mat.with_draw(1), tiny_mat.with_draw(2)
    with torch.no_grad():
        base = tiny_mat(image, mask)
        fills = [first(image, mask), first(image, mask), second(image, mask), first.with_draw(0)(image, mask)]
    assert torch.equal(fills[0], fills[1]) and not torch.equal(fills[0], base) and not torch.equal(fills[0], fills[2])
    assert torch.equal(fills[3], base)
    assert torch.equal(first.z, tiny_mat.z)  # the tool draws z once, when it loads the model
    assert "draw" not in tiny_mat.randomness and first.randomness["draw"] == 1
    assert first.randomness["dropout"] == f"torch.Generator().manual_seed({draw_seed(240, 1)}), reseeded every call"
    tool = wrap(tiny_mat, "plain")
    assert tool.stochastic and tool.with_draw(1).inner.draw == 1 and tool.describe((side, side))["randomness"] == \
        tiny_mat.randomness
    assert draw_seed(240, 0) == 240 and len({draw_seed(s, k) for s in range(4) for k in range(1, 4)}) == 12


def test_clean_fills_of_a_tool_whose_surrogate_is_its_edit_are_reused_by_the_verdict(lama):
    image, mask = _case(SMALL)
    region = mask[0, 0]
    tool = wrap(lama, "iopaint")
    result = protect(image[0], region, tool, PAPER, steps=1)
    assert [m.sum() > 0 for m, _ in result.clean_fills[0]] == [True]  # the ring, computed as the goal
    target = make_target(image[0], "solid")
    reused, _ = judge(image[0], result.protected, region, tool, target, clean_fills=result.clean_fills[0])
    fresh, _ = judge(image[0], result.protected, region, tool, target)
    # the same edit of the original, computed in another batch: equal to float precision
    for a, b in zip(reused.edits, fresh.edits, strict=True):
        assert (a.name, a.kind) == (b.name, b.kind) and a.metrics == pytest.approx(b.metrics, rel=1e-5)
    assert reused.benign_intact == fresh.benign_intact and reused.protected == fresh.protected


class _Counting(Network):
    """A real network that records the masks of every fill it is asked for (the model's forward calls)."""

    def __init__(self, inner: LamaInpainter):
        super().__init__("lama", inner.device, inner.dtype, inner.multiple)
        self.inner, self.masks = inner, []

    def fill(self, masked_image, mask):
        self.masks.append(mask.detach().clone())
        return self.inner.fill(masked_image, mask)


@pytest.mark.parametrize("pipeline, settings", [
    ("plain", None), ("iopaint", IOPaintSettings()), ("iopaint", IOPaintSettings(crop_trigger_size=40))],
    ids=["plain", "iopaint-original", "iopaint-crop"])
def test_protect_and_judge_runs_the_clean_ring_edit_once_through_every_pipeline(lama, pipeline, settings, tmp_path):
    """The optimisation's clean fill of the ring (its goal) is the verdict's edit of the original: the model is
    asked for it once (the bug this catches: a pipeline that handed none back, so the verdict ran it again)."""
    from backfire.io import read_image, save_image, save_mask
    from backfire.jobs import Request, Task, protect_task

    image, mask = _case(SMALL)
    region = mask[0, 0]
    counting = _Counting(lama)
    tool = wrap(counting, "plain") if settings is None else IOPaintPipeline(counting, settings=settings)
    if settings is not None:
        assert tool.strategy_for(SMALL) == ("Crop" if settings.crop_trigger_size < 64 else "Original")
    ring = mask_ops.ring(region, 8, shape="square")
    task = Task(tmp_path / "in.png", tmp_path / "in_mask.png", tmp_path / "out.png")
    save_image(image[0], task.image, protect_inputs=[])
    save_mask(region, task.mask)
    judged = protect_task(task, [tool], Request(PAPER.but(steps=2)), families=("exact", "ring"))
    image = judged.image[None]  # the photo as read from its file (8-bit), which the road protected
    assert judged.protection.clean_fills[0], "the pipeline handed no clean fill to the verdict"

    def ring_rows(masks):
        # a Crop window's fill sees the ring cut to the window: count the calls whose masks hold the ring's pixels
        return sum(int(m[:, 0].flatten(1).sum(1).eq(ring.sum()).sum()) for m in masks)

    calls = counting.masks
    steps = 2
    per_step = 1  # one batched pass of the three edits (the ring among them) per step
    # the clean ring fill (the goal), the ring in each step's pass, and the verdict's ring edit of the saved
    # file only on the tool's default strategy (its edit of the original is the optimisation's); every other
    # strategy the tool applies to this size is another edit, which the verdict runs on both files
    others = len(tool.strategies(SMALL)) - 1
    assert ring_rows(calls) == 1 + steps * per_step + 1 + 2 * others
    reused = next(f for f in judged.fills[0] if f.name == "ring")
    with torch.no_grad():
        fresh = tool(image, ring[None, None])[0]
    assert read_image(tmp_path / "out.png").pixels.shape == image[0].shape
    # what the verdict reused is the edit of the original, to float precision (a Crop fill pasted into the photo)
    assert (reused.original - (ring * fresh + (1 - ring) * image[0])).abs().max() < 1e-5
