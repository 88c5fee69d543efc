"""Run IOPaint itself on test cases: ``python iopaint_runner.py cases.npz results.npz``.

Run by tests/test_pipelines.py with the Python of a separate environment that has ``iopaint``
(IOPaint pins its own torch, diffusers and transformers). Imports nothing from backfire. The model
files come from IOPaint's own variables (``LAMA_MODEL_URL``, ``MIGAN_MODEL_URL``: a local path is
used as is, no download).

``cases.npz`` holds, per case NAME: ``NAME.image`` (H×W×3 RGB uint8), ``NAME.mask`` (H×W uint8,
255 = fill), ``NAME.model`` (IOPaint's model name) and ``NAME.strategy`` (an ``HDStrategy`` value).
``results.npz`` gets ``NAME`` = IOPaint's result as RGB uint8, after the ``astype(np.uint8)`` that
``ModelManager.__call__`` applies.
"""

import sys

import numpy as np
import torch


def main(cases_path: str, results_path: str) -> None:
    from iopaint.model import models
    from iopaint.schema import InpaintRequest

    cases = np.load(cases_path)
    names = sorted({key.rsplit(".", 1)[0] for key in cases.files})
    loaded = {}
    results = {}
    for name in names:
        model_name = str(cases[f"{name}.model"])
        if model_name not in loaded:
            loaded[model_name] = models[model_name](device=torch.device("cpu"))
        request = InpaintRequest(hd_strategy=str(cases[f"{name}.strategy"]))
        image = cases[f"{name}.image"].copy()  # Crop writes into the array it is given
        bgr = loaded[model_name](image, cases[f"{name}.mask"].copy(), request).astype(np.uint8)
        results[name] = np.ascontiguousarray(bgr[:, :, ::-1])
    np.savez(results_path, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
