"""A training run from start (or resume) to export: :func:`run_training`, what ``scripts/train_inpainter.py``
and the stand-in study call.

The run folder holds ``checkpoint.pt`` (:meth:`~backfire.train.trainer.Trainer.save_checkpoint`),
``generator_ema.safetensors`` (the EMA generator, :func:`backfire.inpainters.stemfed.export_trained`;
written beside every checkpoint, so a run killed hard still leaves usable weights), ``train_log.csv``
(:data:`CSV_FIELDS`, appended as it goes; a resume drops the rows after its checkpoint), ``config.json``
and, at the end, ``summary.json``. A run stops cleanly at its step count, at a wall-clock limit of this
process, at a budget of training CPU or wall time summed over resumes, on SIGTERM or on Ctrl-C.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from backfire.inpainters.stemfed import export_trained
from backfire.io import write_text_atomic
from backfire.train.config import TrainConfig
from backfire.train.data import load_crops
from backfire.train.trainer import Trainer

__all__ = ["CHECKPOINT", "CSV_FIELDS", "EXPORT", "LOG_CSV", "SUMMARY", "hardware_string", "run_training"]

CHECKPOINT = "checkpoint.pt"
EXPORT = "generator_ema.safetensors"
LOG_CSV = "train_log.csv"
SUMMARY = "summary.json"
CSV_FIELDS = ["step", "phase", "lr", "adv_w", "loss_g", "l1_hole", "l1_context", "ssim", "perceptual", "adv_g",
              "fm", "loss_d", "d_real", "d_fake", "grad_norm", "skipped", "val_psnr_hole", "val_ssim_hole",
              "val_l1_hole", "sec_per_step", "elapsed_s", "train_cpu_s"]


def hardware_string(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads, torch {torch.__version__}"


class _CsvLog:
    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():  # drop rows logged after the checkpoint
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(path, text.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


@dataclass(frozen=True)
class _Limits:
    """When a run stops early (0 = no limit): minutes of this process's wall clock, of training CPU time
    and of training wall time (both summed over resumes)."""

    time_limit_min: float = 0.0
    cpu_budget_min: float = 0.0
    wall_budget_min: float = 0.0

    @staticmethod
    def seconds(minutes: float) -> float:
        return minutes * 60 if minutes > 0 else math.inf


class _Session:
    """This process's part of a run: the trainer, its log, the validation and checkpoint timings, the clocks."""

    def __init__(self, trainer: Trainer, out: Path, csv_log: _CsvLog, hardware: str,
                 log: Callable[[str], None], t_start: float):
        self.trainer, self.out, self.csv_log, self.hardware, self.log = trainer, out, csv_log, hardware, log
        self.t_start = t_start
        self.val_seconds = self.ckpt_seconds = 0.0
        self.last_val: dict[str, float] = {}
        self.last_val_step = -1
        self.t_session, self.seconds_at_start = time.monotonic(), trainer.train_seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def train_seconds(self) -> float:
        """The run's training wall time: before this process, plus this process's since :meth:`train` began."""
        return self.seconds_at_start + time.monotonic() - self.t_session

    def validate(self) -> None:
        trainer, t = self.trainer, time.monotonic()
        self.last_val, self.last_val_step = trainer.validate(), trainer.step
        self.val_seconds = time.monotonic() - t
        if self.last_val:
            v = self.last_val
            self.log(f"step {trainer.step}: val hole PSNR {v['val_psnr_hole']:.3f} dB, SSIM {v['val_ssim_hole']:.4f}, "
                     f"L1 {v['val_l1_hole']:.4f} ({self.val_seconds:.1f} s)")
            self.csv_log.write({"step": trainer.step, "phase": "val", **v, "elapsed_s": self.elapsed()})

    def save(self) -> None:
        """Checkpoint, and the export beside it (so a run killed hard still leaves usable weights)."""
        trainer, t = self.trainer, time.monotonic()
        trainer.save_checkpoint(self.out / CHECKPOINT)
        export_trained(trainer.ema, self.out / EXPORT, {"steps": str(trainer.step), "hardware": self.hardware,
                                                        "train_cpu_seconds": f"{trainer.train_cpu_seconds:.1f}"})
        self.ckpt_seconds = time.monotonic() - t

    def _stop_reason(self, limits: _Limits, terminated: list[int]) -> str | None:
        """Why the run must stop before its next step (logged), or None."""
        trainer, step = self.trainer, self.trainer.step
        reserve = 1.5 * self.val_seconds + 2 * self.ckpt_seconds + 5.0
        if self.elapsed() + reserve >= _Limits.seconds(limits.time_limit_min):
            self.log(f"time limit {limits.time_limit_min:g} min reached at step {step}; stopping cleanly")
            return "time_limit"
        if trainer.train_cpu_seconds >= _Limits.seconds(limits.cpu_budget_min):
            self.log(f"CPU budget {limits.cpu_budget_min:g} min reached at step {step}; stopping cleanly")
            return "cpu_budget"
        if self.train_seconds() >= _Limits.seconds(limits.wall_budget_min):
            self.log(f"training-time budget {limits.wall_budget_min:g} min reached at step {step}; stopping cleanly")
            return "wall_budget"
        if terminated:
            self.log(f"SIGTERM at step {step}; stopping cleanly")
            return "terminated"
        return None

    def _log_train(self, acc: dict[str, float], n_acc: int, seconds: float) -> None:
        trainer, step = self.trainer, self.trainer.step
        row: dict[str, Any] = {k: v / n_acc for k, v in acc.items()}
        row.update(step=step, phase="train", lr=trainer.lr_at(step - 1), adv_w=trainer.adv_factor(step - 1),
                   skipped=trainer.skipped, sec_per_step=seconds / n_acc, elapsed_s=self.elapsed(),
                   train_cpu_s=trainer.train_cpu_seconds)
        self.log(f"step {step}: loss_g {row['loss_g']:.4f} l1_hole {row['l1_hole']:.4f} "
                 f"l1_ctx {row['l1_context']:.4f} ssim {row['ssim']:.4f} perc {row['perceptual']:.4f} "
                 f"adv {row['adv_g']:.3f} fm {row['fm']:.4f} loss_d {row['loss_d']:.3f} | "
                 f"{row['sec_per_step']:.3f} s/step, {self.elapsed() / 60:.1f} min")
        self.csv_log.write(row)

    def train(self, steps: int, limits: _Limits) -> str:
        """Train to ``steps`` or until a limit, validating and checkpointing on the config's schedule.
        Returns why it stopped: ``steps``, ``time_limit``, ``cpu_budget``, ``wall_budget``,
        ``terminated`` or ``interrupted``."""
        trainer, cfg = self.trainer, self.trainer.cfg
        stopped = "steps"
        terminated: list[int] = []
        try:  # SIGTERM (e.g. from `timeout`) stops cleanly like the time limit
            previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
        except ValueError:  # not the main thread
            previous_handler = None
        acc: dict[str, float] = {}
        n_acc, t_log, self.t_session = 0, time.monotonic(), time.monotonic()
        self.seconds_at_start = trainer.train_seconds
        try:
            while trainer.step < steps:
                reason = self._stop_reason(limits, terminated)
                if reason is not None:
                    stopped = reason
                    break
                cpu_before = time.process_time()
                losses = trainer.train_step()
                values = torch.stack([v.float() for v in losses.values()]).tolist()  # one transfer per step
                trainer.train_cpu_seconds += time.process_time() - cpu_before
                for k, v in zip(losses, values):
                    acc[k] = acc.get(k, 0.0) + v
                n_acc += 1
                step = trainer.step
                if step % cfg.log_every == 0 or step == steps:
                    now = time.monotonic()
                    self._log_train(acc, n_acc, now - t_log)
                    acc, n_acc, t_log = {}, 0, now
                if cfg.val_every and step % cfg.val_every == 0:
                    self.validate()
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    trainer.train_seconds = self.train_seconds()
                    self.save()
        except KeyboardInterrupt:
            stopped = "interrupted"
            self.log(f"interrupted at step {trainer.step}; saving")
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        return stopped


