"""One verdict everyone agrees on (issue 23): a photo is protected when every attacker edit fails on every
model, every strategy its tool applies to a photo of this size and every draw of a stochastic model; the JSON,
``--strict``, ``verify``, ``batch.csv``, ``evaluate`` and the app all read that one definition.

Real models only: the tiny random-weight LaMa of ``conftest`` through IOPaint's pipeline (a photo over 800 px:
Crop by default, Original too) and a tiny random-weight MAT whose dropout draws really differ."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backfire import io as bio
from backfire import jobs
from backfire.examples import example_photo
from backfire.inpainters import fixtures, mat
from backfire.judge.verdict import FAIL_DISTANCE
from backfire.pixels import to_pil
from tests.conftest import lama_args, run_cli

TINY_MAT = mat.MATConfig(resolution=128, z_dim=16, w_dim=16, dim=12, channel_base=1024, channel_max=16)


def _margins(record: dict) -> list[tuple[float, dict, dict]]:
    """(fail distance − distance to the target, verdict, edit) of every attacker edit of every trial in a JSON."""
    return [(FAIL_DISTANCE - e["target_distance_protected"], v, e)
            for v in record["verdicts"] for e in v["edits"] if e["kind"] == "attacker"]


@pytest.fixture
def wide(tmp_path) -> tuple[Path, Path]:
    """A 1300×64 photo (over IOPaint's 800 px Crop trigger and its 1280 px Resize limit: Crop, Original and Resize
    all apply) and its mask, in a folder of their own."""
    folder = tmp_path / "in"
    folder.mkdir()
    image, _ = example_photo(1300, 64, seed=0)
    region = torch.zeros(64, 1300)
    region[22:42, 100:150] = 1
    bio.save_image(image, folder / "wide.png")
    bio.save_mask(region, folder / "wide_mask.png")
    return folder / "wide.png", folder / "wide_mask.png"


def test_a_photo_over_800_px_gets_one_answer_in_json_strict_verify_and_batch_csv(capsys, wide, weights, tmp_path,
                                                                                 one_thread):
    """Before: the JSON's ``protected`` was Crop's alone, ``--strict`` and ``batch.csv`` required every strategy,
    ``verify`` judged Crop only. Now each says the outcome over Crop, Original and Resize, the same one."""
    photo, mask = wide
    model = [*lama_args(weights), "--pipeline", "iopaint"]
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", *model,
                             "--steps", "1", "--quiet", "--strict")
    report = json.loads((tmp_path / "out.json").read_text())
    assert [(v["model"], v["strategy"], v["default_strategy"]) for v in report["verdicts"]] == [
        ("lama", "Crop", True), ("lama", "Original", False), ("lama", "Resize", False)]
    every = all(v["protected"] for v in report["verdicts"])
    assert report["protected"] is every and code == (0 if every else 3), err

    code, out_verify, _ = run_cli(capsys, "verify", photo, tmp_path / "out.png", "--mask", mask, *model,
                                  "--json", tmp_path / "verify.json")
    again = json.loads((tmp_path / "verify.json").read_text())
    assert [(v["model"], v["strategy"]) for v in again["verdicts"]] == [("lama", "Crop"), ("lama", "Original"),
                                                                        ("lama", "Resize")]
    assert [[e["target_distance_protected"] for e in v["edits"]] for v in again["verdicts"]] == \
        [[e["target_distance_protected"] for e in v["edits"]] for v in report["verdicts"]]
    assert again["protected"] is every and code == (0 if every else 3)

    code, _, err = run_cli(capsys, "protect", photo.parent, "-o", tmp_path / "batch", *model, "--steps", "1",
                           "--quiet")
    assert code == 0, err
    (row,) = csv.DictReader(open(tmp_path / "batch" / "batch.csv"))
    assert row["status"] == ("protected" if every else "not protected")

    # what decided it, said the same way everywhere: the attacker edit least inside the failure rule
    from backfire.judge.outcome import DEFAULT_DRAWS

    assert [v["draw"] for v in report["verdicts"]] == [0, 0, 0] and report["draws"] == DEFAULT_DRAWS  # LaMa: 1 draw
    assert f"overall: {'PROTECTED' if every else 'NOT PROTECTED'}" in out and "overall:" in out_verify
    assert report["summary"].startswith("PROTECTED" if every else "NOT PROTECTED")
    failed_everywhere = [all(e["failed"] for v in report["verdicts"] for e in v["edits"] if e["name"] == name)
                         for name in ("exact", "dilate-8")]
    assert report["attacker_edits"] == 2 and report["attacker_edits_failed"] == sum(failed_everywhere)
    margin, verdict, edit = min(_margins(report), key=lambda m: m[0])
    weakest = report["weakest"]
    assert (weakest["strategy"], weakest["draw"], weakest["edit"]) == (verdict["strategy"], verdict["draw"],
                                                                       edit["name"])
    assert weakest["distance_to_target"] == edit["target_distance_protected"]
    assert weakest["failed"] is (margin >= 0) and weakest["fail_distance"] == FAIL_DISTANCE
    assert again["weakest"] == weakest
    assert row["protected"] == str(every) and row["attacker_failed"] == f"{report['attacker_edits_failed']}/2"
    assert (row["weakest_strategy"], row["weakest_edit"]) == (weakest["strategy"], weakest["edit"])


# ------------------------------------------------------------------------------------------ draws


@pytest.fixture(scope="module")
def tiny_mat() -> mat.Generator:
    return fixtures.random_mat_generator(TINY_MAT, seed=1)


def test_one_unprotected_draw_of_mat_makes_the_photo_not_protected(tiny_mat, one_thread):
    """MAT's dropout is drawn afresh for every edit, so one fill is one draw among many. Draw 0 alone (all that
    was judged before) can look protected where the attacker's next click is not: here the target is chosen just
    inside the failure rule of draw 0's real fill (0.14 from it, toward mid-grey), and the other draws' real fills
    land outside it. The outcome over four draws is NOT PROTECTED, and names a later draw as the one that decided."""
    from backfire.judge.outcome import judge_every

    model = mat.MATInpainter(tiny_mat)
    image, region = example_photo(128, 96, seed=0)
    assert model.stochastic and model.with_draw(0) is model
    grey = torch.full_like(image, 0.5)
    _, _, fills = judge_every(image, image, region, [model], grey, draws=4, families=("exact",))
    drawn = [f[0].protected for f in fills]  # the attacker's fill of each draw, composited over the photo
    inside = region.bool()
    assert all((d - drawn[0])[:, inside].abs().mean() > 0.01 for d in drawn[1:])  # the draws really differ
    target = drawn[0] + (FAIL_DISTANCE - 0.01) * torch.sign(0.5 - drawn[0])

    one, _, _ = judge_every(image, image, region, [model], target, draws=1, families=("exact",))
    assert one.protected and len(one.verdicts) == 1  # what a single draw says
    assert one.weakest.draw == 0 and one.weakest.failed  # PROTECTED: the edit closest to not failing
    assert one.weakest.distance_to_target == pytest.approx(FAIL_DISTANCE - 0.01, abs=1e-4)

    outcome, found, _ = judge_every(image, image, region, [model], target, draws=4, families=("exact",))
    assert [t.draw for t in found] == [v.draw for v in outcome.verdicts] == [0, 1, 2, 3]
    assert outcome.verdicts[0].protected and not all(v.protected for v in outcome.verdicts)
    assert not outcome.protected and outcome.summary.startswith("NOT PROTECTED")
    distances = [v.edits[0].metrics["target_distance_protected"] for v in outcome.verdicts]
    weakest = outcome.weakest  # NOT PROTECTED: the attacker edit farthest from failing
    assert weakest.draw == int(np.argmax(distances)) != 0 and not weakest.failed
    assert weakest.distance_to_target == max(distances) > FAIL_DISTANCE
    assert outcome.as_dict()["protected"] is False and outcome.as_dict()["weakest"]["draw"] == weakest.draw


def test_protect_and_verify_judge_every_draw_of_mat_and_record_them(capsys, tiny_mat, tmp_path, one_thread):
    """``--draws N``: each stochastic model is judged over N draws (recorded), by protect and verify alike."""
    weights = fixtures.save_mat_state_dict(tiny_mat, tmp_path / "G.pth")
    image, region = example_photo(128, 96, seed=0)
    bio.save_image(image, tmp_path / "p.png")
    bio.save_mask(region, tmp_path / "m.png")
    model = ["--model", f"mat={weights}", "--pipeline", "plain", "--device", "cpu", "--draws", "3"]
    code, out, err = run_cli(capsys, "protect", tmp_path / "p.png", "--mask", tmp_path / "m.png", "-o",
                             tmp_path / "o.png", *model, "--steps", "1", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["draws"] == 3 and [v["draw"] for v in report["verdicts"]] == [0, 1, 2]
    assert report["verdicts"][1]["randomness"]["draw"] == 1 and "draw 0" in out
    assert report["protected"] is all(v["protected"] for v in report["verdicts"])
    fills = {tuple(e["target_distance_protected"] for e in v["edits"]) for v in report["verdicts"]}
    assert len(fills) == 3  # three different draws, judged
    code, _, _ = run_cli(capsys, "verify", tmp_path / "p.png", tmp_path / "o.png", "--mask", tmp_path / "m.png",
                         *model, "--json", tmp_path / "v.json")
    again = json.loads((tmp_path / "v.json").read_text())
    assert [[(e["name"], e["failed"], e["intact"]) for e in v["edits"]] for v in again["verdicts"]] == \
        [[(e["name"], e["failed"], e["intact"]) for e in v["edits"]] for v in report["verdicts"]]
    assert [e["target_distance_protected"] for v in again["verdicts"] for e in v["edits"]] == \
        pytest.approx([e["target_distance_protected"] for v in report["verdicts"] for e in v["edits"]], nan_ok=True)
    assert again["protected"] is report["protected"] and code == (0 if report["protected"] else 3)


def test_every_trial_is_listed_once_models_then_strategies_then_draws(tiny_mat):
    from backfire.inpainters.lama import LamaInpainter
    from backfire.inpainters.pipelines import wrap
    from backfire.judge.outcome import trials
    from tests.conftest import TINY

    lama = wrap(LamaInpainter(fixtures.random_lama_generator(TINY, seed=1), name="lama"), "iopaint")
    found = trials([lama, mat.MATInpainter(tiny_mat)], (64, 840), draws=2)
    assert [(t.index, t.strategy, t.default_strategy, t.draw) for t in found] == [
        (0, "Crop", True, 0), (0, "Original", False, 0), (1, "", True, 0), (1, "", True, 1)]
    assert found[0].tool is lama and found[2].tool is found[2].model
    assert [t.strategy for t in trials([lama], (40, 1300))] == ["Crop", "Original", "Resize"]
    assert [t.strategy for t in trials([lama], (64, 64))] == ["Original"]
    with pytest.raises(ValueError, match="draws"):
        trials([lama], (64, 64), draws=0)


# ------------------------------------------------------------------------------------------ the roads


def test_verify_takes_an_ensemble_and_judges_what_protect_judged(capsys, files, weights, tmp_path):
    photo, mask = files
    model = ["--model", f"lama={weights},backfire-s", "--device", "cpu"]
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", *model, "--steps",
                           "1", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "o.json").read_text())
    code, out, err = run_cli(capsys, "verify", photo, tmp_path / "o.png", "--mask", mask, *model, "--json",
                             tmp_path / "v.json")
    again = json.loads((tmp_path / "v.json").read_text())
    assert [v["model"] for v in again["verdicts"]] == [v["model"] for v in report["verdicts"]] == \
        ["lama", "backfire-s"]
    assert len(again["ensemble"]) == 2 and out.count("verdict:") == 2
    assert again["protected"] is report["protected"] and code == (0 if report["protected"] else 3), err


def test_evaluate_takes_protects_road_greyscale_stays_grey_and_alpha_is_kept(capsys, weights, tmp_path):
    """Before, evaluate handed bare pixels to the protection: a greyscale photo got a colour perturbation and
    transparency was dropped. Now it takes protect's road, reads and writes included."""
    folder = tmp_path / "photos"
    folder.mkdir()
    image, mask = example_photo(48, 40, seed=1)
    grey = (image.mean(0) * 255).round().byte().numpy()
    Image.fromarray(grey, mode="L").save(folder / "g.png")
    alpha = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))
    Image.fromarray(np.dstack([np.asarray(to_pil(image)), alpha]), mode="RGBA").save(folder / "t.png")
    for name in ("g", "t"):
        bio.save_mask(mask, folder / f"{name}_mask.png")
    code, _, err = run_cli(capsys, "evaluate", folder, "--out", tmp_path / "ev", *lama_args(weights), "--steps", "1",
                           "--families", "exact", "ring", "--no-fid", "--quiet")
    assert code == 0, err
    images = tmp_path / "ev" / "images"
    assert Image.open(images / "g__paper__b6.375__s1.png").mode == "L"
    written = Image.open(images / "t__paper__b6.375__s1.png")
    assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[..., 3], alpha)
    for name in ("g", "t"):  # and the JSON and preview protect writes beside every protected file
        assert json.loads((images / f"{name}__paper__b6.375__s1.json").read_text())["image"] == str(folder / f"{name}.png")
        assert (images / f"{name}__paper__b6.375__s1.preview.png").is_file()


