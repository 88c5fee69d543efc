"""What a model is: :class:`ModelSpec`, and the kinds of place its weights come from.

One spec per model (the table is :data:`backfire.inpainters.registry.SPECS`) holds every fact the
rest of backfire asks about it: how to load it (a loader named by its module path, imported only when
the model is loaded, so importing backfire stays cheap and a model's optional dependencies are needed
only when it is used), the options that loader takes, its dtype per device, how the attacker's tool
feeds it (IOPaint's :class:`Conventions`, or none: the plain pipeline), whether ``--model all`` counts
it, and where its weights are:

- :class:`Release`: a published file (URL + checksum), several published files pulled together, or a
  hub repository (+ revision), pulled into the cache by :mod:`backfire.models`, which is where that
  cache is (:func:`cache_dir`);
- :class:`Shipped`: a file inside the package, checked against its SHA-256 before use;
- none: the user names the weights.

This module imports nothing of ours but the errors: the registry, the pipelines, :mod:`backfire.models`
and the CLI all read it without importing each other.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backfire.errors import ModelError, NotPulledError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

    from backfire.inpainters.base import Inpainter

__all__ = ["HOME_ENV", "WEIGHTS_DIR", "Conventions", "ModelSpec", "Release", "Shipped", "cache_dir", "sha256_of"]

HOME_ENV = "BACKFIRE_HOME"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Where the shipped weight files are (package data)."""


@dataclass(frozen=True)
class Conventions:
    """How IOPaint feeds one model (class attributes of its ``InpaintModel`` subclasses).

    ``hole_above`` is the uint8 level above which the model's ``forward`` counts a (possibly
    resized, hence soft) mask pixel as hole: LaMa ``mask > 0``, MAT ``> 127``, MI-GAN ``> 120``.
    ``own_crop``: MI-GAN ignores the HD strategy and always inpaints a 128-px-margin window per
    region, shrunk to fit 512 px. ``truncates``: the model's ``forward`` converts its output to
    uint8 by truncation (LaMa's ``astype``) rather than rounding (MAT, MI-GAN).
    """

    pad_mod: int = 8
    pad_to_square: bool = False
    min_size: int | None = None
    hole_above: int = 0
    own_crop: bool = False
    truncates: bool = False


# --------------------------------------------------------------------------------------------
# Where weights come from


def cache_dir() -> Path:
    """Where pulled weights live: ``$BACKFIRE_HOME/models``, else the user cache directory's ``backfire/models``."""
    home = os.environ.get(HOME_ENV, "").strip()
    if home:
        return Path(home).expanduser() / "models"
    import platformdirs

    return platformdirs.user_cache_path("backfire") / "models"


@dataclass(frozen=True)
class Release:
    """Where one model's published weights are: a release file (``url`` + checksum), several release files
    pulled together (``parts``), or a hub repository."""

    description: str
    tools: str
    """Which tools run these weights: the attackers' tools for an inpainter, the metric packages for a
    measure's network."""
    size: str
    licence: str
    file: str | None = None
    """The release file's name in the cache (the name the model's own tools use)."""
    url: str | None = None
    md5: str | None = None
    sha256: str | None = None
    """The file's SHA-256; or only its first hex digits where that is all its publisher gives
    (torchvision names its files with 8 of them, which is what torch.hub checks): then those are checked."""
    repo: str | None = None
    """A Hugging Face hub repository id (then ``revision`` pins its commit)."""
    revision: str | None = None
    parts: tuple[Release, ...] = ()
    """The files of a release that is several (LPIPS: the backbone and the linear layers), each a
    one-file Release landing in this release's cache folder; then ``file`` and the checksums are theirs."""
    name: str = ""
    """The model's name (its spec fills it in, for the parts too)."""

    def __post_init__(self) -> None:
        if any(part.name != self.name for part in self.parts):  # one name, written once, for every file
            object.__setattr__(self, "parts", tuple(replace(part, name=self.name) for part in self.parts))

    @property
    def on_hub(self) -> bool:
        return self.repo is not None

    @property
    def files(self) -> tuple[Release, ...]:
        """The one-file releases to pull: the parts, or this release itself."""
        return self.parts or (self,)

    @property
    def checksum(self) -> tuple[str, str]:
        """(algorithm, published hex digest or its first digits) of a one-file release."""
        return ("sha256", self.sha256.lower()) if self.sha256 else ("md5", str(self.md5).lower())

    @property
    def known_hash(self) -> str | None:
        """The checksum in pooch's ``alg:hex`` form; None for a prefix (pooch compares whole digests)."""
        alg, expected = self.checksum
        return f"{alg}:{expected}" if len(expected) == {"sha256": 64, "md5": 32}[alg] else None

    def matches(self, digest: str) -> bool:
        """Whether ``digest`` (hex, in :attr:`checksum`'s algorithm) is the published one (or starts with it)."""
        return digest.lower().startswith(self.checksum[1])

    @property
    def source(self) -> str:
        """Where it is downloaded from, for messages."""
        if self.parts:
            return ", ".join(part.source for part in self.parts)
        return f"hub:{self.repo}@{self.revision or 'main'}" if self.on_hub else str(self.url)

    @property
    def location(self) -> Path:
        """The pulled file (release) or folder (hub repository, several files) in the cache, there or not."""
        folder = cache_dir() / self.name
        return folder if self.on_hub or self.parts else folder / str(self.file)

    def complete(self, location: Path) -> bool:
        """Whether ``location`` holds all of it (a hub folder is complete once its ``model_index.json`` is)."""
        if self.parts:
            return all((location / str(part.file)).is_file() for part in self.parts)
        return (location / "model_index.json").is_file() if self.on_hub else location.is_file()

    @property
    def is_pulled(self) -> bool:
        """Whether the weights are in the cache (they were checked when they were put there)."""
        return self.complete(self.location)

    def pulled(self) -> Path:
        """The pulled weights (a file, or a folder for hub repositories and several files).

        Raises:
            NotPulledError: not pulled yet; the message says how to get them.
        """
        location = self.location
        if not self.complete(location):
            if self.on_hub:
                other = "or name a local diffusers folder with --weights"
            elif self.parts:
                other = (f"or `backfire models add {self.name} FILE` for each file you have "
                         f"({', '.join(str(part.file) for part in self.parts)})")
            else:
                other = (f"or `backfire models add {self.name} FILE` for a copy you have, or name a weights file "
                         "with --weights")
            raise NotPulledError(f"model {self.name!r} is not pulled: run `backfire models pull {self.name}` "
                                 f"({self.size}), {other}")
        return location


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Shipped:
    """Weights that ship inside the package (``backfire/weights/NAME.safetensors``)."""

    sha256: str
    """SHA-256 of the weight file; updated together with the file."""
    card: str
    """Its model card, relative to the repository root."""
    licence: str
    description: str
    name: str = ""
    """The model's name (its spec fills it in)."""

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    def verified(self, path: str | Path | None = None) -> Path:
        """The shipped weight file (or ``path``) if it exists and has the shipped SHA-256.

        Raises:
            ModelError: the file is missing or differs from the one released with this version.
        """
        path = self.weights if path is None else Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"the shipped {self.name} weights are missing ({path}): reinstall backfire")
        actual = sha256_of(path)
        if actual != self.sha256:
            raise ModelError(f"the shipped {self.name} weights are damaged ({path}: SHA-256 {actual[:12]}…, "
                             f"expected {self.sha256[:12]}…): reinstall backfire")
        return path


