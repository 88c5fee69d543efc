"""Inpainting models behind one differentiable interface (:class:`Inpainter`): networks that fill, and
wrappers (the attacker's tool, its cleaning) around them; one spec per model in the registry.

    >>> from backfire.inpainters import load_inpainter
    >>> model = load_inpainter("lama", weights="big-lama.pt")
    >>> filled = model(image, mask)
"""

from backfire.inpainters.base import Inpainter, ModuleInpainter, Network, Wrapper
from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.registry import available_models, load_inpainter

__all__ = [
    "Inpainter",
    "ModelError",
    "ModuleInpainter",
    "Network",
    "WeightsNotFoundError",
    "Wrapper",
    "available_models",
    "load_inpainter",
]
