import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backfire import io as bio
from tests.conftest import lama_args as _model
from tests.conftest import photo_folder, run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_protect_writes_image_report_and_preview_and_keeps_inputs(capsys, files, weights, tmp_path):
    photo, mask = files
    before = {p: _digest(p) for p in files}
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png",
                          *_model(weights), "--steps", "2", "--budget", "4")
    assert code == 0, err
    assert {p: _digest(p) for p in files} == before
    protected = bio.read_image(tmp_path / "out.png").pixels
    original = bio.read_image(photo).pixels
    assert 0 < (protected - original).abs().max() * 255 <= 4.5
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["recipe"]["name"] == "paper" and report["recipe"]["steps"] == 2
    assert report["budget_255"] == pytest.approx(4)
    assert {e["name"] for e in report["edits"]} == {"exact", "dilate-8", "ring", "away-16"}
    assert report["invisibility"]["linf_255"] <= 4.5
    assert isinstance(report["protected"], bool)
    preview = Image.open(tmp_path / "out.preview.png")
    assert preview.width >= 6 * 64 and preview.height >= 48
    assert "verdict:" in out and "exact" in out
    assert "/20" not in err and "2/2" in err  # progress was shown, for the steps asked
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_verdict_is_computed_on_the_saved_file(capsys, files, weights, tmp_path):
    photo, mask = files
    run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", *_model(weights), "--steps", "1")
    report = json.loads((tmp_path / "out.json").read_text())
    code, out, _ = run_cli(capsys, "verify", photo, tmp_path / "out.png", "--mask", mask, *_model(weights),
                        "--json", tmp_path / "verify.json")
    again = json.loads((tmp_path / "verify.json").read_text())
    assert code in (0, 3) and (code == 0) == again["protected"]
    assert again["invisibility"] == report["invisibility"]
    assert [e["target_distance_protected"] for e in again["edits"]] == \
        [e["target_distance_protected"] for e in report["edits"]]


def test_protect_and_verify_report_delta_e_of_the_saved_file_in_json_and_table(capsys, files, weights, tmp_path):
    """Visibility as people see it: CIEDE2000 ΔE of the saved file against the original, in protect's and verify's
    JSON and in the printed table, recomputed here from the files."""
    from backfire.judge.colour import delta_e

    photo, mask = files
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png", *_model(weights),
                             "--steps", "1", "--budget", "8")
    assert code == 0, err
    mean, p99 = delta_e(bio.read_image(tmp_path / "out.png").pixels, bio.read_image(photo).pixels)
    assert 0 < mean < p99  # an 8/255 perturbation shows in ΔE
    report = json.loads((tmp_path / "out.json").read_text())
    code, verified, _ = run_cli(capsys, "verify", photo, tmp_path / "out.png", "--mask", mask, *_model(weights),
                                "--json", tmp_path / "verify.json")
    again = json.loads((tmp_path / "verify.json").read_text())
    for record in (report, again, *report["verdicts"]):
        assert record["invisibility"]["delta_e_mean"] == pytest.approx(mean, abs=1e-9)
        assert record["invisibility"]["delta_e_p99"] == pytest.approx(p99, abs=1e-9)
    for printed in (out, verified):
        assert f"ΔE00 mean {mean:.2f}, p99 {p99:.2f} (one JND = 2.3)" in printed, printed


