"""``backfire app``: the CLI's protect, verify and batch jobs in a local web page (extra ``backfire[app]``).

Importing this package is cheap and needs no extra; :func:`serve` imports Gradio.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import signal
import sys
import tempfile
from pathlib import Path

EXTRA_HINT = 'pip install "backfire[app]"'
MAX_UPLOAD = "200mb"  # per file; photos are also held to the CLI's pixel cap (io.DEFAULT_MAX_PIXELS)


def missing() -> str | None:
    """Why the app cannot start here (a one-line message), or None."""
    if importlib.util.find_spec("gradio") is None:
        return f"backfire app needs the app extra: {EXTRA_HINT}"
    return None


def serve(host: str = "127.0.0.1", port: int = 7860, device: str = "auto", max_file_size: str = MAX_UPLOAD) -> None:
    """Serve the page until interrupted; every upload and result lives in a temporary folder removed on exit
    (and each browser session's own folder when that session ends)."""
    with _stop_on_sigterm(), tempfile.TemporaryDirectory(prefix="backfire-app-") as tmp:
        root = Path(tmp)
        # before Gradio is imported: it reads these at import time
        os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        from backfire.app import ui

        local = _loopback(host)
        if not local:
            print(f"backfire app: warning: serving on {host}: anyone who can reach this machine can use the app "
                  "(there is no login); the weights field is off", file=sys.stderr)
        ui.serve(root, device, host, port, max_file_size, local=local)


class _stop_on_sigterm:
    """While serving, SIGTERM (``kill``, a service manager) stops the app as Ctrl-C does, so the temporary
    folder is still removed."""

    def __enter__(self) -> None:
        self.previous = signal.signal(signal.SIGTERM, self._interrupt)

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self.previous)

    @staticmethod
    def _interrupt(signum, frame) -> None:
        raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
