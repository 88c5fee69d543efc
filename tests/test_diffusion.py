"""Stable Diffusion inpainting adapter: a random-weight tiny pipeline saved in diffusers layout, offline, CPU."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from backfire import io as bio  # noqa: E402
from backfire.examples import example_photo  # noqa: E402
from backfire.inpainters.diffusion import DiffusionInpainter  # noqa: E402
from backfire.inpainters.fixtures import save_random_sd_checkpoint  # noqa: E402
from backfire.inpainters.registry import ModelError, load_inpainter  # noqa: E402
from backfire.protect import protect  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny StableDiffusionInpaintPipeline (random weights) written with save_pretrained."""
    return save_random_sd_checkpoint(tmp_path_factory.mktemp("sd") / "tiny-sd-inpaint", arch="tiny", seed=0)


@pytest.fixture(scope="module")
def model(checkpoint) -> DiffusionInpainter:
    return load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", num_inference_steps=3)


@pytest.fixture
def case() -> tuple[torch.Tensor, torch.Tensor]:
    return example_photo(48, 40, seed=0)


def test_loads_from_a_diffusers_folder_in_fp32_on_cpu(model, checkpoint):
    assert isinstance(model, DiffusionInpainter)
    assert model.dtype == torch.float32 and model.multiple == 2 and model.unet.config.in_channels == 9
    assert model.guidance_scale == 7.5 and model.prompt == "" and model.seed == 0
    assert model.surrogate_kind == "unrolled" and model.surrogate_steps == 3
    assert (checkpoint / "model_index.json").is_file()


def test_missing_weights_options_and_folders_are_model_errors(checkpoint, tmp_path):
    with pytest.raises(ModelError, match="backfire models pull sd-inpaint"):
        load_inpainter("sd-inpaint", device="cpu")  # not pulled (conftest: an empty model cache)
    with pytest.raises(ModelError, match="cannot load"):
        load_inpainter("sd-inpaint", weights=tmp_path / "nothing-here", device="cpu")
    with pytest.raises(ModelError, match="no option"):
        load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", strength=0.5)
    with pytest.raises(ModelError, match="takes no options"):
        load_inpainter("lama", device="cpu", prompt="a cat")


def test_edit_keeps_the_context_has_the_range_and_is_repeatable(model, case):
    image, mask = case
    batch = torch.stack([image, image.flip(-1)])
    first = model(batch, mask[None, None])
    assert first.shape == batch.shape and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first[..., mask == 0], batch[..., mask == 0])
    assert (first[..., mask == 1] - batch[..., mask == 1]).abs().max() > 0.01
    assert torch.equal(model(batch, mask[None, None]), first)  # same seed, same edit
    alone = model(batch[:1], mask[None, None])  # an image's edit does not depend on its batch
    assert torch.allclose(alone, first[:1], atol=1e-5)


def test_sampler_seed_changes_the_edit(checkpoint, case):
    image, mask = case
    a = load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", num_inference_steps=2, seed=0)
    b = load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", num_inference_steps=2, seed=1,
                       guidance_scale=1.0, prompt="the")
    assert not torch.equal(a(image[None], mask[None, None]), b(image[None], mask[None, None]))


def _assert_gradient_reaches_only_the_context(surrogate, image, mask):
    """The surrogate keeps the context exactly, and its fill depends on context pixels, never on the hole's."""
    x = image[None].clone().requires_grad_(True)
    out = surrogate(x, mask[None, None])
    assert out.shape == x.shape
    assert torch.equal(out.detach()[..., mask == 0], image[..., mask == 0][None])
    (out * mask).sum().backward()
    grad = x.grad[0].abs().sum(0)
    assert grad[mask == 0].sum() > 0
    assert grad[mask == 1].abs().max() == 0
    return x


def test_one_step_surrogate_gradient_reaches_the_context_and_not_the_hole(model, case):
    image, mask = case
    x = _assert_gradient_reaches_only_the_context(model.surrogate_one_step, image, mask)
    with torch.no_grad():  # fixed t and ε: the clean reference is reproducible
        assert torch.equal(model.surrogate_one_step(x, mask[None, None]), model.surrogate_one_step(x, mask[None, None]))


