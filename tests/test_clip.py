"""CLIP-FID: our CLIP image encoder and clean-fid's preprocessing against clean-fid and openai/CLIP themselves.

How ``tests/fixtures/clip_official.npz`` was made (once, on the development machine's CPU, in a separate
venv with torch 2.14.1, torchvision 0.29.1, clean-fid 0.1.35 and openai/CLIP at commit d05afc4):

    /tmp/metrics-venv/bin/python tests/fixtures/make_clip_fixture.py tests/fixtures/clip_official.npz

The script saves a seeded CLIP of OpenAI's class as a TorchScript archive (as ``ViT-B-32.pt`` is), writes
seeded photos as PNG files and lets clean-fid read them, preprocess them and compute their features and
the CLIP-FID of the two folders; here the same weights (the script's recipe, OpenAI's keys) and photos go
through backfire.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from backfire.errors import ModelError
from backfire.judge.clip import CLIP_MEAN, CLIP_STD, ClipFeatures, VisionTransformer, clip_input, read_clip_visual
from backfire.judge.fid import frechet_distance
from backfire.inpainters.weights import save_torchscript
from tests.conftest import TINY_CLIP
from tests.fixtures.make_clip_fixture import TINY, photos, seeded

FIXTURE = Path(__file__).parent / "fixtures" / "clip_official.npz"

pytestmark = pytest.mark.usefixtures("one_thread")


def _fixture_encoder(path: Path) -> Path:
    """The fixture's CLIP (its image encoder) as a state dict of OpenAI's keys."""
    model = VisionTransformer(TINY["image_resolution"], TINY["vision_patch_size"], TINY["vision_width"],
                              TINY["vision_layers"], TINY["vision_width"] // 64, TINY["embed_dim"])
    torch.save(seeded({f"visual.{k}": v.shape for k, v in model.state_dict().items()}), path)
    return path


def test_features_and_clip_fid_match_clean_fid(tmp_path):
    official = np.load(FIXTURE)
    assert int(official["weight_seed"]) == 11 and int(official["photo_seed"]) == 12
    features = ClipFeatures(_fixture_encoder(tmp_path / "clip.pt"))
    ours = [torch.cat([features(torch.from_numpy(p).permute(2, 0, 1)[None].float() / 255) for p in folder])
            for folder in photos()]
    for index, found in enumerate(ours):
        expected = official[f"features_{index}"]
        assert expected.std() > 0.1  # not a constant
        np.testing.assert_allclose(found.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert frechet_distance(ours[0], ours[1]) == pytest.approx(float(official["clip_fid"]), rel=1e-5)


def test_openai_torchscript_archive_reads_like_its_state_dict(tmp_path, clip_file):
    """``ViT-B-32.pt`` is a TorchScript archive of the whole CLIP: its ``visual.*`` tensors are read (its code
    never runs)."""

    class Clip(nn.Module):  # the archive's top module holds the image encoder as ``visual``
        def __init__(self, visual: nn.Module):
            super().__init__()
            self.visual = visual

        def forward(self, x):
            return self.visual(x)

    from_state = ClipFeatures(clip_file)
    archive = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():  # the tracer's remarks on shapes: one input size is all this archive needs
        warnings.simplefilter("ignore")
        save_torchscript(torch.jit.trace(Clip(from_state.model), torch.zeros(1, 3, 32, 32)), archive)
    assert read_clip_visual(archive).keys() == read_clip_visual(clip_file).keys()
    images = torch.rand(3, 3, 40, 52)
    torch.testing.assert_close(ClipFeatures(archive)(images), from_state(images))


def test_preprocessing_leaves_an_image_of_the_input_size_alone_and_crops_the_centre():
    image = torch.round(torch.rand(3, 32, 32) * 255) / 255
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    torch.testing.assert_close(clip_input(image, 32)[0], (image - mean) / std)
    wide = torch.round(torch.rand(3, 32, 41) * 255) / 255  # no resize (short side 32); offset round(4.5) = 4
    torch.testing.assert_close(clip_input(wide, 32)[0], (wide[:, :, 4:36] - mean) / std)
    assert clip_input(torch.rand(2, 3, 50, 70), 32).shape == (2, 3, 32, 32)


def test_feature_sizes(clip_file):
    features = ClipFeatures(clip_file)
    assert features.model.input_resolution == TINY_CLIP["input_resolution"] and features.dimensions == 16
    out = features(torch.rand(5, 3, 24, 30))
    assert out.shape == (5, 16) and out.dtype == torch.float64 and out.std() > 0


def test_bad_clip_weights_are_one_line_errors(tmp_path):
    resnet = tmp_path / "RN50.pt"
    torch.save({"visual.layer1.0.conv1.weight": torch.zeros(1), "text_projection": torch.zeros(1)}, resnet)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(1)}, other)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    wrong = tmp_path / "wrong.pt"
    state = seeded({f"visual.{k}": v.shape for k, v in VisionTransformer(**TINY_CLIP).state_dict().items()})
    torch.save({**state, "visual.ln_post.weight": torch.ones(3)}, wrong)
    for path, message in [(resnet, "a ResNet CLIP"), (other, r"no CLIP ViT image encoder \(visual.proj\)"),
                          (text, "is not a CLIP weights file"), (tmp_path / "missing.pt", "no such CLIP weights"),
                          (wrong, "tensors do not fit")]:
        with pytest.raises(ModelError, match=message) as info:
            ClipFeatures(path)
        assert "\n" not in str(info.value)