# --------------------------------------------------------------------------------------------
# The spec


Loader = Callable[..., "Inpainter"]
"""``loader(weights, device, dtype, name=NAME, **options)`` with the device and dtype already resolved and
the options already checked against the spec's."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything backfire knows about one model before loading it.

    Arguments:
        name: the registry name (``--model NAME``); also the loaded model's name.
        loader: ``"module:function"``, a :data:`Loader`, imported when the model is first loaded.
        options: the loader options it accepts (``--prompt`` … for sd-inpaint; MAT's convention); none: it
            refuses any.
        dtypes: device type → dtype name when none is asked for (otherwise float32).
        conventions: how IOPaint feeds it, if IOPaint runs it as an erase model; None: the plain pipeline.
        source: where its weights come from when none are named: a :class:`Release` (pulled into the cache),
            a :class:`Shipped` file, or None (the user names them).
        erase: one of IOPaint's erase models, counted by ``--model all``.
    """

    name: str
    loader: str
    options: tuple[str, ...] = ()
    dtypes: Mapping[str, str] = field(default_factory=dict)
    conventions: Conventions | None = None
    source: Release | Shipped | None = None
    erase: bool = False

    def __post_init__(self) -> None:
        if self.source is not None and self.source.name != self.name:  # the name is written once, in the spec
            object.__setattr__(self, "source", replace(self.source, name=self.name))

    @property
    def pipeline(self) -> str:
        """The attacker's tool it runs in by default: ``iopaint`` for IOPaint's models, ``plain`` otherwise."""
        return "iopaint" if self.conventions is not None else "plain"

    @property
    def release(self) -> Release | None:
        return self.source if isinstance(self.source, Release) else None

    @property
    def shipped(self) -> Shipped | None:
        return self.source if isinstance(self.source, Shipped) else None

    def default_dtype(self, device: torch.device) -> str | None:
        """The dtype to compute in on ``device`` when none is asked for (None: float32)."""
        return self.dtypes.get(device.type)

    def default_weights(self) -> Path | None:
        """The weights used when none are named: the checked shipped file, the pulled release, or None.

        Raises:
            ModelError: the shipped file is missing or damaged; NotPulledError: the release is not pulled.
        """
        if self.shipped is not None:
            return self.shipped.verified()
        if self.release is not None:
            return self.release.pulled()
        return None

    def load(self, weights: Any, device: torch.device, dtype: torch.dtype, **options: Any) -> Inpainter:
        """The model, by its loader (imported now); ``device``, ``dtype`` resolved, ``options`` checked."""
        module, _, function = self.loader.partition(":")
        loader: Loader = getattr(importlib.import_module(module), function)
        return loader(weights, device, dtype, name=self.name, **options)
