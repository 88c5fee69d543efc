"""Reading images and masks: any file Pillow decodes → float32 tensors in [0, 1], every conversion noted.

:func:`read_image` and :func:`read_mask` turn any image Pillow can decode into 3xHxW pixels and HxW
{0, 1} masks and report every conversion they made as a one-line human-readable note. Every problem
with the user's file raises :class:`~backfire.io.paths.InputError` with a one-line message that names
the file, says what is wrong and, where useful, what to do.

Safety rules applied to every read:

* the pixel cap (``max_pixels``) is checked from the header, before any pixel is
  decoded; Pillow's own global decompression-bomb limit is suspended while we read,
  so that it never pre-empts our (clearer) message for images under our cap;
* truncated data is never loaded silently: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
  forced to False while we decode, the pixels are fully loaded, and PNG files are
  additionally checked chunk by chunk (CRCs and IEND);
* EXIF orientation is applied, so pixels are upright as photo viewers show them.

The Pillow globals are changed only while a read holds a module lock and are always
restored afterwards; other threads using Pillow at the same moment may briefly see
them changed.
"""

from __future__ import annotations

import os
import struct
import threading
import warnings
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from backfire.io.paths import InputError, PathLike, _detail, _one_line, _show

__all__ = ["DEFAULT_MAX_PIXELS", "LoadedImage", "LoadedMask", "keeps_transparency", "read_image", "read_mask"]

DEFAULT_MAX_PIXELS = 40_000_000


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image read by :func:`read_image`.

    ``pixels`` is 3xHxW float32 in [0, 1]; ``notes`` lists every conversion made. ``grey``: the file was
    greyscale (its three channels are equal), so a protection can stay greyscale. ``alpha``: HxW in [0, 1]
    when the file has transparency and the reader was asked to keep it (``keep_alpha``); ``pixels`` are then
    the stored colours, not composited, and the alpha is meant to be written back untouched.
    """

    pixels: torch.Tensor
    notes: list[str]
    path: Path
    grey: bool = False
    alpha: torch.Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the upright image."""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


@dataclass(frozen=True, eq=False)
class LoadedMask:
    """A mask read by :func:`read_mask`: ``mask`` is HxW float32 in {0, 1} (1 = protect)."""

    mask: torch.Tensor
    notes: list[str]
    path: Path

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of the mask."""
        return int(self.mask.shape[-1]), int(self.mask.shape[-2])


def _corrupt(shown: str, what: str, exc: BaseException) -> InputError:
    return InputError(f"{shown}: {what} file is truncated or corrupt ({_detail(exc)})")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _size_text(w: int, h: int) -> str:
    return f"{w}x{h}"


_PIL_LOCK = threading.RLock()

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# EXIF orientation -> (transpose method, what was done)
_ORIENTATIONS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT, "mirrored left-right"),
    3: (Image.Transpose.ROTATE_180, "rotated 180 degrees"),
    4: (Image.Transpose.FLIP_TOP_BOTTOM, "mirrored top-bottom"),
    5: (Image.Transpose.TRANSPOSE, "transposed"),
    6: (Image.Transpose.ROTATE_270, "rotated 90 degrees clockwise"),
    7: (Image.Transpose.TRANSVERSE, "transversed"),
    8: (Image.Transpose.ROTATE_90, "rotated 90 degrees counter-clockwise"),
}

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


@contextmanager
def _pillow_guard() -> Iterator[list[warnings.WarningMessage]]:
    """Suspend Pillow's bomb limit, forbid truncated loads, and record decoder warnings."""
    with _PIL_LOCK:
        old_max = Image.MAX_IMAGE_PIXELS
        old_trunc = ImageFile.LOAD_TRUNCATED_IMAGES
        Image.MAX_IMAGE_PIXELS = None  # our own cap is checked from the header instead
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield caught
        finally:
            Image.MAX_IMAGE_PIXELS = old_max
            ImageFile.LOAD_TRUNCATED_IMAGES = old_trunc


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes: list[str] = []
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            continue
        note = f"decoder warning: {_one_line(str(w.message))}"
        if note not in notes:
            notes.append(note)
    return notes


