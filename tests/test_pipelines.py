"""The attacker's pipelines: IOPaint's geometry, its agreement with IOPaint itself, and gradients."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.errors import ModelError
from backfire.examples import example_photo
from backfire.inpainters.base import ModuleInpainter
from backfire.inpainters.fixtures import TINY_LAMA, random_lama_generator
from backfire.inpainters.lama import LamaInpainter, export_torchscript, load_lama
from backfire.inpainters.pipelines import (
    Framed, PlainPipeline, bounding_box, conventions_for, crop_window, cubic_resize, default_pipeline, mask_boxes,
    padded_size, shrunk_size, support, symmetric_pad, wrap,
)

ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("iopaint_runner.py")


def iopaint_python() -> Path | None:
    """The Python of the environment that has IOPaint: ``$BACKFIRE_IOPAINT_PYTHON`` or ``.venv-iopaint``."""
    named = os.environ.get("BACKFIRE_IOPAINT_PYTHON")
    path = Path(named) if named else ROOT / ".venv-iopaint" / "bin" / "python"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def lama() -> LamaInpainter:
    """A small random-weight LaMa (same code as big-LaMa) under IOPaint's name for it."""
    return LamaInpainter(random_lama_generator(TINY_LAMA, seed=3), name="lama")


def photo(height: int, width: int, regions: list[tuple[int, int, int, int]], seed: int = 0):
    """A project-made photo (1, 3, H, W) on the 8-bit grid and a mask (1, 1, H, W) of ``regions`` (l, t, r, b)."""
    image, _ = example_photo(width, height, seed=seed)
    image = torch.round(image * 255)[None] / 255
    mask = torch.zeros(1, 1, height, width)
    for left, top, right, bottom in regions:
        mask[..., top:bottom, left:right] = 1
    return image, mask


# --------------------------------------------------------------------------------------------
# Geometry


def test_mask_boxes_match_opencv_external_contours():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    masks = [rng.random(rng.integers(1, 40, 2)) < rng.random() * 0.8 for _ in range(300)]
    ring = np.zeros((30, 30), bool)
    ring[5:25, 5:25], ring[8:22, 8:22], ring[12:15, 12:15] = True, False, True  # a region in a hole
    corners = np.zeros((20, 30), bool)
    corners[0:3, 0:4], corners[17:20, 26:30], corners[3, 4] = True, True, True  # border, diagonal touch
    for mask in masks + [ring, corners, np.ones((5, 7), bool), np.zeros((5, 7), bool)]:
        contours, _ = cv2.findContours(mask.astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        expected = [(x, y, x + w, y + h) for x, y, w, h in map(cv2.boundingRect, contours)]
        assert mask_boxes(mask) == expected


def test_crop_window_is_iopaints_box_with_margin_shifted_inside():
    size = (1000, 1200)
    assert crop_window((500, 400, 600, 500), size, 128) == (372, 272, 728, 628)  # centred, box + 2 × 128
    assert crop_window((0, 10, 50, 60), size, 128) == (0, 0, 306, 306)  # pushed right and down, same size
    assert crop_window((1150, 950, 1200, 1000), size, 128) == (894, 694, 1200, 1000)
    assert crop_window((10, 10, 1190, 990), size, 128) == (0, 0, 1200, 1000)  # larger than the photo


def test_sizes_follow_iopaints_helpers():
    assert shrunk_size((3000, 4000), 1280) == (960, 1280)
    assert shrunk_size((200, 1400), 1280) == (183, 1280)
    assert shrunk_size((700, 500), 1280) == (700, 500)
    assert padded_size((183, 1281), conventions_for("lama")) == (184, 1288)
    assert padded_size((300, 200), conventions_for("mat")) == (512, 512)
    assert padded_size((520, 200), conventions_for("migan")) == (1024, 1024)


def test_symmetric_pad_is_numpys():
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    for height, width in [(3, 5), (4, 8), (16, 9)]:  # 16 rows from 3: the mirror repeats
        expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, height - 3), (0, width - 5)), mode="symmetric")
        assert np.array_equal(symmetric_pad(x, height, width).numpy(), expected)


