import pytest
import torch

from backfire.examples import example_photo
from backfire.inpainters.ffc import FFCConfig
from backfire.inpainters.lama import LamaInpainter, random_generator

TINY = FFCConfig(ngf=8, n_downsampling=2, n_blocks=2, ratio_g=0.75, max_features=64)


@pytest.fixture(scope="session")
def tiny_model() -> LamaInpainter:
    """A small random-weight FFC generator: the same code as big-LaMa, cheap enough for every test."""
    return LamaInpainter(random_generator(TINY, seed=1), name="tiny-random")


@pytest.fixture
def photo() -> tuple[torch.Tensor, torch.Tensor]:
    """A project-made 64×48 photo and its logo mask."""
    return example_photo(64, 48, seed=0)
