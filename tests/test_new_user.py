"""What a new user trips on (issue 17): every problem is found before the work, said in one line, and
nothing the user gave is lost. Each test here failed before its fix."""

import csv
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from backfire import cli, jobs
from backfire import io as bio
from backfire.examples import example_photo
from backfire.judge import outcome
from backfire.judge.preview import preview
from backfire.judge.verdict import EditImages
from backfire.pixels import to_pil
from tests.conftest import lama_args as _model
from tests.conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_protection(monkeypatch):
    """Fail loudly if the optimisation starts: the checks under test must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the protection ran before the output was checked")
    monkeypatch.setattr(jobs, "protect", refuse)


# ------------------------------------------------------------------------------------------------- bugs


def test_unsupported_output_format_is_refused_before_the_protection(capsys, files, weights, tmp_path, no_protection):
    photo, mask = files
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.tif", *_model(weights))
    assert code == 2 and "'.tif'" in err and err.count("\n") == 1
    assert not (tmp_path / "out.tif").exists()


def test_unwritable_folder_is_refused_before_the_protection(capsys, files, weights, no_protection):
    photo, mask = files
    # /sys refuses new files even to root: a stand-in for read-only mounts and immutable folders
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", "/sys/out.png", *_model(weights))
    assert code == 2 and "cannot write there" in err and err.count("\n") == 1


def test_budget_is_read_in_255_only_and_tiny_budgets_are_refused(capsys, files, weights, tmp_path, no_protection):
    photo, mask = files
    parser = cli.build_parser()
    protect_help = next(a for a in parser._subparsers._group_actions[0].choices["protect"]._actions
                        if "--budget" in a.option_strings).help
    assert "/255" in protect_help and "0.025" not in protect_help
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", *_model(weights),
                           "--budget", "0.025")
    assert code == 2 and "/255" in err and err.count("\n") == 1 and not (tmp_path / "o.png").exists()


# issue 24: a Ctrl-C keeps an earlier run's set


def _set(out):
    return (out, out.with_suffix(".json"), out.with_suffix(".preview.png"))


def _bytes(paths):
    return {p.name: p.read_bytes() for p in paths}


def _interrupt_the_verdict(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(outcome, "judge", interrupted)  # after the image was saved, before the reports


# ------------------------------------------------------------------------------------ 1. Ctrl-C keeps earlier work


def test_ctrl_c_in_a_second_run_keeps_the_first_runs_set_byte_for_byte(capsys, files, weights, tmp_path,
                                                                       monkeypatch):
    photo, mask = files
    out = tmp_path / "out" / "p.png"
    out.parent.mkdir()
    args = ["protect", photo, "--mask", mask, "-o", out, *_model(weights), "--steps", "2", "--quiet"]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    first = _bytes(_set(out))
    _interrupt_the_verdict(monkeypatch)
    code, _, err = run_cli(capsys, *args, "--seed", "5")
    assert code == 130 and "nothing of it was written" in err and "left as they were" in err
    assert _bytes(_set(out)) == first
    assert sorted(os.listdir(out.parent)) == sorted(p.name for p in _set(out))  # no temporaries left
    monkeypatch.undo()
    code, _, err = run_cli(capsys, *args, "--seed", "5")  # not interrupted: the new set replaces the old
    assert code == 0, err
    second = _bytes(_set(out))
    assert all(second[name] != first[name] for name in ("p.png", "p.json"))
    assert sorted(os.listdir(out.parent)) == sorted(p.name for p in _set(out))


def test_ctrl_c_in_a_folder_run_keeps_the_earlier_sets(capsys, files, weights, tmp_path, monkeypatch):
    photo, mask = files
    out = tmp_path / "protected"
    code, _, err = run_cli(capsys, "protect", tmp_path, "-o", out, *_model(weights), "--steps", "2", "--quiet")
    assert code == 0, err
    first = _bytes((*_set(out / "photo.png"), out / "batch.csv"))
    _interrupt_the_verdict(monkeypatch)
    code, _, err = run_cli(capsys, "protect", tmp_path, "-o", out, *_model(weights), "--steps", "2", "--quiet",
                           "--seed", "5")
    assert code == 130
    assert _bytes((*_set(out / "photo.png"), out / "batch.csv")) == first
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def test_a_first_run_interrupted_leaves_nothing(capsys, files, weights, tmp_path, monkeypatch):
    photo, mask = files
    _interrupt_the_verdict(monkeypatch)
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "x.png", *_model(weights), "--steps", "2", "--quiet")
    assert code == 130 and "nothing of it was written" in err and "left as they were" not in err
    assert not any(p.exists() for p in _set(tmp_path / "x.png"))
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_the_apps_cancel_keeps_the_earlier_set(files, weights, tmp_path):
    from backfire.app import service

    photo, mask = files
    out = tmp_path / "app.png"
    request = jobs.Request.of(steps=1, model="lama", weights=weights, device="cpu")
    service.protect(photo, mask, out, request)
    first = _bytes(_set(out))

    def cancel(step, steps, loss):
        if step > 0:
            raise service.Cancelled()
    with pytest.raises(service.Cancelled):
        service.protect(photo, mask, out, jobs.Request.of(steps=1, model="lama", weights=weights, device="cpu",
                                                          seed=5), on_step=cancel)
    assert _bytes(_set(out)) == first


def test_a_file_set_swaps_in_only_when_complete(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "a.json"
    a.write_bytes(b"old image")
    os.chmod(a, 0o640)
    with pytest.raises(RuntimeError):
        with bio.FileSet([a, b]) as files:
            files[a].write_bytes(b"new image")
            raise RuntimeError("the verdict failed")
    assert a.read_bytes() == b"old image" and not b.exists() and os.listdir(tmp_path) == ["a.png"]
    with bio.FileSet([a, b]) as files:
        files[a].write_bytes(b"new image")
        files[b].write_text("{}")
        assert a.read_bytes() == b"old image"  # nothing swapped before the set is complete
    assert a.read_bytes() == b"new image" and b.read_text() == "{}" and files.committed
    assert os.stat(a).st_mode & 0o777 == 0o640  # a replaced file keeps its permissions
    assert sorted(os.listdir(tmp_path)) == ["a.json", "a.png"]


def test_mask_takes_max_pixels_as_its_error_message_says(capsys, files, tmp_path):
    photo, _ = files
    code, _, err = run_cli(capsys, "mask", photo, "--box", "1,1,10,10", "-o", tmp_path / "m.png",
                           "--max-pixels", "100")
    assert code == 2 and "--max-pixels" in err
    code, _, err = run_cli(capsys, "mask", photo, "--box", "1,1,10,10", "-o", tmp_path / "m.png",
                           "--max-pixels", "10000")
    assert code == 0, err


def test_webp_output_is_lossless_and_not_called_lossy(capsys, files, weights, tmp_path):
    photo, mask = files
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.webp", *_model(weights),
                           "--steps", "1", "--quiet")
    assert code == 0, err
    assert "lossy" not in err
    assert Image.open(tmp_path / "out.webp").format == "WEBP"


def test_mask_file_errors_use_the_right_article(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(bio.InputError, match="not a mask file"):
        bio.read_mask(tmp_path / "folder.png", size=(4, 4))


# ------------------------------------------------------------------------------------------ confusing spots


def test_strict_protect_exits_3_when_not_protected(capsys, files, weights, tmp_path):
    photo, mask = files
    args = ["protect", photo, "--mask", mask, *_model(weights), "--steps", "1", "--quiet"]
    code, out, _ = run_cli(capsys, *args, "-o", tmp_path / "a.png")
    assert code == 0 and "NOT PROTECTED" in out  # a random-weight model cannot be steered
    code, _, _ = run_cli(capsys, *args, "-o", tmp_path / "b.png", "--strict")
    assert code == 3


@pytest.mark.parametrize("flags, words", [
    (["--steps", "0"], "random start"),
    (["--max-pixels", "-5"], "must be ≥ 1"),
    (["-o", ""], "empty"),
])
def test_nonsense_flags_get_one_line_that_says_why(capsys, files, weights, tmp_path, flags, words):
    photo, mask = files
    out = [] if "-o" in flags else ["-o", tmp_path / "o.png"]
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, *out, *_model(weights), *flags)
    assert code == 2 and words in err and err.count("\n") == 1


def test_mask_box_may_start_left_of_the_image(capsys, files, tmp_path):
    photo, _ = files
    code, _, err = run_cli(capsys, "mask", photo, "--box", "-5,-5,20,20", "-o", tmp_path / "m.png")
    assert code == 0, err
    mask = bio.read_mask(tmp_path / "m.png", size=(64, 48)).mask
    assert mask.sum() == 15 * 15 and mask[0, 0] == 1


def test_a_dark_grey_mask_is_refused_saying_it_was_thresholded(tmp_path):
    Image.fromarray(np.full((8, 8), 100, np.uint8), mode="L").save(tmp_path / "m.png")
    with pytest.raises(bio.InputError, match=r"thresholded at 50 %.*39 %"):
        bio.read_mask(tmp_path / "m.png", size=(8, 8))


def test_greyscale_stays_greyscale_and_transparency_is_kept(capsys, weights, tmp_path):
    image, mask = example_photo(48, 40, seed=1)
    grey = (image.mean(0) * 255).round().byte().numpy()
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    alpha = np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))
    rgba = np.dstack([np.asarray(to_pil(image)), alpha])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    bio.save_mask(mask, tmp_path / "m.png")
    for name in ("g", "t"):
        code, _, err = run_cli(capsys, "protect", tmp_path / f"{name}.png", "--mask", tmp_path / "m.png",
                               "-o", tmp_path / f"{name}-out.png", *_model(weights), "--steps", "1", "--quiet")
        assert code == 0, err
    assert Image.open(tmp_path / "g-out.png").mode == "L"
    written = Image.open(tmp_path / "t-out.png")
    assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[..., 3], alpha)


def test_sixteen_bit_input_reports_linf_within_the_budget(capsys, weights, tmp_path):
    image, mask = example_photo(48, 40, seed=2)
    deep = (image.mean(0).numpy() * 65535 + np.random.default_rng(0).uniform(0, 200, (40, 48))).clip(0, 65535)
    Image.fromarray(deep.astype(np.uint16)).save(tmp_path / "d.png")
    bio.save_mask(mask, tmp_path / "m.png")
    code, _, err = run_cli(capsys, "protect", tmp_path / "d.png", "--mask", tmp_path / "m.png", "-o",
                           tmp_path / "out.png", *_model(weights), "--steps", "2", "--quiet", "--budget", "6.375")
    assert code == 0, err
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["invisibility"]["linf_255"] <= 6.375 + 1e-3


def test_json_says_the_verdict_in_plain_words(capsys, files, weights, tmp_path):
    photo, mask = files
    run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", *_model(weights), "--steps", "1",
            "--quiet")
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["summary"].startswith("NOT PROTECTED") and "failed" in report["edits"][0]


def test_folder_mode_skips_an_image_without_mask_and_writes_a_batch_summary(capsys, weights, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for n in range(2):
        image, mask = example_photo(40, 32, seed=n)
        bio.save_image(image, folder / f"p{n}.png")
    bio.save_mask(mask, folder / "p1_mask.png")
    code, _, err = run_cli(capsys, "protect", folder, "-o", tmp_path / "out", *_model(weights), "--steps", "1",
                           "--quiet")
    assert code == 2 and "p0.png" in err and "batch.csv" in err
    assert (tmp_path / "out" / "p1.png").exists() and not (tmp_path / "out" / "p0.png").exists()
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "out" / "batch.csv"))}
    assert rows["p0.png"]["status"] == "skipped" and rows["p1.png"]["status"] == "not protected"


def test_junk_weights_for_backfire_s_do_not_send_the_user_to_big_lama(capsys, files, tmp_path):
    photo, mask = files
    (tmp_path / "junk.bin").write_bytes(b"junk" * 100)
    code, _, err = run_cli(capsys, "edit", photo, "--mask", mask, "-o", tmp_path / "o.png", "--model", "backfire-s",
                           "--weights", tmp_path / "junk.bin", "--device", "cpu")
    assert code == 2 and "backfire-s" in err and "big-lama" not in err.lower()


def test_preview_perturbation_panel_shows_structure():
    image, _ = example_photo(32, 24, seed=0)
    signs = torch.where(torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0)) > 0.5, 1.0, -1.0)
    protected = (image + signs * 6 / 255).clamp(0, 1)
    fills = EditImages("exact", torch.zeros(24, 32), image, image)
    sheet = np.asarray(preview(image, protected, fills, None)).astype(int)
    panel = sheet[16:, 2 * (32 + 4): 2 * (32 + 4) + 32]  # the third tile, under its label
    assert panel.max() - panel.min() > 200  # stretched to its own range, not a flat ±10× grey


# ------------------------------------------------------------------ issue 24, point 4: every check before the work


@pytest.fixture
def no_model(monkeypatch):
    """Fail loudly if a model is loaded: the checks under test must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")
    monkeypatch.setattr(jobs, "load_models", refuse)