def _png_header(head: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None if not a PNG."""
    if len(head) >= 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def _open_checked(
    path: PathLike, max_pixels: int | None, what: str
) -> tuple[Image.Image, list[str]]:
    """Open, check the cap from the header, decode fully, apply EXIF orientation.

    Must be called inside :func:`_pillow_guard`. Returns a loaded, upright image (mode
    untouched) and the notes so far.
    """
    shown = _show(path)
    p = Path(path)
    if not os.path.lexists(p):
        raise InputError(f"{shown}: {what} file does not exist")
    if p.is_dir():
        raise InputError(f"{shown}: is a directory, not {_article(what)} {what} file")
    if not p.exists():
        raise InputError(f"{shown}: is a broken symbolic link (its target does not exist)")
    try:
        fp = open(p, "rb")
    except PermissionError:
        raise InputError(f"{shown}: cannot read the {what} file: permission denied") from None
    except OSError as exc:
        raise InputError(f"{shown}: cannot read the {what} file: {_detail(exc)}") from None

    notes: list[str] = []
    with fp:
        try:
            head = fp.read(32)
            fp.seek(0)
        except OSError as exc:
            raise InputError(f"{shown}: cannot read the {what} file: {_detail(exc)}") from None
        if not head:
            raise InputError(f"{shown}: {what} file is empty (0 bytes)")
        try:
            im = Image.open(fp)
        except UnidentifiedImageError:
            raise InputError(
                f"{shown}: not {_article(what)} {what} file that can be read (unknown format or corrupt "
                "header); use PNG, JPEG, WebP or TIFF"
            ) from None
        except Image.DecompressionBombError as exc:  # defensive: the limit is suspended
            raise InputError(f"{shown}: {what} is too large to open ({_detail(exc)})") from None
        except _DECODE_ERRORS as exc:
            raise _corrupt(shown, what, exc) from None

        w, h = im.size
        if w <= 0 or h <= 0:
            raise InputError(f"{shown}: {what} has zero size ({_size_text(w, h)})")
        if max_pixels is not None and w * h > max_pixels:
            raise InputError(
                f"{shown}: {what} is {_size_text(w, h)} = {w * h:,} pixels, over the limit of "
                f"{max_pixels:,} pixels; raise the limit with --max-pixels {w * h} (or more) "
                "if you trust this file"
            )

        try:
            if getattr(im, "is_animated", False):
                notes.append("multi-frame/animated image: only the first frame is used")
                im.seek(0)
            im.load()
        except _DECODE_ERRORS as exc:
            raise _corrupt(shown, what, exc) from None

        png = _png_header(head)
        if png is not None:
            # Pillow decodes all the pixels of a PNG cut within its last bytes; a full
            # chunk walk (CRCs up to IEND) catches any truncation or corruption.
            try:
                with open(p, "rb") as fp2:
                    Image.open(fp2).verify()
            except _DECODE_ERRORS as exc:
                raise _corrupt(shown, what, exc) from None
            depth, colour_type = png
            if depth == 16 and colour_type in (2, 4, 6):
                notes.append("16-bit colour reduced to 8 bits by the decoder")

        try:
            orientation = int(im.getexif().get(0x0112, 1))
        except Exception:  # noqa: BLE001 - corrupt EXIF must not stop the read
            orientation = 1
            notes.append("EXIF data unreadable: orientation ignored")
        if orientation in _ORIENTATIONS:
            method, done = _ORIENTATIONS[orientation]
            im = im.transpose(method)
            notes.append(f"{done} upright from EXIF orientation {orientation}")
        elif orientation != 1:
            notes.append(f"invalid EXIF orientation {orientation} ignored")
    return im, notes


def _channels(
    im: Image.Image, notes: list[str], shown: str, what: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 RGB (3xHxW, [0,1]) and alpha (HxW, [0,1], or None) from a loaded image."""
    mode = im.mode
    alpha: np.ndarray | None = None

    if "icc_profile" in im.info and im.info["icc_profile"]:
        notes.append("embedded ICC colour profile ignored (values used as sRGB)")

    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.float32) / np.float32(65535.0)
        notes.append("16-bit greyscale read at full precision")
        grey = arr
    elif mode == "I":
        raw = np.asarray(im).astype(np.int64)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            notes.append("32-bit integer greyscale: values outside 0..65535 clamped")
            raw = np.clip(raw, 0, 65535)
        grey = raw.astype(np.float32) / np.float32(65535.0)
        notes.append("32-bit integer greyscale read as 16-bit (divided by 65535)")
    elif mode == "F":
        arr = np.asarray(im).astype(np.float32)
        if not np.isfinite(arr).all():
            raise InputError(f"{shown}: float {what} contains NaN or infinite values")
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            notes.append(
                f"float greyscale values in [{float(arr.min()):.4g}, {float(arr.max()):.4g}] "
                "clamped to [0, 1]"
            )
            arr = np.clip(arr, 0.0, 1.0)
        grey = arr
    else:
        grey = None

    if grey is not None:
        notes.append("greyscale expanded to RGB")
        g = torch.from_numpy(np.ascontiguousarray(grey, dtype=np.float32))
        return g.unsqueeze(0).expand(3, -1, -1).contiguous(), None

    expand_note = "greyscale expanded to RGB"
    if mode == "1":
        expand_note = "1-bit black-and-white image expanded to RGB"
        im = im.convert("L")
        mode = "L"
    elif mode == "P":
        if "transparency" in im.info:
            im = im.convert("RGBA")
        else:
            im = im.convert("RGB")
        notes.append("palette image converted to RGB")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        notes.append("palette image converted to RGB")
        mode = "RGBA"
    elif mode == "CMYK":
        im = im.convert("RGB")
        notes.append("CMYK converted to RGB")
        mode = "RGB"
    elif mode == "YCbCr":
        im = im.convert("RGB")
        notes.append("YCbCr converted to RGB")
        mode = "RGB"
    elif mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
        mode = "LA"
    elif mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        try:
            im = im.convert("RGBA" if mode in ("RGBa", "La") else "RGB")
        except (ValueError, OSError) as exc:
            raise InputError(f"{shown}: unsupported {what} mode {mode} ({_detail(exc)})") from None
        notes.append(f"mode {mode} converted to RGB")
        mode = im.mode

    arr = np.asarray(im)
    if mode in ("L", "LA"):
        if mode == "LA":
            alpha = arr[..., 1]
            arr = arr[..., 0]
        notes.append(expand_note)
        arr = np.repeat(arr[None, ...], 3, axis=0)
    else:  # RGB / RGBA
        if mode == "RGBA":
            alpha = arr[..., 3]
            arr = arr[..., :3]
        arr = np.moveaxis(arr, -1, 0)
    rgb = torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32) / 255.0
    if alpha is None:
        return rgb, None
    return rgb, torch.from_numpy(np.ascontiguousarray(alpha)).to(torch.float32) / 255.0


