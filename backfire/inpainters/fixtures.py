"""Random-weight stand-ins of the released models, in the released file formats: for tests, benchmarks, demos.

Nothing can be downloaded where the tests run, so every loader is tested on a network of the true
architecture with random weights, written in the true file format by the functions here (the
writers know the formats independently of the readers in :mod:`backfire.inpainters.weights`, so a
reader that misplaced a key would be caught). They are NOT trained models: their fills are noise-like
and say nothing about a real model's behaviour. Deterministic in their seed; the global RNG is left
untouched (except :func:`save_random_sd_checkpoint`, which seeds it as diffusers' constructors draw
from it).

- big-LaMa: :func:`random_lama_generator`, :func:`save_lama_checkpoint` (LaMa's Lightning ``best.ckpt``;
  the TorchScript ``big-lama.pt`` is :func:`backfire.inpainters.lama.export_torchscript`, which the CLI's
  ``export`` uses too);
- MI-GAN: :func:`random_migan_generator`, :func:`save_migan_state_dict` (the official ``.pt``),
  :func:`export_migan_torchscript` (IOPaint's ``migan_traced.pt``);
- MAT: :func:`random_mat_generator`, :func:`save_mat_state_dict` (IOPaint's ``_G.pth``),
  :func:`save_mat_network_pickle` (the official network pickle, :class:`NetworkPickler`);
- Stable Diffusion inpainting: :func:`save_random_sd_checkpoint` (diffusers layout).
"""

from __future__ import annotations

import math
import pickle
import tempfile
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from backfire.inpainters import mat
from backfire.inpainters.diffusion import quiet_diffusers
from backfire.inpainters.ffc import BIG_LAMA, FFCConfig, FFCResNetGenerator, build_generator
from backfire.inpainters.lama import LamaModule
from backfire.inpainters.migan import MiganGenerator
from backfire.inpainters.weights import save_torch, save_torchscript, trace_checked
from backfire.io import write_atomic

__all__ = [
    "TINY_LAMA",
    "NetworkPickler",
    "export_migan_torchscript",
    "random_lama_generator",
    "random_mat_generator",
    "random_migan_generator",
    "save_lama_checkpoint",
    "save_mat_network_pickle",
    "save_mat_state_dict",
    "save_migan_state_dict",
    "save_random_sd_checkpoint",
]

TINY_LAMA = FFCConfig(ngf=8, n_downsampling=3, n_blocks=2, ratio_g=0.75, max_features=1024)
"""A few-thousand-parameter LaMa configuration for tests and smoke runs (not a useful inpainter)."""


