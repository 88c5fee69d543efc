"""Several photos in one pass: a batch of optimisations equals the photos protected one by one, and the runner
groups a folder's photos by size, splits a batch that does not fit and says in one line what would."""

from __future__ import annotations


import pytest
import torch

from backfire.examples import example_photo
from backfire.inpainters.base import Network, Wrapper
from backfire.inpainters.fixtures import random_lama_generator
from backfire.inpainters.lama import LamaInpainter
from backfire.io import read_image
from backfire.protect import PAPER, get_recipe, protect
from backfire.protect.engine import OutOfMemory, Photo, protect_batch
from backfire.runners import LocalRunner, Prepared
from tests.conftest import TINY, lama_args, photo_folder, run_cli


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    pass


def _photos() -> list[Photo]:
    """Two photos of one size, one of another, a greyscale one: each with its own region and seed."""
    a, ra = example_photo(64, 48, seed=0)
    b, rb = example_photo(64, 48, seed=1)
    c, rc = example_photo(40, 56, seed=2)
    grey = a.mean(0, keepdim=True).expand(3, -1, -1).clone()
    return [Photo(a, ra, seed=3), Photo(b, rb, seed=4), Photo(c, rc, seed=5), Photo(grey, rb, seed=6, grey=True)]


class _Counting(Network):
    """A real network that counts its passes and the images in them."""

    def __init__(self, inner, stochastic=False):
        super().__init__(inner.name, inner.device, inner.dtype, inner.multiple)
        self.inner, self.calls, self.images, self._stochastic = inner, 0, 0, stochastic

    @property
    def stochastic(self):
        return self._stochastic

    def fill(self, masked_image, mask):
        self.calls += 1
        self.images += len(masked_image)
        return self.inner.fill(masked_image, mask)


@pytest.mark.parametrize("recipe", ["paper", "robust"])
def test_a_batch_of_photos_equals_the_photos_one_by_one(recipe):
    """Shared passes (forced on the CPU) give each photo what it gets alone: Adam and every edit are per
    photo, the network computes each row of a batch on its own. Measured: identical 8-bit files.

    In float64: in float32 some CPUs' convolution kernels (AVX-512 ones, seen on an EPYC here) sum a batch in
    another order than one image, and Adam's near-sign steps grow that last-bit difference into ±budget flips
    of a few hundred pixels; float64 keeps the order's effect far below the 8-bit rounding, so what is left to
    see is cross-talk between the photos, which this test is about."""
    tiny_model = LamaInpainter(random_lama_generator(TINY, seed=1).double(), dtype=torch.float64, name="tiny-random")
    photos = _photos()
    recipe = get_recipe(recipe).but(steps=4)
    alone = [protect(p.image, p.region, tiny_model, recipe, seed=p.seed, grey=p.grey) for p in photos]
    counting = _Counting(tiny_model)
    together = protect_batch(photos, counting, recipe, shared_passes=True)
    for one, batch in zip(alone, together):
        assert torch.equal(one.protected, batch.protected)
        assert one.losses == pytest.approx(batch.losses, rel=1e-5)
        assert len(one.clean_fills[0]) == len(batch.clean_fills[0])
    if recipe.name == "paper":
        # per step: one pass for the three photos of 64×48 and one for the 40×56 photo; plus the clean fills
        assert counting.calls == 2 + 4 * 2 and counting.images == 4 + 4 * 3 * 4


def test_on_the_cpu_and_for_a_stochastic_model_every_photo_gets_passes_of_its_own(tiny_model):
    photos = _photos()[:2]
    default = _Counting(tiny_model)
    protect_batch(photos, default, PAPER.but(steps=2))  # on the CPU: passes per photo unless told otherwise
    stochastic = _Counting(tiny_model, stochastic=True)
    protect_batch(photos, stochastic, PAPER.but(steps=2), shared_passes=True)
    assert default.calls == stochastic.calls == 2 * (1 + 2)


class _OutOfMemory(Wrapper):
    """The model, but the device's allocator fails on batches over ``fits`` images (the handler under test,
    not a model: the fills it does compute are the model's)."""

    def __init__(self, inner, fits=0):
        super().__init__(inner)
        self.fits = fits

    def surrogate(self, image, mask):
        if len(image) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.surrogate(image, mask)


def test_a_photo_that_does_not_fit_is_one_line_naming_what_would(tiny_model):
    photo = _photos()[0]
    with pytest.raises(OutOfMemory) as caught:
        protect(photo.image, photo.region, _OutOfMemory(tiny_model), PAPER, steps=1)
    message = str(caught.value)
    assert "\n" not in message and "64×48" in message and "tiny-random" in message
    assert "about 40 px on its long side" in message  # half the pixels
    with pytest.raises(OutOfMemory, match="smaller --batch"):
        protect_batch(_photos()[:2], _OutOfMemory(tiny_model), PAPER.but(steps=1))


