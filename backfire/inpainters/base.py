"""The one interface every inpainting model sits behind, and its two kinds: networks and wrappers.

An :class:`Inpainter` fills the pixels where ``mask == 1`` and returns the input unchanged elsewhere.
It is differentiable in the image, works at any H×W (networks that need a multiple of 8 are padded
internally and cropped back) and on batches, and says what it can do through explicit members.
A :class:`Network` computes the fill; a :class:`Wrapper` (the attacker's tool, the cleaning before it)
holds an inner inpainter, changes part of the edit and forwards the rest.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.errors import ModelError


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else as ``torch.device`` understands it (``mps``:
    an Apple GPU, chosen explicitly; its gaps are filled per operation, see
    :func:`backfire.inpainters.ffc.fft_device`)."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda[:N]' or 'mps'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available; use the CPU")
    if resolved.type == "mps" and not mps_available():
        raise ModelError(f"device {device!r} requested but this PyTorch has no usable Apple GPU (MPS); use the CPU")
    return resolved


def mps_available() -> bool:
    """Whether this PyTorch can run on an Apple GPU (the Metal Performance Shaders backend)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@contextlib.contextmanager
def tuned(device: torch.device, autocast: torch.dtype | None = None) -> Iterator[None]:
    """The settings an optimisation's passes run under on ``device``, restored afterwards.

    On CUDA: cuDNN picks the fastest algorithm for the shape (``benchmark``; an optimisation repeats one shape
    20 times and more), convolutions and matrix products in TF32 (≈ 3e-4 relative, Ampere and later), and,
    when ``autocast`` is given, the network in that dtype where PyTorch's autocast allows (its weight cache
    off: CUDA graphs capture these passes). Elsewhere only ``autocast`` applies (CPU, MPS).
    """
    with contextlib.ExitStack() as stack:
        if device.type == "cuda":
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                                            allow_tf32=True))
            before = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", before)
        if autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=autocast, cache_enabled=False))
        yield


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


def build_with_weights(build: Callable[[], torch.nn.Module], state: Mapping[str, Tensor], what: str) -> torch.nn.Module:
    """``build()`` on the meta device (no point initialising weights that are overwritten next), loaded
    strictly with ``state``, in float32 and eval mode; a mismatch is one ModelError naming ``what``.

    ``assign=True`` keeps the file's tensors (and dtype: checkpoints may store fp16); callers choose
    their dtype from float32.
    """
    with torch.device("meta"):
        module = build()
    try:
        module.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(f"{what}: {first.strip()}") from exc
    return module.float().eval()


def draw_seed(seed: int, draw: int) -> int:
    """The seed of draw ``draw`` of a model seeded with ``seed``: ``seed`` itself for draw 0 (the model as
    loaded), else one mixed from both (numpy's ``SeedSequence``), so that neighbouring seeds' draws differ."""
    if draw == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(draw)]).generate_state(1)[0])


Size = tuple[int, int]
"""(H, W) of a photo."""


