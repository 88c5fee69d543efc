"""Inpainting models by name.

``load_inpainter(name, weights=..., device=..., dtype=...)`` is the one way the rest of backfire
gets a model. The registry is a plain dict of name → loader; a loader takes
``(weights, device, dtype, **options)`` with the device and dtype already resolved and returns an
:class:`~backfire.inpainters.base.Inpainter`. Loaders import their module lazily, so importing
the package stays cheap and a model's dependencies are only needed when it is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.base import Inpainter, resolve_device, resolve_dtype

__all__ = [
    "LOADERS",
    "ModelError",
    "WeightsNotFoundError",
    "available_models",
    "load_inpainter",
    "resolve_device",
    "resolve_dtype",
]


Loader = Callable[..., Inpainter]
"""``loader(weights, device, dtype, **options)``; a loader that takes no options rejects any."""

SD_WEIGHTS_HELP = ("needs a local Stable Diffusion inpainting checkpoint in diffusers layout, e.g. "
                   "runwayml/stable-diffusion-inpainting saved with save_pretrained, or its id in the local "
                   "HF cache (weights = that folder or id); nothing is downloaded")


def _no_options(name: str, options: dict) -> None:
    if options:
        raise ModelError(f"model {name!r} takes no options, got {', '.join(sorted(options))}; only sd-inpaint "
                         "takes some")


def _load_lama(weights: str | Path | None, device: torch.device, dtype: torch.dtype, **options) -> Inpainter:
    from backfire.inpainters.lama import load_lama

    _no_options("lama", options)
    return load_lama(weights, device, dtype)


def _shipped(name: str) -> Loader:
    def load(weights: str | Path | None, device: torch.device, dtype: torch.dtype, **options) -> Inpainter:
        from backfire.inpainters.embedded import load_embedded

        _no_options(name, options)
        return load_embedded(name, weights, device, dtype)

    return load


def _load_migan(weights: str | Path | None, device: torch.device, dtype: torch.dtype, **options) -> Inpainter:
    from backfire.inpainters.migan import NAME, load_migan

    _no_options(NAME, options)
    return load_migan(weights, device, dtype)


def _load_mat(weights: str | Path | None, device: torch.device, dtype: torch.dtype, **options) -> Inpainter:
    from backfire.inpainters.mat import load_mat  # options: convention, seed, noise_mode, resample

    return load_mat(weights, device, dtype, **options)


def _load_sd_inpaint(weights: str | Path | None, device: torch.device, dtype: torch.dtype,
                     **options) -> Inpainter:
    if weights is None or not str(weights).strip():
        raise ModelError(f"model 'sd-inpaint' {SD_WEIGHTS_HELP}")
    from backfire.inpainters.diffusion import OPTIONS, load_sd_inpaint  # imports nothing optional

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ModelError(f"model 'sd-inpaint' has no option {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    try:
        return load_sd_inpaint(weights, device, dtype, **options)
    except ImportError as exc:
        raise ModelError(f"model 'sd-inpaint' needs diffusers and transformers: pip install backfire[diffusion] "
                         f"({exc})") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{weights}: cannot load a Stable Diffusion inpainting checkpoint ({first}); "
                         f"sd-inpaint {SD_WEIGHTS_HELP}") from exc


LOADERS: dict[str, Loader] = {
    "backfire-s": _shipped("backfire-s"),
    "backfire-m": _shipped("backfire-m"),
    "lama": _load_lama,
    "migan": _load_migan,
    "mat": _load_mat,
    "sd-inpaint": _load_sd_inpaint,
}
"""name → loader."""

DEFAULT_DTYPES: dict[str, Callable[[torch.device], torch.dtype]] = {
    "sd-inpaint": lambda device: torch.float16 if device.type == "cuda" else torch.float32,
}
"""A model's dtype when none is asked for (otherwise float32)."""

def takes_options(name: str) -> bool:
    """Whether the model ``name`` accepts loader options (the diffusion model's prompt and sampler; MAT's
    latent and noise convention)."""
    return LOADERS.get(name.strip().lower()) in (_load_sd_inpaint, _load_mat)


DEFAULT_MODEL = "auto"
"""What every command protects against unless told otherwise (see :func:`resolve_models`)."""
STAND_IN = "backfire-s"
"""The compact model shipped inside the package: what ``auto`` falls back to when nothing is pulled."""
ERASE_MODELS: tuple[str, ...] = ("lama", "mat", "migan")
"""IOPaint's erase models, in the order ``all`` lists them; ``lama`` (big-LaMa) is IOPaint's default."""
CHOICES: tuple[str, ...] = ("auto", "all")
STAND_IN_NOTICE = ("protecting against backfire-s, the compact stand-in shipped with backfire: a verdict on it says "
                   "nothing certain about the models attackers run; `backfire models pull lama` fetches big-LaMa "
                   "(IOPaint's default)")


def resolve_models(spec: str) -> tuple[list[str], str | None]:
    """The model names ``spec`` stands for, and a notice when the choice needs saying.

    ``auto``: big-LaMa when it is pulled (the paper's model and IOPaint's default), else backfire-s (with
    the notice); ``all``: every pulled erase model, an ensemble (else backfire-s, with the notice); any
    other name is itself.
    """
    from backfire import models

    key = spec.strip().lower()
    if key not in CHOICES:
        return [spec], None
    pulled = [n for n in ERASE_MODELS if n in LOADERS and models.has_release(n) and models.is_pulled(n)]
    if key == "auto":
        pulled = pulled[:1] if pulled and pulled[0] == "lama" else []
    return (pulled, None) if pulled else ([STAND_IN], STAND_IN_NOTICE)


def available_models() -> list[str]:
    """Names accepted by :func:`load_inpainter`."""
    return sorted(LOADERS)


def _pulled_weights(name: str) -> Path | None:
    """The pulled weights of a model with a published release (``backfire models pull``), else None.

    Raises:
        ModelError: the model has a release but it is not pulled; the message says how to pull it.
    """
    from backfire import models

    return models.path(name) if models.has_release(name) else None


def load_inpainter(name: str, weights: str | Path | None = None, device: str | torch.device = "auto",
                   dtype: torch.dtype | str | None = None, **options) -> Inpainter:
    """The inpainting model ``name`` with ``weights``, on ``device`` ("auto": CUDA if available), in ``dtype``.

    Without ``weights``, a model with a published release uses its pulled file (``backfire models pull``).
    ``options`` go to the model's loader (sd-inpaint: ``prompt``, ``negative_prompt``,
    ``num_inference_steps``, ``guidance_scale``, ``seed``); a model that takes none rejects them.

    Raises:
        ModelError: unknown name, weights missing or unreadable, unavailable device, bad dtype.
    """
    key = name.strip().lower()
    if key not in LOADERS:
        raise ModelError(f"unknown inpainting model {name!r}; available: {', '.join(available_models())}")
    if options and not takes_options(key):
        _no_options(key, options)  # a usage error comes before any question of weights
    if weights is None or not str(weights).strip():
        weights = _pulled_weights(key)
    resolved = resolve_device(device)
    if dtype is None and key in DEFAULT_DTYPES:
        dtype = DEFAULT_DTYPES[key](resolved)
    return LOADERS[key](weights, resolved, resolve_dtype(dtype, resolved), **options)
