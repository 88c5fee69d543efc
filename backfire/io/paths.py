"""Paths the user named: one-line errors about them, the checks before any write, folder pairing.

:class:`InputError` is the one error for a problem with the user's files (its message is one line and
names the file as given, made safe to print). :func:`check_output` and :func:`check_not_input` are what
every write checks first: never an input (whatever the spelling: symlinks, ``./``, hard links), never
a folder, a folder that exists. :func:`pair_images` pairs ``NAME.ext`` with ``NAME_mask.ext``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "IMAGE_EXTENSIONS",
    "InputError",
    "PathLike",
    "check_not_input",
    "check_output",
    "check_writable",
    "find_pairs",
    "pair_images",
]

#: Extensions recognised as images by :func:`find_pairs` (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")

_MASK_SUFFIX = "_mask"
_MAX_LISTED = 5


class InputError(ValueError):
    """A problem with the user's input or output paths; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show(path: PathLike) -> str:
    """The path as the user gave it, made safe to print on one line."""
    s = os.fspath(path)
    if any(ch in s for ch in "\n\r\t") or not s.isprintable():
        return repr(s)
    return s


def _detail(exc: BaseException) -> str:
    text = _one_line(str(exc))
    return text if text else type(exc).__name__


def check_writable(folder: PathLike) -> None:
    """Create and remove a probe file in ``folder``: the only test that read-only mounts, immutable folders
    and missing permissions all fail (``os.access`` is not, for root)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".backfire-probe.", dir=os.fspath(folder) or ".")
    except OSError as exc:
        raise InputError(f"{_show(folder)}: cannot write there: {exc.strerror or _detail(exc)}") from None
    os.close(fd)
    os.unlink(probe)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b):
            return True
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError):
        return os.path.abspath(a) == os.path.abspath(b)


def check_not_input(path: PathLike, protect_inputs: Iterable[PathLike]) -> None:
    """Raise InputError if ``path`` names any of ``protect_inputs`` (symlinks and spellings included)."""
    for src in protect_inputs:
        if _same_file(Path(path), Path(src)):
            raise InputError(
                f"{_show(path)}: refusing to overwrite the input file {_show(src)}; choose another output path"
            )


def check_output(path: PathLike, protect_inputs: Iterable[PathLike] = ()) -> Path:
    """Raise InputError unless ``path`` can be written: not an input, not a folder, its folder exists."""
    shown = _show(path)
    target = Path(path)
    if os.fspath(target) == "":
        raise InputError("output path is empty")
    check_not_input(target, protect_inputs)
    parent = target.parent
    if not parent.exists():
        raise InputError(f"{shown}: output directory {_show(parent)} does not exist; create it first")
    if not parent.is_dir():
        raise InputError(f"{shown}: {_show(parent)} is not a directory")
    if target.is_dir():
        raise InputError(f"{shown}: is a directory; give a file name to write")
    return target


# --------------------------------------------------------------------------- folders


def find_pairs(folder: PathLike) -> list[tuple[Path, Path]]:
    """:func:`pair_images`, refusing a folder where an image has no mask."""
    pairs, missing = pair_images(folder)
    if missing:
        listed = ", ".join(p.name for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise InputError(
            f"{_show(folder)}: {len(missing)} image(s) have no mask: {listed}{more}; "
            f"add NAME{_MASK_SUFFIX}.png next to each image NAME.ext"
        )
    return pairs


def pair_images(folder: PathLike) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """Pair every image ``NAME.ext`` in ``folder`` with its mask ``NAME_mask.<ext2>`` (:func:`pair_files`'s rule;
    sub-folders are ignored). Returns (image, mask) pairs sorted by image file name, then the images without a
    mask (sorted by name).

    Raises :class:`InputError` if the folder does not exist or cannot be listed, and as :func:`pair_files` does.
    """
    shown = _show(folder)
    root = Path(folder)
    if not root.exists():
        raise InputError(f"{shown}: folder does not exist")
    if not root.is_dir():
        raise InputError(f"{shown}: is not a folder")
    try:
        entries = [entry for entry in root.iterdir() if entry.is_file()]
    except OSError as exc:
        raise InputError(f"{shown}: cannot list the folder: {exc.strerror or _detail(exc)}") from None
    return pair_files(entries, f"{shown}: folder")


def pair_files(files: Iterable[PathLike], where: str = "") -> tuple[list[tuple[Path, Path]], list[Path]]:
    """The one pairing rule, for a folder (:func:`pair_images`) and for the app's uploads: every image
    ``NAME.ext`` with its mask ``NAME_mask.<ext2>``.

    Images and masks are files with an extension in :data:`IMAGE_EXTENSIONS` (any case); the mask may use
    a different image extension than its image. Files whose stem ends in ``_mask`` are masks, never images;
    masks without an image, hidden files and other files are ignored. Returns (image, mask) pairs sorted by
    image file name, then the images without a mask (sorted by name). ``where`` begins the error messages.

    Raises :class:`InputError` if there is no image, or if a name is ambiguous: two masks for one image, or two
    images sharing one name (each would be written as ``NAME.png`` and masked by ``NAME_mask``).
    """
    lead = f"{where} " if where else ""
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for entry in sorted((Path(f) for f in files), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        stem = entry.stem
        if stem.endswith(_MASK_SUFFIX) and len(stem) > len(_MASK_SUFFIX):
            masks.setdefault(stem[: -len(_MASK_SUFFIX)], []).append(entry)
        else:
            images.setdefault(stem, []).append(entry)

    if not images:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise InputError(f"{lead}contains no image ({exts}) other than masks")

    pairs: list[tuple[Path, Path]] = []
    missing: list[Path] = []
    for stem in sorted(images):
        imgs = images[stem]
        found = masks.get(stem, [])
        if len(found) > 1:
            names = ", ".join(m.name for m in found)
            raise InputError(f"{lead}has several masks for {stem} ({names}); keep only one")
        if len(imgs) > 1:
            names = ", ".join(i.name for i in imgs)
            raise InputError(f"{lead}has images {names} that share the name {stem}: each would be written as "
                             f"{stem}.png and masked by {stem}{_MASK_SUFFIX}.*; rename all but one")
        if not found:
            missing.extend(imgs)
            continue
        pairs.append((imgs[0], found[0]))

    pairs.sort(key=lambda pair: pair[0].name)
    return pairs, sorted(missing, key=lambda p: p.name)