def test_protect_curve_judges_every_budget_and_steps_and_keeps_the_nearest_as_out(capsys, files, weights, tmp_path):
    import csv
    import xml.etree.ElementTree as ET

    from backfire.judge import curve
    from backfire.judge.colour import delta_e

    photo, mask = files
    before = {p: _digest(p) for p in files}
    out = tmp_path / "out" / "photo.png"
    out.parent.mkdir()
    code, printed, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", out, *_model(weights), "--curve",
                                 "--budget", "4", "16", "--steps", "1", "2")
    assert code == 0, err
    assert {p: _digest(p) for p in files} == before
    # the curve's other settings ran in a scratch folder: beside OUT only OUT's set and the curve
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["photo.png", "photo.json", "photo.preview.png", "photo.curve.csv", "photo.curve.svg"])
    report = json.loads((tmp_path / "out" / "photo.json").read_text())
    # the recipe's 6.375/255 and 20 steps are not among those given: the nearest, 4/255 and 2 steps, is OUT
    assert report["budget_255"] == pytest.approx(4) and report["recipe"]["steps"] == 2
    rows = list(csv.DictReader(open(out.with_suffix(".curve.csv"))))
    assert tuple(rows[0]) == curve.COLUMNS
    assert [(float(r["budget_255"]), int(r["steps"])) for r in rows] == [(4, 1), (4, 2), (16, 1), (16, 2)]
    assert all(r["images"] == "1" and r["attacker_edits"] == "2" for r in rows)  # exact and dilate-8
    kept = rows[1]
    mean, p99 = delta_e(bio.read_image(out).pixels, bio.read_image(photo).pixels)
    assert float(kept["delta_e_mean"]) == pytest.approx(mean) and float(kept["delta_e_p99"]) == pytest.approx(p99)
    assert float(kept["psnr"]) == pytest.approx(report["invisibility"]["psnr"])
    attacks = [e for e in report["edits"] if e["kind"] == "attacker"]
    assert float(kept["target_distance_protected"]) == pytest.approx(
        sum(e["target_distance_protected"] for e in attacks) / len(attacks))
    assert float(kept["failure_rate"]) == sum(e["failed"] for e in attacks) / len(attacks)
    assert float(rows[3]["delta_e_p99"]) > float(kept["delta_e_p99"])  # 16/255 shows more than 4/255
    svg = ET.parse(out.with_suffix(".curve.svg")).getroot()
    steps = [p.get("data-steps") for p in svg.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "series"]
    assert sorted(steps) == ["1"] * 3 + ["2"] * 3
    assert "strength curve" in printed and curve.caveat("lama") in printed and str(out.with_suffix(".curve.svg")) in printed
    assert "[4/4] photo.png 4/255 × 2 steps" in err  # progress for every setting; OUT's runs last


def test_several_budgets_without_curve_and_curve_on_a_folder_stop_before_work(capsys, files, weights, tmp_path):
    photo, mask = files
    for flags, message in [(["--budget", "4", "16"], "--budget 4 16: one protected file takes one value; add --curve"),
                           (["--steps", "1", "2"], "--steps 1 2: one protected file takes one value")]:
        code, _, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "o.png", *_model(weights),
                               *flags)
        assert code == 2 and message in err and err.count("\n") == 1, err
    folder = photo_folder(tmp_path / "in", 1)
    code, _, err = run_cli(capsys, "protect", folder, "-o", tmp_path / "outs", *_model(weights), "--curve")
    assert code == 2 and "--curve takes one photo" in err and err.count("\n") == 1, err
    # a curve file that would overwrite an input (here the mask, named like OUT's curve) is refused before work
    named = tmp_path / "o.curve.csv"
    named.write_bytes(mask.read_bytes())
    code, _, err = run_cli(capsys, "protect", photo, "--mask", named, "-o", tmp_path / "o.png", *_model(weights),
                           "--curve", "--budget", "4", "--steps", "1")
    assert code == 2 and err.startswith("backfire: error:") and err.count("\n") == 1, err
    assert named.read_bytes() == mask.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["photo.png", "photo_mask.png", "in", "o.curve.csv"])


def test_protect_a_folder_mirrors_names(capsys, tmp_path, weights):
    src = photo_folder(tmp_path / "in", 2, prefix="img")
    code, _, err = run_cli(capsys, "protect", src, "-o", tmp_path / "out", *_model(weights), "--steps", "1", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "batch.csv", "img0.json", "img0.png", "img0.preview.png", "img1.json", "img1.png", "img1.preview.png"]


def test_a_folder_rerun_keeps_the_photos_done_with_the_same_settings_and_redoes_the_rest(capsys, tmp_path, weights,
                                                                                          one_thread):
    src, out = photo_folder(tmp_path / "in", 3), tmp_path / "out"
    args = ("protect", src, "-o", out, *_model(weights), "--steps", "1", "--quiet")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    first = (out / "batch.csv").read_text()
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "p1.preview.png").unlink()  # an incomplete set: redone whole
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "2 of 3 photos already done with these settings" in err
    now = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert all(now[f"p{i}{ext}"] == written[f"p{i}{ext}"] for i in (0, 2) for ext in (".png", ".json", ".preview.png"))
    assert now["p1.png"] != written["p1.png"] and (out / "p1.preview.png").is_file()
    assert (out / "batch.csv").read_text() == first  # the kept photos' rows, rebuilt from their JSON
    assert json.loads((out / "p0.json").read_text())["run"]["seed"] == 0
    code, _, err = run_cli(capsys, *args, "--seed", "1")  # other settings: every photo again
    assert code == 0 and "already done" not in err
    assert (out / "p0.png").stat().st_mtime_ns != written["p0.png"]
    assert json.loads((out / "p0.json").read_text())["run"]["seed"] == 1


