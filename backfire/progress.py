"""A dependency-free progress line on stderr for long work (optimisation steps, folders)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Shows ``label [#####     ] 12/20  loss 0.123  2.1 s/step`` and redraws it in place on a terminal.

    Off a terminal (logs, CI) it prints a plain line at most every ``every_s`` seconds and at the end,
    so logs stay readable.
    """

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True, every_s: float = 10.0):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every_s = every_s
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.perf_counter()
        self.last_print = -float("inf")

    def __call__(self, done: int, total: int, loss: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        final = done >= total
        if not self.tty and not final and now - self.last_print < self.every_s:
            return
        self.last_print = now
        width = 24
        filled = round(width * done / max(total, 1))
        rate = (now - self.started) / max(done, 1)
        line = f"{self.label} [{'#' * filled}{' ' * (width - filled)}] {done}/{total}"
        if loss is not None:
            line += f"  loss {loss:.4g}"
        line += f"  {rate:.2f} s/step"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
