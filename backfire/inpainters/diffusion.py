"""Stable Diffusion inpainting (the 9-channel latent-diffusion editors) behind the :class:`Inpainter` interface.

The real edit (``__call__`` → :meth:`DiffusionInpainter.fill`) is the whole seeded sampling run, our own
loop over the components of diffusers' ``StableDiffusionInpaintPipeline`` (VAE, 9-channel UNet,
scheduler, CLIP text encoder and tokenizer), written to match the pipeline at ``strength=1``:

- pixels in [0, 1] ↔ the VAE's [-1, 1]; mask 1 = fill;
- masked image = image with the hole set to 0 in [-1, 1] (mid grey), encoded by the VAE (we take the
  latent distribution's mean, the pipeline samples it: a difference below the VAE's noise);
- the mask resized to the latent grid; UNet input = [scaled noisy latent, mask, masked-image latents];
- classifier-free guidance only when ``guidance_scale > 1``;
- the initial noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)``, the same noise
  for every image of a batch: an image's edit does not depend on the batch it is in and the verdict is
  repeatable on any device.

The surrogate (what the optimisation backpropagates through) is by default a K-step (K = 3)
deterministic DDIM sampler from the real sampler's initial noise (``surrogate="unrolled"``);
``surrogate="one-step"`` is a single UNet call (a one-step x0 prediction at a fixed timestep), about K
times cheaper but measured to transfer worse. See :meth:`DiffusionInpainter.surrogate` and
``docs/diffusion.md``.

diffusers and transformers are an optional extra (``pip install backfire[diffusion]``); they are
imported only when a checkpoint is loaded.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backfire.errors import ModelError, first_line
from backfire.inpainters.base import Network, draw_seed

__all__ = ["DiffusionInpainter", "SURROGATES", "SURROGATE_T_RANGE", "load_sd_inpaint"]

SURROGATE_T_RANGE = (0.3, 0.7)
"""The surrogate's timestep is drawn in this fraction of the training schedule (a middle range)."""

SURROGATES = ("one-step", "unrolled")
"""``one-step``: x0 prediction from one UNet call at a fixed t; ``unrolled``: K DDIM steps from noise."""

WEIGHTS_HELP = ("needs a local Stable Diffusion inpainting checkpoint in diffusers layout, e.g. "
                "runwayml/stable-diffusion-inpainting saved with save_pretrained, or its id in the local HF cache "
                "(weights = that folder or id); nothing is downloaded")