def test_edit_fills_only_the_mask(capsys, files, weights, tmp_path):
    photo, mask = files
    code, _, err = run_cli(capsys, "edit", photo, "--mask", mask, "-o", tmp_path / "edit.png", *_model(weights))
    assert code == 0, err
    edited = bio.read_image(tmp_path / "edit.png").pixels
    original = bio.read_image(photo).pixels
    region = bio.read_mask(mask, size=(64, 48)).mask.bool()
    assert torch.equal(edited[:, ~region], original[:, ~region])
    assert (edited[:, region] - original[:, region]).abs().mean() > 0.05


def test_edit_a_folder_skips_bad_pairs_reports_each_and_writes_batch_csv(capsys, weights, tmp_path):
    """Issue 24 (9): ``edit FOLDER`` stopped at the first corrupt file, wrote no CSV and exited 0 with an image
    lacking its mask; now it goes on as ``protect`` does: each bad pair skipped and said, batch.csv, exit 2."""
    src = photo_folder(tmp_path / "in", 3)
    (src / "p0.png").write_bytes(b"not a picture")  # sorts first: the run used to stop here
    (src / "p2_mask.png").unlink()
    code, out, err = run_cli(capsys, "edit", src, "-o", tmp_path / "out", *_model(weights))
    assert code == 2, err
    assert err.count("p0.png") == 1 and err.count("p2.png") == 1  # one line each
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["batch.csv", "p1.png"]
    rows = {r["image"]: r for r in csv.DictReader(open(tmp_path / "out" / "batch.csv"))}
    assert (rows["p0.png"]["status"], rows["p2.png"]["status"]) == ("skipped", "skipped")
    assert "p0.png" in rows["p0.png"]["error"] and rows["p2.png"]["error"] == "no mask"
    assert rows["p1.png"]["status"] == "edited" and rows["p1.png"]["output"] == str(tmp_path / "out" / "p1.png")
    assert rows["p1.png"]["model"] == "lama" and rows["p1.png"]["mask"] == "p1_mask.png"
    assert str(tmp_path / "out" / "p1.png") in out and "1 of 3 images edited, 2 skipped" in err


