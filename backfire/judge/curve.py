"""The strength curve: what a protection does, and how it shows, at every budget × steps — against one model.

A :class:`Point` is one photo protected at one setting (recipe, budget, steps) and judged on one model: its
attacker edits, each decided over that model's trials (:meth:`backfire.judge.outcome.Outcome.decided`, the unit
of "protected"), and the photo's :func:`~backfire.judge.verdict.invisibility`. :func:`rows` adds the points up
per model × recipe × budget × steps (``curve.csv`` of ``backfire evaluate``, ``OUT.curve.csv`` of
``backfire protect --curve``); :func:`svg` draws them with no plotting library: failure rate against the budget
and against the 99th-percentile ΔE00, and the fill's distance to the target against the budget, one line per
recipe × steps. Every curve is a property of the model it was measured on, and says so (:func:`caveat`).
"""

from __future__ import annotations

import csv
import io as _io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from backfire.inpainters.registry import shipped
from backfire.judge.colour import JND
from backfire.judge.outcome import Outcome
from backfire.judge.verdict import FAIL_DISTANCE, INVISIBILITY_METRICS, AttackerEdit
from backfire.protect.recipes import Recipe

__all__ = ["COLUMNS", "Point", "caveat", "csv_text", "points", "rows", "svg"]

COLUMNS: tuple[str, ...] = (
    "model", "recipe", "budget_255", "steps", "images", "attacker_edits", "attacker_edits_failed", "failure_rate",
    "target_distance_original", "target_distance_protected", "region_ssim_original", "region_ssim_protected",
    *INVISIBILITY_METRICS)
"""``curve.csv``: one row per model × recipe × budget × steps. The edit measures are means over every attacker
edit of every photo (the names of :data:`~backfire.judge.verdict.ATTACKER_METRICS`), the invisibility measures
means over the photos."""
_EDIT_MEANS = ("target_distance_original", "target_distance_protected", "region_ssim_original",
               "region_ssim_protected")


@dataclass(frozen=True)
class Point:
    """One photo protected at one setting and judged on one model."""

    model: str
    recipe: str
    budget_255: float
    steps: int
    invisibility: Mapping[str, float]
    attacks: tuple[AttackerEdit, ...]


def points(outcome: Outcome, recipe: Recipe) -> list[Point]:
    """The points of one photo's outcome, one per model judged (an ensemble's models each get their own curve:
    each edit decided over that model's trials only)."""
    found = []
    for model in outcome.models:
        own = Outcome([v for v in outcome.verdicts if v.model == model], outcome.draws)
        attacks = tuple(d.edit for d in own.attacker_edits if isinstance(d.edit, AttackerEdit))
        found.append(Point(model, recipe.name, recipe.budget_255, recipe.steps, own.verdicts[0].invisibility, attacks))
    return found


def _mean(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else math.nan


def rows(found: Sequence[Point]) -> list[dict]:
    """The curve's rows (:data:`COLUMNS`), in the order the settings were first met."""
    groups: dict[tuple, list[Point]] = {}
    for point in found:
        groups.setdefault((point.model, point.recipe, point.budget_255, point.steps), []).append(point)
    out = []
    for (model, recipe, budget, steps), group in groups.items():
        edits = [e for p in group for e in p.attacks]
        failed = sum(e.failed for e in edits)
        row = {"model": model, "recipe": recipe, "budget_255": budget, "steps": steps, "images": len(group),
               "attacker_edits": len(edits), "attacker_edits_failed": failed,
               "failure_rate": failed / len(edits) if edits else math.nan}
        row.update({m: _mean(e.metrics[m] for e in edits) for m in _EDIT_MEANS})
        row.update({m: _mean(p.invisibility[m] for p in group) for m in INVISIBILITY_METRICS})
        out.append(row)
    return out


def csv_text(curve: Sequence[dict]) -> str:
    """The rows as CSV (empty cells where a mean had nothing to average)."""
    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in curve:
        writer.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()})
    return buffer.getvalue()


def caveat(model: str) -> str:
    """What a curve measured on ``model`` says, and what it does not."""
    if model in shipped():
        return (f"measured against {model} only: a property of {model}, not of real models (a stand-in shipped "
                f"with backfire; measure the models attackers run the same way)")
    return f"measured against {model} only (these weights): another model needs a curve of its own"


# ------------------------------------------------------------------------------------------ the plot

_W, _H = 300, 210                 # one panel's plot area, px
_LEFT, _TOP, _GAP = 56, 44, 36    # margins around a panel
_BLOCK = _TOP + _H + 66           # one model's panels, with their axis titles
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


@dataclass(frozen=True)
class _Panel:
    title: str
    x: str          # a row's key
    y: str
    x_label: str
    y_label: str
    log_x: bool
    percent: bool   # y in [0, 1] shown as %
    rule: tuple[str, float, str] | None = None  # ("x" | "y", value, label): a reference line


_PANELS = (
    _Panel("attacker edits failed vs budget", "budget_255", "failure_rate", "L∞ budget (/255, log scale)",
           "attacker edits failed", True, True),
    _Panel("attacker edits failed vs visibility", "delta_e_p99", "failure_rate", "ΔE00 p99 of the photo",
           "attacker edits failed", False, True, ("x", JND, f"one JND ({JND:g})")),
    _Panel("fill distance to target vs budget", "budget_255", "target_distance_protected",
           "L∞ budget (/255, log scale)", "fill distance to target (mean)", True, False,
           ("y", FAIL_DISTANCE, f"failed at ≤ {FAIL_DISTANCE:g} (solid, inverted)")),
)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _ticks(low: float, high: float, log: bool, present: Sequence[float]) -> list[float]:
    if log:
        return sorted(set(present))
    step = 10 ** math.floor(math.log10(max(high - low, 1e-9) / 4))
    step *= next(m for m in (1, 2, 5, 10) if (high - low) / (step * m) <= 5)
    return [low + i * step for i in range(int((high - low) / step + 1e-9) + 1)]