def _adopt_checkpoint_architecture(cfg: TrainConfig, ckpt_path: Path, log: Callable[[str], None]) -> None:
    """A resumed run's architecture and seed come from its checkpoint (``cfg`` is changed in place)."""
    saved = TrainConfig.from_dict(torch.load(ckpt_path, map_location="cpu", weights_only=False)["config"])
    changed = [f"{n}: {getattr(cfg, n)} → {getattr(saved, n)}" for n in TrainConfig.ARCH_FIELDS
               if getattr(cfg, n) != getattr(saved, n)]
    if changed:
        log(f"resume: architecture taken from the checkpoint ({'; '.join(changed)})")
    for n in TrainConfig.ARCH_FIELDS + ("seed",):
        setattr(cfg, n, getattr(saved, n))


def _start_trainer(cfg: TrainConfig, train: np.ndarray, val: np.ndarray, device: str, out: Path, resume: bool,
                   log: Callable[[str], None]) -> tuple[Trainer, int | None]:
    """A trainer, resumed from ``out``'s checkpoint when asked and there is one; and the step resumed from."""
    trainer = Trainer(cfg, train, val, device)
    if trainer.cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        trainer.load_checkpoint(ckpt_path)
        log(f"resumed from {ckpt_path} at step {trainer.step}")
        return trainer, trainer.step
    if resume:
        log(f"--resume: no checkpoint in {out}, starting from scratch")
    return trainer, None


