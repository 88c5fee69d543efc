import pytest
import torch

from backfire.inpainters.base import Network
from backfire.judge.verdict import judge
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


class _Painter(Network):
    """Fills every hole with one fixed image: a model whose fill we choose, to test the verdict's rules."""

    def __init__(self, paint: torch.Tensor):
        super().__init__("painter", "cpu", torch.float32)
        self.paint = paint

    def fill(self, masked_image, mask):
        h, w = self.paint.shape[-2:]
        return torch.nn.functional.pad(self.paint, (0, masked_image.shape[-1] - w, 0, masked_image.shape[-2] - h),
                                       mode="replicate").expand(masked_image.shape[0], -1, -1, -1)


def test_restore_target_is_judged_by_the_markpainting_rule():
    x = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))
    region = torch.zeros(24, 32)
    region[8:16, 10:20] = 1
    assert torch.equal(make_target(x, "restore"), x)
    grey = torch.full_like(x, 0.5)

    def verdict_for(paint):
        # the painter fills the original with grey and the "protected" image with ``paint``
        class TwoWay(_Painter):
            def fill(self, masked_image, mask):
                out = super().fill(masked_image, mask).clone()
                out[0] = grey
                return out
        return judge(x, x, region, TwoWay(paint), make_target(x, "restore"), ("exact",),
                     target_kind="restore")[0].edits[0]

    near = verdict_for(0.7 * x + 0.3 * grey)   # 0.3 × as far from x as the grey fill: failed (≤ 0.5 ×)
    far = verdict_for(0.4 * x + 0.6 * grey)    # 0.6 × as far: not failed
    assert near.failed and not far.failed
    assert near.failed_on_original is False
    assert near.metrics["target_distance_protected"] == pytest.approx(
        0.3 * near.metrics["target_distance_original"], rel=1e-4)
