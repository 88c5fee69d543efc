"""``--budget auto`` (backfire/protect/search.py): the warm start, the stop rule, the ceiling, the JSON, bad values.

Every rung is a real run of backfire-s (the shipped stand-in) on a tiny project photo at 2 steps, judged by the
real verdict on the saved file. No rung's verdict holds on backfire-s (docs/curves.md), so the stop rule is also
tested on :func:`search` with a predicate over the real rungs' verdicts.
"""

import io as _io
import json

import pytest
import torch

from backfire import io as bio
from backfire import jobs
from backfire.examples import example_photo
from backfire.inpainters.pipelines import default_pipeline, wrap
from backfire.inpainters.registry import load_inpainter
from backfire.judge import metrics
from backfire.judge.outcome import judge_every
from backfire.pixels import quantize
from backfire.progress import Progress
from backfire.protect.engine import protect
from backfire.protect.recipes import PAPER
from backfire.protect.search import AutoBudget, search
from tests.conftest import photo_folder, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stand_in():
    """backfire-s inside the attacker's tool, as ``backfire protect`` loads it."""
    model = load_inpainter("backfire-s", device="cpu")
    return wrap(model, default_pipeline(model.name))


@pytest.fixture
def tiny_files(tmp_path):
    image, mask = example_photo(48, 40, seed=0)
    bio.save_image(image, tmp_path / "p.png")
    bio.save_mask(mask, tmp_path / "p_mask.png")
    return tmp_path / "p.png", tmp_path / "p_mask.png"


def test_ladder_runs_up_to_the_ceiling_and_ends_on_it():
    assert [round(r.budget * 255, 3) for r in AutoBudget(16 / 255).rungs(20)] == [4, 6.375, 10, 16]
    assert [round(r.budget * 255, 3) for r in AutoBudget(12 / 255).rungs(5)] == [4, 6.375, 10, 12]
    assert [round(r.budget * 255, 3) for r in AutoBudget(3 / 255).rungs(5)] == [3]
    assert {r.steps for r in AutoBudget(100 / 255).rungs(7)} == {7}
    assert [round(r.budget * 255, 3) for r in AutoBudget(100 / 255).rungs(7)][-2:] == [64, 100]


def test_warm_start_begins_from_the_given_delta_clipped_into_the_new_bound(stand_in):
    image, region = example_photo(48, 40, seed=0)
    wide = protect(image, region, stand_in, PAPER, budget=16 / 255, steps=2)
    assert wide.delta is not None and wide.delta.abs().max() > 4 / 255 + 1e-6  # there is something to clip
    narrow = protect(image, region, stand_in, PAPER, budget=4 / 255, steps=0, init=wide.delta)
    expected = ((image + wide.delta.clamp(-4 / 255, 4 / 255)).clamp(0, 1) - image)
    assert torch.allclose(narrow.delta, expected, atol=1e-6)
    assert torch.equal(narrow.protected, quantize(image + expected, low=image - 4 / 255, high=image + 4 / 255))
    with pytest.raises(ValueError, match="warm start"):
        protect(image, region, stand_in, PAPER, steps=0, init=wide.delta[:, :10])


def _judge(image, region, model):
    def judged(protection):  # ``protected`` is 8-bit already: what the saved file reads back as
        outcome, _, _ = judge_every(image, protection.protected, region, [model], protection.target,
                                    families=("exact", "dilate-8"))
        return outcome
    return judged


def test_search_stops_at_the_first_rung_that_holds(stand_in):
    """The stop rule over real rungs: the predicate holds once the deciding fill is closer to the target than on
    the first rung (a real measure of real verdicts; backfire-s's own verdict never holds)."""
    image, region = example_photo(48, 40, seed=0)
    first: list[float] = []

    def closer(outcome) -> bool:
        distance = outcome.weakest.distance_to_target
        if not first:
            first.append(distance)
        return distance < first[0]

    found = search(image, region, stand_in, PAPER.but(steps=2), AutoBudget(64 / 255, None), _judge(image, region, stand_in),
                   holds=closer, psnr=lambda outcome: outcome.verdicts[0].invisibility["psnr"])
    assert found.stopped == "protected" and found.protected
    assert len(found.tried) == 2 < len(AutoBudget(64 / 255).rungs(2))  # stopped: the higher rungs never ran
    assert [t.holds for t in found.tried] == [False, True] and found.kept is found.tried[1]
    assert found.kept.protection.recipe.budget == pytest.approx(6.375 / 255)
    assert not found.tried[0].judged.protected  # the real verdict, for the record


