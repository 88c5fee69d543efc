"""Big-LaMa: architecture, weight files, loaders, TorchScript export, dtype handling, errors."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from backfire.inpainters import Inpainter, ModelError, WeightsNotFoundError, available_models, load_inpainter
from backfire.inpainters.ffc import (
    BIG_LAMA,
    FFC,
    ConcatTupleLayer,
    FFCConfig,
    FourierUnit,
    SpectralTransform,
    build_generator,
)
from backfire.inpainters.fixtures import TINY_LAMA, random_lama_generator, save_lama_checkpoint
from backfire.inpainters.lama import (
    LamaInpainter,
    LamaModule,
    export_torchscript,
    infer_config,
    load_generator,
    load_lama,
    weights_format,
)

REPO = Path(__file__).resolve().parents[1]
H, W = 37, 53  # not multiples of 8: the Inpainter pads and crops


pytestmark = pytest.mark.usefixtures("one_thread")

def _masks(batch: int = 2, h: int = H, w: int = W) -> torch.Tensor:
    """A different rectangular hole per batch item."""
    mask = torch.zeros(batch, 1, h, w)
    mask[0, :, 5:20, 10:30] = 1
    if batch > 1:
        mask[1, :, 15:33, 30:50] = 1
    return mask


def _image(batch: int = 2, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _discriminator_state() -> dict[str, torch.Tensor]:
    """Non-generator entries a real best.ckpt carries; a loader must ignore them."""
    return {
        "discriminator.model0.0.weight": torch.randn(64, 3, 4, 4),
        "discriminator.model0.0.bias": torch.randn(64),
        "loss_resnet_pl.impl.conv1.weight": torch.randn(8, 3, 3, 3),
        "val_evaluator.scores.ssim.weight": torch.randn(3),
    }


@pytest.fixture(scope="module")
def tiny_generator():
    return random_lama_generator(TINY_LAMA, seed=1)


@pytest.fixture(scope="module")
def reference(tiny_generator) -> LamaInpainter:
    return LamaInpainter(copy.deepcopy(tiny_generator), "cpu")


@pytest.fixture(scope="module")
def weight_files(tiny_generator, tmp_path_factory) -> dict[str, Path]:
    """The tiny generator in every supported format, under misleading extensions (detection is by content)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights")
    files = {
        "ckpt": root / "best.pt",
        "torchscript": root / "big-lama.ckpt",
        "safetensors": root / "generator.bin",
        "state_dict": root / "generator.safetensors",
    }
    save_lama_checkpoint(tiny_generator, files["ckpt"], extra_state=_discriminator_state())
    export_torchscript(LamaModule(copy.deepcopy(tiny_generator)), files["torchscript"])
    state = {k: v.contiguous() for k, v in tiny_generator.state_dict().items()}
    save_file(state, str(files["safetensors"]), metadata={"format": "backfire-ffc-generator"})
    torch.save(state, files["state_dict"])
    return files


# --------------------------------------------------------------------------------------------
# Architecture