class _Work:
    """A runner's work whose protect is the engine's, recording the batches it was given."""

    def __init__(self, model, fits=None):
        self.model, self.fits, self.batches = model, fits, []

    def read(self, task):
        if task == "unreadable":
            from backfire.io import InputError
            raise InputError("unreadable: not an image")
        return Prepared(task, _photos()[task])

    def protect(self, batch):
        self.batches.append([p.task for p in batch])
        if self.fits is not None and len(batch) > self.fits:
            raise OutOfMemory("out of memory protecting a batch")
        return protect_batch([p.photo for p in batch], self.model, PAPER.but(steps=1))

    def finish(self, prepared, protection):
        return protection.protected


def test_the_runner_batches_photos_of_one_size_and_reports_unreadable_ones():

    from backfire.inpainters.fixtures import random_lama_generator
    from backfire.inpainters.lama import LamaInpainter

    model = LamaInpainter(random_lama_generator(TINY, seed=1))
    work = _Work(model)
    done = list(LocalRunner(batch=2).run(work, [0, 2, "unreadable", 1, 3]))
    assert work.batches == [[0, 1], [2], [3]]  # 0 and 1 are 64×48 (so is 3, the third of its size)
    assert [d.task for d in done] == ["unreadable", 0, 1, 2, 3]
    assert isinstance(done[0].error, Exception) and all(d.error is None for d in done[1:])
    one_by_one = {d.task: d.result for d in LocalRunner(batch=1).run(_Work(model), [0, 1, 2, 3])}
    assert all(torch.equal(d.result, one_by_one[d.task]) for d in done[1:])

    splitting = _Work(model, fits=1)
    done = list(LocalRunner(batch=4).run(splitting, [0, 1, 3]))
    assert splitting.batches == [[0, 1, 3], [0], [1, 3], [1], [3]]  # halved until it fits
    assert sorted(d.task for d in done) == [0, 1, 3]
    with pytest.raises(OutOfMemory):
        list(LocalRunner(batch=2).run(_Work(model, fits=0), [0]))
    with pytest.raises(ValueError, match="batch"):
        LocalRunner(batch=0)


def test_the_runner_runs_a_waiting_batch_when_too_many_photos_wait(tiny_model):
    work = _Work(tiny_model)
    list(LocalRunner(batch=3, lookahead=1).run(work, [0, 2, 1, 3]))
    assert work.batches[0] == [0]  # two photos waited (one per size): the largest waiting batch ran


def test_protect_and_evaluate_take_batch(capsys, tmp_path, weights):
    folder = photo_folder(tmp_path / "photos", 3, 64, 48)
    outputs = {}
    for batch in ("1", "3", "auto"):
        code, out, err = run_cli(capsys, "protect", folder, "-o", tmp_path / f"out{batch}", "--steps", "2", "--quiet",
                                 "--batch", batch, *lama_args(weights))
        assert code == 0, err
        outputs[batch] = [read_image(tmp_path / f"out{batch}" / f"p{i}.png").pixels for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(outputs["1"], outputs["3"]))
    assert all(torch.equal(a, b) for a, b in zip(outputs["1"], outputs["auto"]))
    code, out, err = run_cli(capsys, "protect", folder, "-o", tmp_path / "bad", "--batch", "0", *lama_args(weights))
    assert code == 2 and err.count("\n") == 1 and "--batch" in err
    code, out, err = run_cli(capsys, "evaluate", folder, "--out", tmp_path / "eval", "--steps", "1", "--no-fid",
                             "--families", "exact", "ring", "--quiet", "--batch", "2", *lama_args(weights))
    assert code == 0, err
    assert (tmp_path / "eval" / "cases.csv").read_text().count("\n") == 1 + 3 * 2  # header + 3 photos × 2 edits


def test_the_cli_says_in_one_line_that_a_photo_does_not_fit(capsys, files, tmp_path, weights, monkeypatch):
    from backfire import jobs

    load = jobs.load_models
    monkeypatch.setattr(jobs, "load_models", lambda *a, **k: [_OutOfMemory(m) for m in load(*a, **k)])
    photo, mask = files
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", "--quiet",
                             *lama_args(weights))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "out of memory on cpu protecting a 64×48 photo" in err and "about 40 px" in err
    assert not (tmp_path / "out.png").exists()