def test_evaluates_failure_rate_counts_an_edit_failed_only_on_every_trial(capsys, wide, weights, tmp_path,
                                                                          one_thread):
    """``cases.csv`` has one row per edit, failed only if it failed on every model × strategy × draw judged (the
    unit of "protected"), with the figures of the trial that decided it; the JSON beside the image lists them."""
    photo, mask = wide
    code, _, err = run_cli(capsys, "evaluate", photo.parent, "--out", tmp_path / "ev", *lama_args(weights),
                           "--pipeline", "iopaint", "--steps", "1", "--families", "exact", "dilate-8", "ring",
                           "--robustness", "jpeg-75", "--no-fid", "--quiet")
    assert code == 0, err
    record = json.loads((tmp_path / "ev" / "images" / "wide__paper__b6.375__s1.json").read_text())
    assert [v["strategy"] for v in record["verdicts"]] == ["Crop", "Original", "Resize"]
    rows = [r for r in csv.DictReader(open(tmp_path / "ev" / "cases.csv")) if r["transform"] == "none"]
    assert [r["edit"] for r in rows] == ["exact", "dilate-8", "ring"]
    for r in rows:
        judged = [e for v in record["verdicts"] for e in v["edits"] if e["name"] == r["edit"]]
        if r["kind"] == "attacker":
            assert r["failed"] == str(int(all(e["failed"] for e in judged)))
            worst = max(e["target_distance_protected"] for e in judged)
            assert float(r["target_distance_protected"]) == pytest.approx(worst)
        else:
            assert r["intact"] == str(int(all(e["intact"] for e in judged)))
            assert float(r["fidelity_ssim"]) == pytest.approx(min(e["fidelity_ssim"] for e in judged))
    robust = [r for r in csv.DictReader(open(tmp_path / "ev" / "cases.csv")) if r["transform"] == "jpeg-75"]
    assert [r["edit"] for r in robust] == ["exact", "dilate-8"]