def test_big_lama_has_lamas_layout_parameter_count_and_key_names():
    with torch.device("meta"):
        generator = build_generator(BIG_LAMA)
    n_params = sum(p.numel() for p in generator.parameters())
    assert abs(n_params - 51.0e6) / 51.0e6 < 0.01, n_params

    state = generator.state_dict()
    expected_shapes = {
        "model.1.ffc.convl2l.weight": (64, 4, 7, 7),
        "model.2.ffc.convl2l.weight": (128, 64, 3, 3),
        "model.4.ffc.convl2l.weight": (128, 256, 3, 3),
        "model.4.ffc.convl2g.weight": (384, 256, 3, 3),
        "model.4.bn_g.running_var": (384,),
        "model.5.conv1.ffc.convl2l.weight": (128, 128, 3, 3),
        "model.5.conv1.ffc.convg2l.weight": (128, 384, 3, 3),
        "model.5.conv1.ffc.convg2g.conv1.0.weight": (192, 384, 1, 1),
        "model.5.conv1.ffc.convg2g.conv1.1.running_mean": (192,),
        "model.5.conv1.ffc.convg2g.fu.conv_layer.weight": (384, 384, 1, 1),
        "model.5.conv1.ffc.convg2g.fu.bn.weight": (384,),
        "model.5.conv1.ffc.convg2g.conv2.weight": (384, 192, 1, 1),
        "model.22.conv2.bn_l.num_batches_tracked": (),
        "model.24.weight": (512, 256, 3, 3),  # ConvTranspose2d: (in, out, k, k)
        "model.25.running_var": (256,),
        "model.30.bias": (64,),
        "model.34.weight": (3, 64, 7, 7),
        "model.34.bias": (3,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    # Sides with no channels hold no weights, as in LaMa.
    assert "model.1.bn_g.weight" not in state
    assert "model.3.ffc.convl2g.weight" not in state
    assert not any(k.startswith("model.23.") or k.startswith("model.35.") for k in state)
    assert len(generator.model) == 36
    assert isinstance(generator.model[23], ConcatTupleLayer)
    assert isinstance(generator.model[35], nn.Sigmoid)
    assert infer_config(state) == BIG_LAMA


def test_half_precision_safetensors_load_as_float32(tmp_path, tiny_generator, reference):
    from safetensors.torch import save_file

    path = tmp_path / "generator.safetensors"
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in tiny_generator.state_dict().items()}
    save_file(state, str(path))
    generator = load_generator(path)
    assert all(p.dtype == torch.float32 for p in generator.parameters())
    image, mask = _image(), _masks()
    assert (LamaInpainter(generator)(image, mask) - reference(image, mask)).abs().max() < 1e-2


def test_infer_config_recovers_compact_configurations():
    for config in (FFCConfig(16, 3, 3, 0.5, 64), FFCConfig(8, 2, 0, 0.75, 1024), TINY_LAMA):
        with torch.device("meta"):
            state = build_generator(config).state_dict()
        assert infer_config(state) == config


def test_ffc_sides_and_concat():
    x = torch.randn(1, 8, 16, 16)
    out_l, out_g = FFC(8, 8, 3, 0, 0, padding=1)(x)
    assert out_l.shape == (1, 8, 16, 16) and out_g == 0
    out_l, out_g = FFC(8, 8, 3, 0, 0.75, stride=2, padding=1)(x)
    assert out_l.shape == (1, 2, 8, 8) and out_g.shape == (1, 6, 8, 8)
    out_l, out_g = FFC(8, 8, 3, 0.75, 0.75, stride=2, padding=1)((out_l.repeat(1, 1, 2, 2), out_g.repeat(1, 1, 2, 2)))
    assert out_l.shape == (1, 2, 8, 8) and out_g.shape == (1, 6, 8, 8)
    assert torch.equal(ConcatTupleLayer()((x, 0)), x)
    assert torch.equal(ConcatTupleLayer()((out_l, out_g)), torch.cat([out_l, out_g], 1))
    with pytest.raises(NotImplementedError, match="enable_lfu"):
        SpectralTransform(8, 8, enable_lfu=True)


def test_fourier_unit_matches_lamas_spectral_layout():
    """Real and imaginary parts of channel c are conv channels 2c and 2c+1, as LaMa's weights expect."""
    torch.manual_seed(0)
    unit = FourierUnit(3, 3).eval()
    with torch.no_grad():
        unit.bn.running_mean.normal_()
        unit.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 10, 14)
    # LaMa's formulation: stack on the last dim, permute to (N, C, 2, H, W'), view as 2C channels.
    spec = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
    y = torch.stack((spec.real, spec.imag), dim=-1).permute(0, 1, 4, 2, 3).contiguous()
    y = y.view(2, -1, *y.shape[3:])
    y = torch.relu(unit.bn(unit.conv_layer(y)))
    y = y.view(2, -1, 2, *y.shape[2:]).permute(0, 1, 3, 4, 2).contiguous()
    expected = torch.fft.irfftn(torch.complex(y[..., 0], y[..., 1]), s=x.shape[-2:], dim=(-2, -1), norm="ortho")
    with torch.no_grad():
        assert torch.allclose(unit(x), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Random generators and weight files


def test_random_generator_is_seeded_and_has_non_default_norm_statistics():
    rng_state = torch.random.get_rng_state()
    a, b, c = (random_lama_generator(TINY_LAMA, seed=s) for s in (5, 5, 6))
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.1.ffc.convl2l.weight"], sc["model.1.ffc.convl2l.weight"])
    bn = a.model[5].conv1.ffc.convg2g.fu.bn
    assert not a.training
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.weight, torch.ones_like(bn.weight))


