"""LPIPS: our AlexNet / VGG-16 stacks and lpips's linear layers against the official ``lpips`` package.

How ``tests/fixtures/lpips_official.npz`` was made (once, on the development machine's CPU, in a separate
venv with torch 2.14.1, torchvision 0.29.1 and lpips 0.1.4):

    /tmp/metrics-venv/bin/python tests/fixtures/make_lpips_fixture.py tests/fixtures/lpips_official.npz

The script writes seeded random weights in the published layouts and runs ``lpips.LPIPS`` unchanged on
seeded image pairs; here the same weights are written again (with the script's recipe) and read by our
loader, as the published files would be.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from backfire.errors import ModelError
from backfire.judge.lpips import LPIPS, NETS, find_lpips_weights, load_lpips, lpips
from tests.fixtures.make_lpips_fixture import pairs, seeded

FIXTURE = Path(__file__).parent / "fixtures" / "lpips_official.npz"

pytestmark = pytest.mark.usefixtures("one_thread")


def _published(folder: Path, net: str, seed: int = 5) -> tuple[Path, Path]:
    """The seeded weights of ``net`` written as the published files are (torchvision's zip state dict,
    lpips's legacy torch.save), under other names than theirs."""
    model = LPIPS(net)
    backbone, linear = folder / f"{net}-backbone.bin", folder / f"{net}-linear.bin"
    torch.save(seeded({f"features.{k}": v.shape for k, v in model.features.state_dict().items()}, seed), backbone)
    torch.save(seeded({f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(model.net.channels)}, seed),
               linear, _use_new_zipfile_serialization=False)
    return backbone, linear


@pytest.mark.parametrize("net", list(NETS))
def test_matches_the_official_lpips(net, tmp_path):
    official = np.load(FIXTURE)
    assert int(official["weight_seed"]) == 5 and int(official["input_seed"]) == 6
    found = find_lpips_weights(_published(tmp_path, net))
    assert set(found) == {net}
    model = load_lpips(net, **found[net])
    ours = np.array([float(lpips(x, y, model)) for x, y in pairs()])
    assert official[f"{net}_total"].min() > 0.01  # the fixture is not a row of zeros
    np.testing.assert_allclose(ours, official[f"{net}_total"], rtol=1e-5)


def test_identical_images_are_at_distance_zero_and_a_batch_equals_its_images(lpips_files):
    model = load_lpips("alex", **lpips_files)
    (x, y), (u, v) = pairs()[:1] * 2
    batch = torch.cat([x, u]), torch.cat([y, torch.flip(v, dims=[-1])])
    assert float(lpips(x, x, model)) == pytest.approx(0, abs=1e-7)
    assert float(lpips(x, y, model)) > 0
    together = lpips(*batch, model)
    alone = torch.cat([lpips(batch[0][i], batch[1][i], model) for i in range(2)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-7)
    assert float(lpips(x, y, model)) == pytest.approx(float(lpips(y, x, model)), rel=1e-6)


def test_an_image_too_small_for_alexnet_is_refused():
    model = LPIPS("alex")
    with pytest.raises(ValueError, match="at least 31 px"):
        model(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))
    model(torch.rand(1, 3, 31, 31), torch.rand(1, 3, 31, 31))  # the smallest it takes


def test_files_are_told_apart_by_content_and_a_folder_by_the_published_names(tmp_path, lpips_files):
    backbone, linear = _published(tmp_path, "vgg")
    found = find_lpips_weights([linear, backbone, lpips_files["backbone"], lpips_files["linear"]])
    assert found == {"vgg": {"backbone": backbone, "linear": linear}, "alex": lpips_files}
    assert find_lpips_weights([lpips_files["backbone"].parent]) == {"alex": lpips_files}


def test_bad_lpips_weights_are_one_line_errors(tmp_path, lpips_files):
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    cases = [([lpips_files["backbone"]], r"needs two files.*linear layers \(lpips's weights/v0.1/alex.pth\)"),
             ([lpips_files["linear"]], r"needs two files.*backbone \(torchvision's alexnet-owt-7be5be79.pth\)"),
             ([other], "neither an LPIPS backbone"),
             ([tmp_path / "missing.pth"], "no such LPIPS weights"),
             ([tmp_path], "no LPIPS weights in this folder")]
    (tmp_path / "copy.pth").write_bytes(lpips_files["backbone"].read_bytes())
    cases.append(([lpips_files["backbone"], tmp_path / "copy.pth"], "two LPIPS AlexNet backbone files"))
    for paths, message in cases:
        with pytest.raises(ModelError, match=message) as info:
            find_lpips_weights(paths)
        assert "\n" not in str(info.value)
    vgg_backbone, _ = _published(tmp_path, "vgg")
    with pytest.raises(ModelError, match="do not fit its layers"):
        load_lpips("alex", vgg_backbone, lpips_files["linear"])
