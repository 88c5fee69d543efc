"""``backfire evaluate``'s reports: the cases as ``cases.csv``, the paper-style tables as ``summary.md`` and
``report.html`` (with thumbnails), the run as ``config.json``; and the machine it ran on.

Everything here renders values already measured (:mod:`backfire.evaluate.run` measures); one table is
built once and written both as Markdown and as HTML.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from backfire import __version__, io
from backfire import masks as mask_ops
from backfire.judge.sets import FeatureSets
from backfire.judge.verdict import ATTACKER_METRICS, BENIGN_METRICS, EditImages, EditResult
from backfire.pixels import to_pil

COLUMNS: tuple[str, ...] = ("image", "recipe", "budget_255", "family", "edit", "kind", "transform", "failed",
                            "intact", *ATTACKER_METRICS, *BENIGN_METRICS, "seconds")
"""``cases.csv``: one row per image × recipe × budget × edit × transform; the metric columns are the
verdict's own metric names."""
THUMB = 128  # px, the long side of a thumbnail
PROTOCOL = "docs/evaluation.md"


@dataclass
class Table:
    """One table of the summary, rendered to Markdown and HTML from the same values."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Case:
    """One image under one recipe and budget (and the recipe's steps, ``--steps`` applied): its measured edits and
    where its thumbnails are."""

    image: str
    recipe: str
    budget_255: float
    steps: int
    seconds_protect: float
    seconds_total: float
    invisibility: dict[str, float]
    rows: list[dict] = field(default_factory=list)
    thumbs: list[tuple[str, str]] = field(default_factory=list)  # (label, relative path)
    skipped: list[str] = field(default_factory=list)


def row(case: Case, edit: EditResult, transform: str) -> dict:
    """One ``cases.csv`` row (empty cells where a field belongs to the other kind of edit)."""
    outcome = {"failed": int(edit.failed)} if edit.kind == "attacker" else {"intact": int(edit.intact)}
    values = {"image": case.image, "recipe": case.recipe, "budget_255": case.budget_255, "family": edit.family,
              "edit": edit.name, "kind": edit.kind, "transform": transform, **outcome, **edit.metrics,
              "seconds": round(case.seconds_protect, 4)}
    return {column: values.get(column, "") for column in COLUMNS}


# ------------------------------------------------------------------------------------------ thumbnails


def _png(image: Tensor) -> bytes:
    buffer = _io.BytesIO()
    to_pil(image, long_side=THUMB).save(buffer, format="PNG")
    return buffer.getvalue()


def write_thumbs(out_dir: Path, key: str, image: Tensor, saved: Tensor, edits: list[EditResult],
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
           features: FeatureSets, device: torch.device) -> list[Table]:
    """Every table of the summary, per recipe × budget where it depends on them."""
    out: list[Table] = []
    groups: dict[tuple[str, float], list[Case]] = {}
    for case in cases:
        groups.setdefault((case.recipe, case.budget_255), []).append(case)
    for (recipe, budget), group in groups.items():
        steps = group[0].steps  # one recipe's steps in one run (--steps overrides every recipe's alike)
        where = f"recipe `{recipe}`, budget {budget:g}/255, {steps} step{'s' * (steps != 1)}, {len(group)} images"
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


def _set_table(features: FeatureSets) -> Table:
    rows = [[m.label, *m.values, str(m.fills), str(m.originals)] for m in features.results()]
    return Table("Set-level metrics (all recipes pooled)",
                 ["metric", "attacker fills of x vs x", "attacker fills of x̃ vs x", "fills", "originals"], rows,
                 "FID and CLIP-FID: Fréchet distances of the fills' features to the originals' (CLIP-FID as "
                 "clean-fid computes it); LPIPS: the mean distance of each fill to its original. From a few dozen "
                 "images they are noisy and FID is biased upward: compare values only within one run. "
                 "The weights used: config.json.")


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



# ------------------------------------------------------------------------------------------ files


def write_reports(out_dir: Path, cases: list[Case], config, inputs: list[Path], features: FeatureSets,
                  inpainter) -> None:
    """``cases.csv``, ``summary.md``, ``report.html`` and ``config.json`` of an evaluation
    (``config``: its :class:`~backfire.evaluate.run.EvaluationConfig`)."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerows(case.rows)
    io.write_text_atomic(out_dir / "cases.csv", buffer.getvalue(), protect_inputs=inputs)

    transforms = list(config.transforms)
    all_tables = tables(cases, config.families, transforms, features, inpainter.device)
    title = f"backfire evaluation — model {inpainter.name}, {len({c.image for c in cases})} images"
    skipped = sorted({f"{c.image}: {', '.join(c.skipped)}" for c in cases if c.skipped})
    intro = (f"# {title}\n\nProtocol: {PROTOCOL} (in backfire's repository). Families: "
             f"{', '.join(config.families)}. Transforms: {', '.join(transforms) or 'none'}. "
             "Per-edit values: `cases.csv`.\n")
    if skipped:
        intro += "\nFamilies with no mask that fits (skipped): " + "; ".join(skipped) + "\n"
    summary = intro + "\n" + "\n".join(markdown(t) for t in all_tables)
    io.write_text_atomic(out_dir / "summary.md", summary, protect_inputs=inputs)
    io.write_text_atomic(out_dir / "report.html", _html(title, intro, all_tables, cases), protect_inputs=inputs)

    record = {
        "backfire": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "seed": config.seed, "model": inpainter.name, "weights": config.arguments.get("weights"),
        "device": str(inpainter.device), "families": list(config.families), "transforms": transforms,
        "steps": config.steps, "budgets_255": [None if b is None else b * 255 for b in config.budgets],
        "recipes": [r.but(steps=config.steps).as_dict() for r in config.recipes],
        "images": [c.image for c in cases], "arguments": config.arguments,
        "set_metrics": features.record(),
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
