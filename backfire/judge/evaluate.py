"""The folder-level protocol of ../shared/EVALUATION.md: the paper's table, on any folder of images.

For every ``NAME.png`` + ``NAME_mask.png`` pair and every recipe (× budget): protect, save the 8-bit PNG,
read it back, and judge the saved file with :func:`backfire.judge.verdict.judge` (the one measuring
function, shared with ``backfire protect``/``verify``) for every attacker and benign family; with
robustness, judge each cleaned copy of the saved file again (attacker families only). Writes into
``out_dir``:

- ``cases.csv``: one row per image × recipe × budget × edit × transform (``none`` = the saved file);
- ``summary.md``: the paper-style tables (attacker and benign families, invisibility, robustness, FID,
  CLIP-FID, LPIPS, cost, the machine);
- ``report.html``: the same tables and, per case, thumbnails (``thumbs/``) of the original, the protected
  image and their edits; relative links only, so the folder can be moved or zipped;
- ``config.json``: versions, arguments, model, weights, recipe values;
- ``images/``: the protected PNGs that were judged.
"""

from __future__ import annotations

import csv
import html
import io as _io
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from backfire import __version__, io
from backfire import masks as mask_ops
from backfire.inpainters.base import Inpainter
from backfire.judge import fid
from backfire.judge.transforms import get_transforms
from backfire.judge.verdict import EditImages, EditResult, judge
from backfire.protect.engine import protect
from backfire.protect.recipes import Recipe

COLUMNS = ("image", "recipe", "budget_255", "family", "edit", "kind", "transform", "failed", "intact",
           "target_distance", "region_ssim_original", "region_ssim_protected", "region_psnr_original",
           "region_psnr_protected", "fidelity_ssim", "fidelity_psnr", "seconds")
THUMB = 128  # px, the long side of a thumbnail
Progress = Callable[[str], None]


