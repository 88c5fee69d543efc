"""Progress bars on stderr for every phase that takes more than a second (tqdm)."""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm


class Progress:
    """A tqdm bar fed by backfire's callbacks: ``progress(done, total, loss=None)``.

    It is drawn as soon as it is made (``total`` known up front), so the first step's wait is visible.
    Off a terminal (logs, CI) it redraws at most every ``every_s`` seconds, so logs stay readable.

    Examples::

        >>> bar = Progress("photo.png", total=20)
        >>> protect(image, region, model, on_step=bar)      # photo.png:  45%|████▌     | 9/20 [00:21<00:26, loss=0.41]
    """

    def __init__(self, label: str, total: int | None = None, unit: str = "step", enabled: bool = True,
                 stream: TextIO | None = None, every_s: float = 10.0):
        self.label, self.unit, self.enabled = label, unit, enabled
        self.stream = stream or sys.stderr
        tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if tty else every_s
        self.bar: tqdm | None = None
        if enabled and total is not None:
            self._open(total)

    def _open(self, total: int) -> tqdm:
        self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=self.stream, mininterval=self.interval,
                        dynamic_ncols=True, leave=True)
        return self.bar

    def __call__(self, done: int, total: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        bar = self.bar if self.bar is not None and self.bar.total == total else self._open(total)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            self.bar = None  # fed again from the start (the next rung of a budget search): a new bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