class Inpainter(abc.ABC):
    """What every inpainting model and every wrapper around one presents: the edit, and what it can do.

    The edit: ``__call__`` checks and prepares its inputs once (:meth:`prepare`), then :meth:`inpaint`
    (what hot loops call); :meth:`surrogate` is the differentiable stand-in an optimisation backpropagates
    through. The capabilities are explicit members with the answers of a bare network on the whole photo,
    so code asks them instead of probing classes: whether the surrogate is the real edit, which pixels the
    edit sees (:meth:`support`, :meth:`framed`), which settings the attacker's tool offers for a photo
    (:meth:`strategies`, :meth:`with_strategy`, :meth:`every_strategy`), the randomness it carries
    (:attr:`randomness`, :attr:`stochastic`, :meth:`redrawn`, :meth:`with_draw`) and what a verdict records
    (:meth:`describe`).

    Networks subclass :class:`Network` (they implement ``fill``); wrappers subclass :class:`Wrapper`
    (they change some of these members and forward the rest).

    Shape:
        - image: (N, 3, H, W) in [0, 1]
        - mask: (N, 1, H, W) in {0, 1}, 1 = fill; a (1, 1, H, W) mask is broadcast over the batch
        - output: (N, 3, H, W) in [0, 1], equal to ``image`` where ``mask == 0``

    Examples::

        >>> model = load_inpainter("lama", weights="big-lama.pt")
        >>> filled = model(image, mask)
    """

    name: str
    """Registry name, used in reports."""
    device: torch.device
    """Where the model runs."""
    dtype: torch.dtype
    """The dtype the network computes in (inputs are converted, outputs come back in it)."""

    # -- the edit ------------------------------------------------------------------------------

    def __call__(self, image: Tensor, mask: Tensor) -> Tensor:
        """The attacker's edit of a caller's tensors: checked and prepared once (:meth:`prepare`), then
        :meth:`inpaint`."""
        return self.inpaint(*self.prepare(image, mask))

    @abc.abstractmethod
    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        """The edit of *prepared* inputs (see :meth:`prepare`): no checks, so a hot loop can call it freely.

        Inputs may be in any float dtype on the model's device; a (1, 1, H, W) mask is broadcast.
        """

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        """A differentiable, affordable stand-in for the edit, on prepared inputs (as :meth:`inpaint`).

        The optimisation's clean passes call it under ``torch.inference_mode()``: a model that keeps tensors it
        makes on first use (a cache) makes them under ``torch.inference_mode(False)``, so that later passes,
        which autograd records, may read them.

        Feed-forward models are their own surrogate. Models whose real edit is too costly to
        backpropagate through (a whole diffusion sampling run) override this and
        :attr:`surrogate_is_edit`; the verdict always uses ``__call__``, the edit an attacker really runs.
        """
        return self.inpaint(image, mask)

    @property
    def surrogate_is_edit(self) -> bool:
        """Whether :meth:`surrogate` computes the real edit, so that fills an optimisation computed through it
        are the edit's own and a verdict may reuse them."""
        return True

    def cast(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Prepared inputs on the model's device and dtype, the mask spread over the batch: a no-op when
        they already are (the cheap part of :meth:`prepare`, which wrappers' :meth:`inpaint` also use)."""
        image = image.to(self.device, self.dtype)
        return image, mask.to(self.device, self.dtype).expand(image.shape[0], -1, -1, -1)

    def prepare(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Check shapes, move to the model's device and dtype, binarise the mask (> 0.5) and match the batch:
        the one input check, done where tensors enter (``__call__``, the engine's start), never per step."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be N×3×H×W, got {tuple(image.shape)}")
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(f"mask must be N×1×H×W matching the image, got {tuple(mask.shape)}")
        if mask.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"mask batch {mask.shape[0]} does not match image batch {image.shape[0]}")
        image = image.to(self.device, self.dtype)
        mask = (mask.to(self.device) > 0.5).to(self.dtype).expand(image.shape[0], -1, -1, -1)
        return image, mask

    # -- which pixels the edit sees ----------------------------------------------------------------

    def support(self, mask: Tensor) -> Tensor:
        """(H, W) {0, 1}: the pixels the edit sees when the photo is edited with ``mask`` ((H, W) or
        (N, 1, H, W), a union over N); the edit does not depend on the others. The whole photo here."""
        return torch.ones(mask.shape[-2:], dtype=torch.float32, device=mask.device)

    def framed(self, photo: Tensor, box: tuple[int, int, int, int]) -> Inpainter | None:
        """This edit of ``photo`` (3, H, W) seen through ``box`` (left, top, right, bottom): an inpainter of the
        box's pixels equal to the whole photo's edit there, or None when the edit needs the whole photo."""
        return None

    # -- the settings of the attacker's tool -------------------------------------------------------

    def strategy_for(self, size: Size) -> str:
        """The setting the attacker's tool applies to an H×W photo by default ("" for a bare model)."""
        return ""

    def strategies(self, size: Size) -> tuple[str, ...]:
        """The distinct edits the attacker's tool can make of an H×W photo, its default first."""
        return (self.strategy_for(size),)

    def with_strategy(self, strategy: str) -> Inpainter:
        """The same edit with the tool set to ``strategy`` (one of :meth:`strategies`)."""
        return self

    def every_strategy(self, size: Size) -> Inpainter:
        """An inpainter whose calls go through each of :meth:`strategies` of an H×W photo in turn, for an
        optimisation that must hold against every setting; a tool without settings is its own."""
        return self

    # -- randomness ------------------------------------------------------------------------------

    @property
    def randomness(self) -> dict[str, Any] | None:
        """What decides the fill besides the image (MAT: latent, noise), as a verdict records it; None if
        nothing does."""
        return None

    @property
    def stochastic(self) -> bool:
        """Whether the attacker's tool draws something afresh for every edit (MAT's dropout, a sampler's
        noise), so that one fill is one draw among many (see :meth:`with_draw`)."""
        return False

    def redrawn(self) -> Inpainter:
        """This model with its own randomness (a latent, noise) drawn afresh at every call, for an optimisation
        that takes the expectation over it; a deterministic model is its own."""
        return self

    def with_draw(self, draw: int) -> Inpainter:
        """The twin whose fills are the attacker's draw number ``draw`` (0, 1, …), each repeatable; draw 0 is
        this model as it is. A deterministic model is its own twin."""
        if int(draw) != draw or draw < 0:
            raise ValueError(f"draw must be an integer ≥ 0, got {draw!r}")
        return self

    def describe(self, size: Size) -> dict[str, Any]:
        """What a verdict records of this edit of an H×W photo: model, pipeline, strategy, randomness."""
        return {"model": self.name, "pipeline": "plain", "strategy": self.strategy_for(size),
                "randomness": self.randomness}

    @property
    def smallest_side(self) -> int:
        """The shortest side (px) of a photo this edit takes; 1 here: a bare network pads any photo to a frame it
        fills (:meth:`Network._pad`). An attacker's tool that pads less says more (IOPaint's pipeline)."""
        return 1

    @property
    def notices(self) -> tuple[str, ...]:
        """One-line notes a user should read about how this model runs here (a device's missing operation
        computed elsewhere …); the command line prints them once, when the model is loaded."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device}, dtype={self.dtype})"


class Network(Inpainter):
    """An inpainting network: erase the hole, pad to the network's multiple, :meth:`fill`, crop, composite.

    Arguments:
        name: registry name, used in reports.
        device: where the model runs.
        dtype: the dtype the network computes in (inputs are converted, outputs come back in it).
        multiple: the network needs H and W divisible by this; inputs are padded to it.
    """

    def __init__(self, name: str, device: torch.device | str, dtype: torch.dtype, multiple: int = 8):
        self.name = name
        self.device = torch.device(device)
        self.dtype = dtype
        self.multiple = multiple
        self.autocast: torch.dtype | None = None
        """The dtype the optimisation's passes (:meth:`surrogate`) compute in under autocast, or None (the
        network's own dtype). The edit itself (:meth:`inpaint`) never autocasts: it is what the attacker's tool
        computes, so a model that autocasts its surrogate is not its own surrogate for the verdict."""

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        """The edit, under the optimisation's settings (:meth:`tuned`); the result in the input's float dtype."""
        with self.tuned():
            out = self.inpaint(image, mask)
        return out if self.autocast is None else out.to(image.dtype)

    def tuned(self) -> contextlib.AbstractContextManager:
        """The settings this network's optimisation passes run under (:func:`tuned`: cuDNN autotuning and TF32
        on CUDA, :attr:`autocast`); a wrapper that calls :meth:`fill` itself enters it for its surrogate."""
        return tuned(self.device, self.autocast)

    @property
    def surrogate_is_edit(self) -> bool:
        return self.autocast is None

    @property
    def smallest_frame(self) -> int:
        """The shortest side of a frame :meth:`fill` takes (a multiple of :attr:`multiple`): two multiples here,
        since at one the 1-px bottleneck cannot be reflection-padded inside the net; a network whose
        architecture needs more says so."""
        return 2 * self.multiple

    @abc.abstractmethod
    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        """The network's raw prediction for the whole frame.

        ``masked_image`` is already zero inside the hole and padded to ``multiple``; it is on the
        model's device and dtype. Returns (N, 3, H, W) in [0, 1].
        """

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        image, mask = self.cast(image, mask)
        # The hole is erased before the network sees it: whatever the protection writes inside
        # the region cannot reach the fill, so the trigger must live in the context.
        masked = image * (1 - mask)
        h, w = image.shape[-2:]
        padded_image, padded_mask = self._pad(masked), self._pad(mask)
        prediction = self.fill(padded_image, padded_mask)[..., :h, :w]
        return mask * prediction + (1 - mask) * image

    def _twin(self, **changes: Any) -> Network:
        """A shallow copy with ``changes`` to its attributes (the weights are shared): how a network makes
        its redrawn or draw-k twin."""
        twin = copy.copy(self)
        twin.__dict__.update(changes)
        return twin

    def _pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        smallest = self.smallest_frame
        pad_h, pad_w = max(-h % self.multiple, smallest - h), max(-w % self.multiple, smallest - w)
        if pad_h == 0 and pad_w == 0:
            return x
        # Reflection keeps image statistics at the border; it needs the pad to be smaller than the side.
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class Wrapper(Inpainter):
    """An inpainter around ``inner`` that changes part of the edit and forwards everything else.

    Subclasses override what they change (the edit, the pixels it sees, the tool's settings …) and never
    ``fill``: only networks fill. Methods that return a changed twin (:meth:`redrawn`, :meth:`with_draw`,
    :meth:`with_strategy`, :meth:`every_strategy`, :meth:`framed`) return this wrapper around ``inner``'s
    twin (:meth:`_around`), so a wrapper keeps applying to whatever its inner model becomes.
    """

    def __init__(self, inner: Inpainter):
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def device(self) -> torch.device:
        return self.inner.device

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def inpaint(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.inner.inpaint(image, mask)

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        return self.inner.surrogate(image, mask)

    @property
    def surrogate_is_edit(self) -> bool:
        return self.inner.surrogate_is_edit

    def support(self, mask: Tensor) -> Tensor:
        return self.inner.support(mask)

    def framed(self, photo: Tensor, box: tuple[int, int, int, int]) -> Inpainter | None:
        inner = self.inner.framed(photo, box)
        return None if inner is None else self._around(inner)

    def strategy_for(self, size: Size) -> str:
        return self.inner.strategy_for(size)

    def strategies(self, size: Size) -> tuple[str, ...]:
        return self.inner.strategies(size)

    def with_strategy(self, strategy: str) -> Inpainter:
        return self._around(self.inner.with_strategy(strategy))

    def every_strategy(self, size: Size) -> Inpainter:
        return self._around(self.inner.every_strategy(size))

    @property
    def randomness(self) -> dict[str, Any] | None:
        return self.inner.randomness

    @property
    def stochastic(self) -> bool:
        return self.inner.stochastic

    def redrawn(self) -> Inpainter:
        return self._around(self.inner.redrawn())

    def with_draw(self, draw: int) -> Inpainter:
        super().with_draw(draw)
        return self if draw == 0 else self._around(self.inner.with_draw(draw))

    def describe(self, size: Size) -> dict[str, Any]:
        return {**self.inner.describe(size), "model": self.name, "strategy": self.strategy_for(size)}

    @property
    def smallest_side(self) -> int:
        return self.inner.smallest_side

    @property
    def notices(self) -> tuple[str, ...]:
        return self.inner.notices

    def _around(self, inner: Inpainter) -> Inpainter:
        """This wrapper around ``inner`` instead (a shallow copy: the wrapper's own state is shared)."""
        twin = copy.copy(self)
        twin.inner = inner
        return twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class ModuleInpainter(Network):
    """An Inpainter around an ``nn.Module`` called as ``module(masked_image, mask)``."""

    def __init__(self, name: str, module: torch.nn.Module, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, multiple: int = 8):
        super().__init__(name, device, dtype, multiple)
        self.module = module.to(self.device, dtype).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        return self.module(masked_image, mask)