def _rgba(path, opaque: bool):
    image, mask = example_photo(48, 40, seed=3)
    alpha = np.full((40, 48), 255, np.uint8) if opaque else np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (40, 1))
    Image.fromarray(np.dstack([np.asarray(to_pil(image)), alpha]), mode="RGBA").save(path)
    bio.save_mask(mask, path.with_name(path.stem + "_mask.png"))
    return path, path.with_name(path.stem + "_mask.png")


def test_a_transparent_photo_to_jpeg_is_refused_before_the_protection(capsys, weights, tmp_path, no_protection):
    photo, mask = _rgba(tmp_path / "t.png", opaque=False)
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "x.jpg", *_model(weights))
    assert code == 2 and "JPEG cannot hold the image's transparency" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png", "t_mask.png"]


def test_only_a_transparency_the_output_cannot_hold_is_refused(tmp_path):
    opaque, mask = _rgba(tmp_path / "o.png", opaque=True)  # its alpha is dropped as it is read: a JPEG holds it
    transparent, other = _rgba(tmp_path / "t.png", opaque=False)
    assert jobs.plan(opaque, mask, tmp_path / "o.jpg", keep_alpha=True).tasks
    assert jobs.plan(transparent, other, tmp_path / "t.webp", keep_alpha=True).tasks
    assert jobs.plan(transparent, other, tmp_path / "t.jpg").tasks  # edit composites it: no alpha is written
    with pytest.raises(bio.InputError, match="JPEG cannot hold"):
        jobs.plan(transparent, other, tmp_path / "t.jpg", keep_alpha=True)