def test_full_big_lama_lightning_checkpoint_round_trip(tmp_path):
    generator = random_lama_generator(BIG_LAMA, seed=0)
    path = save_lama_checkpoint(generator, tmp_path / "best.ckpt", extra_state=_discriminator_state())
    checkpoint = torch.load(path, weights_only=True, mmap=True)
    assert "generator.model.1.ffc.convl2l.weight" in checkpoint["state_dict"]
    assert "discriminator.model0.0.weight" in checkpoint["state_dict"]

    model = load_inpainter("lama", weights=path, device="cpu")
    assert isinstance(model, LamaInpainter) and model.config == BIG_LAMA and model.multiple == 8
    loaded = model.module.generator.state_dict()
    original = generator.state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)

    image, mask = _image(1, 32, 48), _masks(1, 32, 48)
    expected = LamaInpainter(generator, "cpu")(image, mask)
    assert (model(image, mask) - expected).abs().max() < 1e-5
    assert not torch.equal(expected[mask.expand_as(expected) > 0], image[mask.expand_as(image) > 0])


@pytest.mark.parametrize("fmt", ["ckpt", "torchscript", "safetensors", "state_dict"])
def test_loaders_agree_with_the_in_memory_model(fmt, weight_files, reference):
    path = weight_files[fmt]
    assert weights_format(path) == {"ckpt": "torch", "state_dict": "torch"}.get(fmt, fmt)
    model = load_inpainter("lama", weights=path, device="cpu")
    if fmt == "torchscript":
        assert isinstance(model.module, torch.jit.ScriptModule) and model.config is None
    else:
        assert model.config == TINY_LAMA
    image, mask = _image(), _masks()
    assert (model(image, mask) - reference(image, mask)).abs().max() < 1e-5


@pytest.mark.parametrize("fmt", ["ckpt", "torchscript"])
def test_output_keeps_the_context_and_stays_in_range(fmt, weight_files):
    model = load_inpainter("lama", weights=weight_files[fmt], device="cpu")
    image, mask = _image(), _masks()
    out = model(image, mask)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    keep = (mask == 0).expand_as(image)
    assert torch.equal(out[keep], image[keep])
    assert not torch.allclose(out[~keep], image[~keep])
    # Batch items are independent: each equals the single-image call with its own mask.
    for i in range(2):
        single = model(image[i:i + 1], mask[i:i + 1])
        assert (single - out[i:i + 1]).abs().max() < 1e-5


@pytest.mark.parametrize("fmt", ["ckpt", "torchscript"])
def test_gradients_reach_the_context_but_not_the_hole(fmt, weight_files):
    model = load_inpainter("lama", weights=weight_files[fmt], device="cpu")
    image, mask = _image().requires_grad_(True), _masks()
    hole = mask.expand_as(image) > 0

    (grad_all,) = torch.autograd.grad(model(image, mask).sum(), image)
    assert torch.all(grad_all[hole] == 0)
    # The fill alone (no pass-through term) depends on the context pixels.
    (grad_fill,) = torch.autograd.grad((model(image, mask) * mask).sum(), image)
    assert torch.all(grad_fill[hole] == 0)
    for i in range(2):
        assert grad_fill[i][~hole[i]].abs().sum() > 0


