"""The training data: photo crops (uint8 N×H×W×3 arrays) and the batch of every step.

``scripts/prepare_data.py`` packs the crops (:func:`encode_webp`, :func:`pack_webp`) and
:func:`load_crops` reads them back. The batch of step ``s`` (:class:`BatchMaker`) is a pure function of
``(seed, s)``: crops are visited in a seeded permutation per epoch, flipped left–right with probability
½ (no vertical flips and no 90° rotations: photos have an up), and given masks
(:mod:`backfire.train.masks`) drawn from ``np.random.default_rng([seed, 1, s])``. So batches can be
prepared ahead in worker processes, and a resumed run sees exactly the batches the uninterrupted run
would.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from backfire.train.masks import random_mask

__all__ = ["BatchMaker", "encode_webp", "load_crops", "pack_webp"]


def encode_webp(crop: np.ndarray, quality: int = 0) -> bytes:
    """One uint8 H×W×3 crop as lossless WebP (decodes to exactly the same pixels), or with ``quality``
    1–100 as lossy WebP (several times smaller: more crops in a size-limited file)."""
    buf = io.BytesIO()
    if quality:
        Image.fromarray(crop).save(buf, format="WEBP", quality=quality, method=4)
    else:  # method 4 at the lowest effort: ~20 ms per 128² crop, within 1 % of the best size
        Image.fromarray(crop).save(buf, format="WEBP", lossless=True, quality=0, method=4, exact=True)
    return buf.getvalue()


def pack_webp(name: str, blobs: list[bytes]) -> dict[str, np.ndarray]:
    """Arrays for ``np.savez``: the concatenated WebP bytes and the N+1 offsets."""
    offsets = np.zeros(len(blobs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    data = np.frombuffer(b"".join(blobs), np.uint8) if blobs else np.zeros(0, np.uint8)
    return {f"{name}_bytes": data, f"{name}_offsets": offsets}


def _unpack_webp(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    crops = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        with Image.open(io.BytesIO(data[a:b].tobytes())) as im:
            crops.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return np.stack(crops) if crops else np.zeros((0, 0, 0, 3), np.uint8)


def load_crops(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) uint8 N×H×W×3 arrays from a ``prepare_data.py`` output folder (any of its formats)."""
    data_dir = Path(data_dir)
    npz = data_dir / "crops.npz"
    if npz.is_file():
        with np.load(npz) as z:
            if "train_bytes" in z:
                return (_unpack_webp(z["train_bytes"], z["train_offsets"]),
                        _unpack_webp(z["val_bytes"], z["val_offsets"]))
            return z["train"], z["val"]
    train, val = data_dir / "crops_train.npy", data_dir / "crops_val.npy"
    if train.is_file() and val.is_file():
        return np.load(train), np.load(val)
    raise FileNotFoundError(f"no crops.npz or crops_train.npy + crops_val.npy in {data_dir}")


class BatchMaker(torch.utils.data.Dataset):
    """``maker[step]`` → (uint8 N×H×W×3 images, bool N×H×W masks), a pure function of (seed, step).

    Crops are visited in a fresh seeded permutation each epoch; each is flipped left–right with
    probability ½; masks come from ``np.random.default_rng([seed, 1, step])``. A ``Dataset`` indexed by
    step, so a ``DataLoader`` can prepare batches ahead in worker processes without changing them.
    """

    def __init__(self, crops: np.ndarray, batch: int, seed: int, hflip: bool = True):
        self.crops, self.batch, self.seed, self.hflip = crops, batch, seed, hflip

    def __len__(self) -> int:
        return 2**62

    def indices(self, step: int) -> np.ndarray:
        n, b = len(self.crops), self.batch
        start = step * b
        out = np.empty(b, np.int64)
        filled = 0
        while filled < b:
            epoch, pos = divmod(start + filled, n)
            perm = np.random.default_rng([self.seed, 2, epoch]).permutation(n)
            take = min(b - filled, n - pos)
            out[filled:filled + take] = perm[pos:pos + take]
            filled += take
        return out

    def __getitem__(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, int(step)])
        imgs = self.crops[self.indices(int(step))]
        if self.hflip:
            flip = rng.random(len(imgs)) < 0.5
            imgs[flip] = imgs[flip][:, :, ::-1]
        h, w = imgs.shape[1:3]
        masks = np.stack([random_mask(h, w, rng) for _ in range(len(imgs))])
        return imgs, masks