def test_edit_a_complete_folder_exits_0_with_its_batch_csv(capsys, weights, tmp_path):
    src = photo_folder(tmp_path / "in", 2)
    code, _, err = run_cli(capsys, "edit", src, "-o", tmp_path / "out", *_model(weights))
    assert code == 0, err
    rows = list(csv.DictReader(open(tmp_path / "out" / "batch.csv")))
    assert [(r["image"], r["status"]) for r in rows] == [("p0.png", "edited"), ("p1.png", "edited")]


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "mask_size", "empty_mask", "full_mask",
                                  "cap", "overwrite_input", "no_weights", "unknown_model", "bad_budget"])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(capsys, files, weights, tmp_path, case):
    photo, mask = files
    out = tmp_path / "out.png"
    args = ["protect", photo, "--mask", mask, "-o", out, *_model(weights), "--steps", "1"]
    if case == "missing":
        args[1] = tmp_path / "nope.png"
    elif case == "text":
        args[1] = _write_bytes(tmp_path / "notes.png", b"hello, not an image\n")
    elif case == "truncated":
        data = photo.read_bytes()
        args[1] = _write_bytes(tmp_path / "cut.png", data[: len(data) // 2])
    elif case == "mask_size":
        bio.save_mask(torch.ones(10, 10), tmp_path / "small_mask.png")
        args[3] = tmp_path / "small_mask.png"
    elif case == "empty_mask":
        bio.save_mask(torch.zeros(48, 64), tmp_path / "empty_mask.png")
        args[3] = tmp_path / "empty_mask.png"
    elif case == "full_mask":
        bio.save_mask(torch.ones(48, 64), tmp_path / "full_mask.png")
        args[3] = tmp_path / "full_mask.png"
    elif case == "cap":
        args += ["--max-pixels", "1000"]
    elif case == "overwrite_input":
        args[5] = photo
    elif case == "no_weights":
        args[8:10] = ["--seed", "0"]  # drop --weights
    elif case == "unknown_model":
        args[7] = "nonexistent-model"
    elif case == "bad_budget":
        args += ["--budget", "-3"]
    before = sorted(p.name for p in tmp_path.iterdir())
    digest = _digest(photo)
    code, out, err = run_cli(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfire: error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _digest(photo) == digest


def _variant(image: Image.Image, mode: str) -> tuple[Image.Image, dict]:
    if mode == "RGBA":
        return image.convert("RGBA"), {}
    if mode == "L":
        return image.convert("L"), {}
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE), {}
    if mode == "I;16":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        return Image.fromarray(grey), {}  # uint16 → a 16-bit greyscale PNG
    raise ValueError(mode)


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16"])
def test_convertible_images_are_converted_and_said(capsys, files, weights, tmp_path, mode):
    photo, mask = files
    converted, _ = _variant(Image.open(photo), mode)
    path = tmp_path / f"photo_{mode.replace(';', '')}.png"
    converted.save(path)
    code, _, err = run_cli(capsys, "protect", path, "--mask", mask, "-o", tmp_path / "out.png", *_model(weights),
                        "--steps", "1", "--quiet")
    assert code == 0, err
    assert "note:" in err
    assert bio.read_image(tmp_path / "out.png").pixels.shape == (3, 48, 64)


def test_exif_rotated_photo_is_read_upright(capsys, files, weights, tmp_path):
    photo, mask = files
    rotated = Image.open(photo).transpose(Image.Transpose.ROTATE_90)  # stored sideways: 48 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view": undoes the transpose above
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif.tobytes(), quality=98)
    code, _, err = run_cli(capsys, "protect", path, "--mask", mask, "-o", tmp_path / "out.png", *_model(weights),
                        "--steps", "1", "--quiet")
    assert code == 0, err
    assert "EXIF" in err
    assert bio.read_image(tmp_path / "out.png").pixels.shape == (3, 48, 64)


def test_console_script_runs_and_help_names_the_commands(tmp_path):
    exe = Path(sys.executable).with_name("backfire")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("protect", "edit", "verify"):
        assert command in result.stdout
    result = subprocess.run([str(exe), "protect", str(tmp_path / "missing.png"), "--mask", "m.png",
                             "-o", str(tmp_path / "o.png"), "--weights", "w.ckpt"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("backfire: error:")


def test_export_torchscript_round_trip(capsys, weights, tmp_path):
    out = tmp_path / "exported.pt"
    code, stdout, err = run_cli(capsys, "export", "--torchscript", out, "--model", "lama", "--weights", weights)
    assert code == 0, err
    # loaded exactly as simple-lama-inpainting / IOPaint load big-lama.pt: torch.jit.load, model(image, mask)
    scripted = torch.jit.load(str(out), map_location="cpu").eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 40, 56, generator=g)
    mask = torch.zeros(1, 1, 40, 56)
    mask[..., 10:25, 20:40] = 1
    from backfire.inpainters import load_inpainter

    reference = load_inpainter("lama", weights=weights, device="cpu")
    with torch.no_grad():
        assert torch.allclose(scripted(image, mask), reference(image, mask), atol=1e-5)
    again = load_inpainter("lama", weights=out, device="cpu")
    with torch.no_grad():
        assert torch.allclose(again(image, mask), reference(image, mask), atol=1e-5)


def test_export_refuses_to_overwrite_its_weights(capsys, weights):
    code, _, err = run_cli(capsys, "export", "--torchscript", weights, "--model", "lama", "--weights", weights)
    assert code == 2 and "refusing to overwrite" in err


def test_protect_against_an_ensemble_judges_on_every_model(capsys, files, weights, tmp_path):
    photo, mask = files
    code, out, err = run_cli(capsys, "protect", photo, "--mask", mask, "-o", tmp_path / "out.png",
                             "--model", f"lama={weights},lama={weights}", "--device", "cpu", "--steps", "1",
                             "--recipe", "robust")
    assert code == 0, err
    assert out.count("verdict:") == 2
    report = json.loads((tmp_path / "out.json").read_text())
    assert len(report["ensemble"]) == 2 and report["recipe"]["name"] == "robust"
    assert report["ensemble"][0]["edits"] == report["edits"]


@pytest.mark.parametrize("case", ["edit_two", "empty_name", "weights_twice"])
def test_bad_model_lists_are_one_line_errors(capsys, files, weights, tmp_path, case):
    photo, mask = files
    if case == "edit_two":  # an edit is one model's (verify, like protect, takes an ensemble)
        args = ["edit", photo, "--mask", mask, "-o", tmp_path / "o.png", "--model", f"lama={weights},lama={weights}"]
    elif case == "empty_name":
        args = ["protect", photo, "--mask", mask, "-o", tmp_path / "o.png", "--model", f"lama={weights},"]
    else:
        args = ["protect", photo, "--mask", mask, "-o", tmp_path / "o.png", "--model", "lama,lama",
                "--weights", weights]
    code, _, err = run_cli(capsys, *args, "--device", "cpu")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfire: error: ") and "model" in lines[0], err
    assert not (tmp_path / "o.png").exists()
