"""What a new user trips on (issue 17): every problem is found before the work, said in one line, and
nothing the user gave is lost. Each test here failed before its fix."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from backfire import cli, jobs
from backfire import io as bio
from backfire.examples import example_photo
from backfire.judge import outcome
from backfire.judge.preview import GAP, preview
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
    tile = (sheet.shape[1] + GAP) // 5 - GAP  # five tiles side by side, the photo's shape
    panel = sheet[-tile * 24 // 32:, 2 * (tile + GAP): 2 * (tile + GAP) + tile]  # the third tile, under its caption
    assert panel.max() - panel.min() > 200  # stretched to its own range, not a flat ±10× grey


@pytest.mark.parametrize("size", [(64, 48), (32, 24), (24, 200)])
def test_preview_captions_stay_inside_their_own_tiles(size):
    """Issue 24.8: on a small photo the long captions ("perturbation (±…/255 = black…white)", "exact edit of
    original", …) ran over their neighbours'; each is now wrapped inside its tile, the gaps between stay blank."""
    w, h = size
    image = example_photo(max(w, 32), max(h, 24), seed=0)[0][:, :h, :w]
    protected = (image + 6 / 255).clamp(0, 1)
    fills = EditImages("exact", torch.zeros(h, w), image, image)
    sheet = np.asarray(preview(image, protected, fills, EditImages("ring", torch.zeros(h, w), image, image)))
    tile = (sheet.shape[1] + GAP) // 6 - GAP
    th = tile * h // w
    captions_band = sheet[: sheet.shape[0] - th]
    for k in range(1, 6):  # the blank column between tile k−1 and tile k, over the captions' height
        gap = captions_band[:, k * (tile + GAP) - GAP: k * (tile + GAP)]
        assert (gap == 255).all(), f"a caption runs into the gap before tile {k} at {w}×{h}"
    assert (captions_band < 128).any(axis=(0, 2)).sum() > 0  # the captions are drawn