# ------------------------------------------------------------------------------------------ one request


def test_the_app_and_the_cli_check_a_request_by_the_same_rules(capsys, files, weights, tmp_path):
    """One request type, checked where it is made: the page's fields give the CLI's own messages."""
    from backfire.app import service

    photo, mask = files
    code, _, cli_error = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png",
                                 *lama_args(weights), "--budget", "0.025")
    with pytest.raises(ValueError) as app_error:
        service.Request.of(budget_255=0.025)
    assert code == 2 and str(app_error.value) in cli_error and "/255" in cli_error
    for bad in (dict(steps=0), dict(draws=0), dict(recipe="fast"), dict(target="pink")):
        with pytest.raises(ValueError):
            service.Request.of(**bad)
    request = service.Request.of(recipe="robust", budget_255=4, steps=3, target="inverted", weights=" ")
    assert (request.recipe.name, request.recipe.budget, request.recipe.steps, request.recipe.target) == \
        ("robust", 4 / 255, 3, "inverted")
    assert request.weights is None and service.resists_recompression(request.recipe)


def test_the_app_and_a_folder_run_pair_alike_and_write_one_row_type(files, tmp_path, one_thread):
    from backfire.app import batch, service

    photo, mask = files
    uploads = [photo, mask, tmp_path / "lonely.png"]
    (tmp_path / "lonely.png").write_bytes(photo.read_bytes())
    folder_pairs, folder_unpaired = bio.pair_images(tmp_path)
    upload_pairs, upload_unpaired = bio.pair_files(uploads)
    assert [(a.name, b.name) for a, b in folder_pairs] == [(a.name, b.name) for a, b in upload_pairs] == \
        [("photo.png", "photo_mask.png")]
    assert [p.name for p in folder_unpaired] == [p.name for p in upload_unpaired] == ["lonely.png"]
    (tmp_path / "photo.jpg").write_bytes(photo.read_bytes())
    for pairing in (lambda: bio.pair_images(tmp_path), lambda: bio.pair_files([*uploads, tmp_path / "photo.jpg"])):
        with pytest.raises(bio.InputError, match="share the name photo"):
            pairing()

    result = batch.run(uploads, tmp_path / "work", service.Request.of(steps=1, device="cpu"))
    rows = {r["image"]: r for r in result.rows}
    assert list(result.rows[0]) == list(batch.CSV_FIELDS) == list(jobs.BATCH_COLUMNS)
    done = rows["photo.png"]
    assert done["status"] == ("protected" if done["protected"] else "not protected")
    assert done["attacker_failed"] == f"{done['attacker_edits_failed']}/{done['attacker_edits']}"
    assert done["output"] == done["protected_image"] == "photo.png" and done["weakest_edit"] in ("exact", "dilate-8")
    assert rows["lonely.png"]["status"] == "skipped" and rows["lonely.png"]["why"] == rows["lonely.png"]["error"]
