"""backfire-s: the compact inpainter shipped inside the package, the default model of every command.

A LaMa-family FFC generator (:class:`~backfire.inpainters.ffc.FFCResNetGenerator` with
``prefill=True``) trained by ``scripts/train_inpainter.py`` on freely licensed photos; what it was
trained on, how, and how well it inpaints are in ``docs/model-card-backfire-s.md``. The weights are
package data, checked against :data:`SHA256` before use, so a damaged install fails loudly instead of
quietly inpainting badly. ``--weights`` loads a retrained file of the same family instead.

Examples::

    >>> from backfire.inpainters import load_inpainter
    >>> model = load_inpainter("backfire-s")          # the shipped weights, CPU is fine
    >>> filled = model(image, mask)                   # (N, 3, H, W) in [0, 1], any H×W
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.lama import LamaInpainter, load_generator

__all__ = ["NAME", "SHA256", "WEIGHTS", "load_embedded", "sha256_of", "verify_weights"]

NAME = "backfire-s"
WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "backfire-s.safetensors"
SHA256 = "1fbb7614df44966ff7eb4a387fdd49fedd33e05946c2ac511c3d402a1df4520c"
"""SHA-256 of the shipped weight file; updated together with the file."""


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(path: str | Path = WEIGHTS, expected: str = SHA256) -> Path:
    """``path`` if it exists and its SHA-256 is ``expected``.

    Raises:
        ModelError: the file is missing or differs from the one released with this version.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"the shipped {NAME} weights are missing ({path}): reinstall backfire")
    actual = sha256_of(path)
    if actual != expected:
        raise ModelError(f"the shipped {NAME} weights are damaged ({path}: SHA-256 {actual[:12]}…, "
                         f"expected {expected[:12]}…): reinstall backfire")
    return path


def load_embedded(weights: str | Path | None = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> LamaInpainter:
    """backfire-s with the shipped weights (checksum-verified), or with ``weights`` retrained by
    ``scripts/train_inpainter.py`` (any LaMa-family generator file ``load_generator`` reads)."""
    path = verify_weights() if weights is None else Path(weights)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    try:
        generator = load_generator(path)
    except ModelError as exc:
        # the LaMa reader's advice (where to download big-LaMa) is wrong for a retrained backfire-s
        raise ModelError(f"{path}: not {NAME} weights (a LaMa-family generator file written by "
                         f"scripts/train_inpainter.py, .safetensors or a state dict); give no weights file to use "
                         f"the shipped ones") from exc
    return LamaInpainter(generator, device=device, dtype=dtype, name=NAME)
