from pathlib import Path

import pytest
import torch

from backfire import cli
from backfire.examples import example_photo
from backfire.inpainters.ffc import FFCConfig
from backfire.inpainters.fixtures import random_lama_generator, save_lama_checkpoint
from backfire.inpainters.lama import LamaInpainter

TINY = FFCConfig(ngf=8, n_downsampling=2, n_blocks=2, ratio_g=0.75, max_features=64)


@pytest.fixture(autouse=True)
def model_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test sees an empty model cache of its own: none reads or writes the user's pulled weights."""
    home = tmp_path_factory.mktemp("backfire-home")
    monkeypatch.setenv("BACKFIRE_HOME", str(home))
    monkeypatch.delenv("BACKFIRE_MODELS", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_model() -> LamaInpainter:
    """A small random-weight FFC generator: the same code as big-LaMa, cheap enough for every test."""
    return LamaInpainter(random_lama_generator(TINY, seed=1), name="tiny-random")


@pytest.fixture
def photo() -> tuple[torch.Tensor, torch.Tensor]:
    """A project-made 64×48 photo and its logo mask."""
    return example_photo(64, 48, seed=0)


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    """The tiny random generator saved as a Lightning-style checkpoint, for CLI tests."""
    path = tmp_path_factory.mktemp("weights") / "tiny-lama.ckpt"
    save_lama_checkpoint(random_lama_generator(TINY, seed=1), path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: these tiny models gain nothing from more, and on a shared, busy CPU
    OpenMP threads waiting on each other make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    """The 64×48 project photo and its mask, saved as PNGs (for CLI tests)."""
    from backfire import io as bio

    image, mask = example_photo(64, 48, seed=0)
    bio.save_image(image, tmp_path / "photo.png")
    bio.save_mask(mask, tmp_path / "photo_mask.png")
    return tmp_path / "photo.png", tmp_path / "photo_mask.png"


def photo_folder(folder: Path, count: int, width: int = 48, height: int = 40, prefix: str = "p") -> Path:
    """A folder of ``count`` project photos (seeds 0…count-1) with their masks, ``{prefix}{i}.png`` and
    ``{prefix}{i}_mask.png``, as a user's folder run takes them; made if missing; returned."""
    from backfire import io as bio

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = example_photo(width, height, seed=i)
        bio.save_image(image, folder / f"{prefix}{i}.png")
        bio.save_mask(mask, folder / f"{prefix}{i}_mask.png")
    return folder


def lama_args(weights) -> list:
    """CLI flags for the tiny random LaMa of the ``weights`` fixture, on the CPU."""
    return ["--model", "lama", "--weights", weights, "--device", "cpu"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """``backfire ARGS`` in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


TINY_CLIP = dict(input_resolution=32, patch_size=8, width=64, layers=2, heads=1, output_dim=16)
"""A small CLIP image encoder of OpenAI's architecture (ViT-B/32 is 224 px, patch 32, width 768, 12 blocks)."""


@pytest.fixture(scope="session")
def clip_file(tmp_path_factory) -> Path:
    """Random CLIP weights in OpenAI's layout (a state dict of its ``visual.*`` keys, float16 values)."""
    from backfire.judge.clip import VisionTransformer
    from tests.fixtures.make_clip_fixture import seeded

    shapes = {f"visual.{k}": v.shape for k, v in VisionTransformer(**TINY_CLIP).state_dict().items()}
    path = tmp_path_factory.mktemp("clip") / "tiny-clip.pt"
    torch.save(seeded(shapes, seed=1), path)
    return path


@pytest.fixture(scope="session")
def lpips_files(tmp_path_factory) -> dict[str, Path]:
    """Random LPIPS AlexNet weights at the true sizes, in the published layouts: torchvision's state dict
    (its ``features``; the classifier, which LPIPS never reads, left out) and lpips's linear layers (a legacy
    ``torch.save`` file, as lpips ships them)."""
    from backfire.judge.lpips import LPIPS
    from tests.fixtures.make_lpips_fixture import seeded

    net = LPIPS("alex")
    folder = tmp_path_factory.mktemp("lpips")
    files = {"backbone": folder / "alexnet-owt-7be5be79.pth", "linear": folder / "alex.pth"}
    torch.save(seeded({f"features.{k}": v.shape for k, v in net.features.state_dict().items()}, seed=1),
               files["backbone"])
    torch.save(seeded({f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(net.net.channels)}, seed=1),
               files["linear"], _use_new_zipfile_serialization=False)
    return files