class DiffusionInpainter(Network):
    """A Stable Diffusion inpainting model (9-channel UNet) as an :class:`~backfire.inpainters.base.Inpainter`.

    Arguments:
        vae, unet, text_encoder, tokenizer, scheduler: the pipeline's components.
        name: registry name, used in reports.
        device, dtype: where and in what the networks compute (fp16 on CUDA, fp32 on CPU by default).
        prompt, negative_prompt: the attacker's text (default empty: "fill plausibly").
        num_inference_steps: sampler steps of the real edit.
        guidance_scale: classifier-free guidance; only applied when > 1.
        seed: seeds the real sampler's initial noise and the surrogate's timestep and noise.
        surrogate: ``"unrolled"`` (default) or ``"one-step"`` (see :meth:`surrogate`).
        surrogate_steps: K, the unrolled surrogate's DDIM steps (default 3; ignored by one-step).
        surrogate_timestep: the one-step surrogate's fixed timestep; ``None`` draws one from ``seed`` in
            :data:`SURROGATE_T_RANGE` of the training schedule.
        surrogate_resample: draw a fresh timestep and noise at every surrogate call (expectation over
            transformations) instead of the fixed ones. Off by default: the engine computes the
            benign references once through the surrogate, and only with the same t and ε are
            the reference and the perturbed call comparable. For ``"unrolled"`` it redraws the
            initial noise.
    """

    def __init__(self, vae: Any, unet: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, *,
                 name: str = "sd-inpaint", device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, prompt: str = "", negative_prompt: str = "",
                 num_inference_steps: int = 25, guidance_scale: float = 7.5, seed: int = 0,
                 surrogate: str = "unrolled", surrogate_steps: int = 3,
                 surrogate_timestep: int | None = None, surrogate_resample: bool = False):
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        super().__init__(name, device, dtype, multiple=scale)
        if unet.config.in_channels != 9:
            raise ValueError(f"the UNet takes {unet.config.in_channels} input channels; an inpainting "
                             "checkpoint's takes 9 (noisy latent, mask, masked-image latents)")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be ≥ 1, got {num_inference_steps}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}, got {surrogate!r}")
        if int(surrogate_steps) < 1:
            raise ValueError(f"surrogate_steps must be ≥ 1, got {surrogate_steps}")
        self.surrogate_kind, self.surrogate_steps = str(surrogate), int(surrogate_steps)
        self.vae_scale = scale
        self.latent_scale = float(getattr(vae.config, "scaling_factor", 0.18215))
        with quiet_diffusers():  # diffusers warns about casting with .to() even when nothing must stay fp32
            self.vae, self.unet, self.text_encoder = (m.to(self.device, dtype).eval()
                                                      for m in (vae, unet, text_encoder))
        for module in (self.vae, self.unet, self.text_encoder):
            for p in module.parameters():
                p.requires_grad_(False)
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.prompt, self.negative_prompt = str(prompt), str(negative_prompt)
        self.num_inference_steps, self.guidance_scale = int(num_inference_steps), float(guidance_scale)
        self.seed = int(seed)
        self.draw = 0
        self.surrogate_resample = bool(surrogate_resample)
        self._alphas = scheduler.alphas_cumprod.to(torch.float64)
        steps = len(self._alphas)
        if surrogate_timestep is None:
            lo, hi = (int(f * steps) for f in SURROGATE_T_RANGE)
            generator = torch.Generator().manual_seed(self.seed)
            surrogate_timestep = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        if not 0 <= int(surrogate_timestep) < steps:
            raise ValueError(f"surrogate_timestep must be in [0, {steps}), got {surrogate_timestep}")
        self.surrogate_timestep = int(surrogate_timestep)
        self._noise: dict[tuple[int, ...], Tensor] = {}
        self._resample_generator = torch.Generator().manual_seed(self.seed + 1)
        with torch.no_grad():
            self._prompt_embedding = self._encode_text(self.prompt)
            self._negative_embedding = self._encode_text(self.negative_prompt)
            self._empty_embedding = self._encode_text("")

    # ----------------------------------------------------------------------------- shared pieces

    def _encode_text(self, text: str) -> Tensor:
        tokens = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)

    def _encode_image(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels → scaled latents (the mean of the latent distribution: deterministic)."""
        return self.vae.encode(pixels * 2 - 1).latent_dist.mean * self.latent_scale

    def _decode(self, latents: Tensor, checkpoint: bool = False) -> Tensor:
        """Scaled latents → [0, 1] pixels."""
        def decode(z: Tensor) -> Tensor:
            return self.vae.decode(z / self.latent_scale).sample

        if checkpoint and torch.is_grad_enabled():
            # The decoder's activations at full resolution dominate the memory of a backward pass;
            # recomputing them costs one more decoder forward.
            decoded = torch.utils.checkpoint.checkpoint(decode, latents, use_reentrant=False)
        else:
            decoded = decode(latents)
        return ((decoded + 1) / 2).clamp(0, 1)

    def _conditioning(self, masked_image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """The mask on the latent grid and the masked-image latents (the hole is 0 in [-1, 1])."""
        masked = masked_image * (1 - mask) + 0.5 * mask
        latents = self._encode_image(masked)
        small = F.interpolate(mask, size=latents.shape[-2:])
        return small, latents

    # ----------------------------------------------------------------------------- the real edit

    @property
    def stochastic(self) -> bool:
        """True: the sampler's noise is a draw (the attacker may pick any seed); :meth:`with_draw` gives each
        draw repeatably (the surrogate keeps its own fixed draw)."""
        return True

    def with_draw(self, draw: int) -> DiffusionInpainter:
        super().with_draw(draw)
        return self if draw == self.draw else self._twin(draw=int(draw))

    @property
    def randomness(self) -> dict[str, Any] | None:
        """None for draw 0 (the seeded sampler as loaded, recorded by the options); the sampler's seed after."""
        return None if self.draw == 0 else {"seed": self.seed, "draw": self.draw,
                                            "sampler_seed": draw_seed(self.seed, self.draw)}

    @property
    def surrogate_is_edit(self) -> bool:
        return False  # a few deterministic steps (or one) stand in for the whole sampling run

    @torch.no_grad()
    def fill(self, masked_image: Tensor, mask: Tensor) -> Tensor:
        small, masked_latents = self._conditioning(masked_image, mask)
        n = masked_image.shape[0]
        shape = (1, self.unet.config.out_channels, *masked_latents.shape[-2:])
        sampler_seed = draw_seed(self.seed, self.draw)
        generator = torch.Generator().manual_seed(sampler_seed)
        scheduler = copy.deepcopy(self.scheduler)  # schedulers keep state between steps
        scheduler.set_timesteps(self.num_inference_steps, device=self.device)
        latents = torch.randn(shape, generator=generator).repeat(n, 1, 1, 1)
        latents = (latents * scheduler.init_noise_sigma).to(self.device, self.dtype)
        guided = self.guidance_scale > 1
        text = self._prompt_embedding.expand(n, -1, -1)
        if guided:
            text = torch.cat([self._negative_embedding.expand(n, -1, -1), text])
            small, masked_latents = torch.cat([small] * 2), torch.cat([masked_latents] * 2)
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = torch.Generator(device=self.device).manual_seed(sampler_seed)
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            model_input = torch.cat([model_input, small, masked_latents], dim=1)
            noise = self.unet(model_input, t, encoder_hidden_states=text).sample
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + self.guidance_scale * (conditional - unconditional)
            latents = scheduler.step(noise, t, latents, **step_kwargs).prev_sample.to(self.dtype)
        return self._decode(latents)

    # ----------------------------------------------------------------------------- the surrogate

    def surrogate(self, image: Tensor, mask: Tensor) -> Tensor:
        """The differentiable stand-in for :meth:`fill`: ``surrogate_kind`` picks one of the two below."""
        if self.surrogate_kind == "unrolled":
            return self.surrogate_unrolled(image, mask)
        return self.surrogate_one_step(image, mask)

    def surrogate_one_step(self, image: Tensor, mask: Tensor) -> Tensor:
        """One-step x0 prediction: differentiable and about the cost of one LaMa-sized pass.

        VAE-encode the masked image (distribution mean) → noise it to the fixed timestep t with the
        fixed ε (both from ``seed``, ε one per latent size) → one UNet call on
        [z_t, mask, masked-image latents] with the empty-prompt embedding → x̂0 =
        (z_t − √(1−ᾱ_t) ε̂) / √ᾱ_t → VAE decode (checkpointed) → composite with the mask.
        The hole's pixels never enter (the image is masked first), so the gradient is zero there.
        """
        image = image.to(self.device, self.dtype)
        mask = mask.to(self.device, self.dtype).expand(image.shape[0], -1, -1, -1)
        small, masked_latents, text = self._surrogate_inputs(image, mask)
        t, noise = self._surrogate_draw(masked_latents.shape[1:])
        alpha = self._alphas[t]
        a, b = float(alpha.sqrt()), float((1 - alpha).sqrt())
        noisy = a * masked_latents + b * noise.expand_as(masked_latents)
        model_input = torch.cat([noisy, small, masked_latents], dim=1)
        timestep = torch.tensor(t, device=self.device)
        prediction = self.unet(model_input, timestep, encoder_hidden_states=text).sample
        if self._v_prediction:
            clean = a * noisy - b * prediction
        else:
            clean = (noisy - b * prediction) / a
        return self._surrogate_output(clean, image, mask)

    def surrogate_unrolled(self, image: Tensor, mask: Tensor) -> Tensor:
        """K deterministic DDIM steps (η = 0) from the real sampler's initial noise: K UNet calls.

        The same conditioning as :meth:`fill` ([z, mask, masked-image latents]; the initial noise from
        ``seed``, one per latent size, the same for every image of a batch) with the empty-prompt
        embedding and no guidance; timesteps evenly spaced over the training schedule (DDIM
        "leading" spacing, T·(K−1)/K … 0, plus the scheduler's ``steps_offset``); the last step returns
        its x0 prediction. Each UNet call is checkpointed (activations recomputed in the backward
        pass), so memory grows with K only by the K latents. Then VAE decode (checkpointed) → composite.
        """
        image = image.to(self.device, self.dtype)
        mask = mask.to(self.device, self.dtype).expand(image.shape[0], -1, -1, -1)
        small, masked_latents, text = self._surrogate_inputs(image, mask)
        _, noise = self._surrogate_draw(masked_latents.shape[1:])
        latents = noise.expand_as(masked_latents)
        total = len(self._alphas)
        offset = int(getattr(self.scheduler.config, "steps_offset", 0) or 0)
        ratio = total // self.surrogate_steps
        timesteps = [min(k * ratio + offset, total - 1) for k in reversed(range(self.surrogate_steps))]

        def predict(z: Tensor, sm: Tensor, ml: Tensor, t: Tensor) -> Tensor:
            return self.unet(torch.cat([z, sm, ml], dim=1), t, encoder_hidden_states=text).sample

        clean = latents
        for i, t in enumerate(timesteps):
            alpha = self._alphas[t]
            a, b = float(alpha.sqrt()), float((1 - alpha).sqrt())
            timestep = torch.tensor(t, device=self.device)
            if torch.is_grad_enabled():
                prediction = torch.utils.checkpoint.checkpoint(predict, latents, small, masked_latents, timestep,
                                                               use_reentrant=False)
            else:
                prediction = predict(latents, small, masked_latents, timestep)
            if self._v_prediction:
                clean, eps = a * latents - b * prediction, b * latents + a * prediction
            else:
                clean, eps = (latents - b * prediction) / a, prediction
            if i + 1 < len(timesteps):
                following = self._alphas[timesteps[i + 1]]
                latents = float(following.sqrt()) * clean + float((1 - following).sqrt()) * eps
        return self._surrogate_output(clean, image, mask)

    def _surrogate_inputs(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(mask on the latent grid, masked-image latents, empty-prompt embedding), padded to the VAE's factor."""
        small, masked_latents = self._conditioning(self._pad(image * (1 - mask)), self._pad(mask))
        return small, masked_latents, self._empty_embedding.expand(image.shape[0], -1, -1)

    def _surrogate_output(self, clean: Tensor, image: Tensor, mask: Tensor) -> Tensor:
        """Decode a predicted clean latent (checkpointed), crop the padding, keep the context exactly."""
        pixels = self._decode(clean, checkpoint=True)[..., : image.shape[-2], : image.shape[-1]]
        return mask * pixels + (1 - mask) * image

    @property
    def _v_prediction(self) -> bool:
        return getattr(self.scheduler.config, "prediction_type", "epsilon") == "v_prediction"

    def _surrogate_draw(self, shape: torch.Size) -> tuple[int, Tensor]:
        if self.surrogate_resample:
            lo, hi = (int(f * len(self._alphas)) for f in SURROGATE_T_RANGE)
            g = self._resample_generator
            t = int(torch.randint(lo, hi + 1, (1,), generator=g))
            return t, torch.randn((1, *shape), generator=g).to(self.device, self.dtype)
        key = tuple(shape)
        if key not in self._noise:
            generator = torch.Generator().manual_seed(self.seed)
            with torch.inference_mode(False):  # made in a clean pass, read by later ones that autograd records
                self._noise[key] = torch.randn((1, *shape), generator=generator).to(self.device, self.dtype)
        return self.surrogate_timestep, self._noise[key]


@contextlib.contextmanager
def quiet_diffusers():
    """No loading progress bars or deprecation chatter on the CLI's stderr; restored afterwards."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        diffusers_logging.set_verbosity(levels[0])
        transformers_logging.set_verbosity(levels[1])
        if bars[0]:
            diffusers_logging.enable_progress_bar()
        if bars[1]:
            transformers_logging.enable_progress_bar()


def load_sd_inpaint(weights: str | Path | None, device: torch.device, dtype: torch.dtype,
                    **options: Any) -> DiffusionInpainter:
    """A :class:`DiffusionInpainter` from a local diffusers-layout folder or an id in the local HF cache.

    Never downloads (``local_files_only=True``). ``options``: the arguments of :class:`DiffusionInpainter`
    (the registry checks them against the model's spec).

    Raises:
        ModelError: no weights, diffusers or transformers missing, or not a Stable Diffusion inpainting
            checkpoint.
    """
    if weights is None or not str(weights).strip():
        raise ModelError(f"model 'sd-inpaint' {WEIGHTS_HELP}")
    try:
        from diffusers import StableDiffusionInpaintPipeline

        with quiet_diffusers():
            pipeline = StableDiffusionInpaintPipeline.from_pretrained(
                str(weights), local_files_only=True, torch_dtype=dtype, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False)
        return DiffusionInpainter(pipeline.vae, pipeline.unet, pipeline.text_encoder, pipeline.tokenizer,
                                  pipeline.scheduler, device=device, dtype=dtype, **options)
    except ImportError as exc:
        raise ModelError(f"model 'sd-inpaint' needs diffusers and transformers: pip install backfire[diffusion] "
                         f"({exc})") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{weights}: cannot load a Stable Diffusion inpainting checkpoint ({first_line(exc)}); "
                         f"sd-inpaint {WEIGHTS_HELP}") from exc