def _decoded_channels(
    im: Image.Image, notes: list[str], shown: str, what: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`_channels`, where a decoder failing on the pixels is a corrupt file (our own errors pass)."""
    try:
        return _channels(im, notes, shown, what)
    except _DECODE_ERRORS as exc:
        if isinstance(exc, InputError):
            raise
        raise _corrupt(shown, what, exc) from None


# --------------------------------------------------------------------------- reading


def read_image(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS, keep_alpha: bool = False) -> LoadedImage:
    """Read an image as 3xHxW float32 in [0, 1], upright, with notes of every conversion.

    Conversions (each adds a note): EXIF orientation applied; only the first frame of
    animated/multi-frame files; 1/L/I;16/I/F greyscale expanded to RGB (16-bit greyscale
    divided by 65535 at full precision, float clamped to [0, 1]); palette, CMYK, YCbCr
    converted to RGB; 16-bit colour PNGs are reduced to 8 bits by Pillow (noted).

    Alpha rule: any alpha channel (RGBA, LA, PA, palette or colour-key transparency) is
    dropped by compositing the image on white: ``rgb * a + (1 - a)``. A fully opaque alpha
    channel leaves the pixels unchanged. With ``keep_alpha``, transparency is kept instead:
    the stored colours are returned uncomposited with the alpha beside them (``LoadedImage.alpha``),
    as inpainting tools read such a file (they drop the alpha, they do not composite).

    ``max_pixels`` (None = no cap) is checked from the header before anything is decoded.
    Raises :class:`InputError` for every problem with the file.
    """
    shown = _show(path)
    with _pillow_guard() as caught:
        im, notes = _open_checked(path, max_pixels, "image")
        grey = im.mode in _GREY_MODES or (im.mode == "P" and _palette_is_grey(im))
        rgb, alpha = _decoded_channels(im, notes, shown, "image")
        notes.extend(_warning_notes(caught))
    kept = None
    if alpha is not None:
        if not bool((alpha < 1.0).any()):
            notes.append("alpha channel dropped (fully opaque)")
        elif keep_alpha:
            notes.append("transparency kept: the alpha channel is written back untouched")
            kept = alpha.contiguous()
        else:
            notes.append("alpha dropped (transparent pixels composited on white)")
            rgb = rgb * alpha + (1.0 - alpha)
    rgb = rgb.clamp_(0.0, 1.0).contiguous()
    return LoadedImage(pixels=rgb, notes=_dedupe(notes), path=Path(path), grey=grey, alpha=kept)


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def keeps_transparency(path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bool:
    """Whether :func:`read_image` with ``keep_alpha`` keeps an alpha channel for ``path``, so that what is written
    from it carries one: checked before any work. The header's mode answers for a file with no alpha channel, no
    pixel decoded; one with an alpha is read, as a fully opaque alpha is dropped."""
    try:
        with _pillow_guard(), Image.open(path) as im:
            if im.mode not in _ALPHA_MODES and "transparency" not in im.info:
                return False
    except _DECODE_ERRORS:
        pass  # an unreadable header: read_image says what is wrong with the file
    return read_image(path, max_pixels=max_pixels, keep_alpha=True).alpha is not None


def _palette_is_grey(im: Image.Image) -> bool:
    palette = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    return bool(len(palette)) and bool((palette[:, 0] == palette[:, 1]).all() and (palette[:, 1] == palette[:, 2]).all())


def read_mask(
    path: PathLike, size: tuple[int, int], max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedMask:
    """Read a protection mask for an image of ``size`` = (W, H): HxW float32 in {0, 1}.

    Rule (after EXIF orientation is applied): a pixel is protected (1) if its luminance
    ``0.299 R + 0.587 G + 0.114 B`` is > 0.5, i.e. white marks the region to protect. If
    the mask has an alpha channel with any transparency, the alpha decides instead: a
    pixel is protected if its alpha is > 0.5 (a transparent PNG with the region painted
    opaque, in any colour). Grey values are thresholded at 0.5, with a note.

    Raises :class:`InputError` if the mask's size differs from ``size`` (with a hint when
    the sizes match after swapping W and H, i.e. an EXIF rotation mismatch), if it selects
    no pixel, if it covers the whole image, or for any unreadable file.
    """
    shown = _show(path)
    want_w, want_h = int(size[0]), int(size[1])
    with _pillow_guard() as caught:
        im, notes = _open_checked(path, max_pixels, "mask")
        w, h = im.size
        if (w, h) != (want_w, want_h):
            msg = (
                f"{shown}: mask is {_size_text(w, h)} (WxH) but the image is "
                f"{_size_text(want_w, want_h)}; the mask must have the image's size"
            )
            if (h, w) == (want_w, want_h):
                msg += (
                    " (they match with width and height swapped: one of the two files "
                    "probably has an EXIF rotation the other lacks; re-export the mask from "
                    "the upright image)"
                )
            raise InputError(msg)
        mask_notes: list[str] = []
        rgb, alpha = _decoded_channels(im, mask_notes, shown, "mask")
        notes.extend(n for n in mask_notes if not n.endswith("expanded to RGB"))
        notes.extend(_warning_notes(caught))

    if alpha is not None and bool((alpha < 1.0).any()):
        values = alpha
        notes.append("mask taken from the alpha channel (opaque = protected)")
        region = "opaque"
    else:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)
        values = (rgb * weights).sum(0)
        if bool((rgb[0] != rgb[1]).any() | (rgb[1] != rgb[2]).any()):
            notes.append("colour mask: luminance used")
        region = "white"
    if bool(((values > 0.0) & (values < 1.0)).any()):
        notes.append("mask is not pure black/white: grey values thresholded at 0.5")
    mask = (values > 0.5).to(torch.float32).contiguous()

    n_on = int(mask.sum().item())
    if n_on == 0:
        brightest = float(values.max()) if values.numel() else 0.0
        raise InputError(
            f"{shown}: mask selects no pixel: white (or opaque) marks the region to protect, and grey values "
            f"are thresholded at 50 % ("
            + ("this mask is transparent everywhere" if region == "opaque" and brightest == 0
               else f"this mask's {'most opaque' if region == 'opaque' else 'brightest'} pixel is "
                    f"{100 * brightest:.0f} %")
            + ")"
        )
    if n_on == mask.numel():
        raise InputError(
            f"{shown}: mask covers the whole image: nothing is left as context for the "
            "protection; mark only the region to protect (white) and leave the rest black"
        )
    return LoadedMask(mask=mask, notes=_dedupe(notes), path=Path(path))


def _dedupe(notes: list[str]) -> list[str]:
    out: list[str] = []
    for n in notes:
        if n not in out:
            out.append(n)
    return out