def test_search_under_the_psnr_floor_keeps_the_strongest_rung_within_it(stand_in):
    image, region = example_photo(48, 40, seed=0)
    found = search(image, region, stand_in, PAPER.but(steps=2), AutoBudget(16 / 255, 30.0), _judge(image, region, stand_in),
                   holds=lambda outcome: outcome.protected, psnr=lambda outcome: outcome.verdicts[0].invisibility["psnr"])
    # 10/255 saturated by Adam is under 30 dB (20·log10(255/10) = 28.1 at most for a full ±ε)
    assert found.stopped == "psnr" and not found.protected
    assert [round(t.rung.budget * 255, 3) for t in found.tried] == [4, 6.375, 10]
    assert [t.within for t in found.tried] == [True, True, False]
    assert found.kept is found.tried[1]


def test_protect_auto_reaches_the_ceiling_lists_every_rung_and_keeps_the_strongest(capsys, tiny_files, tmp_path):
    photo, mask = tiny_files
    out = tmp_path / "out.png"
    code, stdout, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", out, "--device", "cpu",
                                "--steps", "2", "--budget", "auto", "--max-budget", "6.375", "--min-psnr", "25")
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    found = report["search"]
    assert found["stopped"] == "budget" and found["protected"] is False and report["protected"] is False
    assert [r["budget_255"] for r in found["rungs"]] == [4, 6.375]
    assert all(r["steps"] == 2 and not r["protected"] and r["within_ceiling"] for r in found["rungs"])
    assert found["kept"] == 1 and report["budget_255"] == pytest.approx(6.375)
    for rung in found["rungs"]:
        assert rung["seconds"] > 0 and 0 <= rung["fill_distance"] <= 1 and rung["fail_distance"] == 0.15
        assert -1 <= rung["region_ssim"] <= 1 and rung["psnr"] > 25
    saved, original = bio.read_image(out).pixels, bio.read_image(photo).pixels
    assert (saved - original).abs().max() * 255 <= 6.375 + 1e-4
    assert metrics.psnr(saved, original) == pytest.approx(found["rungs"][1]["psnr"], abs=1e-4)
    assert "NOT PROTECTED" in stdout and "kept 6.375/255" in stdout
    assert err.count("budget 4/255, 2 steps: NOT PROTECTED") == 1 and "budget 6.375/255, 2 steps" in err


def test_protect_auto_over_the_psnr_floor_writes_the_kept_rungs_file(capsys, tiny_files, tmp_path):
    photo, mask = tiny_files
    out = tmp_path / "out.png"
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", out, "--device", "cpu", "--quiet",
                           "--steps", "2", "--budget", "auto", "--max-budget", "10")  # default --min-psnr 30
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    rungs = report["search"]["rungs"]
    assert report["search"]["stopped"] == "psnr" and report["search"]["kept"] == 1 and len(rungs) == 3
    saved = bio.read_image(out).pixels
    # the file is the kept rung's, written again after the rung over the floor: its verdict is the top level's
    assert metrics.psnr(saved, bio.read_image(photo).pixels) == pytest.approx(rungs[1]["psnr"], abs=1e-4)
    assert report["invisibility"]["psnr"] == pytest.approx(rungs[1]["psnr"])
    assert report["budget_255"] == pytest.approx(6.375)


def test_protect_auto_on_a_folder(capsys, tmp_path):
    src = photo_folder(tmp_path / "in", 1)
    code, _, err = run_cli(capsys, "protect", src, "-o", tmp_path / "out", "--device", "cpu", "--quiet",
                           "--steps", "1", "--budget", "auto", "--max-budget", "4")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "p0.json").read_text())
    assert [r["budget_255"] for r in report["search"]["rungs"]] == [4]
    assert (tmp_path / "out" / "batch.csv").read_text().count("not protected") == 1


@pytest.mark.parametrize("flags", [["--budget", "auto", "--max-budget", "300"],
                                   ["--budget", "auto", "--max-budget", "0.1"],
                                   ["--budget", "auto", "--min-psnr", "0"],
                                   ["--budget", "auto", "--min-psnr", "-5"],
                                   ["--budget", "auto", "--min-psnr", "nan"],
                                   ["--max-budget", "10"],
                                   ["--budget", "8", "--min-psnr", "30"],
                                   ["--budget", "often"]])
def test_bad_search_values_are_one_line_and_write_nothing(capsys, tiny_files, tmp_path, flags):
    photo, mask = tiny_files
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", "--device", "cpu",
                           *flags)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfire: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_request_of_auto_and_its_ceiling():
    request = jobs.Request.of(budget_255="auto", max_budget_255=24, min_psnr=28)
    assert request.auto == AutoBudget(24 / 255, 28.0)
    assert jobs.Request.of(budget_255="auto").auto == AutoBudget()
    assert jobs.Request.of(budget_255=8).auto is None


def test_a_finished_progress_bar_fed_again_opens_a_new_one():
    stream = _io.StringIO()
    bar = Progress("rung", stream=stream)
    for _ in range(2):  # two rungs of a search, one callback
        bar(0, 2)
        bar(2, 2)
    assert stream.getvalue().count("0/2") == 2
