"""``backfire app``: the CLI's protect, verify and batch jobs in a local web page (extra ``backfire[app]``).

Importing this package is cheap and needs no extra; :func:`serve` imports Gradio.
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import os
import signal
import socket
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
    check_port(host, port)  # before Gradio: its own refusal is a traceback with advice for its API
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


PORTS_TRIED = 100
"""How many ports after a busy one :func:`check_port` tries for one to suggest."""


def check_port(host: str, port: int) -> None:
    """Refuse, in one line (ValueError), a ``host``:``port`` the app cannot listen on: a port in use names a free
    one after it; a host that is not this machine's, or a port it may not open, says the system's reason."""
    problem = _bind_problem(host, port)
    if problem is None:
        return
    if isinstance(problem, OSError) and problem.errno == errno.EADDRINUSE:
        free = next((p for p in range(port + 1, min(port + PORTS_TRIED, 65535) + 1) if _bind_problem(host, p) is None),
                    None)
        advice = f"try --port {free}" if free is not None else "choose another with --port"
        raise ValueError(f"port {port} is in use on {host}: {advice}")
    reason = getattr(problem, "strerror", None) or str(problem)
    raise ValueError(f"cannot listen on {host}:{port}: {reason}")


def _bind_problem(host: str, port: int) -> Exception | None:
    """Why a server could not bind ``host``:``port`` (None: it can), tried as the app's server binds it
    (SO_REUSEADDR: a port an earlier run left in TIME_WAIT is free)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return error
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as error:
            return error
    return None


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
