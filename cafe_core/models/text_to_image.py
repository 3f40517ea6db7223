"""The base text-to-image model: a diffusers UNet on a CLIP text encoder (the world's, or SD2's).

One class serves both profiles. Configuration decides the rest: a ``vae/`` folder means
latent diffusion (SD2); without one the UNet works in pixel space (CAFE-mini's 16x16 world).
Folders follow the diffusers pipeline layout (``model_index.json``, ``unet/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``, optional ``vae/``). The sampling helpers here (schedulers,
seeded starting noise, decoding) are shared with CAFE's generator G.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..utils.hub import resolve_model

__all__ = ["SCHEDULERS", "TextToImage", "UNetDeviceMixin", "decode_images", "initial_noise", "make_scheduler"]

SCHEDULERS = ("ddim", "dpmsolver++", "ddpm")


def make_scheduler(kind: str, config: dict):
    """A sampling scheduler built from the training scheduler's config (diffusers convention).

    A model whose training scheduler clips its predicted clean sample (``clip_sample``: pixel
    space, CAFE-mini) has DPM-Solver++ hold that prediction to the same range, as DDIM and DDPM
    do by reading ``clip_sample``: DPM-Solver's ``thresholding`` with ``sample_max_value`` =
    ``clip_sample_range`` (its dynamic threshold is then the fixed range). Without it, strong
    guidance pushes pixels far past [-1, 1] and saturates them. Latent-space configs (SD2's
    ``clip_sample: false``) are left as they are.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        return DDIMScheduler.from_config(config)
    if kind == "dpmsolver++":
        clip = {}
        if config.get("clip_sample", False):
            clip = {"thresholding": True, "sample_max_value": config.get("clip_sample_range", 1.0)}
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", **clip)
    if kind == "ddpm":
        return DDPMScheduler.from_config(config)
    raise ValueError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")


class UNetDeviceMixin:
    """Device and dtype of a model are those of its UNet."""

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


class TextToImage(UNetDeviceMixin):
    """UNet + scheduler + text encoder (+ VAE); `__call__` samples with classifier-free guidance."""

    def __init__(self, unet, scheduler, text_encoder, tokenizer, vae=None):
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        model_root: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> TextToImage:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        path = resolve_model(name_or_path, model_root=model_root)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype, use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", dtype=dtype, use_safetensors=True)
        return cls(unet.to(device), scheduler, text_encoder.to(device), tokenizer, vae.to(device) if vae else None)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        self.scheduler.save_pretrained(path / "scheduler")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae")
        index = {
            "_class_name": type(self).__name__,
            "unet": ["diffusers", type(self.unet).__name__],
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "text_encoder": ["transformers", type(self.text_encoder).__name__],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "vae": ["diffusers", type(self.vae).__name__] if self.vae is not None else [None, None],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2))

    # --- conditioning -----------------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Last hidden states of the text encoder, padded to its full context (as SD does)."""
        max_len = self.text_encoder.config.max_position_embeddings
        batch = self.tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.text_encoder(input_ids=batch.input_ids.to(self.device))
        return out.last_hidden_state.to(self.dtype)

    # --- sampling ---------------------------------------------------------------------------------

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Model space -> uint8 (B, H, W, 3)."""
        return decode_images(latents, self.vae)

    @torch.inference_mode()
    def __call__(
        self,
        prompts: list[str],
        *,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        seed: int | list[int] = 0,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Generate one image per prompt; conditional and unconditional branches share one batch.

        `seed` seeds the whole batch, or, as a list, each image on its own (an image then does
        not depend on what else is in the batch, which lets callers cache images one by one).
        """
        sched = make_scheduler(scheduler, self.scheduler.config)
        sched.set_timesteps(num_inference_steps, device=self.device)
        cond = self.encode_prompts(prompts)
        uncond = self.encode_prompts([""] * len(prompts))
        context = torch.cat([uncond, cond])
        x = initial_noise((len(prompts), *self.sample_shape), seed)
        x = (x * sched.init_noise_sigma).to(self.device, self.dtype)
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t)
            eps_u, eps_c = self.unet(inp, t, encoder_hidden_states=context).sample.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = sched.step(eps, t, x).prev_sample
        return self.decode(x)


def initial_noise(shape: tuple[int, ...], seed: int | list[int] | torch.Generator) -> torch.Tensor:
    """Starting noise on the CPU (the same on every device).

    Args:
        shape: ``(B, C, H, W)`` of the model space.
        seed: one seed for the whole batch, one seed per sample (an image then does not depend
            on what else is in the batch), or a CPU ``torch.Generator`` to draw from (diffusers'
            ``generator=``; drawing the whole batch from it equals an int seed).
    """
    if isinstance(seed, torch.Generator):
        return torch.randn(shape, generator=seed)
    if isinstance(seed, int):
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if len(seed) != shape[0]:
        raise ValueError(f"got {len(seed)} seeds for {shape[0]} images")
    return torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(s)) for s in seed])


def decode_images(x: torch.Tensor, vae=None) -> np.ndarray:
    """Model space (latents or [-1, 1] pixels) -> uint8 (B, H, W, 3)."""
    if vae is not None:
        x = vae.decode(x / vae.config.scaling_factor).sample
    images = (x.float().clamp(-1, 1) + 1) * 127.5
    return images.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
