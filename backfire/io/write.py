"""Writing images, masks and any other file: 8-bit encodings, and atomic writes for everything.

All writes are atomic (temporary file in the target's directory, fsync, then ``os.replace``): a
failure leaves neither a temporary file nor a partial target. Writes refuse to replace any of the
paths given in ``protect_inputs``, whatever the spelling of the path (symlinks, ``./``, hard links).
Pixels are rounded to 8 bits, never truncated (:mod:`backfire.pixels`).
"""

from __future__ import annotations

import io as _stdio
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backfire.io.paths import InputError, PathLike, _detail, _show, check_output, check_writable
from backfire.io.read import DEFAULT_MAX_PIXELS, keeps_transparency
from backfire.pixels import as_chw, to_uint8

__all__ = [
    "FileSet",
    "LOSSY_SUFFIXES",
    "check_image_output",
    "encode_image",
    "save_image",
    "save_mask",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]

_LOSSLESS = {".png": "PNG", ".webp": "WEBP"}
_LOSSY = {".jpg": "JPEG", ".jpeg": "JPEG"}
LOSSY_SUFFIXES = frozenset(_LOSSY)
"""Output suffixes whose compression alters pixels (``.webp`` is written lossless)."""


def _format_for(path: PathLike, allowed: dict[str, str], what: str) -> str:
    ext = Path(path).suffix.lower()
    if ext == "":
        return "PNG"
    if ext not in allowed:
        names = ", ".join(sorted(allowed))
        raise InputError(
            f"{_show(path)}: cannot save the {what} as '{ext}': use one of {names} (.png recommended)"
        )
    return allowed[ext]


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = _stdio.BytesIO()
    if fmt == "PNG":
        img.save(buf, format="PNG", compress_level=6)
    elif fmt == "WEBP":
        img.save(buf, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    elif fmt == "JPEG":
        img.save(buf, format="JPEG", quality=95, subsampling=0)
    else:  # pragma: no cover - guarded by _format_for
        raise ValueError(f"unknown format {fmt}")
    return buf.getvalue()


def encode_image(pixels: torch.Tensor, fmt: str = "PNG", *, grey: bool = False,
                 alpha: torch.Tensor | None = None) -> bytes:
    """Encode 3xHxW float pixels as 8-bit ``fmt`` bytes ("PNG", "WEBP" lossless, "JPEG" q95).

    ``grey``: write one channel (the mean of the three, which are equal for a greyscale protection);
    ``alpha`` (HxW in [0, 1]): write it as the alpha channel (JPEG has none: refused).
    """
    fmt = fmt.upper()
    if fmt not in ("PNG", "WEBP", "JPEG"):
        raise ValueError(f"unsupported format {fmt!r}; use PNG, WEBP or JPEG")
    rgb = to_uint8(pixels)
    if grey:
        rgb = to_uint8(as_chw(pixels).mean(0, keepdim=True).expand(3, -1, -1))
    bands = [Image.fromarray(rgb[..., 0], mode="L")] if grey else [Image.fromarray(rgb, mode="RGB")]
    if alpha is not None:
        if fmt == "JPEG":
            raise ValueError("JPEG cannot hold transparency: save as PNG or WEBP")
        a = np.ascontiguousarray(torch.round(alpha.detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).numpy())
        bands = [*bands[0].split(), Image.fromarray(a, mode="L")]
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[sum(len(b.getbands()) for b in bands)]
    return _encode(bands[0] if len(bands) == 1 else Image.merge(mode, bands), fmt)


_NO_ALPHA = frozenset({"JPEG"})


def _check_holds(path: PathLike, fmt: str, alpha: bool) -> None:
    """The one rule of what a format cannot hold: JPEG has no alpha channel."""
    if alpha and fmt in _NO_ALPHA:
        raise InputError(f"{_show(path)}: {fmt} cannot hold the image's transparency; save as .png or .webp")


def check_image_output(path: PathLike, protect_inputs: Iterable[PathLike] = (), *,
                       transparency_of: PathLike | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Path:
    """Everything :func:`save_image` would refuse, checked before any work: the format, the folder, and that a
    file can really be created there (read-only filesystems and immutable folders included). ``transparency_of``:
    the image the output is written from with its transparency kept (``read_image(keep_alpha=True)``); its alpha
    must fit the format (read, up to ``max_pixels``, only when the format has none: :func:`keeps_transparency`)."""
    fmt = _format_for(path, {**_LOSSLESS, **_LOSSY}, "image")
    if transparency_of is not None and fmt in _NO_ALPHA:
        _check_holds(path, fmt, keeps_transparency(transparency_of, max_pixels))
    target = check_output(path, protect_inputs)
    check_writable(target.parent)
    return target


def save_image(
    pixels: torch.Tensor, path: PathLike, *, protect_inputs: Iterable[PathLike] = (), grey: bool = False,
    alpha: torch.Tensor | None = None,
) -> None:
    """Save 3xHxW (or 1x3xHxW) float pixels in [0, 1] as an 8-bit image, atomically.

    Values are clamped to [0, 1] and rounded (``round(x * 255)``), never truncated, so a
    tensor passed through :func:`backfire.pixels.quantize` reads back exactly. The format follows the
    extension: ``.png`` (also used when there is no extension), ``.webp`` (lossless), or
    ``.jpg``/``.jpeg`` (quality 95). Lossy JPEG alters the pixels and weakens the
    protection: prefer PNG. Refuses (InputError) to overwrite any path in ``protect_inputs``.
    ``grey`` and ``alpha`` keep a greyscale or transparent input's mode (see :func:`encode_image`).
    """
    fmt = _format_for(path, {**_LOSSLESS, **_LOSSY}, "image")
    check_output(path, protect_inputs)
    _check_holds(path, fmt, alpha is not None)
    write_bytes_atomic(path, encode_image(pixels, fmt, grey=grey, alpha=alpha), protect_inputs=protect_inputs)


def save_mask(
    mask: torch.Tensor, path: PathLike, *, protect_inputs: Iterable[PathLike] = ()
) -> None:
    """Save an HxW (or 1xHxW, 1x1xHxW) mask as an 8-bit greyscale image: 255 where mask > 0.5.

    Only lossless formats (``.png``, the default, or ``.webp``) are allowed, so that the
    saved mask reads back identically with :func:`read_mask`. Atomic; refuses to overwrite
    any path in ``protect_inputs``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(mask).__name__}")
    m = mask.detach()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"expected a mask of shape HxW, got {tuple(mask.shape)}")
    fmt = _format_for(path, _LOSSLESS, "mask")
    check_output(path, protect_inputs)
    arr = np.where((m.to("cpu", torch.float32) > 0.5).numpy(), 255, 0).astype(np.uint8)
    data = _encode(Image.fromarray(arr, mode="L"), fmt)
    write_bytes_atomic(path, data, protect_inputs=protect_inputs)


def _file_mode() -> int:
    """Permissions a newly created file gets under the current umask (0o666 & ~umask)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: PathLike, write: Callable[[Path], object],
                 protect_inputs: Iterable[PathLike] = ()) -> Path:
    """Let ``write(tmp)`` fill a temporary file beside ``path``, then move it into place atomically.

    The one home of atomic writes: bytes, text, PNGs, checkpoints (``torch.save``), safetensors and
    TorchScript archives all go through it. On any failure (or Ctrl-C) the temporary file is removed and
    an existing target is left untouched; a new file gets the permissions the umask gives, a replaced one
    keeps its own. Raises :class:`InputError` if ``path`` is (another spelling of) a path in
    ``protect_inputs``, if its directory does not exist, or if the write fails.
    """
    target = check_output(path, list(protect_inputs))
    shown = _show(path)
    try:
        mode = os.stat(target).st_mode & 0o7777 if target.exists() else _file_mode()
    except OSError:
        mode = _file_mode()
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=os.fspath(target.parent) or ".")
        os.close(fd)
        write(Path(tmp_name))
        with open(tmp_name, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        reason = exc.strerror or _detail(exc)
        raise InputError(f"{shown}: cannot write the file: {reason}") from None
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
    _fsync_dir(target.parent)
    return target


def write_bytes_atomic(path: PathLike, data: bytes, protect_inputs: Iterable[PathLike] = ()) -> None:
    """Write ``data`` to ``path`` atomically; see :func:`write_atomic`."""
    write_atomic(path, lambda tmp: tmp.write_bytes(data), protect_inputs)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(os.fspath(directory) or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: PathLike, text: str, protect_inputs: Iterable[PathLike] = ()) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`write_bytes_atomic`."""
    write_bytes_atomic(path, text.encode("utf-8"), protect_inputs=protect_inputs)


class FileSet:
    """New versions of several files that belong together (a protected image, its JSON and its preview), written
    beside the old ones and swapped in only once every one of them is complete.

    ``files[target]`` is where to write ``target``'s new version: a file of the same name in a hidden temporary
    folder next to it (same filesystem, so the swap is a rename; same name, so the format still follows the
    extension). Leaving the ``with`` block normally moves every new file onto its target (a Ctrl-C during the
    swap is held until it is done; a replaced file keeps its permissions); leaving it by any exception or Ctrl-C
    removes the temporaries and leaves every target, an earlier run's included, as it was. Files not written in
    the block are left alone. Raises :class:`InputError` as :func:`check_output` does, before anything is
    written.
    """

    def __init__(self, targets: Iterable[PathLike], protect_inputs: Iterable[PathLike] = ()):
        inputs = list(protect_inputs)
        self.targets = [check_output(target, inputs) for target in targets]
        self._folders: dict[Path, Path] = {}
        self.committed = False

    def __getitem__(self, target: PathLike) -> Path:
        target = Path(target)
        if target not in self.targets:
            raise KeyError(f"{_show(target)} is not one of this set's files")
        if target.parent not in self._folders:
            try:
                made = tempfile.mkdtemp(prefix=".backfire-new.", dir=os.fspath(target.parent) or ".")
            except OSError as exc:
                raise InputError(f"{_show(target)}: cannot write there: {exc.strerror or _detail(exc)}") from None
            self._folders[target.parent] = Path(made)
        return self._folders[target.parent] / target.name

    def __enter__(self) -> FileSet:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> list[Path]:
        """Move every new file written onto its target; returns the targets replaced or created."""
        written = [t for t in self.targets if t.parent in self._folders and self[t].exists()]
        try:
            with _interrupts_held():
                for target in written:
                    new = self[target]
                    try:
                        if target.exists():
                            os.chmod(new, os.stat(target).st_mode & 0o7777)
                        os.replace(new, target)
                    except OSError as exc:
                        raise InputError(f"{_show(target)}: cannot write the file: {exc.strerror or _detail(exc)}"
                                         ) from None
                self.committed = True
        finally:
            self.discard()
        for folder in {t.parent for t in written}:
            _fsync_dir(folder)
        return written

    def discard(self) -> None:
        """Remove the temporaries (the targets are untouched)."""
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        self._folders.clear()


@contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it: a few renames must not be cut in half.
    Only where Python's own handler is installed and in the main thread (signals arrive nowhere else)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if caught:
        raise KeyboardInterrupt