def test_lama_folder_and_module_conventions(weight_files, tmp_path, reference):
    folder = tmp_path / "big-lama"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "best.ckpt").write_bytes(weight_files["ckpt"].read_bytes())
    model = load_lama(folder, device="cpu")
    image, mask = _image(1, 32, 48), _masks(1, 32, 48)
    assert (model(image, mask) - reference(image, mask)).abs().max() < 1e-5
    # LamaModule is the big-lama.pt convention: masked input + mask in, composited image out.
    module = reference.module
    with torch.no_grad():
        direct = module(image, mask)
        raw = module.generator(torch.cat([image * (1 - mask), mask], 1))
    assert torch.equal(direct, mask * raw + (1 - mask) * image)


# --------------------------------------------------------------------------------------------
# Precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fourier_unit_runs_its_ffts_in_float32(dtype, monkeypatch):
    seen: list[torch.dtype] = []
    rfftn, irfftn = torch.fft.rfftn, torch.fft.irfftn

    def spy(fn):
        def wrapped(x, *args, **kwargs):
            seen.append(x.dtype)
            return fn(x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(torch.fft, "rfftn", spy(rfftn))
    monkeypatch.setattr(torch.fft, "irfftn", spy(irfftn))
    torch.manual_seed(0)
    unit = FourierUnit(4, 4).eval()
    x = torch.randn(1, 4, 12, 10)
    with torch.no_grad():
        expected = unit(x)
        out = unit.to(dtype)(x.to(dtype))  # CPU FFTs reject bf16/fp16: this only works if cast
    assert out.dtype == dtype
    assert seen == [torch.float32, torch.complex64] * 2
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()


def test_bfloat16_generator_and_converted_torchscript(weight_files, reference):
    image, mask = _image(), _masks()
    eager = LamaInpainter(copy.deepcopy(reference.module), "cpu", torch.bfloat16)
    script = load_inpainter("lama", weights=weight_files["torchscript"], device="cpu", dtype=torch.bfloat16)
    out = eager(image, mask)
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference(image, mask)).abs().max() < 0.1
    # The archive was traced in float32; converting it must not leave float32 casts baked in: it computes what
    # the module as loaded computes in bfloat16 (the eager fills come from its BatchNorm-folded copy, which
    # rounds differently in bfloat16)
    x, m = eager.prepare(image, mask)
    as_loaded = eager.module(eager._pad(x * (1 - m)), eager._pad(m))[..., :H, :W]
    assert (script(image, mask).float() - as_loaded.float()).abs().max() < 1e-2


# --------------------------------------------------------------------------------------------
# Errors


def test_missing_weights_explain_where_to_get_them(tmp_path):
    with pytest.raises(ModelError, match=r"backfire models pull lama.*--weights"):
        load_inpainter("lama", weights=None, device="cpu")  # not pulled (conftest: an empty model cache)
    missing = tmp_path / "nowhere" / "big-lama.pt"
    with pytest.raises(WeightsNotFoundError) as info:
        load_inpainter("lama", weights=missing, device="cpu")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ModelError)
    message = str(info.value)
    assert str(missing) in message and "github.com/advimman/lama" in message and "\n" not in message


def test_unreadable_files_are_model_errors(tmp_path, tiny_generator):
    text = tmp_path / "big-lama.pt"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="neither a TorchScript model"):
        load_inpainter("lama", weights=text, device="cpu")

    archive = tmp_path / "weights.ckpt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ModelError, match="zip archive"):
        load_inpainter("lama", weights=archive, device="cpu")
    download = tmp_path / "big-lama.zip"
    with zipfile.ZipFile(download, "w") as z:
        z.writestr("big-lama/config.yaml", "generator: {}")
        z.writestr("big-lama/models/best.ckpt", "")
    with pytest.raises(ModelError, match="unzip it"):
        load_inpainter("lama", weights=download, device="cpu")

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": _discriminator_state()}, other)
    with pytest.raises(ModelError, match="no LaMa generator weights"):
        load_inpainter("lama", weights=other, device="cpu")

    broken = tmp_path / "broken.ckpt"
    state = {f"generator.{k}": v for k, v in tiny_generator.state_dict().items()}
    del state["generator.model.5.conv1.ffc.convg2g.fu.bn.running_var"]
    torch.save({"state_dict": state}, broken)
    with pytest.raises(ModelError, match="do not fit"):
        load_inpainter("lama", weights=broken, device="cpu")


