import pytest
import torch

from backfire.protect.targets import make_target, solid_colour


@pytest.mark.parametrize("mean, expected", [
    ((0.1, 0.9, 0.9), (1.0, 0.0, 0.0)),   # cyan-ish photo → red is farthest
    ((0.9, 0.1, 0.9), (0.0, 1.0, 0.0)),   # magenta-ish → green
    ((0.9, 0.9, 0.1), (0.0, 0.0, 1.0)),   # yellow-ish → blue
])
def test_solid_colour_is_the_farthest_primary(mean, expected):
    image = torch.tensor(mean)[:, None, None].expand(3, 6, 7)
    assert solid_colour(image).tolist() == list(expected)


def test_solid_target_fills_the_frame_and_inverted_inverts():
    image = torch.rand(3, 5, 9)
    solid = make_target(image, "solid")
    assert solid.shape == image.shape
    assert torch.equal(solid, solid[:, :1, :1].expand_as(solid))
    assert torch.allclose(make_target(image, "inverted"), 1 - image)


def test_unknown_target_kind_raises():
    with pytest.raises(ValueError, match="unknown target"):
        make_target(torch.rand(3, 4, 4), "plaid")
