"""``backfire evaluate``: the folder-level protocol of docs/evaluation.md and its reports.

It sits above :mod:`backfire.jobs` and walks the same road for every image of a folder (read → protect →
save → read back → judge every trial → JSON and preview, :func:`backfire.jobs.protect_task`):
:mod:`backfire.evaluate.run` measures, :mod:`backfire.evaluate.report` writes what was measured (``cases.csv``, ``summary.md``, ``report.html``,
``config.json``).
"""

from backfire.evaluate.report import COLUMNS
from backfire.evaluate.run import EvaluationConfig, evaluate

__all__ = ["COLUMNS", "EvaluationConfig", "evaluate"]
