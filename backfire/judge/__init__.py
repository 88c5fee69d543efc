"""Is the protection real? Metrics and the per-image verdict."""

from backfire.judge.verdict import Verdict, judge

__all__ = ["Verdict", "judge"]