def _panel(panel: _Panel, curve: Sequence[dict], series: list[tuple[str, int]], left: float, top: float) -> list[str]:
    """One panel's SVG elements: axes, ticks, a reference line, one path (and its markers) per series."""
    xs = [r[panel.x] for r in curve if _finite(r[panel.x]) and _finite(r[panel.y])]
    ys = [r[panel.y] for r in curve if _finite(r[panel.x]) and _finite(r[panel.y])]
    if panel.rule and panel.rule[0] == "x":
        xs = [*xs, panel.rule[1]]
    if panel.log_x:
        lo, hi = (math.log(min(xs)), math.log(max(xs))) if xs else (0.0, 1.0)
    else:
        lo, hi = 0.0, (max(xs) * 1.08 if xs else 1.0)
    y_hi = 1.0 if panel.percent else max([*ys, panel.rule[1] if panel.rule else 0.0, 0.05]) * 1.1
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5

    def px(x: float) -> float:
        return left + _W * ((math.log(x) if panel.log_x else x) - lo) / (hi - lo)

    def py(y: float) -> float:
        return top + _H * (1 - y / y_hi)

    out = [f'<text x="{left + _W / 2:.1f}" y="{top - 10}" text-anchor="middle" font-weight="bold">'
           f'{escape(panel.title)}</text>',
           f'<rect x="{left}" y="{top}" width="{_W}" height="{_H}" fill="none" stroke="#888"/>']
    present = sorted({r[panel.x] for r in curve if _finite(r[panel.x])})
    for tick in _ticks(0.0 if not panel.log_x else min(xs or [1]), hi, panel.log_x, present):
        if panel.log_x or tick <= hi:
            x = px(tick)
            out.append(f'<line x1="{x:.1f}" y1="{top + _H}" x2="{x:.1f}" y2="{top + _H + 4}" stroke="#888"/>'
                       f'<text x="{x:.1f}" y="{top + _H + 16}" text-anchor="middle">{tick:g}</text>')
    for tick in _ticks(0.0, y_hi, False, []):
        y = py(tick)
        label = f"{100 * tick:.0f} %" if panel.percent else f"{tick:g}"
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left + _W}" y2="{y:.1f}" stroke="#eee"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    out.append(f'<text x="{left + _W / 2:.1f}" y="{top + _H + 34}" text-anchor="middle">{escape(panel.x_label)}</text>'
               f'<text transform="translate({left - 42},{top + _H / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f'{escape(panel.y_label)}</text>')
    if panel.rule:
        axis, value, label = panel.rule
        if axis == "x":
            x = px(value)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + _H}" stroke="#555" '
                       f'stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{top + 12}">{escape(label)}</text>')
        else:
            y = py(value)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + _W}" y2="{y:.1f}" stroke="#555" '
                       f'stroke-dasharray="4 3"/><text x="{left + 4}" y="{y - 4:.1f}">{escape(label)}</text>')
    for n, (recipe, steps) in enumerate(series):
        mine = sorted(((r[panel.x], r[panel.y]) for r in curve if (r["recipe"], r["steps"]) == (recipe, steps)
                       and _finite(r[panel.x]) and _finite(r[panel.y])))
        colour = _COLOURS[n % len(_COLOURS)]
        d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(mine))
        out.append(f'<path class="series" data-recipe="{escape(recipe)}" data-steps="{steps}" d="{d or "M0,0"}" '
                   f'fill="none" stroke="{colour}" stroke-width="2"/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in mine]
    return out


def svg(curve: Sequence[dict]) -> str:
    """The curve as a standalone SVG document: per model, the three panels side by side, one line per recipe ×
    steps, and the model's :func:`caveat` above them."""
    models = list(dict.fromkeys(r["model"] for r in curve))
    width = 3 * (_LEFT + _W) + 2 * _GAP + 20
    height = max(1, len(models)) * (_BLOCK + 40)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    for m, model in enumerate(models):
        mine = [r for r in curve if r["model"] == model]
        series = list(dict.fromkeys((r["recipe"], r["steps"]) for r in mine))
        top = m * (_BLOCK + 40)
        parts.append(f'<g class="model" data-model="{escape(model)}">'
                     f'<text x="10" y="{top + 16}" font-size="13" font-weight="bold">Strength curve, '
                     f'{escape(model)}</text><text x="10" y="{top + 32}" font-size="12">'
                     f'{escape(caveat(model))}</text>')
        legend = "   ".join(f"{recipe}, {steps} steps" for recipe, steps in series)
        for n, (recipe, steps) in enumerate(series):
            x = 10 + 150 * n
            parts.append(f'<line x1="{x}" y1="{top + 43}" x2="{x + 18}" y2="{top + 43}" '
                         f'stroke="{_COLOURS[n % len(_COLOURS)]}" stroke-width="2"/>'
                         f'<text x="{x + 22}" y="{top + 47}">{escape(f"{recipe}, {steps} steps")}</text>')
        parts.append(f"<title>{escape(legend)}</title>")
        for p, panel in enumerate(_PANELS):
            parts += _panel(panel, mine, series, _LEFT + p * (_LEFT + _W + _GAP), top + _TOP + 34)
        parts.append("</g>")
    parts.append("</svg>\n")
    return "\n".join(parts)
