"""Training masks, the training loop (loss goes down, bit-exact resume), the export, the data preparation."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.inpainters.ffc import FFCConfig, build_generator
from backfire.train.masks import FAMILIES, MAX_COVERAGE, MIN_COVERAGE, mask_family, random_mask
from backfire.inpainters.lama import export_generator
from backfire.train.config import TrainConfig
from backfire.train.data import load_crops
from backfire.train.losses import masked_ms_ssim
from backfire.train.run import run_training
from backfire.train.trainer import Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = TrainConfig(ngf=8, n_blocks=1, n_downsampling=2, ndf=8, d_layers=2, batch=4, lr=2e-3, lr_d=2e-3,
                   warmup_steps=1, adv_weight=0.0, log_every=1, val_every=0, ckpt_every=0, val_batch=4)


pytestmark = pytest.mark.usefixtures("one_thread")

def smooth_images(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth random colour gradients plus a few soft blobs, uint8 N×side×side×3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, side, side, 3), np.float64)
    for i in range(n):
        for c in range(3):
            a, b, c0 = rng.uniform(-0.5, 0.5, 3)
            img = 0.5 + a * xx + b * yy + 0.2 * c0
            for _ in range(3):
                cy, cx, r, amp = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(-0.3, 0.3)
                img += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
            out[i, ..., c] = img
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------- masks

def test_masks_cover_5_to_50_percent_and_are_seeded():
    for h, w in ((64, 64), (48, 80)):
        for seed in range(40):
            m = random_mask(h, w, np.random.default_rng(seed))
            assert m.dtype == bool and m.shape == (h, w)
            assert MIN_COVERAGE <= m.mean() <= MAX_COVERAGE
            assert np.array_equal(m, random_mask(h, w, np.random.default_rng(seed)))
    different = [random_mask(64, 64, np.random.default_rng(s)) for s in range(5)]
    assert any(not np.array_equal(different[0], d) for d in different[1:])


def test_every_family_draws_a_nonempty_mask():
    rng = np.random.default_rng(3)
    for family in FAMILIES:
        assert any(mask_family(family, 64, 64, rng).any() for _ in range(5)), family
    with pytest.raises(ValueError):
        mask_family("nope", 64, 64, rng)


# ------------------------------------------------------------------------------------------ losses

def test_masked_ms_ssim_is_one_on_identical_images_and_lower_otherwise():
    x = torch.from_numpy(smooth_images(2)).permute(0, 3, 1, 2).float() / 255
    m = torch.zeros(2, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    assert torch.allclose(masked_ms_ssim(x, x, m), torch.ones(2), atol=1e-5)
    y = x.clone()
    y[..., 8:24, 8:24] = 0.5
    assert (masked_ms_ssim(y, x, m) < 0.9).all()


# ---------------------------------------------------------------------------------------- training

def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    images = smooth_images(4)
    trainer = Trainer(TINY, images, None, "cpu")
    batch = trainer.batches[0]
    losses = [float(trainer.train_step(batch)["loss_g"]) for _ in range(15)]
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    assert trainer.step == 15 and trainer.skipped == 0


def _all_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for name, sd in (("G", trainer.G.state_dict()), ("D", trainer.D.state_dict()), ("EMA", trainer.ema.state_dict())):
        out.update({f"{name}.{k}": v for k, v in sd.items()})
    for name, opt in (("opt_g", trainer.opt_g), ("opt_d", trainer.opt_d)):
        for i, st in opt.state_dict()["state"].items():
            out.update({f"{name}.{i}.{k}": v for k, v in st.items() if isinstance(v, torch.Tensor)})
    return out


def assert_resume_is_bit_exact(cfg: TrainConfig, images: np.ndarray, path: Path, before: int, after: int,
                               cpu_seconds: float = 0.0) -> dict[str, torch.Tensor]:
    """Train ``before + after`` steps straight, and ``before`` steps, checkpoint (with ``cpu_seconds`` of
    training time on the clock), disturb the global RNGs, resume, ``after`` more: every weight and
    optimiser state must be equal. Returns the straight run's tensors."""
    straight = Trainer(cfg, images, None, "cpu")
    for _ in range(before + after):
        straight.train_step()
    first = Trainer(cfg, images, None, "cpu")
    for _ in range(before):
        first.train_step()
    first.train_cpu_seconds = cpu_seconds
    first.save_checkpoint(path)
    torch.manual_seed(123)  # the checkpoint must restore them
    np.random.seed(123)
    resumed = Trainer(cfg, images, None, "cpu")
    resumed.load_checkpoint(path)
    assert resumed.step == before and resumed.train_cpu_seconds == cpu_seconds
    for _ in range(after):
        resumed.train_step()
    a, b = _all_tensors(straight), _all_tensors(resumed)
    assert a.keys() == b.keys() and any(k.startswith("D.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return a


def test_resume_continues_bit_for_bit(tmp_path):
    cfg = replace(TINY, batch=2, adv_weight=0.1, adv_start=2, adv_ramp=2, grad_clip=1.0)
    images = smooth_images(5, seed=1)  # 5 crops, batch 2: the epoch boundary falls inside a batch
    trained = assert_resume_is_bit_exact(cfg, images, tmp_path / "ckpt.pt", 3, 3)
    untrained = Trainer(cfg, images, None, "cpu").G.state_dict()["model.1.ffc.convl2l.weight"]
    assert not torch.equal(trained["G.model.1.ffc.convl2l.weight"], untrained)


def test_batches_are_a_function_of_the_step_with_or_without_workers():
    images = smooth_images(5)
    plain = Trainer(TINY, images, None, "cpu")
    threaded = Trainer(replace(TINY, workers=1), images, None, "cpu")
    try:
        for step in (0, 1, 2, 7, 8):  # 2 → 7: a jump (as after a resume) restarts the workers
            for x, y in zip(plain.batches[step], threaded._batch(step)):
                assert np.array_equal(x, np.asarray(y))
    finally:
        threaded.close()


def test_export_loads_strictly_into_build_generator(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    trainer = Trainer(TINY, smooth_images(4), None, "cpu")
    trainer.train_step()
    path = tmp_path / "g.safetensors"
    export_generator(trainer.ema, path, TINY.generator_config())
    state = load_file(str(path))
    assert all(k.startswith("model.") for k in state)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    with safe_open(str(path), "pt") as f:
        config = FFCConfig(**json.loads(f.metadata()["ffc_config"]))
    model = build_generator(config)
    model.load_state_dict(state, strict=True)
    assert config == TINY.generator_config()


def test_run_training_writes_outputs_and_resumes(tmp_path):
    pytest.importorskip("safetensors")  # the export; not yet in pyproject's dependencies
    data = tmp_path / "data"
    data.mkdir()
    np.savez_compressed(data / "crops.npz", train=smooth_images(6), val=smooth_images(2, seed=9))
    run = tmp_path / "run"
    logs: list[str] = []
    cfg = replace(TINY, adv_weight=0.1, adv_start=1, ckpt_every=2, val_every=2, log_every=1)
    summary = run_training(cfg, data, run, steps=2, threads=1, device="cpu", log=logs.append)
    assert summary["steps"] == 2 and summary["stopped_by"] == "steps"
    for name in ("generator_ema.safetensors", "train_log.csv", "summary.json", "checkpoint.pt"):
        assert (run / name).is_file(), name
    assert set(summary["final_val"]) == {"val_psnr_hole", "val_ssim_hole", "val_l1_hole"}
    summary = run_training(replace(cfg), data, run, steps=3, resume=True, threads=1, device="cpu", log=logs.append)
    assert summary["steps"] == 3 and any("resumed from" in line for line in logs)
    rows = (run / "train_log.csv").read_text().splitlines()
    assert rows[0].startswith("step,phase") and rows[-1].split(",")[0] == "3"
    # a wall-clock limit already spent: stops before any new step, still checkpoints and exports
    summary = run_training(replace(cfg), data, run, steps=10, time_limit_min=1e-6, resume=True, threads=1,
                           device="cpu", log=logs.append)
    assert summary["stopped_by"] == "time_limit" and summary["steps"] == 3


# -------------------------------------------------------------------------------------------- data

def _load_prepare():
    spec = importlib.util.spec_from_file_location("prepare_data", ROOT / "scripts" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_splits_by_file_and_never_reads_eval(tmp_path):
    from PIL import Image

    prepare = _load_prepare()
    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for d in ("train_scene", "train_object", "eval_face", "copyright"):
        (photos / d).mkdir(parents=True)
    names = [f"scratch__Media__pic{i:02d}.png" for i in range(14)]
    for name in names:
        img = np.kron(rng.integers(0, 256, (9, 9, 3)), np.ones((34, 34, 1))).astype(np.uint8)  # 306², distinct
        Image.fromarray(img).save(photos / "train_scene" / name)
    (photos / "eval_face" / "face.jpg").write_bytes(b"not an image: reading it would fail")
    (photos / "copyright" / "scratch").write_text("Files: *\nCopyright: someone\nLicense: GPL-2\n")
    out = tmp_path / "out"
    assert prepare.main([str(out), "--photos", str(photos), "--val-fraction", "0.3", "--train-crops", "20",
                         "--max-mib", "1"]) == 0
    train, val = load_crops(out)
    splits = json.loads((out / "splits.json").read_text())
    assert splits["val"] and splits["train"] and not set(splits["val"]) & set(splits["train"])
    assert set(splits["val"]) | set(splits["train"]) == set(names)
    assert train.shape[1:] == (128, 128, 3) and train.dtype == np.uint8 and len(train) >= len(splits["train"])
    assert val.shape == (2 * len(splits["val"]), 256, 256, 3)
    assert (out / "crops.npz").stat().st_size <= 2**20
    assert "GPL-2" in (out / "SOURCES.md").read_text() and (out / "copyright" / "scratch").is_file()
