"""Devices: what can be checked without the hardware. ``--device mps`` and its per-operation FFT fallback (the
logic, with torch.backends.mps unavailable here), the optimisation's settings (autocast reaches the network
through every tool; the edit itself never autocasts). The CUDA path runs in benchmarks/gpu_check.sh."""

from __future__ import annotations

import pytest
import torch

from backfire.errors import ModelError
from backfire.examples import example_photo
from backfire.inpainters import ffc
from backfire.inpainters.base import Network, mps_available, resolve_device, tuned
from backfire.inpainters.pipelines import IOPaintPipeline, IOPaintSettings, conventions_for, wrap
from tests.conftest import lama_args, run_cli


def test_mps_is_refused_in_one_line_where_there_is_none(capsys, files, tmp_path, weights):
    if mps_available():
        pytest.skip("this machine has an Apple GPU")
    with pytest.raises(ModelError, match="no usable Apple GPU"):
        resolve_device("mps")
    photo, mask = files
    args = [a if a != "cpu" else "mps" for a in lama_args(weights)]
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", *args)
    assert code == 2 and err.count("\n") == 1 and "MPS" in err and "use the CPU" in err
    assert not (tmp_path / "out.png").exists()


def test_mps_resolves_where_the_backend_says_it_is_available(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("auto").type in ("cpu", "cuda")  # never chosen unasked


@pytest.mark.parametrize("has_fft", [True, False])
def test_the_ffts_fall_back_to_the_cpu_only_on_an_mps_build_without_them(monkeypatch, tiny_model, has_fft):
    monkeypatch.setattr(ffc, "_MPS_FFT", [has_fft])
    mps = torch.device("mps")
    assert ffc.fft_device(mps) == (mps if has_fft else torch.device("cpu"))
    assert ffc.fft_device(torch.device("cpu")) == torch.device("cpu")
    assert ffc.fft_device(torch.device("cuda")) == torch.device("cuda")
    assert tiny_model.notices == ()
    monkeypatch.setattr(tiny_model, "device", mps)  # the notice's logic, as it would read on an Apple GPU
    notices = tiny_model.notices
    assert len(notices) == (0 if has_fft else 1)
    if notices:
        assert "\n" not in notices[0] and "FFT" in notices[0] and "CPU" in notices[0]
        assert wrap(tiny_model, "iopaint", conventions=conventions_for("lama")).notices == notices  # the tool says what its model says


def test_a_models_notices_are_printed_when_it_is_loaded(monkeypatch, weights):
    from backfire import jobs
    from backfire.inpainters.lama import LamaInpainter

    monkeypatch.setattr(LamaInpainter, "notices", property(lambda self: ("the FFTs run on the CPU",)))
    lines = []
    jobs.load_models("lama", weights, "cpu", log=lines.append)
    assert lines == ["note: the FFTs run on the CPU"]


class _Seeing(Network):
    """A real network that records whether autocast was on when it filled."""

    def __init__(self, inner):
        super().__init__(inner.name, inner.device, inner.dtype, inner.multiple)
        self.inner, self.autocasting = inner, []

    def fill(self, masked_image, mask):
        self.autocasting.append(torch.is_autocast_enabled("cpu"))
        return self.inner.fill(masked_image, mask)


@pytest.mark.parametrize("tool", ["bare", "plain", "iopaint", "iopaint-crop"])
def test_autocast_reaches_the_surrogate_through_every_tool_and_never_the_edit(tiny_model, tool):
    image, region = example_photo(64, 48)
    network = _Seeing(tiny_model)
    network.autocast = torch.bfloat16  # the CPU's autocast dtype stands in for CUDA's float16
    lama = conventions_for("lama")
    model = {"bare": network, "plain": wrap(network, "plain"), "iopaint": wrap(network, "iopaint", conventions=lama),
             "iopaint-crop": IOPaintPipeline(network, settings=IOPaintSettings(crop_trigger_size=32),
                                             conventions=lama)}[tool]
    if tool == "iopaint-crop":
        model = model.framed(image, (0, 0, 64, 48))
    x, m = image[None], region[None, None]
    out = model.surrogate(x, m)
    assert out.dtype == torch.float32 and network.autocasting == [True]
    assert not model.surrogate_is_edit  # its clean fills are not the edit's: the verdict computes its own
    with torch.no_grad():
        edit = model(x, m)
    assert network.autocasting == [True, False] and edit.dtype == torch.float32
    # measured: the bfloat16 fill is within 2e-2 of float32's (float16 on CUDA: 1e-3, docs/benchmarks.md)
    assert (out - edit).abs().max() < 0.1
    network.autocast = None
    assert model.surrogate_is_edit


def test_tuned_is_a_no_op_on_the_cpu_without_autocast():
    before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    with tuned(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
    with tuned(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == before
