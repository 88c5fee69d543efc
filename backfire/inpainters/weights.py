"""Weight files, whatever the model: which format a file is, reading it safely, writing it atomically.

The model modules (:mod:`~backfire.inpainters.lama`, :mod:`~backfire.inpainters.mat`,
:mod:`~backfire.inpainters.migan`, :mod:`~backfire.inpainters.stemfed`) keep their architecture and the
mapping from a file's keys to their parameters; how bytes on disk become tensors is here, once:

- :func:`sniff` tells the formats apart by content, never by extension (people rename files);
- :func:`load_torch` is ``torch.load`` as safely as the file allows (weights-only first; inert
  placeholders for the classes a Lightning checkpoint names; a full unpickle only as the last resort,
  for a file the user chose as their weights, and never where the caller asks for ``strict``);
- :func:`read_network_pickle` reads a StyleGAN-style network pickle (MAT's official releases, which
  carry their own source code) without running any of it;
- :func:`read_safetensors`, :func:`load_torchscript` and the writers (:func:`save_torch`,
  :func:`save_safetensors`, :func:`save_torchscript`), every write atomic.

Every failure to read is a one-line :class:`~backfire.errors.ModelError`.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from backfire.errors import ModelError, first_line
from backfire.io import write_atomic

__all__ = [
    "Format",
    "half_precision",
    "load_torch",
    "load_torchscript",
    "quiet_jit",
    "read_network_pickle",
    "read_safetensors",
    "safetensors_metadata",
    "save_safetensors",
    "save_torch",
    "save_torchscript",
    "sniff",
    "trace_checked",
    "zip_names",
]

Format = Literal["torchscript", "torch", "pickle", "safetensors", "zip", "unknown"]
"""What :func:`sniff` finds: a TorchScript archive; ``torch.save``'s zip; a bare pickle stream (a legacy
``torch.save`` file or a network pickle); safetensors; another zip archive; none of these."""


# --------------------------------------------------------------------------------------------
# Which format


def zip_names(path: Path) -> list[str]:
    """The member names of the zip archive ``path``.

    Raises:
        ModelError: a damaged archive.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{path} is a damaged zip archive: {exc}") from exc


def sniff(path: str | Path) -> Format:
    """The format of ``path``, from its first bytes (and, for a zip, its member names).

    Raises:
        ModelError: a damaged zip archive.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":  # a zip archive: torch.save's format, and TorchScript's
        names = zip_names(path)
        if any(n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "zip"
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle (protocol ≥ 2)
        return "pickle"
    return "unknown"


# --------------------------------------------------------------------------------------------
# torch.save files


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


def load_torch(path: str | Path, what: str = "a PyTorch checkpoint", strict: bool = False) -> Any:
    """``torch.load`` on the CPU, as safely as the file allows.

    ``strict``: torch's weights-only reader alone; a file that needs anything more is an error.
    Otherwise a file naming classes outside torch's allowlist is read again, still weights-only, with
    every such class replaced by an inert placeholder, and only if that fails too is it unpickled fully
    (which can run code from the file: the user chose it as their model weights, and the model's own
    loader ``torch.load``\\ s it the same way).

    Raises:
        ModelError: ``cannot read PATH as WHAT: …``.
    """
    path = Path(path)

    # torch.load is given an open file, never the path: recent versions choose a reader by the
    # path's extension (".safetensors"), and the format was already decided from the content.
    def load(**kwargs: Any) -> Any:
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", **kwargs)

    try:
        return load(weights_only=True)
    except pickle.UnpicklingError as exc:
        if strict:  # a class outside torch's allowlist (LaMa's best.ckpt holds omegaconf hyper-parameters)
            raise ModelError(f"cannot read {path} as {what}: {first_line(exc)}") from exc
    except Exception as exc:
        raise ModelError(f"cannot read {path} as {what}: {first_line(exc)}") from exc

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

    try:
        return load(weights_only=False)
    except Exception as exc:
        raise ModelError(f"cannot read {path} as {what}: {first_line(exc)}") from exc


def save_torch(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path``, atomically."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


# --------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the metadata of a safetensors file.

    Raises:
        ModelError: not a readable safetensors file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:
        raise ModelError(f"cannot read {path} as safetensors: {first_line(exc)}") from exc
    return tensors, metadata


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's metadata; ``{}`` for a file of another format (or none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception:
        return {}


def half_precision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU copies of ``state`` with floating tensors in fp16, contiguous: what an exported generator holds."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu")
        out[k] = (v.half() if v.is_floating_point() else v).contiguous()
    return out


def save_safetensors(tensors: Mapping[str, Tensor], path: str | Path, metadata: Mapping[str, str]) -> Path:
    """``tensors`` and ``metadata`` as a safetensors file, atomically."""
    from safetensors.torch import save_file

    return write_atomic(path, lambda tmp: save_file(dict(tensors), str(tmp), metadata=dict(metadata)))


# --------------------------------------------------------------------------------------------
# TorchScript


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """torch.jit warns that it is deprecated; the released archives are TorchScript, so we use it knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        yield


