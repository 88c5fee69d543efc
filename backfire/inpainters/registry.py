"""Inpainting models by name.

``load_inpainter(name, weights=..., device=..., dtype=...)`` is the one way the rest of backfire
gets a model. The registry is a plain dict of name → loader; a loader takes
``(weights, device, dtype)`` with the device and dtype already resolved and returns an
:class:`~backfire.inpainters.base.Inpainter`. Loaders import their module lazily, so importing
the package stays cheap and a model's dependencies are only needed when it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from backfire.inpainters.base import Inpainter

__all__ = [
    "LOADERS",
    "ModelError",
    "WeightsNotFoundError",
    "available_models",
    "load_inpainter",
    "resolve_device",
    "resolve_dtype",
]


class ModelError(ValueError):
    """A model cannot be loaded: unknown name, missing or unreadable weights, bad device or dtype."""


class WeightsNotFoundError(ModelError, FileNotFoundError):
    """The weights file does not exist (catchable as ``ModelError`` or ``FileNotFoundError``)."""


Loader = Callable[[str | Path | None, torch.device, torch.dtype], Inpainter]


def _load_lama(weights: str | Path | None, device: torch.device, dtype: torch.dtype) -> Inpainter:
    from backfire.inpainters.lama import load_lama

    return load_lama(weights, device, dtype)


LOADERS: dict[str, Loader] = {
    "lama": _load_lama,
}
"""name → loader. Later models ("backfire-s", "sd-inpaint") are added here."""

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def available_models() -> list[str]:
    """Names accepted by :func:`load_inpainter`."""
    return sorted(LOADERS)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as ``torch.device`` understands it."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return resolved


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``None`` → float32. float16 needs CUDA (on CPU use bfloat16)."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
        dtype = _DTYPES[key]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ModelError(f"unsupported dtype {dtype}: use float32, float16 or bfloat16")
    if dtype == torch.float16 and device.type != "cuda":
        raise ModelError(f"float16 needs a CUDA device (got {device}); on CPU use bfloat16 or float32")
    return dtype


def load_inpainter(name: str, weights: str | Path | None = None, device: str | torch.device = "auto",
                   dtype: torch.dtype | str | None = None) -> Inpainter:
    """The inpainting model ``name`` with ``weights``, on ``device`` ("auto": CUDA if available), in ``dtype``.

    Raises:
        ModelError: unknown name, weights missing or unreadable, unavailable device, bad dtype.
    """
    key = name.strip().lower()
    if key not in LOADERS:
        raise ModelError(f"unknown inpainting model {name!r}; available: {', '.join(available_models())}")
    resolved = resolve_device(device)
    return LOADERS[key](weights, resolved, resolve_dtype(dtype, resolved))
