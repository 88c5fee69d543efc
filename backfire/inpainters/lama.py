"""Big-LaMa: the module, its weight files, and random-weight stand-ins.

Two file formats hold the released big-LaMa weights, and :func:`load_lama` reads both, telling
them apart by content rather than by extension:

- ``big-lama.pt``, the TorchScript archive used by IOPaint / lama-cleaner /
  simple-lama-inpainting, called as ``model(image, mask)`` → composited image (see
  :class:`LamaModule`);
- LaMa's ``best.ckpt`` (``big-lama.zip`` from github.com/advimman/lama), a PyTorch Lightning
  checkpoint whose ``state_dict`` holds the generator under ``generator.*`` next to
  discriminator and loss weights, which are ignored.

A bare generator state dict (keys ``model.*``), as a torch pickle or ``.safetensors``, is read
too. The generator size is inferred from the weights, so compact configurations of the same
architecture load with the same function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from backfire.errors import ModelError, WeightsNotFoundError
from backfire.inpainters.base import ModuleInpainter, build_with_weights
from backfire.inpainters.ffc import BIG_LAMA, STEMFED_FORMAT, FFCConfig, FFCResNetGenerator, build_generator
from backfire.io import write_atomic

__all__ = [
    "BIG_LAMA",
    "TINY_LAMA",
    "WEIGHTS_HELP",
    "LamaInpainter",
    "LamaModule",
    "export_torchscript",
    "generator_state_dict",
    "infer_config",
    "load_generator",
    "load_lama",
    "random_generator",
    "save_lama_checkpoint",
    "weights_format",
]

TINY_LAMA = FFCConfig(ngf=8, n_downsampling=3, n_blocks=2, ratio_g=0.75, max_features=1024)
"""A few-thousand-parameter configuration for tests and smoke runs (not a useful inpainter)."""

WEIGHTS_HELP = (
    "download big-lama.pt (IOPaint / lama-cleaner / simple-lama-inpainting use it) or LaMa's best.ckpt "
    "(github.com/advimman/lama, big-lama.zip) and pass --weights PATH"
)

_GENERATOR_PREFIX = "generator."


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
        try:
            with _quiet_jit():
                module = torch.jit.load(str(path), map_location=device)
        except Exception as exc:  # the archive looked like TorchScript but is not loadable
            raise ModelError(f"cannot load TorchScript model {path}: {_first_line(exc)}") from exc
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
    """``"torchscript"``, ``"torch"`` (a ``torch.save`` pickle) or ``"safetensors"``, from the file's content.

    Raises:
        ModelError: none of these.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":  # a zip archive: torch.save's format, and TorchScript's
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{path} is a damaged zip archive: {exc}") from exc
        if any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if any(n.endswith("models/best.ckpt") for n in names):
            raise ModelError(f"{path} is the big-lama.zip download: unzip it and pass the big-lama folder "
                             "(or big-lama/models/best.ckpt)")
        raise ModelError(f"{path} is a zip archive but neither a TorchScript model nor a PyTorch checkpoint")
    size = path.stat().st_size
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle (protocol ≥ 2): torch.save's legacy format
        return "torch"
    raise ModelError(
        f"{path} is neither a TorchScript model (big-lama.pt) nor a PyTorch/Lightning checkpoint "
        f"(best.ckpt) nor a .safetensors file; {WEIGHTS_HELP}"
    )


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
    if fmt == "safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            raw: Any = load_file(str(path), device="cpu")
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except Exception as exc:
            raise ModelError(f"cannot read {path} as safetensors: {_first_line(exc)}") from exc
        if metadata.get("format") == STEMFED_FORMAT:  # its model.* keys alone would load, minus the encoder
            raise ModelError(f"{path} is a generator fed by a pretrained encoder, not a plain LaMa generator: "
                             "load it with backfire.inpainters.stemfed.load_trained_generator")
    else:
        raw = _torch_load(path)
    state = generator_state_dict(raw, source=str(path))
    config = _with_metadata(infer_config(state, source=str(path)), metadata, path)
    return build_with_weights(lambda: build_generator(config), state,
                              f"{path}: weights do not fit the LaMa generator {config}")