@pytest.mark.parametrize("where", ["folder", "missing folder"])
def test_verify_checks_its_json_path_before_any_work(capsys, files, weights, tmp_path, no_model, where):
    photo, mask = files
    target = tmp_path if where == "folder" else tmp_path / "missing" / "v.json"
    code, _, err = run_cli(capsys, "verify", photo, photo, "--mask", mask, *_model(weights), "--json", target)
    assert code == 2 and err.count("\n") == 1
    assert ("is a directory" if where == "folder" else "does not exist") in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("command", ["protect", "verify", "evaluate"])
@pytest.mark.parametrize("seed", ["99999999999999999999", "-1"])
def test_a_seed_no_generator_takes_is_refused_before_the_model_loads(capsys, files, weights, tmp_path, no_model,
                                                                    command, seed):
    photo, mask = files
    where = {"protect": [photo, "--mask", mask, "-o", tmp_path / "o.png"],
             "verify": [photo, photo, "--mask", mask], "evaluate": [tmp_path, "--out", tmp_path.parent / "ev"]}
    code, _, err = run_cli(capsys, command, *where[command], *_model(weights), "--seed", seed)
    assert code == 2 and "seed" in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists() and not (tmp_path.parent / "ev").exists()


def test_the_largest_seed_runs_and_the_apps_request_refuses_the_others(capsys, files, weights, tmp_path):
    photo, mask = files
    top = str(2**64 - 1)
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", *_model(weights),
                           "--recipe", "robust", "--steps", "1", "--quiet", "--seed", top)
    assert code == 0, err
    assert json.loads((tmp_path / "o.json").read_text())["seed"] == 2**64 - 1
    from backfire.evaluate import EvaluationConfig
    from backfire.protect.recipes import PAPER

    for seed in (-1, 2**64):
        with pytest.raises(ValueError, match="seed must be"):
            jobs.Request.of(seed=seed)
        with pytest.raises(ValueError, match="seed must be"):
            EvaluationConfig(recipes=(PAPER,), seed=seed).check()