@dataclass
class Table:
    """One table of the summary, rendered to Markdown and HTML from the same values."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Case:
    """One image under one recipe and budget: its measured edits and where its thumbnails are."""

    image: str
    recipe: str
    budget_255: float
    seconds_protect: float
    seconds_total: float
    invisibility: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    thumbs: list[tuple[str, str]] = field(default_factory=list)  # (label, relative path)
    skipped: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ checks


def _check_out_dir(folder: Path, out_dir: Path) -> None:
    """Never write into the input folder: refuse an ``out_dir`` equal to it or inside it."""
    source, target = folder.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise io.InputError(f"{out_dir}: the output folder must not be the input folder {folder} or inside it; "
                            f"choose another --out (default: {folder.name}-evaluation beside it)")
    if out_dir.exists() and not out_dir.is_dir():
        raise io.InputError(f"{out_dir}: is a file; --out must be a folder")


# ------------------------------------------------------------------------------------------ the run


def evaluate(
    folder: Path,
    out_dir: Path,
    inpainter: Inpainter | Sequence[Inpainter],
    recipes: Sequence[Recipe],
    budgets: Sequence[float | None] = (None,),
    families: Sequence[str] = mask_ops.FAMILIES,
    robustness: Sequence[str] = (),
    limit: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    steps: int | None = None,
    with_fid: bool = True,
    config: dict | None = None,
    max_pixels: int | None = io.DEFAULT_MAX_PIXELS,
) -> list[Case]:
    """Run the protocol on ``folder`` and write the reports into ``out_dir``; return the cases.

    Arguments:
        folder: ``NAME.png`` + ``NAME_mask.png`` pairs (``io.find_pairs``).
        out_dir: a new or existing folder outside ``folder``.
        inpainter: the model that protects and the model the attacker edits with (the same one); or
            several: the protection is against all of them (an ensemble), the attacker edits with the first.
        recipes: protection recipes to compare (side by side in one run: their seconds are comparable).
        budgets: L∞ budgets in [0, 1] units; ``None`` = each recipe's own.
        families: mask families (``backfire.masks``), attacker and benign.
        robustness: names of :data:`backfire.judge.transforms.TRANSFORMS` applied to x̃ before the
            attacker's edits (empty: none).
        limit: at most this many images (the first, by name).
        seed: seeds the protection's start and the random mask families.
        progress: called with one line per case.
        steps: overrides the recipes' step count.
        with_fid: compute FID over the set (needs the Inception weights, else "unavailable").
        config: extra values recorded in ``config.json`` (the CLI's arguments).
        max_pixels: refuse images larger than this (``io.read_image``).
    """
    folder, out_dir = Path(folder), Path(out_dir)
    ensemble = [inpainter] if isinstance(inpainter, Inpainter) else list(inpainter)
    inpainter = ensemble[0]
    for family in families:
        mask_ops.family_kind(family)  # unknown names fail before any work
    transforms = get_transforms(robustness)
    attacker_families = tuple(f for f in families if mask_ops.family_kind(f) == "attacker")
    if transforms and not attacker_families:
        raise ValueError("robustness needs at least one attacker family")
    if not recipes:
        raise ValueError("give at least one recipe")
    _check_out_dir(folder, out_dir)
    pairs = io.find_pairs(folder)[:limit]
    inputs = [p for pair in pairs for p in pair]
    for sub in ("", "images", "thumbs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    features = _FeatureSets(inpainter.device) if with_fid else None
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    cases: list[Case] = []
    plans = [(r, b) for r in recipes for b in budgets]
    total = len(pairs) * len(plans)
    for i, (image_path, mask_path) in enumerate(pairs):
        loaded = io.read_image(image_path, max_pixels=max_pixels)
        region = io.read_mask(mask_path, size=loaded.size, max_pixels=max_pixels).mask
        image = loaded.pixels
        if features is not None:
            features.add("originals", image[None])
        for j, (recipe, budget) in enumerate(plans):
            case = _evaluate_case(image_path, image, region, ensemble, recipe, budget, steps, families,
                                  attacker_families, transforms, seed, out_dir, inputs, features)
            cases.append(case)
            if progress is not None:
                progress(_progress_line(i * len(plans) + j + 1, total, case))

    _write_reports(out_dir, cases, families, list(transforms), inputs, features, inpainter, recipes, budgets,
                   steps, seed, config or {})
    return cases


def _evaluate_case(image_path: Path, image: Tensor, region: Tensor, ensemble: list[Inpainter], recipe: Recipe,
                   budget: float | None, steps: int | None, families: Sequence[str],
                   attacker_families: tuple[str, ...], transforms: dict, seed: int, out_dir: Path,
                   inputs: list[Path], features: _FeatureSets | None) -> Case:
    started = time.perf_counter()
    inpainter = ensemble[0]
    result = protect(image, region, ensemble, recipe, budget=budget, steps=steps, seed=seed)
    used = result.recipe
    budget_255 = round(used.budget * 255, 3)
    key = f"{image_path.stem}__{used.name}__b{budget_255:g}"
    saved_path = out_dir / "images" / f"{key}.png"
    io.save_image(result.protected, saved_path, protect_inputs=inputs)
    saved = io.read_image(saved_path).pixels  # every figure is about the file, never the float tensor

    verdict, fills = judge(image, saved, region, inpainter, result.target, tuple(families), seed=seed)
    measured = [(e, f, "none") for e, f in zip(verdict.edits, fills)]
    clean_fills = {f.name: f.original for f in fills}  # edits of the original do not change with the cleaning
    for name, transform in transforms.items():
        cleaned = transform(saved, seed=seed)
        robust, _ = judge(image, cleaned, region, inpainter, result.target, attacker_families, seed=seed,
                          clean_fills=clean_fills)
        measured.extend((e, None, name) for e in robust.edits)
    if features is not None:
        attacks = [(e, f) for e, f, t in measured if t == "none" and e.kind == "attacker"]
        if attacks:
            features.add("original fills", torch.stack([f.original for _, f in attacks]))
            features.add("protected fills", torch.stack([f.protected for _, f in attacks]))
    seconds = time.perf_counter() - started

    case = Case(image=image_path.name, recipe=used.name, budget_255=budget_255, seconds_protect=result.seconds,
                seconds_total=seconds, invisibility=verdict.invisibility, skipped=verdict.skipped)
    case.rows = [_row(case, e, t) for e, _, t in measured]
    case.thumbs = _write_thumbs(out_dir, key, image, saved, verdict.edits, fills, inputs)
    return case


def _row(case: Case, e: EditResult, transform: str) -> dict:
    row = {"image": case.image, "recipe": case.recipe, "budget_255": case.budget_255, "family": e.family,
           "edit": e.name, "kind": e.kind, "transform": transform,
           "failed": "" if e.failed is None else int(e.failed),
           "intact": "" if e.intact is None else int(e.intact),
           "target_distance": e.target_distance_protected,
           "region_ssim_original": e.region_ssim_original, "region_ssim_protected": e.region_ssim_protected,
           "region_psnr_original": e.region_psnr_original, "region_psnr_protected": e.region_psnr_protected,
           "fidelity_ssim": e.fidelity_ssim, "fidelity_psnr": e.fidelity_psnr,
           "seconds": round(case.seconds_protect, 4)}
    return {k: ("" if v is None else v) for k, v in row.items()}


def _progress_line(done: int, total: int, case: Case) -> str:
    plain = [r for r in case.rows if r["transform"] == "none"]
    attacks = [r for r in plain if r["kind"] == "attacker"]
    benign = [r for r in plain if r["kind"] == "benign"]
    return (f"[{done}/{total}] {case.image} {case.recipe} {case.budget_255:g}/255: "
            f"{sum(r['failed'] == 1 for r in attacks)}/{len(attacks)} attacker edits failed, "
            f"{sum(r['intact'] == 1 for r in benign)}/{len(benign)} benign intact, "
            f"{case.seconds_total:.1f} s")


# ------------------------------------------------------------------------------------------ thumbnails


def _png(image: Tensor) -> bytes:
    buffer = _io.BytesIO()
    io.to_pil(image, long_side=THUMB).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_thumbs(out_dir: Path, key: str, image: Tensor, saved: Tensor, edits: list[EditResult],
                  fills: list[EditImages], inputs: list[Path]) -> list[tuple[str, str]]:
    tiles = [("original", image), ("protected", saved)]
    for e, f in zip(edits, fills):
        if e.kind == "attacker":
            tiles += [(f"{e.name} of original", f.original), (f"{e.name} of protected", f.protected)]
        else:
            tiles.append((f"{e.name} (benign) of protected", f.protected))
    written = []
    for n, (label, tile) in enumerate(tiles):
        relative = f"thumbs/{key}__{n:02d}.png"
        io.write_bytes_atomic(out_dir / relative, _png(tile), protect_inputs=inputs)
        written.append((label, relative))
    return written


# ------------------------------------------------------------------------------------------ set metrics


class _FeatureSets:
    """Inception features of the originals and of the attacker's fills, gathered image by image."""

    def __init__(self, device: torch.device):
        self.sets: dict[str, list[Tensor]] = {}
        try:
            self.model: fid.InceptionFeatures | None = fid.InceptionFeatures(device)
            self.why = ""
        except fid.MetricUnavailable as error:
            self.model, self.why = None, str(error)

    def add(self, name: str, images: Tensor) -> None:
        if self.model is not None:
            self.sets.setdefault(name, []).append(self.model(images))

    def fid(self, name: str) -> tuple[str, int]:
        """FID of the set ``name`` against the originals, as text, and the set's size."""
        if self.model is None:
            return self.why.replace("FID unavailable", "unavailable"), 0
        a, b = torch.cat(self.sets.get(name, [torch.zeros(0, 2048)])), torch.cat(self.sets["originals"])
        if len(a) < 2 or len(b) < 2:
            return "unavailable: FID needs at least 2 images in each set", len(a)
        return f"{fid.frechet_distance(a, b):.2f}", len(a)


def clip_fid_status() -> str:
    """CLIP-FID needs CLIP ViT-B/32 weights on this machine; we only look in the usual caches."""
    home = Path.home()
    candidates = [*home.glob(".cache/huggingface/hub/models--*clip-vit-b-32*"),
                  *home.glob(".cache/huggingface/hub/models--*CLIP-ViT-B-32*"),
                  *home.glob(".cache/clip/ViT-B-32.pt"), *home.glob(".cache/open_clip/*ViT-B-32*"),
                  *home.glob(".cache/clean-fid/*ViT-B-32*")]
    if candidates:
        return (f"unavailable: CLIP ViT-B/32 weights found at {candidates[0]}, but this version of backfire "
                "does not compute CLIP-FID yet")
    return ("unavailable: no CLIP ViT-B/32 weights in the open_clip, clip, clean-fid or Hugging Face caches "
            "(backfire never downloads them)")


def lpips_status() -> str:
    """LPIPS needs the AlexNet/VGG backbone weights in the torch hub cache; we only look for them."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    found = sorted(checkpoints.glob("alexnet-*.pth")) + sorted(checkpoints.glob("vgg16-*.pth"))
    if found:
        return (f"unavailable: backbone weights found at {found[0]}, but this version of backfire does not "
                "compute LPIPS yet")
    return f"unavailable: no AlexNet/VGG16 weights in {checkpoints} (backfire never downloads them)"


# ------------------------------------------------------------------------------------------ machine and cost


def machine() -> str:
    """The platform and the processor (and the GPU, if one is used)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    text = f"{platform.platform()}; CPU {cpu} ({os.cpu_count()} logical cores, torch threads " \
           f"{torch.get_num_threads()})"
    if torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def peak_memory(device: torch.device) -> str:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory (CUDA)."""
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB GPU (torch.cuda.max_memory_allocated)"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return f"{rss_kib / 1024:.0f} MiB resident (getrusage max RSS, whole process)"


# ------------------------------------------------------------------------------------------ tables


def _mean(values) -> float:
    values = [float(v) for v in values if v != "" and v is not None and math.isfinite(float(v))]
    return sum(values) / len(values) if values else float("nan")


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(rows: list[dict], key: str) -> str:
    return f"{100 * sum(r[key] == 1 for r in rows) / len(rows):.0f} %" if rows else "–"


def tables(cases: list[Case], families: Sequence[str], transforms: list[str],
           features: _FeatureSets | None, device: torch.device) -> list[Table]:
    """Every table of the summary, per recipe × budget where it depends on them."""
    out: list[Table] = []
    groups: dict[tuple[str, float], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.recipe, case.budget_255), []).append(case)
    for (recipe, budget), group in groups.items():
        where = f"recipe `{recipe}`, budget {budget:g}/255, {len(group)} images"
        rows = [r for c in group for r in c.rows]
        plain = [r for r in rows if r["transform"] == "none"]
        attack_rows = []
        for family in (f for f in families if mask_ops.family_kind(f) == "attacker"):
            sel = [r for r in plain if r["family"] == family]
            attack_rows.append([family, str(len(sel)), _f(_mean(r["region_ssim_original"] for r in sel)),
                                _f(_mean(r["region_ssim_protected"] for r in sel)),
                                _f(_mean(r["region_psnr_original"] for r in sel), 1),
                                _f(_mean(r["region_psnr_protected"] for r in sel), 1), _pct(sel, "failed")])
        if attack_rows:
            out.append(Table(f"Attacker edits ({where})",
                             ["family", "edits", "region SSIM without", "region SSIM with",
                              "region PSNR without (dB)", "region PSNR with (dB)", "failure rate"], attack_rows,
                             "without = edits of the original x, with = edits of the protected file x̃."))
        benign_rows = []
        for family in (f for f in families if mask_ops.family_kind(f) == "benign"):
            sel = [r for r in plain if r["family"] == family]
            benign_rows.append([family, str(len(sel)), _f(_mean(r["fidelity_ssim"] for r in sel), 4),
                                _f(_mean(r["fidelity_psnr"] for r in sel), 1), _pct(sel, "intact")])
        if benign_rows:
            out.append(Table(f"Benign edits ({where})",
                             ["family", "edits", "fidelity SSIM", "fidelity PSNR (dB)", "intact rate"],
                             benign_rows, "Goal: fidelity SSIM ≥ 0.98 (fills of x̃ vs fills of x)."))
        inv = [c.invisibility for c in group]
        out.append(Table(f"Invisibility ({where})", ["PSNR (dB)", "SSIM", "L∞ mean (/255)", "L∞ max (/255)"],
                         [[_f(_mean(v["psnr"] for v in inv), 2), _f(_mean(v["ssim"] for v in inv), 4),
                           _f(_mean(v["linf_255"] for v in inv), 2), _f(max(v["linf_255"] for v in inv), 2)]]))
        if transforms:
            robust_rows = []
            for name in ["none", *transforms]:
                sel = [r for r in rows if r["transform"] == name and r["kind"] == "attacker"]
                robust_rows.append([name, str(len(sel)), _f(_mean(r["region_ssim_protected"] for r in sel)),
                                    _pct(sel, "failed")])
            out.append(Table(f"Robustness ({where})",
                             ["transform applied to x̃", "attacker edits", "region SSIM with", "failure rate"],
                             robust_rows, "none = the saved file itself."))
        out.append(Table(f"Cost ({where})", ["seconds per image (protect)", "seconds per image (protect + judge)"],
                         [[_f(_mean(c.seconds_protect for c in group), 2),
                           _f(_mean(c.seconds_total for c in group), 2)]]))
    out.append(_speed_table(groups))
    out.append(_side_by_side(groups, transforms))
    out.append(_set_table(features))
    out.append(Table("Machine", ["machine", "peak memory"], [[machine(), peak_memory(device)]]))
    return [t for t in out if t.rows]


def _speed_table(groups: dict[tuple[str, float], list[Case]]) -> Table:
    """Speed as a ratio to the paper recipe, measured side by side in this run (when it was run)."""
    paper = [c.seconds_protect for (r, _), g in groups.items() if r == "paper" for c in g]
    if not paper or len(groups) < 2:
        return Table("Speed relative to the paper recipe", [], [])
    base = _mean(paper)
    rows = [[f"{r} {b:g}/255", _f(_mean(c.seconds_protect for c in g), 2),
             _f(base / max(_mean(c.seconds_protect for c in g), 1e-9), 2)] for (r, b), g in groups.items()]
    return Table("Speed relative to the paper recipe", ["recipe", "seconds per image", "× faster than paper"], rows)


def _side_by_side(groups: dict[tuple[str, float], list[Case]], transforms: list[str]) -> Table:
    """The headline figures of every recipe × budget of the run in one table (the robust-recipe goals)."""
    if len(groups) < 2:
        return Table("Recipes side by side", [], [])
    paper = [c.seconds_protect for (r, _), g in groups.items() if r == "paper" for c in g]
    rows = []
    for (recipe, budget), group in groups.items():
        all_rows = [r for c in group for r in c.rows]
        attacks = [r for r in all_rows if r["kind"] == "attacker" and r["transform"] == "none"]
        benign = [r for r in all_rows if r["kind"] == "benign" and r["transform"] == "none"]
        families = sorted({r["family"] for r in attacks})
        per_family = [_mean(r["failed"] == 1 for r in attacks if r["family"] == f) for f in families]
        cleaned = [[r for r in all_rows if r["kind"] == "attacker" and r["transform"] == t] for t in transforms]
        worst = min(((_mean(r["failed"] == 1 for r in sel), t) for sel, t in zip(cleaned, transforms) if sel),
                    default=None)
        benign_families = sorted({r["family"] for r in benign})
        fidelity = min((_mean(r["fidelity_ssim"] for r in benign if r["family"] == f) for f in benign_families),
                       default=None)
        seconds = _mean(c.seconds_protect for c in group)
        rows.append([f"{recipe} {budget:g}/255", _pct([r for r in attacks if r["family"] == "exact"], "failed"),
                     "–" if not per_family else f"{100 * _mean(per_family):.0f} %",
                     "–" if worst is None else f"{100 * worst[0]:.0f} % ({worst[1]})",
                     _f(fidelity, 4), _f(_mean(c.invisibility["psnr"] for c in group), 2),
                     _f(seconds, 1), "–" if not paper else _f(seconds / _mean(paper), 2)])
    return Table("Recipes side by side",
                 ["recipe", "exact: failure rate", "attacker families: mean failure rate",
                  "worst failure rate after a cleaning", "benign fidelity SSIM (worst family mean)",
                  "invisibility PSNR (dB)", "seconds per image (protect)", "cost × paper"], rows,
                 "Goals of recipe `robust`: exact ≥ 95 %, families ≥ 90 %, after each cleaning ≥ 80 % "
                 "(JPEG 50 may be lower), benign ≥ 0.98, PSNR ≥ 38 dB, cost ≤ 3 × paper.")


def _set_table(features: _FeatureSets | None) -> Table:
    if features is None:
        fid_original = fid_protected = ("unavailable: not computed (--no-fid)", 0)
    else:
        fid_original, fid_protected = features.fid("original fills"), features.fid("protected fills")
    rows = [["FID (Inception-v3 pool, 2048-d)", f"{fid_original[0]}", f"{fid_protected[0]}",
             str(fid_original[1])],
            ["CLIP-FID (CLIP ViT-B/32)", clip_fid_status(), "", ""],
            ["LPIPS", lpips_status(), "", ""]]
    return Table("Set-level metrics (all recipes pooled)",
                 ["metric", "attacker fills of x vs x", "attacker fills of x̃ vs x", "fills"], rows,
                 "FID from a few dozen images is noisy and biased upward; compare values only within one run.")


def markdown(table: Table) -> str:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    parts = [f"## {table.title}", "", line(table.header), line(["---"] * len(table.header)),
             *(line(r) for r in table.rows)]
    if table.note:
        parts += ["", table.note]
    return "\n".join(parts) + "\n"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in table.rows)
    note = f"<p>{html.escape(table.note)}</p>" if table.note else ""
    return f"<h2>{html.escape(table.title.replace('`', ''))}</h2><table><tr>{head}</tr>{body}</table>{note}"


# ------------------------------------------------------------------------------------------ reports


def _write_reports(out_dir: Path, cases: list[Case], families: Sequence[str], transforms: list[str],
                   inputs: list[Path], features: _FeatureSets | None, inpainter: Inpainter,
                   recipes: Sequence[Recipe], budgets: Sequence[float | None], steps: int | None, seed: int,
                   config: dict) -> None:
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerows(case.rows)
    io.write_text_atomic(out_dir / "cases.csv", buffer.getvalue(), protect_inputs=inputs)

    all_tables = tables(cases, families, transforms, features, inpainter.device)
    title = f"backfire evaluation — model {inpainter.name}, {len({c.image for c in cases})} images"
    skipped = sorted({f"{c.image}: {', '.join(c.skipped)}" for c in cases if c.skipped})
    intro = (f"# {title}\n\nProtocol: ../shared/EVALUATION.md. Families: {', '.join(families)}. "
             f"Transforms: {', '.join(transforms) or 'none'}. Per-edit values: `cases.csv`.\n")
    if skipped:
        intro += "\nFamilies with no mask that fits (skipped): " + "; ".join(skipped) + "\n"
    summary = intro + "\n" + "\n".join(markdown(t) for t in all_tables)
    io.write_text_atomic(out_dir / "summary.md", summary, protect_inputs=inputs)
    io.write_text_atomic(out_dir / "report.html", _html(title, intro, all_tables, cases), protect_inputs=inputs)

    record = {
        "backfire": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "seed": seed, "model": inpainter.name, "weights": config.get("weights"), "device": str(inpainter.device),
        "families": list(families), "transforms": transforms, "steps": steps,
        "budgets_255": [None if b is None else b * 255 for b in budgets],
        "recipes": [r.but(steps=steps).as_dict() for r in recipes],
        "images": [c.image for c in cases], "arguments": config,
    }
    io.write_text_atomic(out_dir / "config.json", json.dumps(record, indent=2, default=str) + "\n",
                         protect_inputs=inputs)


def _html(title: str, intro: str, all_tables: list[Table], cases: list[Case]) -> str:
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #bbb;padding:2px 6px;font-size:13px}figure{display:inline-block;"
             "margin:3px;font-size:11px;max-width:140px;vertical-align:top}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>",
             "".join(f"<p>{html.escape(p)}</p>" for p in intro.splitlines()[1:] if p.strip()),
             *(html_table(t) for t in all_tables), "<h2>Images</h2>"]
    for case in cases:
        parts.append(f"<h3>{html.escape(case.image)} — {html.escape(case.recipe)} {case.budget_255:g}/255</h3><div>")
        parts += [f"<figure><img src='{html.escape(path)}' alt='{html.escape(label)}'>"
                  f"<figcaption>{html.escape(label)}</figcaption></figure>" for label, path in case.thumbs]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "".join(parts)
