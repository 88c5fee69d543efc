"""Inpainting models behind one differentiable interface (:class:`Inpainter`).

    >>> from backfire.inpainters import load_inpainter
    >>> model = load_inpainter("lama", weights="big-lama.pt")
    >>> filled = model(image, mask)
"""

from backfire.inpainters.base import Inpainter, ModuleInpainter
from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.registry import available_models, load_inpainter

__all__ = [
    "Inpainter",
    "ModelError",
    "ModuleInpainter",
    "WeightsNotFoundError",
    "available_models",
    "load_inpainter",
]
