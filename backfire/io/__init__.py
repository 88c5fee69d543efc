"""Image and mask input/output for backfire: the file layer (of ours it imports only :mod:`backfire.pixels`).

Pixels are float32 torch tensors in [0, 1] everywhere in backfire: images are 3xHxW, masks are HxW
with values in {0, 1}. The layer has three rooms, whose public names are all here
(``from backfire import io; io.read_image(...)``):

- :mod:`backfire.io.read`: :func:`read_image`, :func:`read_mask` (pixel cap from the header, EXIF
  orientation, modes, bit depth, truncation caught, every conversion noted), :func:`keeps_transparency`;
- :mod:`backfire.io.write`: :func:`save_image`, :func:`save_mask`, :func:`encode_image` and the one home
  of atomic writes (:func:`write_atomic`, used for every file backfire writes; :class:`FileSet`, files that
  belong together, swapped in only once all are written);
- :mod:`backfire.io.paths`: :class:`InputError` (one-line messages), the checks every write makes
  first (:func:`check_output`, :func:`check_not_input`), and the one rule pairing ``NAME`` with ``NAME_mask``
  (:func:`pair_files`; a folder's: :func:`pair_images`).
"""

from backfire.io.paths import (
    IMAGE_EXTENSIONS,
    InputError,
    check_not_input,
    check_output,
    check_writable,
    find_pairs,
    pair_files,
    pair_images,
)
from backfire.io.read import DEFAULT_MAX_PIXELS, LoadedImage, LoadedMask, keeps_transparency, read_image, read_mask
from backfire.io.write import (
    LOSSY_SUFFIXES,
    FileSet,
    check_image_output,
    encode_image,
    save_image,
    save_mask,
    write_atomic,
    write_bytes_atomic,
    write_text_atomic,
)

__all__ = [
    "check_not_input",
    "check_output",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "InputError",
    "keeps_transparency",
    "LoadedImage",
    "LoadedMask",
    "encode_image",
    "FileSet",
    "LOSSY_SUFFIXES",
    "check_image_output",
    "check_writable",
    "find_pairs",
    "pair_files",
    "pair_images",
    "read_image",
    "read_mask",
    "save_image",
    "save_mask",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]