def test_unrolled_surrogate_gradient_reaches_the_context_and_runs_through_protect(checkpoint, case):
    image, mask = case
    unrolled = load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", num_inference_steps=2,
                              surrogate="unrolled", surrogate_steps=2)
    assert unrolled.surrogate_kind == "unrolled" and unrolled.surrogate_steps == 2
    x = _assert_gradient_reaches_only_the_context(unrolled.surrogate, image, mask)
    with torch.no_grad():  # fixed initial noise: the clean reference is reproducible, and differs from one-step
        reference = unrolled.surrogate(x, mask[None, None])
        assert torch.equal(unrolled.surrogate(x, mask[None, None]), reference)
        unrolled.surrogate_kind = "one-step"
        assert not torch.equal(unrolled.surrogate(x, mask[None, None]), reference)
        unrolled.surrogate_kind = "unrolled"
    losses = []
    result = protect(image, mask, unrolled, "paper", steps=2, budget=16 / 255,
                     on_step=lambda s, n, loss: losses.append(loss))
    assert len(losses) == 2 and result.protected.shape == image.shape
    with pytest.raises(ModelError, match="surrogate"):
        load_inpainter("sd-inpaint", weights=checkpoint, device="cpu", surrogate="ten-step")


def test_paper_recipe_lowers_the_surrogate_loss(model, case):
    image, mask = case
    losses = []
    protect(image, mask, model, "paper", steps=5, budget=16 / 255, on_step=lambda s, n, loss: losses.append(loss))
    assert len(losses) == 5 and losses[-1] < losses[0]


def test_cli_protect_and_evaluate_end_to_end(capsys, checkpoint, tmp_path):
    model = ["--model", "sd-inpaint", "--weights", checkpoint, "--device", "cpu", "--sampler-steps", "2",
             "--draws", "2"]
    folder = tmp_path / "photos"
    folder.mkdir()
    image, mask = example_photo(48, 40, seed=0)
    bio.save_image(image, folder / "p0.png")
    bio.save_mask(mask, folder / "p0_mask.png")
    code, out, err = run_cli(capsys, "protect", folder / "p0.png", "--mask", folder / "p0_mask.png",
                          "-o", tmp_path / "out.png", *model, "--steps", "2", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["model"] == "sd-inpaint" and "verdict:" in out
    # the sampler's noise is a draw: two judged, each with its own seed, the worst deciding
    assert [v["draw"] for v in report["verdicts"]] == [0, 1] and report["draws"] == 2
    assert report["verdicts"][1]["randomness"]["draw"] == 1
    assert report["protected"] is all(v["protected"] for v in report["verdicts"])

    code, out, err = run_cli(capsys, "evaluate", folder, "--out", tmp_path / "evaluation", *model,
                          "--families", "exact", "ring", "--steps", "1", "--no-fid", "--quiet")
    assert code == 0, err
    assert (tmp_path / "evaluation" / "summary.md").is_file()
    config = json.loads((tmp_path / "evaluation" / "config.json").read_text())
    assert config["arguments"]["sampler_steps"] == 2 and config["model"] == "sd-inpaint"


def test_cli_refuses_diffusion_flags_for_lama_and_sd_without_weights(capsys, tmp_path):
    image, mask = example_photo(32, 32, seed=0)
    bio.save_image(image, tmp_path / "p.png")
    bio.save_mask(mask, tmp_path / "m.png")
    code, _, err = run_cli(capsys, "edit", tmp_path / "p.png", "--mask", tmp_path / "m.png", "-o", tmp_path / "o.png",
                        "--model", "lama", "--device", "cpu", "--prompt", "a cat")
    assert code == 2 and "--prompt" in err
    code, _, err = run_cli(capsys, "edit", tmp_path / "p.png", "--mask", tmp_path / "m.png", "-o", tmp_path / "o.png",
                        "--model", "sd-inpaint", "--device", "cpu")
    assert code == 2 and "backfire models pull sd-inpaint" in err and not (tmp_path / "o.png").exists()


def test_the_sampler_is_a_draw_and_each_draw_is_repeatable(model, case):
    """The verdict over several draws asks ``stochastic`` and ``with_draw``; draw 0 is the model as loaded,
    and the surrogate (what the optimisation follows) keeps its own fixed draw."""
    image, mask = case
    x, m = image[None], mask[None, None]
    assert model.stochastic and not model.surrogate_is_edit
    assert model.with_draw(0) is model and model.randomness is None
    twin = model.with_draw(1)
    with torch.no_grad():
        base, first, again = model(x, m), twin(x, m), twin(x, m)
        assert torch.equal(twin.surrogate(x, m), model.surrogate(x, m))
    assert torch.equal(first, again) and not torch.equal(first, base)
    assert twin.randomness == {"seed": 0, "draw": 1, "sampler_seed": twin.randomness["sampler_seed"]}
    assert torch.equal(twin.with_draw(0)(x, m), base)
