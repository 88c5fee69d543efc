"""Find the region to protect in a photo: faces (OpenCV's Haar cascade), text (RapidOCR) or a box.

Each finder takes a 3×H×W image in [0, 1] and returns an H×W mask in {0, 1}. The detectors are optional
extras (``pip install "backfire[eval]"`` for OpenCV, ``pip install rapidocr-onnxruntime`` for text); a
missing one, or nothing found, raises :class:`backfire.io.InputError` with a one-line message.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from backfire.io import InputError
from backfire.pixels import to_uint8

FACE_GROW = 0.15  # the Haar box is tight around eyes and mouth: grow it so the ellipse covers brow and chin


def _mask_of(picture: Image.Image) -> Tensor:
    return torch.from_numpy((np.asarray(picture) > 127).astype(np.float32))


def faces_available() -> bool:
    """Whether :func:`face_boxes` can run here: OpenCV with its Haar cascades (``opencv-python-headless<5``,
    extra ``eval``; 5.x dropped ``CascadeClassifier``)."""
    try:
        import cv2
    except ImportError:
        return False
    return hasattr(cv2, "CascadeClassifier")


def face_boxes(image: Tensor) -> list[tuple[int, int, int, int]]:
    """Frontal faces as (x, y, w, h) boxes, from OpenCV's default Haar cascade."""
    try:
        import cv2
    except ImportError:
        raise InputError('--faces is unavailable: pip install "opencv-python-headless<5" '
                         '(or "backfire[eval]")') from None
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2GRAY)
    side = min(grey.shape)
    found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                     minSize=(max(16, side // 20),) * 2)
    return [tuple(int(v) for v in box) for box in found]


def face_mask(image: Tensor) -> Tensor:
    """Every detected face as a filled ellipse (:func:`ellipse_mask`)."""
    boxes = face_boxes(image)
    if not boxes:
        raise InputError("no face found (OpenCV Haar cascade, frontal faces); draw the region with --box")
    h, w = image.shape[-2:]
    return ellipse_mask((w, h), boxes)


def ellipse_mask(size: tuple[int, int], boxes: list[tuple[float, float, float, float]]) -> Tensor:
    """Filled ellipses on face boxes (x, y, w, h) grown by :data:`FACE_GROW`, in an image of (width, height)."""
    width, height = size
    canvas = Image.new("L", (width, height), 0)
    pen = ImageDraw.Draw(canvas)
    for x, y, bw, bh in boxes:
        gx, gy = FACE_GROW * bw, 1.3 * FACE_GROW * bh  # faces are taller than the detectors' square boxes
        pen.ellipse([x - gx, y - gy, x + bw + gx, y + bh + gy], fill=255)
    return _mask_of(canvas)


def text_mask(image: Tensor) -> Tensor:
    """Every text line RapidOCR finds, as its filled quadrilateral."""
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise InputError("--text is unavailable: pip install rapidocr-onnxruntime") from None
    result, _ = RapidOCR()(to_uint8(image))
    if not result:
        raise InputError("no text found (RapidOCR); draw the region with --box")
    h, w = image.shape[-2:]
    canvas = Image.new("L", (w, h), 0)
    pen = ImageDraw.Draw(canvas)
    for quad, _text, _score in result:
        pen.polygon([(float(x), float(y)) for x, y in quad], fill=255)
    return _mask_of(canvas)


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` in pixels → a tuple; ``InputError`` otherwise."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--box {text!r}: expected x,y,w,h in whole pixels, e.g. 10,20,100,50") from None
    if w <= 0 or h <= 0:
        raise InputError(f"--box {text!r}: w and h must be > 0")
    return x, y, w, h


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Tensor:
    """The rectangle ``box`` = (x, y, w, h) in an image of ``size`` = (width, height), clipped to the image
    (a box may start left of or above it: x and y may be negative)."""
    width, height = size
    x, y, w, h = box
    left, top, right, bottom = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if left >= right or top >= bottom:
        raise InputError(f"--box {x},{y},{w},{h} lies outside the {width}×{height} image")
    mask = torch.zeros(height, width)
    mask[top:bottom, left:right] = 1
    return mask