# ------------------------------------------------------------------------- issue 24, point 10: words that fit


def _subcommands():
    return cli.build_parser()._subparsers._group_actions[0].choices


def test_verify_says_which_model_judges_without_speaking_of_protecting(capsys, files, tmp_path):
    photo, mask = files
    small = tmp_path / "small.png"
    Image.open(photo).crop((0, 0, 32, 32)).save(small)  # refused after the model loaded: its notice is said
    code, _, err = run_cli(capsys, "verify", photo, small, "--mask", mask, "--device", "cpu")
    assert code == 2 and "note: model: backfire-s" in err and "protecting" not in err


def test_every_argument_of_protect_verify_and_evaluate_says_what_it_is(capsys):
    commands = _subcommands()
    for name in ("protect", "edit", "verify", "evaluate", "app"):
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.dest} has no help"
    seeds = [a.help for n in ("protect", "verify", "evaluate") for a in commands[n]._actions if a.dest == "seed"]
    assert len(seeds) == 3 and all("2**64" in h for h in seeds)


def test_export_lists_only_the_options_it_uses(capsys):
    options = {o for a in _subcommands()["export"]._actions for o in a.option_strings}
    assert options == {"-h", "--help", "--torchscript", "--model", "--weights"}


def test_the_paper_budget_is_6_375_in_the_readme_the_help_and_the_errors(capsys, files, tmp_path):
    from pathlib import Path

    from backfire.protect.recipes import PAPER

    assert f"{PAPER.budget * 255:g}" == "6.375"
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "6.375" in readme and not re.search(r"(?<![\d.])6\.4(?!\d)", readme)
    helps = [a.help for n in ("protect", "evaluate") for a in _subcommands()[n]._actions if a.dest == "budget"]
    assert all("paper: 6.375" in h for h in helps)
    photo, mask = files
    code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", "--budget", "0.1")
    assert code == 2 and "paper's is 6.375" in err