def test_cubic_resize_is_opencvs_inter_cubic():
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(1).random((61, 83, 3)).astype(np.float32)
    for h, w in [(30, 40), (183, 128), (61, 90)]:
        expected = cv2.resize(a, (w, h), interpolation=cv2.INTER_CUBIC)
        got = cubic_resize(torch.from_numpy(a).permute(2, 0, 1)[None], (h, w))[0].permute(1, 2, 0).numpy()
        assert np.abs(got - expected).max() < 1e-4


# --------------------------------------------------------------------------------------------
# Which edit


def test_strategies_follow_iopaints_defaults(lama):
    attacker = wrap(lama, "iopaint")
    assert attacker.strategy_for((600, 800)) == "Original"
    assert attacker.strategy_for((600, 801)) == "Crop"
    assert attacker.strategies((3000, 4000)) == ("Crop", "Original", "Resize")
    assert attacker.strategies((900, 1200)) == ("Crop", "Original")  # Resize runs Original up to 1280
    assert attacker.strategies((480, 640)) == ("Original",)
    assert attacker.with_strategy("Resize").strategy_for((3000, 4000)) == "Resize"
    assert wrap(lama, "plain").strategies((3000, 4000)) == ("plain",)
    assert default_pipeline("lama") == default_pipeline("backfire-s") == "iopaint"
    assert default_pipeline("sd-inpaint") == "plain"


def test_unknown_names_are_refused(lama):
    with pytest.raises(ModelError, match="pipeline"):
        wrap(lama, "photoshop")
    with pytest.raises(ModelError, match="strategy"):
        wrap(lama, "iopaint", strategy="Tile")
    with pytest.raises(ModelError, match="plain pipeline"):
        wrap(LamaInpainter(random_lama_generator(TINY_LAMA), name="tiny"), "iopaint")


def test_plain_is_the_bare_model(lama):
    image, mask = photo(40, 56, [(10, 10, 30, 25)])
    attacker = wrap(lama, "plain")
    assert isinstance(attacker, PlainPipeline)
    with torch.no_grad():
        assert torch.equal(attacker(image, mask), lama(image, mask))
    assert torch.equal(attacker.support(mask), torch.ones(40, 56))


# --------------------------------------------------------------------------------------------
# Paste-back and gradients

LARGE = (600, 830)
REGIONS = [(40, 30, 90, 70), (700, 500, 780, 560)]  # two regions, the second near the bottom-right corner


@pytest.mark.parametrize("strategy, size", [("Original", (64, 90)), ("Crop", LARGE), ("Resize", (200, 1400))])
def test_gradients_reach_what_the_model_sees_and_nothing_else(lama, strategy, size, one_thread):
    regions = REGIONS if size[1] > 800 else [(10, 10, 30, 30), (60, 40, 80, 60)]
    image, mask = photo(*size, regions)
    attacker = wrap(lama, "iopaint", strategy=strategy)
    assert attacker.strategy_for(size) == strategy
    x = image.clone().requires_grad_(True)
    out = attacker(x, mask)
    assert torch.equal(out[mask.expand_as(out) == 0], image[mask.expand_as(image) == 0])  # untouched
    (out * mask).sum().backward()
    grad = x.grad.abs().sum(dim=(0, 1))
    seen = attacker.support(mask)
    context = (seen > 0) & (mask[0, 0] == 0)
    assert (grad[seen == 0] == 0).all()
    assert (grad[context] > 0).float().mean() > 0.9  # LaMa's Fourier units see the whole window
    if strategy == "Crop":
        assert 0 < seen.mean() < 0.5
        assert (grad[mask[0, 0] > 0] == 0).all()  # the hole is erased before the model sees it


def test_crop_support_is_the_union_of_windows(lama):
    attacker = wrap(lama, "iopaint")
    _, mask = photo(*LARGE, REGIONS)
    windows = attacker.windows(mask[0, 0])
    assert windows == [crop_window(box, LARGE, 128) for box in reversed(REGIONS)]
    expected = torch.zeros(LARGE)
    for left, top, right, bottom in windows:
        expected[top:bottom, left:right] = 1
    assert torch.equal(attacker.support(mask), expected)
    assert torch.equal(attacker.support(mask[0, 0]), expected)
    small = photo(64, 90, [(10, 10, 30, 30)])[1]
    assert torch.equal(attacker.support(small), torch.ones(64, 90))