def _with_metadata(config: FFCConfig, metadata: Mapping[str, str], path: Path) -> FFCConfig:
    """``config`` with what the weights cannot show (``prefill``) taken from backfire's own metadata.

    Files written by :func:`backfire.train.trainer.export_generator` carry their FFCConfig as JSON
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


class _Opaque(dict):
    """Inert stand-in for a class a checkpoint refers to but that we never import.

    Lightning checkpoints carry training metadata (omegaconf ``DictConfig`` hyper-parameters,
    Lightning enums) next to the weights. Unpickling them for real needs those packages and runs
    their code; this placeholder accepts any constructor arguments and state and does nothing.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _torch_load(path: Path) -> Any:
    """``torch.load`` on CPU, as safely as the file allows."""
    # torch.load is given an open file, never the path: recent versions choose a reader by the
    # path's extension (".safetensors"), and the format was already decided from the content.
    def load(**kwargs: Any) -> Any:
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", **kwargs)

    try:
        return load(weights_only=True)
    except pickle.UnpicklingError:
        pass  # a class outside torch's allowlist (LaMa's best.ckpt holds omegaconf hyper-parameters)
    except Exception as exc:
        raise ModelError(f"cannot read {path} as a PyTorch checkpoint: {_first_line(exc)}") from exc

    # Still weights_only: every non-allowlisted global is replaced by an inert placeholder, so no code
    # from the file runs and neither omegaconf nor Lightning need be installed.
    get_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if get_unsafe is not None:
        try:
            with open(path, "rb") as f:
                stubs = [(_Opaque, name) for name in get_unsafe(f)]
            with torch.serialization.safe_globals(stubs):
                return load(weights_only=True)
        except Exception:
            pass

    # Last resort: full unpickling, which can run code from the file. The user chose this file as
    # their model weights (exactly as LaMa's own loader torch.loads it), so we trust it as they do.
    try:
        return load(weights_only=False)
    except Exception as exc:
        raise ModelError(f"cannot read {path} as a PyTorch checkpoint: {_first_line(exc)}") from exc


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


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit warns that it is deprecated; big-lama.pt is TorchScript, so we use it knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Writing weight files


def random_generator(config: FFCConfig = BIG_LAMA, seed: int = 0) -> FFCResNetGenerator:
    """A generator of ``config`` with random weights and non-trivial BatchNorm statistics (eval mode).

    Convolutions keep PyTorch's default initialisation; BatchNorm affine parameters are perturbed
    and the running statistics are estimated from a batch of random masked images, so they differ from the
    defaults (a loader that dropped or misplaced them would be caught) while keeping activations in
    range (the output is not saturated and gradients flow). Deterministic in ``seed``; the global
    RNG is left untouched. Not a trained model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(config)
        norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for bn in norms:
                bn.weight.uniform_(0.8, 1.2)
                bn.bias.normal_(0.0, 0.1)
                bn.momentum = None  # cumulative average over the calibration batches
            side = 4 * 2 ** config.n_downsampling  # a 4×4 bottleneck: cheap, enough samples for the statistics
            generator.train()
            image = torch.rand(2, 3, side, side)
            mask = (torch.rand(2, 1, 4, 4) < 0.3).float()
            mask = nn.functional.interpolate(mask, size=(side, side), mode="nearest")
            generator(torch.cat([image * (1 - mask), mask], dim=1))
        for bn in norms:
            bn.momentum = 0.1
    return generator.eval()


def save_lama_checkpoint(generator: FFCResNetGenerator | LamaModule, path: str | Path,
                         extra_state: Mapping[str, Tensor] | None = None) -> Path:
    """Write ``generator`` as a LaMa-style Lightning checkpoint (``state_dict`` with ``generator.*`` keys).

    ``extra_state`` adds other ``state_dict`` entries (e.g. ``discriminator.*``), as a real
    ``best.ckpt`` has. Written atomically.
    """
    if isinstance(generator, LamaModule):
        generator = generator.generator
    state: dict[str, Tensor] = {
        _GENERATOR_PREFIX + k: v.detach().cpu().clone() for k, v in generator.state_dict().items()
    }
    if extra_state:
        state.update({k: v.detach().cpu().clone() for k, v in extra_state.items()})
    checkpoint = {"epoch": 0, "global_step": 0, "state_dict": state}
    return write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))


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
    was_training = module.training
    module.eval()
    rng = torch.Generator().manual_seed(0)

    def example(batch: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        image = torch.rand(batch, 3, h, w, generator=rng)
        mask = torch.zeros(batch, 1, h, w)
        mask[..., h // 4: 3 * h // 4, w // 4: w // 2] = 1
        return image.to(reference), mask.to(reference)

    try:
        with torch.no_grad(), _quiet_jit():
            traced = torch.jit.trace(module, example(1, *example_size), check_trace=False)
            check = example(2, *check_size)
            expected, got = module(*check), traced(*check)
    finally:
        module.train(was_training)
    tolerance = 1e-4 if reference.dtype == torch.float32 else 5e-2
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=0, atol=tolerance):
        raise RuntimeError(f"traced LaMa disagrees with the eager module at {check_size}: "
                           "the trace is not size-generic")

    def save(tmp: Path) -> None:
        with _quiet_jit():
            torch.jit.save(traced, str(tmp))

    return write_atomic(path, save)
