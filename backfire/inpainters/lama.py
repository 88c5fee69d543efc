"""Big-LaMa: the module, its weight files, and backfire's own generator files.

Two file formats hold the released big-LaMa weights, and :func:`load_lama` reads both, telling
them apart by content rather than by extension:

- ``big-lama.pt``, the TorchScript archive used by IOPaint / lama-cleaner /
  simple-lama-inpainting, called as ``model(image, mask)`` → composited image (see
  :class:`LamaModule`);
- LaMa's ``best.ckpt`` (``big-lama.zip`` from github.com/advimman/lama), a PyTorch Lightning
  checkpoint whose ``state_dict`` holds the generator under ``generator.*`` next to
  discriminator and loss weights, which are ignored.

A bare generator state dict (keys ``model.*``), as a torch pickle or ``.safetensors``, is read
too — among them the files the trainer exports (:func:`export_generator`, fp16 with the
:class:`FFCConfig` in the metadata). The generator size is inferred from the weights, so compact
configurations of the same architecture load with the same function. Bytes become tensors in
:mod:`backfire.inpainters.weights`; random-weight stand-ins are in :mod:`backfire.inpainters.fixtures`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from backfire.errors import ModelError, WeightsNotFoundError, first_line
from backfire.inpainters.base import ModuleInpainter, build_with_weights
from backfire.inpainters.ffc import (BIG_LAMA, STEMFED_FORMAT, FFCConfig, FFCResNetGenerator, build_generator,
                                     fft_device, fold_batchnorm)
from backfire.inpainters.weights import (
    half_precision,
    load_torch,
    load_torchscript,
    read_safetensors,
    save_safetensors,
    save_torchscript,
    sniff,
    trace_checked,
    zip_names,
)

__all__ = [
    "BIG_LAMA",
    "GENERATOR_FORMAT",
    "WEIGHTS_HELP",
    "LamaInpainter",
    "LamaModule",
    "export_generator",
    "export_torchscript",
    "generator_state_dict",
    "infer_config",
    "load_generator",
    "load_lama",
    "weights_format",
]

WEIGHTS_HELP = (
    "download big-lama.pt (IOPaint / lama-cleaner / simple-lama-inpainting use it) or LaMa's best.ckpt "
    "(github.com/advimman/lama, big-lama.zip) and pass --weights PATH"
)

_GENERATOR_PREFIX = "generator."

GENERATOR_FORMAT = "backfire-ffc-generator"
"""The ``format`` metadata of the generator files :func:`export_generator` writes."""


class LamaModule(nn.Module):
    """A LaMa generator behind the ``model(image, mask)`` convention of the ``big-lama.pt`` TorchScript.

    Shape:
        - image: (N, 3, H, W) in [0, 1]
        - mask: (N, 1, H, W), 1 = fill (binary)
        - output: (N, 3, H, W) in [0, 1], the prediction inside the mask and ``image`` outside;
          H and W multiples of ``2 ** n_downsampling`` (8 for big-LaMa).
    """

    def __init__(self, generator: FFCResNetGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        masked = image * (1 - mask)
        prediction = self.generator(torch.cat([masked, mask], dim=1))
        return mask * prediction + (1 - mask) * image


class LamaInpainter(ModuleInpainter):
    """An :class:`~backfire.inpainters.base.Inpainter` around a :class:`LamaModule` or a LaMa TorchScript.

    ``config`` is the generator's :class:`FFCConfig`, or ``None`` for a TorchScript module.

    ``module`` stays the network as loaded (its state dict is the weight file's, exports trace it); fills of
    an eager generator are computed by a copy made for inference on first use (:meth:`compute_network`:
    BatchNorm folded into the convolutions; channels-last on the CPU) and, on the CPU, only where the hole's
    composite reads them (``local``, see :meth:`FFCResNetGenerator.forward`). All exact up to float rounding.
    On CUDA the optimisation's passes (:meth:`surrogate`) run in float16 under autocast (the FFTs in float32)
    and replay CUDA graphs (:attr:`cuda_graphs`); the edit the verdict judges stays in the model's dtype.
    """

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, name: str = "lama"):
        if isinstance(module, FFCResNetGenerator):
            module = LamaModule(module)
        self.config: FFCConfig | None = None
        multiple = 8
        if isinstance(module, LamaModule):
            self.config = module.generator.config
            multiple = 2 ** self.config.n_downsampling
        super().__init__(name, module, device, dtype, multiple)
        self._compute: nn.Module | None = None
        self._graphs: dict[tuple, Any] = {}
        cuda = self.device.type == "cuda"
        self.channels_last = self.device.type == "cpu"
        """Whether the fills are computed in channels-last memory order (set before the first fill): on the
        CPU oneDNN's convolutions take it without reordering (measured: docs/benchmarks.md)."""
        self.cuda_graphs = cuda
        """Whether the optimisation's passes (fixed shapes, autograd on) replay CUDA graphs, one per shape
        (:func:`torch.cuda.make_graphed_callables`: a forward and a backward graph) instead of launching every
        kernel from Python: at batch 1 an eager pass is launch-bound (../shared/reference/)."""
        if cuda and dtype == torch.float32:
            # the FFTs stay float32 (FourierUnit casts them); measured against float32 on the CPU: fills within
            # 1e-3 (mean, big-LaMa architecture), docs/benchmarks.md. bfloat16 is 7× coarser.
            self.autocast = torch.float16

    @property
    def smallest_frame(self) -> int:
        """The generator's own (:attr:`FFCResNetGenerator.smallest_input`; a stem-fed one's stem needs more);
        a TorchScript's is big-LaMa's, two multiples."""
        if isinstance(self.module, LamaModule):
            return self.module.generator.smallest_input
        return super().smallest_frame

    @property
    def local(self) -> bool:
        """Whether fills are computed on the box around the hole only: data-dependent shapes, read on the
        host, which pay on the CPU and would stall a GPU's queue (and break its fixed-shape graphs)."""
        return self.device.type == "cpu"

    def compute_network(self) -> nn.Module | None:
        """The generator that computes the fills: a BatchNorm-folded copy of ``module``'s (made once); None
        for a TorchScript module, which runs as it is."""
        if self._compute is None and isinstance(self.module, LamaModule):
            with torch.inference_mode(False):  # first use may be a clean pass: the weights must be ordinary tensors
                self._compute = fold_batchnorm(self.module.generator)
                if self.channels_last:
                    self._compute = self._compute.to(memory_format=torch.channels_last)
        return self._compute

    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        network = self.compute_network()
        if network is None:
            return self.module(masked_image, mask)
        x = torch.cat([masked_image, mask], dim=1)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cuda_graphs and x.is_cuda and x.requires_grad and torch.is_grad_enabled():
            prediction = self._graphed(network, x)
        else:
            prediction = network(x, local=self.local)
        # LamaModule's composite (``masked_image`` is already erased in the hole)
        return mask * prediction + (1 - mask) * masked_image

    _GRAPHS_KEPT = 2
    """Graphs kept, the latest shapes' (each holds its pass's memory)."""

    def _graphed(self, network: nn.Module, x: Tensor) -> Tensor:
        """``network(x)`` through the CUDA graphs of its forward and backward at this shape (captured on first
        use, after warm-up passes on a side stream); eager, with a warning, where capture fails."""
        autocast = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
        key = (tuple(x.shape), x.stride(), x.dtype, autocast)
        graphed = self._graphs.get(key)
        if graphed is None:
            try:
                graphed = torch.cuda.make_graphed_callables(_OneTensor(network), (x.detach().clone().requires_grad_(),))
            except RuntimeError as error:
                warnings.warn(f"{self.name}: CUDA graph capture failed ({first_line(error)}); running eagerly",
                              RuntimeWarning, stacklevel=2)
                self.cuda_graphs = False
                return network(x)
            if len(self._graphs) >= self._GRAPHS_KEPT:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = graphed
        return graphed(x)

    @property
    def notices(self) -> tuple[str, ...]:
        if self.config is not None and fft_device(self.device) != self.device:
            return (f"{self.name}: this PyTorch's {self.device.type.upper()} backend lacks the FFTs of LaMa's "
                    f"Fourier units: they run on the CPU, the rest of the network on the {self.device.type} device",)
        return ()


class _OneTensor(nn.Module):
    """A generator's forward as CUDA graph capture takes it: one tensor in, one out (the whole frame)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)


# --------------------------------------------------------------------------------------------
# Reading weight files


def load_lama(path: str | Path | None, device: torch.device = torch.device("cpu"),
              dtype: torch.dtype = torch.float32, name: str = "lama") -> LamaInpainter:
    """Big-LaMa (or a compact LaMa) from ``big-lama.pt``, ``best.ckpt``, a state dict or ``.safetensors``.

    ``path`` may also be the unpacked ``big-lama/`` folder (``models/best.ckpt`` inside).

    Raises:
        WeightsNotFoundError: ``path`` does not exist (a ``ModelError`` and a ``FileNotFoundError``).
        ModelError: ``path`` is None, or the file is not LaMa weights in a known format.
    """
    path = _find_weights(path)
    fmt = weights_format(path)
    if fmt == "torchscript":
        module = load_torchscript(path, device)
        _check_script_signature(module, path)
        return LamaInpainter(module, device, dtype, name)
    return LamaInpainter(load_generator(path), device, dtype, name)


def _find_weights(path: str | Path | None) -> Path:
    if path is None:
        raise ModelError(f"big-LaMa needs weights: {WEIGHTS_HELP}")
    path = Path(path).expanduser()
    if path.is_dir():
        for candidate in (path / "models" / "best.ckpt", path / "best.ckpt", path / "big-lama.pt"):
            if candidate.is_file():
                return candidate
        raise WeightsNotFoundError(f"big-LaMa weights not found in folder {path}: {WEIGHTS_HELP}")
    if not path.is_file():
        raise WeightsNotFoundError(f"big-LaMa weights not found at {path}: {WEIGHTS_HELP}")
    return path


def weights_format(path: str | Path) -> str:
    """``"torchscript"``, ``"torch"`` (a ``torch.save`` file, zip or legacy pickle) or ``"safetensors"``,
    from the file's content (:func:`~backfire.inpainters.weights.sniff`).

    Raises:
        ModelError: none of these.
    """
    path = Path(path)
    fmt = sniff(path)
    if fmt == "pickle":  # torch.save's legacy format
        return "torch"
    if fmt == "zip":
        if any(n.endswith("models/best.ckpt") for n in zip_names(path)):
            raise ModelError(f"{path} is the big-lama.zip download: unzip it and pass the big-lama folder "
                             "(or big-lama/models/best.ckpt)")
        raise ModelError(f"{path} is a zip archive but neither a TorchScript model nor a PyTorch checkpoint")
    if fmt == "unknown":
        raise ModelError(
            f"{path} is neither a TorchScript model (big-lama.pt) nor a PyTorch/Lightning checkpoint "
            f"(best.ckpt) nor a .safetensors file; {WEIGHTS_HELP}"
        )
    return fmt


def load_generator(path: str | Path) -> FFCResNetGenerator:
    """The LaMa generator in a Lightning checkpoint, a state dict or a ``.safetensors`` file (CPU, float32, eval).

    The size (ngf, downsamplings, blocks, global ratio) is inferred from the weights and loaded with
    ``strict=True``.
    """
    path = Path(path)
    fmt = weights_format(path)
    if fmt == "torchscript":
        raise ModelError(f"{path} is a TorchScript model, not a checkpoint: load it with load_lama")
    metadata: dict[str, str] = {}
    raw: Any
    if fmt == "safetensors":
        raw, metadata = read_safetensors(path)
        if metadata.get("format") == STEMFED_FORMAT:  # its model.* keys alone would load, minus the encoder
            raise ModelError(f"{path} is a generator fed by a pretrained encoder, not a plain LaMa generator: "
                             "load it with backfire.inpainters.stemfed.load_trained_generator")
    else:
        raw = load_torch(path)
    state = generator_state_dict(raw, source=str(path))
    config = _with_metadata(infer_config(state, source=str(path)), metadata, path)
    return build_with_weights(lambda: build_generator(config), state,
                              f"{path}: weights do not fit the LaMa generator {config}")


def _with_metadata(config: FFCConfig, metadata: Mapping[str, str], path: Path) -> FFCConfig:
    """``config`` with what the weights cannot show (``prefill``) taken from backfire's own metadata.

    Files written by :func:`export_generator` carry their FFCConfig as JSON
    under ``ffc_config``; every size it states must agree with the weights.
    """
    if "ffc_config" not in metadata:
        return config
    try:
        stated = json.loads(metadata["ffc_config"])
        prefill = bool(stated.get("prefill", False))
        sizes = {k: stated[k] for k in ("ngf", "n_downsampling", "n_blocks")}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: unreadable ffc_config metadata ({exc})") from exc
    inferred = {k: getattr(config, k) for k in sizes}
    if sizes != inferred:
        raise ModelError(f"{path}: metadata says {sizes} but the weights are {inferred}")
    return dataclasses.replace(config, prefill=prefill)


def generator_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """The generator's ``model.*`` weights from a Lightning checkpoint or a (prefixed) state dict."""
    if not isinstance(obj, Mapping):
        raise ModelError(f"{source} holds a {type(obj).__name__}, not a checkpoint or state dict")
    state = obj.get("state_dict", obj)
    if not isinstance(state, Mapping):
        raise ModelError(f"{source}: 'state_dict' is a {type(state).__name__}, not a mapping")
    keys = [k for k in state if isinstance(k, str)]
    generator = {k[len(_GENERATOR_PREFIX):]: state[k] for k in keys if k.startswith(_GENERATOR_PREFIX)}
    if not generator:
        generator = {k: state[k] for k in keys if k.startswith("model.")}
    if not generator:
        raise ModelError(f"{source} holds no LaMa generator weights (no 'generator.model.*' or 'model.*' keys)")
    bad = [k for k, v in generator.items() if not isinstance(v, Tensor)]
    if bad:
        raise ModelError(f"{source}: generator entry {bad[0]!r} is not a tensor")
    return generator


def infer_config(state: Mapping[str, Tensor], source: str = "checkpoint") -> FFCConfig:
    """The :class:`FFCConfig` whose generator has exactly these ``model.*`` weights."""
    stem_key = "model.1.ffc.convl2l.weight"
    if stem_key not in state:
        raise ModelError(f"{source}: not a LaMa FFC generator (no {stem_key!r})")
    ngf, input_nc = state[stem_key].shape[:2]
    if input_nc != 4:
        raise ModelError(f"{source}: the generator takes {input_nc} input channels, LaMa takes 4 (RGB + mask)")

    ffc_layers: set[int] = set()
    blocks: set[int] = set()
    layer_keys = [k for k in state if k.split(".")[0] == "model" and k.count(".") >= 2 and k.split(".")[1].isdigit()]
    for key in layer_keys:
        parts = key.split(".")
        if parts[2] == "ffc":
            ffc_layers.add(int(parts[1]))
        elif parts[2] in ("conv1", "conv2"):
            blocks.add(int(parts[1]))
    n_down = len(ffc_layers) - 1
    n_blocks = len(blocks)
    if n_down < 1 or ffc_layers != set(range(1, n_down + 2)) or blocks != set(range(n_down + 2, n_down + 2 + n_blocks)):
        raise ModelError(f"{source}: the layer layout is not that of LaMa's FFCResNetGenerator")

    last = f"model.{n_down + 1}.ffc"
    out_cl = state[f"{last}.convl2l.weight"].shape[0] if f"{last}.convl2l.weight" in state else 0
    out_cg = state[f"{last}.convl2g.weight"].shape[0] if f"{last}.convl2g.weight" in state else 0
    bottleneck = out_cl + out_cg
    if bottleneck == 0:
        raise ModelError(f"{source}: the last downsampling layer {last!r} has no convolution weights")
    ratio_g = out_cg / bottleneck
    if int(bottleneck * ratio_g) != out_cg:  # guard against float rounding down
        ratio_g = (out_cg + 0.5) / bottleneck
    uncapped = ngf * 2 ** n_down
    max_features = bottleneck if bottleneck < uncapped else max(BIG_LAMA.max_features, bottleneck)
    config = FFCConfig(ngf=int(ngf), n_downsampling=n_down, n_blocks=n_blocks, ratio_g=ratio_g,
                       max_features=int(max_features))

    out_keys = [k for k in layer_keys if k.endswith(".weight") and state[k].ndim == 4]
    final = max(out_keys, key=lambda k: int(k.split(".")[1]))
    if state[final].shape[0] != 3:
        raise ModelError(f"{source}: the generator outputs {state[final].shape[0]} channels, LaMa outputs 3")
    return config


def _check_script_signature(module: torch.jit.ScriptModule, path: Path) -> None:
    try:
        arguments = module.forward.schema.arguments
    except AttributeError:
        return
    if len(arguments) != 3:  # self, image, mask
        names = ", ".join(a.name for a in arguments[1:])
        raise ModelError(f"{path}: the TorchScript model takes ({names}); a LaMa model takes (image, mask)")


# --------------------------------------------------------------------------------------------
# Writing weight files


def export_generator(generator: nn.Module, path: str | Path, config: FFCConfig,
                     extra_metadata: dict[str, str] | None = None) -> None:
    """The generator's own state_dict (``model.*`` keys), floating tensors in fp16, as safetensors
    (atomic write): what the trainer exports and :func:`load_generator` reads. The FFCConfig is in
    the metadata under ``ffc_config`` (JSON), beside ``format`` = :data:`GENERATOR_FORMAT`."""
    metadata = {"format": GENERATOR_FORMAT, "ffc_config": json.dumps(dataclasses.asdict(config))}
    metadata.update(extra_metadata or {})
    save_safetensors(half_precision(generator.state_dict()), path, metadata)


def export_torchscript(module: LamaModule | FFCResNetGenerator, path: str | Path,
                       example_size: tuple[int, int] = (64, 64),
                       check_size: tuple[int, int] = (96, 128)) -> Path:
    """Trace ``module`` into a ``big-lama.pt``-style TorchScript file (``model(image, mask)``).

    Traced in eval mode on a 1×3×``example_size`` input on the module's device and dtype, then
    checked against the eager module at ``check_size`` (a different size and batch 2, so the
    trace must not have frozen any shape). Written atomically.

    Raises:
        RuntimeError: the traced module disagrees with the eager one.
    """
    if isinstance(module, FFCResNetGenerator):
        module = LamaModule(module)
    reference = next(module.parameters())
    rng = torch.Generator().manual_seed(0)

    def example(batch: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        image = torch.rand(batch, 3, h, w, generator=rng)
        mask = torch.zeros(batch, 1, h, w)
        mask[..., h // 4: 3 * h // 4, w // 4: w // 2] = 1
        return image.to(reference), mask.to(reference)

    failure = f"traced LaMa disagrees with the eager module at {check_size}: the trace is not size-generic"
    traced = trace_checked(module, example(1, *example_size), example(2, *check_size), failure)
    return save_torchscript(traced, path)