def load_torchscript(path: str | Path, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """A TorchScript archive, on ``device``.

    Raises:
        ModelError: the archive looked like TorchScript but does not load.
    """
    try:
        with quiet_jit():
            return torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ModelError(f"cannot load TorchScript model {path}: {first_line(exc)}") from exc


def trace_checked(module: torch.nn.Module, example: tuple[Tensor, ...], check: tuple[Tensor, ...],
                  failure: str) -> torch.jit.ScriptModule:
    """``module`` traced in eval mode on ``example``, then checked against the eager module on ``check``
    (other shapes, so a trace that froze one is caught): within 1e-4 in float32, 5e-2 in lower
    precision. The module's training mode is restored.

    Raises:
        RuntimeError: ``failure``, when the traced module disagrees with the eager one.
    """
    reference = next(module.parameters())
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), quiet_jit():
            traced = torch.jit.trace(module, example, check_trace=False)
            expected, got = module(*check), traced(*check)
    finally:
        module.train(was_training)
    tolerance = 1e-4 if reference.dtype == torch.float32 else 5e-2
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=0, atol=tolerance):
        raise RuntimeError(failure)
    return traced


def save_torchscript(module: torch.jit.ScriptModule, path: str | Path) -> Path:
    """A traced or scripted module as a TorchScript archive, atomically."""

    def save(tmp: Path) -> None:
        with quiet_jit():
            torch.jit.save(module, str(tmp))

    return write_atomic(path, save)


# --------------------------------------------------------------------------------------------
# StyleGAN-style network pickles, read without running them

_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a legacy (non-zip) torch.save file


class _Record:
    """Inert stand-in for every class a network pickle names (persistent modules, torch containers,
    dnnlib dicts, numpy scalars): it keeps the state it is given and runs nothing."""

    class_name: str = ""
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _persistent_record(meta: Any) -> _Record:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``, which would exec the
    module source stored in ``meta``: keep the class name and the state, ignore the source."""
    record = _Record()
    if isinstance(meta, Mapping):
        record.class_name, record.state = str(meta.get("class_name", "")), meta.get("state")
    return record


def _storage_from_bytes(data: bytes) -> Any:
    """``torch.storage._load_from_bytes``, restricted to what a weights-only load allows."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


_PICKLE_GLOBALS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): OrderedDict,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
}


class _NetworkUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _PICKLE_GLOBALS.get((module, name), _Record)


def read_network_pickle(path: str | Path, network: str = "G_ema",
                        kind: str = "StyleGAN-style") -> dict[str, Tensor] | None:
    """The tensors of ``network`` in a StyleGAN-style network pickle, by dotted name; no code runs.

    The persistent classes become inert records, tensors are rebuilt by torch's weights-only loader,
    and the network's parameters and buffers are collected by dotted name. ``kind`` names the
    expected pickle in the error (``"MAT"``). Returns ``None`` when ``path`` is a legacy
    ``torch.save`` file instead (also a pickle stream).

    Raises:
        ModelError: not a network pickle holding ``network``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _NetworkUnpickler(f).load()
    except Exception as exc:
        raise ModelError(f"cannot read {path} as a network pickle: {first_line(exc)}") from exc
    if data == _LEGACY_TORCH_MAGIC:
        return None
    if not isinstance(data, Mapping) or not isinstance(data.get(network), _Record):
        keys = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
        raise ModelError(f"{path} is a pickle but not a {kind} network pickle (no {network!r}; holds {keys})")
    tensors: dict[str, Tensor] = {}
    _collect_tensors(data[network], "", tensors)
    if not tensors:
        raise ModelError(f"{path}: the network {network!r} holds no tensors")
    return tensors


def _collect_tensors(module: Any, prefix: str, out: dict[str, Tensor]) -> None:
    state = module.state if isinstance(module, _Record) else None
    if isinstance(state, tuple) and state and isinstance(state[0], Mapping):
        state = state[0]
    if not isinstance(state, Mapping):
        return
    for group in ("_parameters", "_buffers"):
        entries = state.get(group)
        if isinstance(entries, Mapping):
            out.update({prefix + str(k): v.detach() for k, v in entries.items() if isinstance(v, Tensor)})
    children = state.get("_modules")
    if isinstance(children, Mapping):
        for name, child in children.items():
            _collect_tensors(child, f"{prefix}{name}.", out)