def test_registry_names_devices_and_dtypes(weight_files):
    assert "lama" in available_models()
    with pytest.raises(ModelError, match="available: .*lama"):
        load_inpainter("no-such-model")
    with pytest.raises(ModelError, match="float16 needs a CUDA device"):
        load_inpainter("lama", weights=weight_files["ckpt"], device="cpu", dtype=torch.float16)
    with pytest.raises(ModelError, match="unknown dtype"):
        load_inpainter("lama", weights=weight_files["ckpt"], device="cpu", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="CUDA is not available"):
            load_inpainter("lama", weights=weight_files["ckpt"], device="cuda")
    model = load_inpainter("LaMa", weights=str(weight_files["ckpt"]))  # "auto" device, case-insensitive name
    assert isinstance(model, Inpainter)
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu") and model.dtype == torch.float32


def test_lightning_checkpoint_with_foreign_pickled_classes(tmp_path, tiny_generator, reference, monkeypatch):
    """LaMa's best.ckpt pickles omegaconf hyper-parameters: they must not need omegaconf, nor run code."""
    fake = types.ModuleType("fake_omegaconf")

    class DictConfig:
        def __init__(self, content):
            self.content = content

    DictConfig.__module__, DictConfig.__qualname__ = "fake_omegaconf", "DictConfig"
    fake.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "fake_omegaconf", fake)
    path = tmp_path / "best.ckpt"
    save_lama_checkpoint(tiny_generator, path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"] = {"config": DictConfig({"generator": {"kind": "ffc_resnet"}})}
    torch.save(checkpoint, path)
    monkeypatch.delitem(sys.modules, "fake_omegaconf")  # now a full unpickle would fail to import it

    real_load = torch.load

    def no_unsafe_load(*args, **kwargs):
        assert kwargs.get("weights_only") is True, "fell back to an unrestricted unpickle"
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", no_unsafe_load)
    model = load_inpainter("lama", weights=path, device="cpu")
    image, mask = _image(), _masks()
    assert (model(image, mask) - reference(image, mask)).abs().max() < 1e-5


# --------------------------------------------------------------------------------------------
# The random-weight script


def test_make_random_lama_script_writes_loadable_files(tmp_path, capsys):
    script = REPO / "scripts" / "make_random_lama.py"
    outputs = {"ckpt": tmp_path / "random.ckpt", "torchscript": tmp_path / "random.pt"}
    # As a command, from another directory (the script finds the package itself) ...
    run = subprocess.run([sys.executable, str(script), str(outputs["torchscript"]), "--format", "torchscript",
                          "--tiny", "--seed", "7"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert "not a trained model" in run.stdout
    # ... and its main() in-process (one torch start-up is enough for a test).
    spec = importlib.util.spec_from_file_location("make_random_lama", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(outputs["ckpt"]), "--tiny", "--seed", "7"]) == 0
    assert "ckpt" in capsys.readouterr().out
    assert weights_format(outputs["ckpt"]) == "torch"
    assert weights_format(outputs["torchscript"]) == "torchscript"
    image, mask = _image(), _masks()
    ckpt = load_inpainter("lama", weights=outputs["ckpt"], device="cpu")
    script_model = load_inpainter("lama", weights=outputs["torchscript"], device="cpu")
    assert ckpt.config == TINY_LAMA
    expected = LamaInpainter(random_lama_generator(TINY_LAMA, seed=7), "cpu")(image, mask)
    assert (ckpt(image, mask) - expected).abs().max() < 1e-5
    assert (script_model(image, mask) - expected).abs().max() < 1e-5
