"""One spec per model: the registry's entries say everything the CLI, ``backfire models``, the pipelines and
``auto`` / ``all`` ask, and a new model is one entry."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest
import torch

from backfire import models
from backfire.errors import ModelError
from backfire.inpainters import registry
from backfire.inpainters.fixtures import random_lama_generator
from backfire.inpainters.lama import LamaInpainter
from backfire.inpainters.pipelines import IOPaintPipeline, default_pipeline, wrap
from backfire.inpainters.registry import SPECS, ModelSpec, get_spec, load_inpainter, resolve_models, takes_options
from backfire.inpainters.specs import Conventions, Release, Shipped
from tests.conftest import TINY


def test_every_spec_names_a_loader_that_exists_and_its_source_carries_its_name():
    for name, spec in SPECS.items():
        assert spec.name == name == name.lower()
        module, _, function = spec.loader.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), spec.loader
        assert spec.source is None or spec.source.name == name
    assert [s.name for s in SPECS.values() if s.erase] == ["lama", "mat", "migan"]  # the order of `all`
    assert set(registry.shipped()) == {"backfire-s", "backfire-m"}
    assert set(registry.released()) == {"lama", "mat", "migan", "sd-inpaint"}
    assert set(models.RELEASES) == {*registry.released(), "clip-vit-b-32", "lpips-alex", "lpips-vgg"}  # + measures


def _keywords(function, *leave_out: str) -> set[str]:
    parameters = inspect.signature(function).parameters.values()
    return {p.name for p in parameters if p.default is not inspect.Parameter.empty} - set(leave_out)


def test_the_options_a_spec_lists_are_the_arguments_its_model_takes():
    from backfire.inpainters.diffusion import DiffusionInpainter
    from backfire.inpainters.mat import MATInpainter

    assert set(get_spec("mat").options) == _keywords(MATInpainter.__init__, "device", "dtype", "name")
    assert set(get_spec("sd-inpaint").options) == _keywords(DiffusionInpainter.__init__, "device", "dtype", "name")
    assert [n for n in SPECS if takes_options(n)] == ["mat", "sd-inpaint"]
    with pytest.raises(ModelError, match="takes no options, got prompt; only mat and sd-inpaint take some"):
        load_inpainter("migan", weights="unused.pt", prompt="x")


def test_dtype_and_pipeline_come_from_the_spec():
    sd = get_spec("sd-inpaint")
    assert sd.default_dtype(torch.device("cuda")) == "float16" and sd.default_dtype(torch.device("cpu")) is None
    assert get_spec("lama").default_dtype(torch.device("cuda")) is None
    assert {n: s.pipeline for n, s in SPECS.items()} == {
        "lama": "iopaint", "mat": "iopaint", "migan": "iopaint", "sd-inpaint": "plain",
        "backfire-s": "iopaint", "backfire-m": "iopaint"}
    assert all(default_pipeline(n) == s.pipeline for n, s in SPECS.items())
    assert get_spec(" LaMa ") is SPECS["lama"]
    with pytest.raises(ModelError, match="unknown inpainting model 'nope'; available: backfire-m"):
        get_spec("nope")


def _load_tiny(weights, device, dtype, name="tiny"):
    """A loader for the test entry below: the registry gives it the resolved device and dtype and the name."""
    return LamaInpainter(random_lama_generator(TINY, seed=int(weights)), device, dtype, name)


def test_a_new_model_is_one_entry(monkeypatch, tmp_path):
    """Registered once, a model is loadable by name, takes IOPaint's pipeline by its conventions, is counted
    by ``all`` once pulled, and ``backfire models`` lists it."""
    release = Release(description="a tiny test model", tools="none", size="1 kB", licence="MIT", file="tiny.pt",
                      url="http://127.0.0.1:9/tiny.pt", md5="0" * 32)
    spec = ModelSpec("tiny", f"{__name__}:_load_tiny", conventions=Conventions(pad_mod=8, truncates=True),
                     source=release, erase=True)
    monkeypatch.setitem(SPECS, "tiny", spec)
    monkeypatch.setattr(models, "RELEASES", registry.released())
    assert spec.source.name == "tiny" and "tiny" in registry.available_models()
    model = load_inpainter("tiny", weights="3", device="cpu", dtype="bfloat16")
    assert model.name == "tiny" and model.dtype == torch.bfloat16
    assert isinstance(wrap(model, default_pipeline(model.name)), IOPaintPipeline)
    with pytest.raises(models.NotPulledError, match="backfire models pull tiny"):
        load_inpainter("tiny", device="cpu")
    assert resolve_models("all")[0] == ["backfire-s"]  # nothing pulled: the stand-in
    spec.source.location.parent.mkdir(parents=True)
    spec.source.location.write_bytes(b"3")
    assert resolve_models("all") == (["tiny"], None)
    assert [row.release.name for row in models.list_models() if row.pulled] == ["tiny"]


def test_shipped_sources_are_checked_before_loading(tmp_path):
    source = get_spec("backfire-s").shipped
    assert isinstance(source, Shipped) and source.verified() == source.weights
    assert get_spec("backfire-s").default_weights() == source.weights
    with pytest.raises(models.NotPulledError, match="backfire models pull mat"):
        get_spec("mat").default_weights()  # conftest: an empty cache
    assert get_spec("sd-inpaint").release.on_hub


def test_importing_the_registry_imports_no_model_module():
    code = ("import sys; import backfire.inpainters.registry, backfire.models; "
            "print(sorted(m for m in sys.modules if m.startswith('backfire.inpainters.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(loaded) == ["backfire.inpainters.base", "backfire.inpainters.registry", "backfire.inpainters.specs"]