def _cpu_copy(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached CPU copies: what a saved file holds, sharing no memory with a live network."""
    return {k: v.detach().cpu().clone() for k, v in state.items()}


# --------------------------------------------------------------------------------------------
# big-LaMa


def random_lama_generator(config: FFCConfig = BIG_LAMA, seed: int = 0) -> FFCResNetGenerator:
    """A generator of ``config`` with random weights and non-trivial BatchNorm statistics (eval mode).

    Convolutions keep PyTorch's default initialisation; BatchNorm affine parameters are perturbed
    and the running statistics are estimated from a batch of random masked images, so they differ from the
    defaults (a loader that dropped or misplaced them would be caught) while keeping activations in
    range (the output is not saturated and gradients flow). Deterministic in ``seed``; the global
    RNG is left untouched. Not a trained model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(config)
        norms = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
        with torch.no_grad():
            for bn in norms:
                bn.weight.uniform_(0.8, 1.2)
                bn.bias.normal_(0.0, 0.1)
                bn.momentum = None  # cumulative average over the calibration batches
            side = 4 * 2 ** config.n_downsampling  # a 4×4 bottleneck: cheap, enough samples for the statistics
            generator.train()
            image = torch.rand(2, 3, side, side)
            mask = (torch.rand(2, 1, 4, 4) < 0.3).float()
            mask = nn.functional.interpolate(mask, size=(side, side), mode="nearest")
            generator(torch.cat([image * (1 - mask), mask], dim=1))
        for bn in norms:
            bn.momentum = 0.1
    return generator.eval()


def save_lama_checkpoint(generator: FFCResNetGenerator | LamaModule, path: str | Path,
                         extra_state: Mapping[str, Tensor] | None = None) -> Path:
    """Write ``generator`` as a LaMa-style Lightning checkpoint (``state_dict`` with ``generator.*`` keys).

    ``extra_state`` adds other ``state_dict`` entries (e.g. ``discriminator.*``), as a real
    ``best.ckpt`` has. Written atomically.
    """
    if isinstance(generator, LamaModule):
        generator = generator.generator
    state = {"generator." + k: v for k, v in _cpu_copy(generator.state_dict()).items()}  # LaMa's key prefix
    state.update(_cpu_copy(extra_state or {}))
    checkpoint = {"epoch": 0, "global_step": 0, "state_dict": state}
    return save_torch(checkpoint, path)


# --------------------------------------------------------------------------------------------
# MI-GAN


def random_migan_generator(resolution: int = 512, seed: int = 0) -> MiganGenerator:
    """A generator with random weights that responds to its input (eval mode); deterministic in ``seed``.

    PyTorch's default initialisation shrinks the signal through MI-GAN's ~30 layers until the
    output is nearly its biases (the context barely matters, so a protection has nothing to
    steer). Here the convolutions are drawn N(0, 1/fan_in), which the activation's √2 gain
    keeps at a steady scale, the to-RGB layers ×0.15 so that the frame lands mostly inside
    [−1, 1]; biases and ``noise_strength`` are N(0, 0.1²) (non-zero, so a loader that dropped
    them would be caught); the resampling filters and the zero-insertion pattern stay the
    official ones. The global RNG is left untouched. Not a trained model.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = MiganGenerator(resolution)
        with torch.no_grad():
            for name, parameter in generator.named_parameters():
                if name.endswith("filter.weight"):  # the fixed resampling filters
                    continue
                if name.endswith("weight"):
                    scale = 0.15 if ".torgb." in name else 1.0
                    parameter.normal_(0.0, scale / math.sqrt(math.prod(parameter.shape[1:])))
                else:
                    parameter.normal_(0.0, 0.1)
    return generator.eval()


def save_migan_state_dict(generator: MiganGenerator, path: str | Path) -> Path:
    """Write ``generator`` as the official checkpoints are written: ``torch.save(state_dict())``. Atomic."""
    return save_torch(_cpu_copy(generator.state_dict()), path)


def export_migan_torchscript(generator: MiganGenerator, path: str | Path) -> Path:
    """Trace ``generator`` to a TorchScript file called as IOPaint calls ``migan_traced.pt``: ``model(x)``.

    Traced as the official export traces it (on a 1×4×R×R tensor of ones), then checked against
    the eager module on a batch of 2 random inputs. Written atomically.

    Raises:
        RuntimeError: the traced module disagrees with the eager one.
    """
    reference = next(generator.parameters())
    side = generator.resolution
    check = torch.rand(2, 4, side, side, generator=torch.Generator().manual_seed(0)).to(reference) * 2 - 1
    traced = trace_checked(generator, (torch.ones(1, 4, side, side).to(reference),), (check,),
                           "traced MI-GAN disagrees with the eager module")
    return save_torchscript(traced, path)


# --------------------------------------------------------------------------------------------
# MAT


def random_mat_generator(config: mat.MATConfig = mat.MAT_512, seed: int = 0) -> mat.Generator:
    """A generator of ``config`` with random weights: MAT's own initialisation, plus biases, noise
    strengths and ``w_avg`` moved off their constant initial values so that a loader that dropped or
    misplaced them would be caught. Deterministic in ``seed``; the global RNG is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = mat.Generator(config)
        with torch.no_grad():
            for name, p in generator.named_parameters():
                if name.endswith("bias") or name.endswith("noise_strength"):
                    p.add_(torch.randn_like(p) * 0.1)
            generator.mapping.w_avg.normal_()
    return generator.eval()


def save_mat_state_dict(generator: mat.Generator, path: str | Path) -> Path:
    """Write ``generator.state_dict()`` with ``torch.save``: the layout of IOPaint's ``_G.pth``. Atomic."""
    return save_torch(_cpu_copy(generator.state_dict()), path)


_PERSISTENCE_VERSION = 6
_MODULE_SRC = ("# Written by backfire.inpainters.fixtures.save_mat_network_pickle: the weights of a MAT generator\n"
               "# in the layout of an official network pickle. It carries no network code.\n")


def _reconstruct_placeholder(meta: Any) -> Any:  # pragma: no cover - never called, only written by name
    raise RuntimeError("a placeholder for torch_utils.persistence._reconstruct_persistent_obj")


class NetworkPickler(pickle._Pickler):  # the Python pickler: it lets a function be written under another name
    """Writes our MAT modules the way ``torch_utils.persistence`` pickles its persistent classes:
    ``_reconstruct_persistent_obj(meta)`` with ``meta = {type, version, module_src, class_name, state}``."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, nn.Module) and type(obj).__module__ == mat.__name__:
            return _reconstruct_placeholder, (_persistent_meta(obj),)
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _reconstruct_placeholder:
            self.save("torch_utils.persistence")
            self.save("_reconstruct_persistent_obj")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)

    # The Python pickler dispatches on type through a table of its own functions, not through self.
    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}


def _persistent_meta(module: nn.Module) -> dict[str, Any]:
    class_name = type(module).__name__
    if isinstance(module, mat.PatchMerging) and module.up > 1:
        class_name = "PatchUpsampling"  # one class here, two in the official code
    def copy(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach().cpu().clone()

    state: dict[str, Any] = {
        "training": False,  # a snapshot is eval() and requires_grad_(False)
        "_parameters": OrderedDict((k, None if p is None else nn.Parameter(copy(p), requires_grad=False))
                                   for k, p in module._parameters.items()),
        "_buffers": OrderedDict((k, copy(b)) for k, b in module._buffers.items()),
        "_non_persistent_buffers_set": set(),
        "_modules": OrderedDict(module._modules),
        "_init_args": (),
        "_init_kwargs": {},
    }
    if isinstance(module, mat.Generator):
        c = module.config
        state["_init_kwargs"] = {"z_dim": c.z_dim, "c_dim": 0, "w_dim": c.w_dim, "img_resolution": c.resolution,
                                 "img_channels": 3}
        state.update(z_dim=c.z_dim, c_dim=0, w_dim=c.w_dim, img_resolution=c.resolution, img_channels=3)
    return {"type": "class", "version": _PERSISTENCE_VERSION, "module_src": _MODULE_SRC, "class_name": class_name,
            "state": state}


def save_mat_network_pickle(generator: mat.Generator, path: str | Path) -> Path:
    """Write ``generator`` as an official-style network snapshot (``network-snapshot-*.pkl``). Atomic.

    The layout is the training loop's: a dict with ``training_set_kwargs``, ``val_set_kwargs``,
    ``G``, ``D``, ``G_ema`` and ``augment_pipe``, each network a ``torch_utils.persistence`` record
    (class name, ``__dict__`` state with ``_parameters`` / ``_buffers`` / ``_modules``), tensors
    pickled by torch. ``G`` and ``G_ema`` are the generator, ``D`` is ``None`` (we have no
    discriminator), and ``module_src`` holds a comment instead of the network's source, so the file
    is for loaders that read weights (:func:`backfire.inpainters.weights.read_network_pickle`), not for
    the official code, which executes it.
    """
    data = {"training_set_kwargs": {"resolution": generator.config.resolution}, "val_set_kwargs": {},
            "G": generator, "D": None, "G_ema": generator, "augment_pipe": None}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            NetworkPickler(f, protocol=4).dump(data)

    return write_atomic(path, write)


# --------------------------------------------------------------------------------------------
# Stable Diffusion inpainting

_ARCHS: dict[str, dict[str, dict[str, Any]]] = {
    # A few-MB model of the same code paths, for tests and the CPU benchmark.
    "tiny": {
        "unet": dict(sample_size=8, in_channels=9, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                     attention_head_dim=4),
        "vae": dict(block_out_channels=(32, 64), in_channels=3, out_channels=3, layers_per_block=1,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    latent_channels=4, sample_size=32),
        "text": dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                     max_position_embeddings=77),
    },
    # runwayml/stable-diffusion-inpainting's sizes (SD 1.5 with a 9-channel UNet, CLIP ViT-L/14 text).
    "sd15": {
        "unet": dict(sample_size=64, in_channels=9, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                     layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                     attention_head_dim=8),
        "vae": dict(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, layers_per_block=2,
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                    latent_channels=4, sample_size=512),
        "text": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     max_position_embeddings=77, projection_dim=768),
    },
}


def _tiny_tokenizer(folder: Path) -> Any:
    """A CLIP BPE tokenizer over lower-case characters (nothing can be downloaded)."""
    import json

    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'-")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    for token in ("th", "the</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nt h\nth e</w>\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def save_random_sd_checkpoint(folder: str | Path, arch: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion inpainting pipeline in diffusers layout to ``folder``.

    The same code and file layout as a real checkpoint (``save_pretrained``); ``arch="sd15"`` has the
    real model's sizes (for timing and memory), ``"tiny"`` is for tests. Behaviour says nothing about
    a trained model's.
    """
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    sizes = _ARCHS[arch]
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sizes["unet"])
    vae = AutoencoderKL(**sizes["vae"])
    with tempfile.TemporaryDirectory() as source:
        tokenizer = _tiny_tokenizer(Path(source))
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=max(len(tokenizer), 1000), **sizes["text"],
                                                bos_token_id=len(tokenizer) - 2, eos_token_id=len(tokenizer) - 1))
    # Stable Diffusion's scheduler configuration.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                              scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    with quiet_diffusers():
        pipeline.save_pretrained(folder)
    return folder