def run_training(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, steps: int,
                 time_limit_min: float = 0.0, resume: bool = False, threads: int = 0,
                 device: str = "auto", log: Callable[[str], None] = print,
                 t_start: float | None = None, cpu_budget_min: float = 0.0,
                 crops: tuple[np.ndarray, np.ndarray] | None = None, validate: bool = True,
                 wall_budget_min: float = 0.0) -> dict[str, Any]:
    """Train to ``steps`` total steps, then save a checkpoint, export ``generator_ema.safetensors`` and
    write ``summary.json``. Returns the summary.

    Stops early, cleanly, at ``time_limit_min`` wall-clock minutes of this process, or when the run's
    training CPU time (``time.process_time`` of the training steps, summed over resumes; validation
    and checkpoints not counted) reaches ``cpu_budget_min`` — a budget that does not depend on what
    else runs on a shared machine; or when its training wall time, likewise summed over resumes, reaches
    ``wall_budget_min`` (the fair budget on a dedicated GPU, where host CPU time means little).
    ``crops`` (train, val) spares re-reading ``data_dir``.
    ``validate=False`` skips the validation at the start and the end (for a caller that measures the
    export itself; ``cfg.val_every`` still applies)."""
    t_start = time.monotonic() if t_start is None else t_start
    if threads > 0:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / CHECKPOINT).is_file():
        _adopt_checkpoint_architecture(cfg, out / CHECKPOINT, log)

    train, val = crops if crops is not None else load_crops(data_dir)
    trainer, resumed_from = _start_trainer(cfg, train, val, device, out, resume, log)
    csv_log = _CsvLog(out / LOG_CSV, resumed_from)
    n_g, n_d = Trainer.count_parameters(trainer.G, trainable_only=True), Trainer.count_parameters(trainer.D)
    hardware = hardware_string(trainer.device)
    log(f"data: {len(train)} training crops {train.shape[1]}×{train.shape[2]}, {len(val)} validation crops "
        f"{val.shape[1] if len(val) else 0}²; G {n_g / 1e6:.2f} M params, D {n_d / 1e6:.2f} M; {hardware}")
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    session = _Session(trainer, out, csv_log, hardware, log, t_start)
    baseline = trainer.validate(fill="mean") if validate else {}
    if baseline:
        log(f"val baseline (context-mean fill): hole PSNR {baseline['val_psnr_hole']:.2f} dB, "
            f"SSIM {baseline['val_ssim_hole']:.4f}")
    if trainer.step == 0 and validate:
        session.validate()
    stopped = session.train(steps, _Limits(time_limit_min, cpu_budget_min, wall_budget_min))
    trainer.close()
    trainer.train_seconds = session.train_seconds()
    if session.last_val_step != trainer.step and validate:
        session.validate()
    session.save()
    summary = {
        "config": asdict(cfg),
        "generator_config": asdict(cfg.generator_config()),
        "generator_params": n_g,
        "discriminator_params": n_d,
        "steps": trainer.step,
        "target_steps": steps,
        "stopped_by": stopped,
        "skipped_steps": trainer.skipped,
        "train_seconds": round(trainer.train_seconds, 1),
        "train_cpu_seconds": round(trainer.train_cpu_seconds, 1),
        "wall_seconds_this_process": round(session.elapsed(), 1),
        "hardware": hardware,
        "device": str(trainer.device),
        "data": {"dir": str(data_dir), "train_crops": int(len(train)), "val_crops": int(len(val)),
                 "train_size": list(train.shape[1:3]), "val_size": list(val.shape[1:3]) if len(val) else None},
        "val_baseline_mean_fill": baseline,
        "final_val": session.last_val,
        "export": EXPORT,
    }
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    trainer.close()
    log(f"done: {trainer.step} steps ({stopped}), {trainer.train_seconds / 60:.1f} min training; "
        f"wrote {out / EXPORT}, {out / LOG_CSV}, {out / SUMMARY}")
    return summary
