"""MI-GAN: faithfulness to the official network, both weight formats, gradients, other sizes, errors.

The faithfulness fixture ``tests/fixtures/migan_official.npz`` holds outputs of the OFFICIAL
MI-GAN inference generator, made once on the development machine (torch 2.13.0, CPU) by::

    mkdir -p /work/ext/MI-GAN && git --git-dir=<clone of github.com/Picsart-AI-Research/MI-GAN> \\
        archive ca4df2ebd1d2c657896a0fac33c7daff6f5d94e6 lib/model_zoo/migan_inference.py | tar -x -C /work/ext/MI-GAN
    python tests/fixtures/make_migan_fixture.py /work/ext/MI-GAN

The script imports ``lib/model_zoo/migan_inference.py`` from that checkout (commit ca4df2e, the
repository's HEAD in 2026-11; it needs only numpy and torch, so nothing is stubbed), builds
``Generator(resolution=R)`` for R = 256 and 512, fills every entry of its ``state_dict()`` with
:func:`fill_by_name` (seed ``WEIGHT_SEED``), feeds it the input :func:`official_input` builds from
:func:`fixture_batch` (seeds ``PHOTO_SEED`` / ``MASK_SEED``; batch 2 at 256², 1 at 512²), and stores
the official state dict's keys and shapes, the output's mean and std, and ``SAMPLES`` output
values at positions drawn with ``SAMPLE_SEED`` (about 75 KB in all). The functions it uses are
the ones below, imported from this module, so the test builds exactly what the script fed the
official code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backfire.inpainters import ModelError, WeightsNotFoundError, available_models, load_inpainter
from backfire.inpainters.fixtures import (
    TINY_LAMA,
    export_migan_torchscript,
    random_lama_generator,
    random_migan_generator,
    save_lama_checkpoint,
    save_migan_state_dict,
)
from backfire.inpainters.lama import LamaModule
from backfire.inpainters.lama import export_torchscript as export_lama_torchscript
from backfire.inpainters.migan import (
    MiganGenerator,
    MiganInpainter,
    infer_resolution,
    load_migan,
    load_migan_generator,
)

FIXTURE = Path(__file__).parent / "fixtures" / "migan_official.npz"
WEIGHT_SEED, PHOTO_SEED, MASK_SEED, SAMPLE_SEED = 20231001, 7, 11, 3
CONFIGS = {256: 2, 512: 1}  # resolution → batch size of the fixture
SAMPLES = 6000
SMALL = 32  # a resolution that builds the same architecture, cheap enough for every other test

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# What the fixture script feeds the official network (keep in step with the docstring)


def fill_by_name(module: nn.Module, seed: int) -> None:
    """Overwrite every ``state_dict()`` entry of ``module``, parameters and buffers, deterministically by name.

    Keys in sorted order, one ``torch.Generator`` seeded ``seed``: each entry is a standard normal
    draw of its shape times ``1 / sqrt(fan_in)``, with ``fan_in = prod(shape[1:])`` for keys
    ending in ``weight`` and 1 for the rest (biases, noise, the stored upsampling pattern). Two
    networks with the same names and shapes get the same numbers, whatever their code.
    """
    generator = torch.Generator().manual_seed(seed)
    state = module.state_dict()
    with torch.no_grad():
        for key in sorted(state):
            tensor = state[key]
            fan_in = math.prod(tensor.shape[1:]) if key.endswith("weight") and tensor.ndim >= 2 else 1
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / math.sqrt(fan_in))


def fixture_batch(resolution: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth colour field with fine texture (N×3×R×R in [0, 1]) and one rectangular hole per item (1 = fill)."""
    generator = torch.Generator().manual_seed(PHOTO_SEED)
    coarse = torch.rand(batch, 3, 6, 6, generator=generator)
    photo = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
    photo = (photo + 0.1 * torch.rand(batch, 3, resolution, resolution, generator=generator)).clamp(0, 1)
    generator = torch.Generator().manual_seed(MASK_SEED)
    mask = torch.zeros(batch, 1, resolution, resolution)
    for item in range(batch):
        top, left = (torch.randint(0, resolution // 2, (2,), generator=generator)).tolist()
        height, width = (torch.randint(resolution // 8, resolution // 2, (2,), generator=generator)).tolist()
        mask[item, :, top:top + height, left:left + width] = 1
    return photo, mask


def official_input(photo: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official demo's network input: ``cat([known − 0.5, image · known])``, image in [−1, 1], known = 1 − mask."""
    known = 1 - mask
    return torch.cat([known - 0.5, (photo * 2 - 1) * known], dim=1)


def sample_positions(numel: int) -> torch.Tensor:
    """``SAMPLES`` flat indices into the output, sorted."""
    return torch.randperm(numel, generator=torch.Generator().manual_seed(SAMPLE_SEED))[:SAMPLES].sort().values


# --------------------------------------------------------------------------------------------
# Helpers


def _small(seed: int = 1) -> MiganGenerator:
    return random_migan_generator(SMALL, seed=seed)


def _image_and_mask(batch: int = 2, h: int = SMALL, w: int = SMALL, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(batch, 1, h, w)
    mask[0, :, h // 4: h // 2, w // 4: 3 * w // 4] = 1
    if batch > 1:
        mask[1, :, h // 2: 7 * h // 8, w // 8: w // 2] = 1
    return image, mask


@pytest.fixture(scope="module")
def official() -> dict[str, np.ndarray]:
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------------------------
# Faithfulness


@pytest.mark.parametrize("resolution", sorted(CONFIGS))
def test_same_parameter_names_and_shapes_as_the_official_generator(official, resolution):
    expected = json.loads(str(official[f"r{resolution}_keys"]))
    ours = {k: list(v.shape) for k, v in MiganGenerator(resolution).state_dict().items()}
    assert ours == expected


@pytest.mark.parametrize("resolution", sorted(CONFIGS))
def test_output_matches_the_official_generator(official, resolution):
    generator = MiganGenerator(resolution).eval()
    fill_by_name(generator, WEIGHT_SEED)
    photo, mask = fixture_batch(resolution, CONFIGS[resolution])
    with torch.no_grad():
        output = generator(official_input(photo, mask))
    flat = output.flatten()
    index = torch.from_numpy(official[f"r{resolution}_index"]).long()
    assert torch.equal(index, sample_positions(flat.numel()))
    expected = torch.from_numpy(official[f"r{resolution}_value"])
    scale = max(1.0, float(official[f"r{resolution}_std"]))  # the filled network's output is not in [−1, 1]
    assert (flat[index] - expected).abs().max().item() <= 1e-4 * scale
    assert output.mean().item() == pytest.approx(float(official[f"r{resolution}_mean"]), abs=1e-4 * scale)
    assert output.std().item() == pytest.approx(float(official[f"r{resolution}_std"]), rel=1e-4)


def test_inpainter_at_native_size_is_iopaints_call_of_the_network():
    """IOPaint: ``out = model(cat([0.5 − mask, image·(1 − mask)]))`` (image in [−1, 1]), then ``out·127.5 + 127.5``
    clamped to [0, 255]; the Inpainter returns that /255 inside the hole and the image outside."""
    generator = _small()
    model = MiganInpainter(generator)
    image, mask = _image_and_mask()
    with torch.no_grad():
        signed = image * 2 - 1
        out = generator(torch.cat([0.5 - mask, signed * (1 - mask)], dim=1))
        iopaint = (out * 127.5 + 127.5).clamp(0, 255) / 255
        ours = model(image, mask)
    expected = mask * iopaint + (1 - mask) * image
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Weight files


def test_state_dict_file_loads_the_same_network(tmp_path):
    generator = _small()
    path = save_migan_state_dict(generator, tmp_path / "migan_32.pt")
    loaded = load_migan(path)
    assert isinstance(loaded.module.network, MiganGenerator) and loaded.resolution == SMALL
    for key, value in generator.state_dict().items():
        assert torch.equal(loaded.module.network.state_dict()[key], value), key
    image, mask = _image_and_mask()
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask), MiganInpainter(generator)(image, mask), rtol=0, atol=0)
    # as the official export writes it: a plain dict of tensors, no wrapper
    assert set(torch.load(path, weights_only=True)) == set(generator.state_dict())


def test_torchscript_file_loads_the_same_network(tmp_path):
    generator = _small()
    path = export_migan_torchscript(generator, tmp_path / "migan_traced.pt")
    loaded = load_inpainter("migan", weights=path, device="cpu")
    assert isinstance(loaded, MiganInpainter) and loaded.resolution == SMALL
    assert isinstance(loaded.module.network, torch.jit.ScriptModule)
    image, mask = _image_and_mask()
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask), MiganInpainter(generator)(image, mask),
                                   rtol=0, atol=1e-5)


def test_both_formats_in_bfloat16(tmp_path):
    """The dtype reaches the network in both formats (fp16 needs CUDA; bfloat16 exercises the same path on CPU)."""
    generator = _small()
    for path in (save_migan_state_dict(generator, tmp_path / "m.pt"), export_migan_torchscript(generator, tmp_path / "t.pt")):
        model = load_migan(path, dtype=torch.bfloat16)
        for size in ((SMALL, SMALL), (40, 24)):  # native, and stretched
            image, mask = _image_and_mask(h=size[0], w=size[1])
            with torch.no_grad():
                out = model(image, mask)
            reference = MiganInpainter(generator)(image, mask)
            assert out.dtype == torch.bfloat16
            assert (out.float() - reference).abs().mean() < 0.02


def test_resolution_is_read_off_the_weights():
    for resolution in (SMALL, 256, 512):
        with torch.device("meta"):
            state = MiganGenerator(resolution).state_dict()
        assert infer_resolution(state) == resolution
    assert infer_resolution({"model.synthesis.b64.torgb.weight": torch.zeros(3, 512, 1, 1)}) == 64


# --------------------------------------------------------------------------------------------
# Behaviour as an Inpainter


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_gradients_reach_the_context_and_not_the_hole(tmp_path, fmt):
    generator = _small()
    if fmt == "state_dict":
        model = load_migan(save_migan_state_dict(generator, tmp_path / "m.pt"))
    else:
        model = load_migan(export_migan_torchscript(generator, tmp_path / "t.pt"))
    image, mask = _image_and_mask()
    image.requires_grad_(True)
    out = model(image, mask)
    (out * mask).sum().backward()  # only the fill: what reaches it must come through the context
    grad = image.grad.abs().sum(dim=1, keepdim=True)
    assert grad[mask.bool()].max().item() == 0.0
    assert (grad[~mask.bool()] > 0).float().mean().item() > 0.5


@pytest.mark.parametrize("size", [(20, 53), (70, 100)])
def test_other_sizes_are_stretched_to_the_native_square(size):
    h, w = size
    model = MiganInpainter(_small())
    image, mask = _image_and_mask(h=h, w=w)
    with torch.no_grad():
        out = model(image, mask)
        single = model(image[1:], mask[1:])
    assert out.shape == image.shape
    assert torch.equal(out * (1 - mask), image * (1 - mask))
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out[1:], single, rtol=0, atol=1e-6)  # batch items do not interact
    hole = mask.bool().expand_as(out)
    assert (out[hole] - image[hole]).abs().mean() > 0.01  # the hole is filled, not passed through


def test_a_thin_hole_survives_the_shrinking():
    """The hole is shrunk by area: a 1-px line is still a hole in what the network sees at R×R."""
    model = MiganInpainter(_small())
    seen: list[torch.Tensor] = []
    model.module.network.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    image, _ = _image_and_mask(batch=1, h=70, w=100)
    mask = torch.zeros(1, 1, 70, 100)
    mask[..., 35, 10:90] = 1
    with torch.no_grad():
        model(image, mask)
    hole = seen[0][:, 0] < 0  # channel 0 is known − 0.5
    rows = hole.any(dim=-1).nonzero()[:, -1].tolist()
    assert rows and all(15 <= r <= 17 for r in rows)  # row 35 of 70 → about row 16 of 32
    assert hole.sum() >= 0.8 * 80 * SMALL / 100  # the line's length, shrunk


def test_registry_and_options(tmp_path):
    assert "migan" in available_models()
    path = save_migan_state_dict(_small(), tmp_path / "m.pt")
    with pytest.raises(ModelError, match="takes no options"):
        load_inpainter("migan", weights=path, device="cpu", prompt="x")


# --------------------------------------------------------------------------------------------
# Wrong files


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_missing_and_absent_weights(tmp_path):
    with pytest.raises(ModelError, match="MI-GAN needs weights") as exc:
        load_migan(None)
    _one_line(exc)
    with pytest.raises(WeightsNotFoundError):
        load_migan(tmp_path / "nope.pt")


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ModelError, match="neither a TorchScript model") as exc:
        load_migan(path)
    _one_line(exc)


def test_lama_files_are_refused(tmp_path):
    lama = random_lama_generator(TINY_LAMA, seed=0)
    checkpoint = save_lama_checkpoint(lama, tmp_path / "best.ckpt")
    with pytest.raises(ModelError, match="no MI-GAN generator weights") as exc:
        load_migan(checkpoint)
    _one_line(exc)
    script = export_lama_torchscript(LamaModule(lama), tmp_path / "big-lama.pt")
    with pytest.raises(ModelError, match="MI-GAN takes one 4-channel tensor") as exc:
        load_migan(script)
    _one_line(exc)


def test_each_format_has_its_loader(tmp_path):
    path = export_migan_torchscript(_small(), tmp_path / "t.pt")
    with pytest.raises(ModelError, match="TorchScript model, not a state dict") as exc:
        load_migan_generator(path)
    _one_line(exc)


def test_mismatched_state_dict_is_refused(tmp_path):
    state = _small().state_dict()
    state["encoder.b32.fromrgb.weight"] = torch.zeros(7, 4, 1, 1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="do not fit the 32² MI-GAN generator") as exc:
        load_migan_generator(path)
    _one_line(exc)
    del state["synthesis.b32.torgb.weight"]
    torch.save({k: v for k, v in state.items() if ".torgb." not in k}, path)
    with pytest.raises(ModelError, match="not an MI-GAN generator") as exc:
        load_migan(path)
    _one_line(exc)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")
def test_torchscript_without_migan_weights_is_refused(tmp_path):
    traced = torch.jit.trace(nn.Conv2d(4, 3, 1), torch.zeros(1, 4, 8, 8))
    path = tmp_path / "other.pt"
    traced.save(str(path))
    with pytest.raises(ModelError, match="not an MI-GAN generator") as exc:
        load_migan(path)
    _one_line(exc)