def test_support_of_an_ensemble_is_the_union(lama):
    _, mask = photo(*LARGE, REGIONS)
    crop, plain = wrap(lama, "iopaint"), wrap(lama, "plain")
    assert torch.equal(support(crop, mask), crop.support(mask))
    assert torch.equal(support([crop, plain], mask), torch.ones(LARGE))
    assert torch.equal(support(lama, mask), torch.ones(LARGE))  # a bare model sees everything
    both = torch.cat([mask, torch.flip(mask, dims=(-1,))])
    assert torch.equal(support(crop, both), torch.maximum(crop.support(mask), crop.support(both[1:])))


def test_framed_crop_is_the_whole_photos_edit_seen_through_a_box(lama, one_thread):
    image, mask = photo(*LARGE, REGIONS)
    attacker = wrap(lama, "iopaint")
    seen = attacker.support(mask)
    left, top, right, bottom = bounding_box(seen)
    assert torch.equal(seen[top:bottom, left:right].sum(), seen.sum())
    for box in [(left, top, right, bottom), (20, 10, 800, 590)]:  # the support's box; windows reaching out
        l, t, r, b = box
        framed = attacker.framed(image[0], box)
        x_full = image.clone().requires_grad_(True)
        x_part = image[..., t:b, l:r].clone().requires_grad_(True)
        full, part = attacker(x_full, mask), framed(x_part, mask[..., t:b, l:r])
        assert torch.allclose(part, full[..., t:b, l:r], atol=1e-6)
        (full * mask).sum().backward()
        (part * mask[..., t:b, l:r]).sum().backward()
        assert torch.allclose(x_part.grad, x_full.grad[..., t:b, l:r], atol=1e-6)
    assert bounding_box(torch.zeros(4, 5)) is None
    assert attacker.framed(image[0, :, :400, :700], (0, 0, 10, 10)) is None  # Original sees the whole photo
    with pytest.raises(ValueError, match="Crop"):
        Framed(attacker, image[0, :, :400, :700], (0, 0, 10, 10))


def test_crop_is_the_windows_inpainted_alone(lama, one_thread):
    image, mask = photo(*LARGE, REGIONS)
    attacker = wrap(lama, "iopaint")
    original = wrap(lama, "iopaint", strategy="Original")
    with torch.no_grad():
        out = attacker(image, mask)
        for left, top, right, bottom in attacker.windows(mask[0, 0]):
            window = (..., slice(top, bottom), slice(left, right))
            assert torch.equal(out[window], original(image[window], mask[window]))


