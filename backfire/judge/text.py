"""The verdict as a person reads it in a terminal: a short table of the edits, then the verdict in words.

``backfire protect`` and ``backfire verify`` print it (:func:`format_outcome`: the tables of each model and
strategy, then the one verdict over every trial), the app shows it beside its own sentences.
"""

from __future__ import annotations

from backfire.judge.colour import JND
from backfire.judge.curve import caveat
from backfire.judge.outcome import Outcome, each
from backfire.judge.verdict import Verdict

__all__ = ["format_curve", "format_outcome", "format_verdict"]

_ATTACKER_COLUMNS = (("distance to target", "target_distance"), ("region SSIM", "region_ssim"))
"""Pairs shown per attacker edit as ``original → protected`` (metric stems of :data:`~backfire.judge.verdict.ATTACKER_METRICS`)."""
_BENIGN_COLUMNS = (("fidelity SSIM", "fidelity_ssim", "{:.4f}"), ("fidelity PSNR", "fidelity_psnr", "{:.1f} dB"))


def format_verdict(verdict: Verdict) -> str:
    """A short table a person can read in a terminal, ending with the verdict in plain words."""
    inv = verdict.invisibility
    lines = [f"  {verdict.tool}; invisibility: PSNR {inv['psnr']:.1f} dB, SSIM {inv['ssim']:.4f}, "
             f"L∞ {inv['linf_255']:.1f}/255, ΔE00 mean {inv['delta_e_mean']:.2f}, p99 {inv['delta_e_p99']:.2f} "
             f"(one JND = {JND:g})",
             ("  attacker edit   failed  " + "".join(f"{title + ' (orig → prot)':<34}"
                                                  for title, _ in _ATTACKER_COLUMNS)).rstrip()]
    for e in verdict.attacker_edits:
        pairs = "".join(f"{e.metrics[stem + '_original']:.3f} → {e.metrics[stem + '_protected']:.3f}".ljust(34)
                        for _, stem in _ATTACKER_COLUMNS)
        lines.append(f"  {e.name:<15} {'yes' if e.failed else 'no':<7} {pairs}".rstrip())
    lines.append(("  benign edit     intact  " + "".join(f"{title:<15}" for title, _, _ in _BENIGN_COLUMNS)).rstrip())
    for e in verdict.benign_edits:
        values = "".join(form.format(e.metrics[key]).ljust(15) for _, key, form in _BENIGN_COLUMNS)
        lines.append(f"  {e.name:<15} {'yes' if e.intact else 'no':<7} {values}".rstrip())
    attacks, benign = verdict.attacker_edits, verdict.benign_edits
    word = "PROTECTED" if verdict.protected else "NOT PROTECTED"
    lines.append(f"  verdict: {word} — {sum(e.failed for e in attacks)}/{len(attacks)} attacker edits "
                 f"fail, {sum(e.intact for e in benign)}/{len(benign)} benign edits intact")
    lines.append(f"  {verdict.summary}")
    if verdict.skipped:
        lines.append(f"  skipped (no mask of this kind fits): {', '.join(verdict.skipped)}")
    return "\n".join(lines)


def format_outcome(outcome: Outcome) -> str:
    """Each model × strategy's table (draw 0, and the draw that decided when it is another), then the outcome
    over every trial: the one verdict, and the edit that decided it."""
    tables = [format_verdict(v) for v in each(outcome)]
    hidden = len(outcome.verdicts) - len(tables)
    more = [f"  … and {hidden} more draw{'s' if hidden != 1 else ''} judged (every one is in the JSON's "
            f"\"verdicts\")"] if hidden else []
    return "\n".join([*tables, *more, f"  overall: {outcome.summary}"])


def format_curve(rows: list[dict]) -> str:
    """A strength curve's rows (:func:`backfire.judge.curve.rows`) as a table per model, with what it measures."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"  strength curve (attacker edits: means over them), {caveat(model)}:",
                  "  budget   steps  attacker edits failed  distance to target  region SSIM  PSNR     ΔE00 p99"]
        for r in (r for r in rows if r["model"] == model):
            lines.append(f"  {r['budget_255']:<8g} {r['steps']:<6} {r['attacker_edits_failed']:>3}/{r['attacker_edits']:<18}"
                         f"{r['target_distance_protected']:<19.3f} {r['region_ssim_protected']:<12.3f} "
                         f"{r['psnr']:<5.1f} dB {r['delta_e_p99']:.2f}")
    return "\n".join(lines)
