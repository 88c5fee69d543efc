"""The ``backfire`` command: parse, call, print. The work itself lives in :mod:`backfire.jobs`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from backfire import __version__, io, jobs
from backfire import masks as mask_ops
from backfire.errors import ModelError
from backfire.inpainters.registry import available_models, load_inpainter, takes_options
from backfire.judge.verdict import Verdict
from backfire.progress import Progress
from backfire.protect.recipes import DEFAULT_RECIPE, RECIPES, get_recipe
from backfire.protect.targets import TARGET_KINDS

DEFAULT_MODEL = "backfire-s"
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NOT_PROTECTED = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (io.InputError, ModelError, ValueError) as error:
        print(f"backfire: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (MemoryError, torch.OutOfMemoryError) as error:
        print(f"backfire: error: out of memory ({type(error).__name__}); try a smaller image or another device; "
              "nothing half-written was left behind", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("backfire: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backfire",
        description="Protect regions of a photo against AI inpainting: masking the region and "
                    "inpainting fails, edits elsewhere still work.")
    parser.add_argument("--version", action="version", version=f"backfire {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    p = commands.add_parser("protect", help="protect an image (or a folder of NAME.png + NAME_mask.png)")
    _add_io(p, mask_help="the region to protect (white = protected); not used with a folder")
    _add_model(p)
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES), help="protection recipe")
    p.add_argument("--budget", type=float, default=None, metavar="B",
                   help="L∞ budget in /255 (default: the recipe's; paper: 0.025 = 6.375/255)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the recipe's)")
    p.add_argument("--target", choices=TARGET_KINDS, default=None,
                   help="what a failed edit shows (default: the recipe's; paper: solid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_protect)

    p = commands.add_parser("edit", help="inpaint the masked region, exactly as an attacker would")
    _add_io(p, mask_help="the region to inpaint (white = fill); not used with a folder")
    _add_model(p)
    p.set_defaults(run=run_edit)

    p = commands.add_parser("verify", help="check a protected image: do edits of the region fail?")
    p.add_argument("original", type=Path)
    p.add_argument("protected", type=Path)
    p.add_argument("--mask", type=Path, required=True, help="the protected region")
    _add_model(p)
    p.add_argument("--target", choices=TARGET_KINDS, default="solid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the verdict as JSON here")
    p.set_defaults(run=run_verify)

    p = commands.add_parser("export", help="write a LaMa-family model as TorchScript in big-lama.pt's convention")
    p.add_argument("--torchscript", type=Path, required=True, metavar="OUT",
                   help="output .pt file, called as model(image, mask) like IOPaint's big-lama.pt")
    _add_model(p)
    p.set_defaults(run=run_export)

    p = commands.add_parser("evaluate", help="the full evaluation protocol on a folder of NAME.png + NAME_mask.png")
    p.add_argument("folder", type=Path, help="a folder of NAME.png + NAME_mask.png pairs (never written to)")
    _add_model(p)
    p.add_argument("--recipe", nargs="+", default=[DEFAULT_RECIPE], choices=sorted(RECIPES),
                   help="recipes to compare side by side")
    p.add_argument("--budget", nargs="+", type=float, default=None, metavar="B",
                   help="L∞ budgets in /255 (default: each recipe's own)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: FOLDER-evaluation beside it)")
    p.add_argument("--families", nargs="+", default=list(mask_ops.FAMILIES), metavar="FAMILY",
                   help=f"mask families (default: all): {', '.join(mask_ops.FAMILIES)}")
    p.add_argument("--robustness", nargs="*", default=None, metavar="TRANSFORM",
                   help="also clean the protected image before each attacker edit; no names = every "
                        "transform of the protocol")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the recipe's)")
    p.add_argument("--no-fid", action="store_true", help="skip FID (saves the Inception passes)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser("mask", help="make a mask: faces, text or a box")
    p.add_argument("image", type=Path)
    found = p.add_mutually_exclusive_group(required=True)
    found.add_argument("--faces", action="store_true", help="every frontal face (OpenCV Haar cascade)")
    found.add_argument("--text", action="store_true", help="every text line (needs rapidocr-onnxruntime)")
    found.add_argument("--box", metavar="X,Y,W,H", help="a rectangle in pixels")
    p.add_argument("-o", "--out", type=Path, required=True, help="the mask PNG to write")
    p.add_argument("--grow", type=int, default=0, metavar="PX", help="dilate the mask by PX pixels")
    p.set_defaults(run=run_mask)

    p = commands.add_parser("app", help="protect, verify and batch in a local web page (extra: backfire[app])")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the models run")
    p.set_defaults(run=run_app)
    return parser


def _add_io(p: argparse.ArgumentParser, mask_help: str) -> None:
    p.add_argument("image", type=Path, help="an image, or a folder of NAME.png + NAME_mask.png")
    p.add_argument("--mask", type=Path, default=None, help=mask_help)
    p.add_argument("-o", "--out", type=Path, required=True, help="output file (a folder for a folder)")


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"inpainting model: {', '.join(available_models())}; protect and evaluate also take an "
                        "ensemble, NAME[=WEIGHTS],NAME[=WEIGHTS] (protected against all, judged on each)")
    p.add_argument("--weights", type=Path, default=None,
                   help="model weights file (sd-inpaint: a local diffusers folder or an id in the local HF cache)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--max-pixels", type=int, default=io.DEFAULT_MAX_PIXELS,
                   help="refuse images larger than this many pixels (default 40 MP)")
    diffusion = p.add_argument_group("diffusion models (sd-inpaint)")
    diffusion.add_argument("--prompt", default=None, help="the attacker's prompt (default empty)")
    diffusion.add_argument("--negative-prompt", default=None, help="negative prompt (default empty)")
    diffusion.add_argument("--sampler-steps", type=int, default=None, help="sampling steps of the edit (default 25)")
    diffusion.add_argument("--guidance", type=float, default=None,
                           help="classifier-free guidance scale, used when > 1 (default 7.5)")
    diffusion.add_argument("--sampler-seed", type=int, default=None,
                           help="seed of the edit's sampler (default 0: repeatable verdicts)")


_MODEL_OPTIONS = {"prompt": "prompt", "negative_prompt": "negative_prompt", "sampler_steps": "num_inference_steps",
                  "guidance": "guidance_scale", "sampler_seed": "seed"}
"""CLI argument → loader option; only the ones given are passed."""


def _load_model(args: argparse.Namespace, device: str | None = None):
    """``load_inpainter`` with the model flags of :func:`_add_model` (a model that takes none refuses them)."""
    models = _load_models(args, device)
    if len(models) > 1:
        raise ValueError(f"--model {args.model}: this command takes one model (only protect and evaluate take "
                         "several)")
    return models[0]


def _load_models(args: argparse.Namespace, device: str | None = None) -> list:
    """``--model a,b`` → the models of an ensemble, each written ``NAME`` or ``NAME=WEIGHTS``."""
    options = {option: getattr(args, flag) for flag, option in _MODEL_OPTIONS.items()
               if getattr(args, flag, None) is not None}
    entries = [e.strip() for e in args.model.split(",")]
    if not all(entries):
        raise ValueError(f"--model {args.model!r}: empty model name; write NAME or NAME=WEIGHTS, comma-separated")
    if len(entries) > 1 and args.weights is not None:
        raise ValueError("--weights names one model's weights; with several models write --model NAME=WEIGHTS,...")
    models = []
    for entry in entries:
        name, _, weights = entry.partition("=")
        if options and name.strip().lower() in available_models() and not takes_options(name):
            flags = ", ".join("--" + flag.replace("_", "-") for flag, option in _MODEL_OPTIONS.items()
                              if option in options)
            raise ValueError(f"model {name!r} takes no model options: {flags} are for diffusion models "
                             "(--model sd-inpaint)")
        models.append(load_inpainter(name, weights=weights or args.weights, device=device or args.device,
                                     **options))
    return models


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def run_protect(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe)
    budget = None if args.budget is None else args.budget / 255
    if budget is not None and not 0 < budget <= 1:
        raise ValueError(f"--budget must be in (0, 255], got {args.budget}")
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be ≥ 0, got {args.steps}")
    tasks = jobs.plan(args.image, args.mask, args.out)
    inpainters = _load_models(args)
    failures = 0
    for i, task in enumerate(tasks, 1):
        label = f"[{i}/{len(tasks)}] {task.image.name}" if len(tasks) > 1 else task.image.name
        try:
            verdicts = jobs.protect_task(
                task, inpainters, recipe, budget=budget, steps=args.steps, target=args.target, seed=args.seed,
                max_pixels=args.max_pixels, on_step=Progress(label, enabled=not args.quiet), log=_log)
        except io.InputError as error:
            if len(tasks) == 1:
                raise
            failures += 1
            _log(f"backfire: error: {error}")
            continue
        print(f"{task.out}  (report: {jobs.report_paths(task.out)[0]})")
        print("\n".join(format_verdict(v) for v in verdicts))
    if failures:
        _log(f"backfire: {failures} of {len(tasks)} images failed; the others were written")
        return EXIT_BAD_INPUT
    return EXIT_OK


def run_edit(args: argparse.Namespace) -> int:
    tasks = jobs.plan(args.image, args.mask, args.out)
    inpainter = _load_model(args)
    for task in tasks:
        jobs.edit_task(task, inpainter, args.max_pixels, _log)
        print(task.out)
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    if args.json is not None:
        io.check_not_input(args.json, [args.original, args.protected, args.mask])
    inpainter = _load_model(args)
    verdict = jobs.verify_files(args.original, args.protected, args.mask, inpainter, args.target, args.seed,
                                args.max_pixels, _log)
    print(format_verdict(verdict))
    if args.json is not None:
        jobs.write_json(args.json, verdict.as_dict(), [args.original, args.protected, args.mask])
    return EXIT_OK if verdict.protected else EXIT_NOT_PROTECTED


def run_export(args: argparse.Namespace) -> int:
    from backfire.inpainters.embedded import WEIGHTS

    inpainter = _load_model(args, device="cpu")
    # the shipped weights are never a valid output either, whichever model is exported
    path = jobs.export_torchscript(inpainter, args.torchscript, [p for p in [args.weights, WEIGHTS] if p])
    print(f"{path}: TorchScript, model(image N×3×H×W in [0,1], mask N×1×H×W) → N×3×H×W in [0,1]")
    return EXIT_OK


def run_evaluate(args: argparse.Namespace) -> int:
    from backfire.judge.evaluate import evaluate
    from backfire.judge.transforms import TRANSFORMS

    folder = args.folder
    if not folder.is_dir():
        raise io.InputError(f"{folder}: not a folder of NAME.png + NAME_mask.png pairs")
    out = args.out or folder.resolve().parent / f"{folder.resolve().name}-evaluation"
    budgets = [None] if args.budget is None else [b / 255 for b in args.budget]
    if any(b is not None and not 0 < b <= 1 for b in budgets):
        raise ValueError(f"--budget values must be in (0, 255], got {args.budget}")
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be ≥ 0, got {args.steps}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be ≥ 1, got {args.limit}")
    transforms = [] if args.robustness is None else (args.robustness or list(TRANSFORMS))
    inpainters = _load_models(args)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"}
    config["out"] = str(out)
    evaluate(folder, out, inpainters, [get_recipe(r) for r in args.recipe], budgets, args.families, transforms,
             args.limit, args.seed, None if args.quiet else _log, steps=args.steps, with_fid=not args.no_fid,
             config=config, max_pixels=args.max_pixels)
    print(f"{out / 'summary.md'}\n{out / 'report.html'}\n{out / 'cases.csv'}\n{out / 'config.json'}")
    return EXIT_OK


def run_mask(args: argparse.Namespace) -> int:
    from backfire import regions

    if args.grow < 0:
        raise ValueError(f"--grow must be ≥ 0, got {args.grow}")
    io.check_output(args.out, [args.image])
    if args.box is not None:
        box = regions.parse_box(args.box)  # checked before the image is read
    image = io.read_image(args.image, max_pixels=io.DEFAULT_MAX_PIXELS)
    if args.faces:
        mask = regions.face_mask(image.pixels)
    elif args.text:
        mask = regions.text_mask(image.pixels)
    else:
        mask = regions.box_mask(image.size, box)
    if args.grow:
        mask = mask_ops.dilate(mask, args.grow)
    io.save_mask(mask, args.out, protect_inputs=[args.image])
    print(f"{args.out}: {int(mask.sum())} px ({100 * float(mask.mean()):.1f} % of the image)")
    return EXIT_OK


def run_app(args: argparse.Namespace) -> int:
    import backfire.app as app  # no Gradio until serve()

    problem = app.missing()
    if problem is not None:
        _log(f"backfire: error: {problem}")
        return EXIT_BAD_INPUT
    app.serve(host=args.host, port=args.port, device=args.device)
    return EXIT_OK


def format_verdict(verdict: Verdict) -> str:
    """A short table a person can read in a terminal."""
    inv = verdict.invisibility
    lines = [f"  model {verdict.model}; invisibility: PSNR {inv['psnr']:.1f} dB, SSIM {inv['ssim']:.4f}, "
             f"L∞ {inv['linf_255']:.1f}/255",
             "  attacker edit   failed  distance to target (orig → prot)  region SSIM (orig → prot)"]
    for e in verdict.edits:
        if e.kind == "attacker":
            lines.append(f"  {e.name:<15} {'yes' if e.failed else 'no':<7} "
                         f"{e.target_distance_original:.3f} → {e.target_distance_protected:.3f}"
                         f"{'':<20}{e.region_ssim_original:.3f} → {e.region_ssim_protected:.3f}")
    lines.append("  benign edit     intact  fidelity SSIM  fidelity PSNR")
    for e in verdict.edits:
        if e.kind == "benign":
            lines.append(f"  {e.name:<15} {'yes' if e.intact else 'no':<7} {e.fidelity_ssim:.4f}"
                         f"         {e.fidelity_psnr:.1f} dB")
    attacks = [e for e in verdict.edits if e.kind == "attacker"]
    benign = [e for e in verdict.edits if e.kind == "benign"]
    word = "PROTECTED" if verdict.protected else "NOT PROTECTED"
    lines.append(f"  verdict: {word} — {sum(bool(e.failed) for e in attacks)}/{len(attacks)} attacker edits "
                 f"fail, {sum(bool(e.intact) for e in benign)}/{len(benign)} benign edits intact")
    if verdict.skipped:
        lines.append(f"  skipped (no mask of this kind fits): {', '.join(verdict.skipped)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