class _TinyMIGAN(torch.nn.Module):
    """A random-weight network called as IOPaint calls MI-GAN's ``migan_traced.pt``:
    ``model(cat([0.5 - mask, erased * 2 - 1]))`` → RGB in [-1, 1]."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.GELU(),
                                       torch.nn.Conv2d(16, 16, 5, padding=4, dilation=2), torch.nn.GELU(),
                                       torch.nn.Conv2d(16, 3, 3, padding=1), torch.nn.Tanh())
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.15)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _MIGANInpainter(ModuleInpainter):
    def __init__(self, module: torch.nn.Module):
        super().__init__("migan", module, multiple=512)

    def fill(self, masked_image, mask):
        erased = (masked_image * 2 - 1) * (1 - mask)  # MI-GAN erases to 0 in [-1, 1]
        return (self.module(torch.cat([0.5 - mask, erased], dim=1)) + 1) / 2


def test_migan_inpaints_each_region_shrunk_to_512(one_thread):
    attacker = wrap(_MIGANInpainter(_TinyMIGAN()), "iopaint")
    image, mask = photo(*LARGE, [(40, 30, 400, 90), (700, 500, 780, 560)])  # the first window is > 512
    assert attacker.strategies(LARGE) == ("Crop",)
    assert attacker.windows(mask[0, 0])[1] == crop_window((40, 30, 400, 90), LARGE, 128)
    x = image.clone().requires_grad_(True)
    out = attacker(x, mask)
    assert torch.equal(out[mask.expand_as(out) == 0], image[mask.expand_as(image) == 0])
    (out * mask).sum().backward()
    seen = attacker.support(mask)
    assert (x.grad.abs().sum(dim=(0, 1))[seen == 0] == 0).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------
# Agreement with IOPaint itself (run in its own environment)

CASES = {  # name: (size, regions, strategy)
    "original": ((150, 203), [(20, 30, 60, 70), (120, 90, 180, 140)], "Original"),
    "crop_default_small": ((150, 203), [(20, 30, 60, 70)], "Crop"),  # Crop on a small photo = Original
    "crop": (LARGE, REGIONS, "Crop"),
    "crop_overlapping": (LARGE, [(300, 100, 360, 150), (420, 120, 470, 190), (0, 550, 30, 600)], "Crop"),
    "resize": ((200, 1400), [(300, 50, 420, 120), (1300, 150, 1400, 200)], "Resize"),
}


@pytest.fixture(scope="module")
def iopaint_results(tmp_path_factory):
    python = iopaint_python()
    if python is None:
        pytest.skip("IOPaint's environment is absent (.ci/run builds .venv-iopaint; or set BACKFIRE_IOPAINT_PYTHON)")
    folder = tmp_path_factory.mktemp("iopaint")
    model_file = export_torchscript(random_lama_generator(TINY_LAMA, seed=3), folder / "big-lama.pt")
    migan_file = folder / "migan_traced.pt"
    torch.jit.save(torch.jit.trace(_TinyMIGAN().eval(), torch.rand(1, 4, 64, 64)), str(migan_file))
    cases = {}
    for name, (size, regions, strategy) in CASES.items():
        image, mask = photo(*size, regions, seed=len(name))
        cases[f"{name}.image"] = np.round(image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        cases[f"{name}.mask"] = (mask[0, 0].numpy() * 255).astype(np.uint8)
        cases[f"{name}.model"] = np.array("lama")
        cases[f"{name}.strategy"] = np.array(strategy)
    image, mask = photo(*LARGE, [(40, 30, 400, 90), (700, 500, 780, 560)], seed=9)
    cases["migan.image"] = np.round(image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    cases["migan.mask"] = (mask[0, 0].numpy() * 255).astype(np.uint8)
    cases["migan.model"], cases["migan.strategy"] = np.array("migan"), np.array("Crop")
    np.savez(folder / "cases.npz", **cases)
    env = dict(os.environ, LAMA_MODEL_URL=str(model_file), MIGAN_MODEL_URL=str(migan_file))
    done = subprocess.run([str(python), str(RUNNER), str(folder / "cases.npz"), str(folder / "results.npz")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return cases, dict(np.load(folder / "results.npz")), load_lama(model_file)


def _ours(attacker, cases, name) -> np.ndarray:
    image = torch.from_numpy(cases[f"{name}.image"]).permute(2, 0, 1)[None].float() / 255
    mask = torch.from_numpy(cases[f"{name}.mask"])[None, None].float() / 255
    with torch.no_grad():
        return attacker(image, mask)[0].permute(1, 2, 0).numpy() * 255


@pytest.mark.parametrize("name", list(CASES) + ["migan"])
def test_agrees_with_iopaint(iopaint_results, name, one_thread):
    """Outside the hole: identical. Inside: the float path differs from IOPaint by its uint8 steps
    only (one truncation: [0, 1] level; Resize: two, and a rounded shrunk photo); with
    ``exact_8bit`` the same edit to the bit, except where the 8-bit rounding of cv2's fixed-point
    resize differs (Resize) and where IOPaint's ``astype(np.uint8)`` wraps a cubic overshoot
    below 0 or above 255 around (MI-GAN's enlarged windows), which the pipeline clamps."""
    cases, results, traced = iopaint_results
    theirs, hole = results[name].astype(np.float64), cases[f"{name}.mask"] > 127
    assert np.array_equal(theirs[~hole], cases[f"{name}.image"][~hole])  # IOPaint pastes the photo back
    for exact in (False, True):
        if name == "migan":
            attacker = wrap(_MIGANInpainter(_TinyMIGAN()), "iopaint", exact_8bit=exact)
        else:
            attacker = wrap(traced, "iopaint", strategy=CASES[name][2], exact_8bit=exact)
        ours = _ours(attacker, cases, name)
        assert np.array_equal(ours[~hole], theirs[~hole])
        ours, theirs_hole = ours[hole], theirs[hole]
        wrapped = (np.abs(ours - theirs_hole) > 128) & ((ours < 0.5) | (ours > 254.5))
        diff = (ours - theirs_hole)[~wrapped]
        print(f"{name} exact_8bit={exact}: ours - IOPaint in 8-bit levels: mean {diff.mean():+.3f}, "
              f"|diff| max {np.abs(diff).max():.3f}, > 1 level {np.mean(np.abs(diff) > 1):.2%}, "
              f"not equal {np.mean(np.abs(diff) > 1e-3):.2%}, wrapped by IOPaint {wrapped.mean():.2%}")
        if name != "migan":
            assert not wrapped.any()
        resized = name in ("resize", "migan")
        if exact:
            assert np.abs(diff).max() <= (2 if resized else 0.001)
            assert np.mean(np.abs(diff) > 1e-3) < (0.05 if resized else 1e-9)
        elif resized:
            assert np.abs(diff).max() <= 5 and 0 < diff.mean() < 1.5
        else:
            assert -0.001 <= diff.min() and diff.max() <= 1.001


def test_a_photo_over_the_crop_trigger_is_changed_only_in_the_crop_windows_and_judged_per_strategy(
        capsys, tmp_path):
    """``backfire protect`` end to end on an 840×96 photo (IOPaint crops photos over 800 px): δ is zero outside
    the windows IOPaint opens for the recipe's edits, and the verdict judges Crop (the default) and Original."""
    import json

    from backfire import io as bio
    from backfire.examples import example_photo
    from backfire.inpainters import load_inpainter
    from backfire.protect.engine import _crop_frame
    from backfire.protect.recipes import PAPER
    from tests.conftest import run_cli

    torch.set_num_threads(1)
    image, _ = example_photo(840, 96, seed=0)
    region = torch.zeros(96, 840)
    region[40:60, 100:160] = 1
    bio.save_image(image, tmp_path / "wide.png")
    bio.save_mask(region, tmp_path / "m.png")
    code, out, err = run_cli(capsys, "protect", tmp_path / "wide.png", "--mask", tmp_path / "m.png", "-o",
                             tmp_path / "out.png", "--model", "backfire-s", "--steps", "2", "--device", "cpu",
                             "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    assert [(v["strategy"], v["default_strategy"]) for v in report["verdicts"]] == [("Crop", True),
                                                                                    ("Original", False)]
    assert "strategy Crop (the attacker's default)" in out
    protected = bio.read_image(tmp_path / "out.png").pixels
    (_, seen) = _crop_frame([wrap(load_inpainter("backfire-s", device="cpu"))], region, PAPER)
    changed = (protected - image).abs().amax(0) > 0
    assert changed[seen == 0].sum() == 0 and changed[seen == 1].float().mean() > 0.5
    assert seen.float().mean() < 0.6  # the windows are a part of the photo, not all of it


def test_every_strategy_runs_each_setting_of_the_tool_in_turn():
    from backfire.inpainters import load_inpainter
    from backfire.inpainters.pipelines import EveryStrategy

    pipeline = wrap(load_inpainter("backfire-s", device="cpu"), "iopaint")
    mix = EveryStrategy(pipeline, (96, 840))
    assert [v.strategy_for((96, 840)) for v in mix.variants] == ["Crop", "Original"]
    image, _ = example_photo(840, 96, seed=1)
    mask = torch.zeros(1, 1, 96, 840)
    mask[..., 40:60, 100:160] = 1
    with torch.no_grad():
        first, second = mix.inpaint(image[None], mask), mix.inpaint(image[None], mask)
        crop = pipeline.with_strategy("Crop").inpaint(image[None], mask)
        whole = pipeline.with_strategy("Original").inpaint(image[None], mask)
    assert torch.equal(first, crop) and torch.equal(second, whole) and not torch.equal(crop, whole)
