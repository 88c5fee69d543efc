"""The errors a model raises when it cannot be loaded, each with a one-line message.

A leaf module (it imports nothing of ours): the registry, every model loader and the CLI import it
without importing each other. Problems with the user's image and output files are
:class:`backfire.io.InputError` (io stays the bottom layer: of ours it imports only backfire.pixels).
"""

from __future__ import annotations

__all__ = ["ModelError", "NotPulledError", "WeightsNotFoundError", "first_line"]


class ModelError(ValueError):
    """A model cannot be loaded: unknown name, missing or unreadable weights, bad device or dtype."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """The weights file does not exist (catchable as ``ModelError`` or ``FileNotFoundError``)."""


class NotPulledError(ModelError):
    """A model's published weights are not in the cache (``backfire models pull`` fetches them)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none): what a one-line error quotes."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
