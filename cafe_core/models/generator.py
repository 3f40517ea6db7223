"""CAFE's generator G: the pretrained UNet, its text encoder removed, read through CLIP and DINO tokens.

G draws the subject of a photo (DINO patch tokens ``d``) as a CLIP image embedding ``c``
describes it (eq. 1, :mod:`cafe_core.models.attention`), is trained by eq. 3
(:meth:`CafeGenerator.forward`), and samples with two-knob guidance
(:mod:`cafe_core.models.guidance`). Saved folders hold the UNet in the diffusers layout (default
processors) beside ``cafe_conditioning.{json,safetensors}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils.errors import check_count
from .attention import (
    ConditioningConfig,
    Tokens,
    photos_per_subject,
    split_tokens,
    without_cafe_attention,
)
from .conditioning import CafeConditioning
from .guidance import BRANCHES, guidance_mode
from .text_to_image import TextToImage, UNetDeviceMixin, decode_images, initial_noise, make_scheduler

__all__ = [
    "CONDITIONING_CONFIG",
    "CONDITIONING_FILE",
    "PREDICTION_TYPES",
    "CafeGenerator",
    "min_snr_weights",
    "prediction_type",
    "target_parameters",
]

CONDITIONING_FILE = "cafe_conditioning.safetensors"
CONDITIONING_CONFIG = "cafe_conditioning.json"


PREDICTION_TYPES = ("epsilon", "v_prediction")
"""What a UNet may be trained to predict (its scheduler's ``prediction_type``): SD2-base predicts the
noise, SD2-768 the velocity ``v`` (Salimans & Ho 2022)."""


def prediction_type(scheduler) -> str:
    """The scheduler's ``prediction_type``, refused unless G can train it."""
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"G trains a UNet that predicts one of {PREDICTION_TYPES}; its scheduler says {kind!r}")
    return kind


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """(B,) Min-SNR-gamma loss weights, from diffusers' ``compute_snr`` (the weighting of its
    text-to-image training scripts): ``min(SNR, gamma) / SNR`` for epsilon prediction and
    ``min(SNR, gamma) / (SNR + 1)`` for v prediction."""
    from diffusers.training_utils import compute_snr

    if not gamma > 0:
        raise ValueError(f"snr_gamma must be > 0, got {gamma}")
    snr = compute_snr(scheduler, timesteps).clamp_min(1e-12)
    return snr.clamp(max=gamma) / (snr + 1 if prediction_type(scheduler) == "v_prediction" else snr)


def target_parameters(
    images: torch.Tensor, vae=None, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """:meth:`CafeGenerator.target_parameters` for the ``vae`` of a checkpoint (None: a pixel-space UNet),
    before any G is built: a training stage caches them once per dataset."""
    x = images.to(device, dtype) * 2 - 1
    if vae is None:
        return x
    with torch.no_grad():
        return vae.encode(x).latent_dist.parameters


class CafeGenerator(UNetDeviceMixin, nn.Module):
    """G(c, d): the pretrained UNet, its text encoder removed, read through CLIP and DINO tokens.

    Shares its method names with the assistant M: :meth:`trainable_module`,
    :meth:`trainable_parameters`, :meth:`trainable_state_dict`, :meth:`save_pretrained` and
    :meth:`from_pretrained`.
    """

    def __init__(
        self, unet, scheduler, config: ConditioningConfig, vae=None, conditioning: CafeConditioning | None = None
    ):
        """``conditioning``: trained conditioner and processors (a pipeline's component), installed into
        ``unet``; None starts new ones from the UNet's pretrained cross-attention (eq. 3's start)."""
        super().__init__()
        self.unet = unet
        self.scheduler = scheduler
        self.config = config
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        if conditioning is None:
            conditioning = CafeConditioning.for_unet(unet, config)
        elif conditioning.conditioning_config != config:
            raise ValueError(f"the conditioning's config {conditioning.conditioning_config} is not {config}")
        self.conditioner = conditioning.conditioner
        conditioning.install(unet)
        # The processors are submodules of the UNet's attention layers already, and the conditioning
        # holds both parts: a plain list (not registered again) keeps every parameter under exactly one
        # state-dict key of the generator.
        self._conditioning = [conditioning]

    @property
    def conditioning(self) -> CafeConditioning:
        """The conditioner and processors as one diffusers model (shared with this generator)."""
        return self._conditioning[0]

    @property
    def processors(self) -> nn.ModuleList:
        """The CafeAttnProcessors (shared with the UNet), in its layer order."""
        return self.conditioning.processors

    # --- construction and persistence -------------------------------------------------------------

    @classmethod
    def from_text_to_image(
        cls, t2i: TextToImage, *, clip_dim: int, dino_dim: int, dino_tokens: int, **kwargs
    ) -> CafeGenerator:
        """Start from a pretrained text-to-image model, dropping its text encoder."""
        cfg = ConditioningConfig(
            clip_dim=clip_dim,
            dino_dim=dino_dim,
            dino_tokens=dino_tokens,
            cross_attention_dim=t2i.unet.config.cross_attention_dim,
            **kwargs,
        )
        unet = t2i.unet.requires_grad_(True)
        return cls(unet, t2i.scheduler, cfg, vae=t2i.vae)

    def trainable_module(self) -> nn.Module:
        """What eq. 3 trains, as one module (shared, not copied): the UNet, with the CAFE
        processors inside it, and the conditioner. Optimisers and checkpoints see this."""
        parts = nn.Module()
        parts.unet, parts.conditioner = self.unet, self.conditioner
        return parts

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.trainable_module().parameters())

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.trainable_module().state_dict()

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """diffusers layout for the UNet (default processors), our file for the conditioning."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with without_cafe_attention(self.unet):
            self.unet.save_pretrained(path / "unet")
        self.scheduler.save_pretrained(path / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae")
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in self.conditioning.state_dict().items()},
            path / CONDITIONING_FILE,
        )
        (path / CONDITIONING_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> CafeGenerator:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONDITIONING_CONFIG).is_file():
            raise FileNotFoundError(
                f"{path} is not a CAFE generator folder (no {CONDITIONING_CONFIG}); train one first"
            )
        config = ConditioningConfig(**json.loads((path / CONDITIONING_CONFIG).read_text()))
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", dtype=dtype, use_safetensors=True).to(
            device
        )
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", dtype=dtype, use_safetensors=True).to(device)
        gen = cls(unet, scheduler, config, vae=vae)
        gen.conditioning.load_state_dict(load_file(path / CONDITIONING_FILE))
        return gen.eval().requires_grad_(False)

    # --- training ---------------------------------------------------------------------------------

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the UNet's block activations in backward (diffusers' checkpointing): less memory
        for a batch of SD2's 64 x 64 latents, at the cost of a second forward of each block."""
        self.unet.enable_gradient_checkpointing()

    def target_parameters(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) -> what a training target is drawn from, computed once per
        image (a training run caches it): (B, 2C, h, w) the VAE's latent mean and log-variance
        (diffusers' ``DiagonalGaussianDistribution.parameters``), or (B, 3, H, W) the pixels in
        [-1, 1] where the UNet denoises pixels."""
        return target_parameters(images, self.vae, device=self.device, dtype=self.dtype)

    def sample_target(self, parameters: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`target_parameters` (B, 2C or 3, h, w) -> a target (B, C, h, w) in the space the UNet
        denoises: a latent drawn from the VAE's distribution with ``noise`` (B, C, h, w; None: torch's
        global generator), times its scaling factor; or the pixels themselves."""
        parameters = parameters.to(self.device, self.dtype)
        if self.vae is None:
            return parameters
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        latents = DiagonalGaussianDistribution(parameters)
        sample = latents.sample() if noise is None else latents.mean + latents.std * noise.to(latents.mean)
        return sample * self.vae.config.scaling_factor

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) -> the space the UNet denoises (VAE latents or [-1, 1] pixels)."""
        return self.sample_target(self.target_parameters(images))

    def forward(
        self,
        target: torch.Tensor,
        c: torch.Tensor,
        d: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        keep_c: torch.Tensor,
        keep_d: torch.Tensor,
        snr_gamma: float | None = None,
    ) -> torch.Tensor:
        """Eq. 3: the MSE of one batch (a scalar) between the UNet's output and what its scheduler says
        it predicts: the noise (epsilon, SD2-base and the world's UNet) or the velocity (SD2-768).

        Args:
            target: (B, C, h, w) the targets y in the space the UNet denoises (:meth:`encode_target`).
            c: (B, clip_dim) CLIP embeddings E_c(y).
            d: (B, N, dino_dim) DINO patch tokens E_d(x) of the subject photos.
            noise: (B, C, h, w) the noise to add; timesteps: (B,) int.
            keep_c, keep_d: (B,) bool; False drops that source for the sample (classifier-free guidance).
            snr_gamma: None for eq. 3's plain mean; a value gamma weighs each sample's MSE by
                ``min(SNR(t), gamma) / SNR(t)`` (Min-SNR, Hang et al. 2023): the nearly clean
                timesteps, whose noise is hardest to predict and says least about what is drawn,
                stop dominating the gradient.

        The randomness comes from the caller (:meth:`training_draws`), so a batch split over
        processes sees exactly the draws the whole batch would have had in one process.
        """
        dev = self.device
        tokens = self.conditioner(c.to(dev), d.to(dev), keep_c.to(dev), keep_d.to(dev))
        noise, timesteps = noise.to(target), timesteps.to(dev)
        pred = self.unet(
            self.scheduler.add_noise(target, noise, timesteps), timesteps, encoder_hidden_states=tokens
        ).sample
        wanted = noise
        if prediction_type(self.scheduler) == "v_prediction":
            wanted = self.scheduler.get_velocity(target, noise, timesteps)
        if snr_gamma is None:
            return F.mse_loss(pred.float(), wanted.float())
        per_sample = F.mse_loss(pred.float(), wanted.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * min_snr_weights(self.scheduler, timesteps, snr_gamma)).mean()

    def training_draws(self, target_shape: tuple, generator: torch.Generator, drop_p: float = 0.1) -> dict:
        """Noise, timesteps and independent c/d drops (p = `drop_p` each) for one batch."""
        b = target_shape[0]
        return {
            "noise": torch.randn(target_shape, generator=generator),
            "timesteps": torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator),
            "keep_c": torch.rand(b, generator=generator) >= drop_p,
            "keep_d": torch.rand(b, generator=generator) >= drop_p,
        }

    # --- sampling ---------------------------------------------------------------------------------

    def _branch_tokens(self, c: torch.Tensor, d: torch.Tensor, branches: tuple[str, ...]) -> Tokens:
        """Condition tokens of every guidance branch, stacked into one batch in branch order."""
        b, photos = c.shape[0], d.shape[1] if d.ndim == 4 else 1
        parts = [
            self.conditioner(c if c_on else None, d if d_on else None, batch_size=b, photos=photos)
            for c_on, d_on in map(BRANCHES.get, branches)
        ]
        return split_tokens(torch.cat([torch.cat(p, dim=1) for p in parts]), self.config.clip_tokens)

    @torch.inference_mode()
    def generate(
        self,
        c: torch.Tensor,
        d: torch.Tensor,
        *,
        clip_scale: float = 3.0,
        dino_scale: float = 3.0,
        guidance: str = "both",
        num_inference_steps: int = 25,
        seed: int | list[int] | torch.Generator = 0,
        scheduler: str = "ddim",
        callback_on_step_end: Callable[[int, torch.Tensor, dict], dict | None] | None = None,
        progress_bar: Callable[[Iterable], Iterable] | None = None,
    ) -> np.ndarray:
        """Sample one image per (c, d) row; all guidance branches share one UNet batch.

        Args:
            c: (B, clip_dim) CLIP image embeddings (what to draw).
            d: (B, N, dino_dim) DINO patch tokens of the subject photo (whom to draw), or
                (B, K, N, dino_dim) those of K photos of one subject: their tokens are concatenated and
                share one photo's attention mass (:class:`~cafe_core.models.attention.CafeAttnProcessor`).
            clip_scale, dino_scale: s_c and s_d of the guidance modes (:mod:`.guidance`), >= 0.
            guidance: a key of :data:`~cafe_core.models.guidance.GUIDANCE_MODES`.
            num_inference_steps: >= 1 denoising steps of ``scheduler`` (``ddim``, ``dpmsolver++`` ...).
            seed: the starting noise (:func:`~cafe_core.models.text_to_image.initial_noise`).
            callback_on_step_end: called after each step as ``f(step_index, timestep, {"latents": x})``;
                a returned dict's ``"latents"`` replaces x (diffusers' convention, without the pipeline).
            progress_bar: wraps the timesteps (a pipeline's tqdm); None: no bar.

        Returns:
            uint8 (B, H, W, 3) images.
        """
        mode = guidance_mode(guidance)
        for name, value in (("clip_scale", clip_scale), ("dino_scale", dino_scale)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        num_inference_steps = check_count("num_inference_steps", num_inference_steps)
        c = c.to(self.device, self.dtype)
        d = d.to(self.device, self.dtype)
        if c.shape[0] != d.shape[0]:
            raise ValueError(f"c and d must have the same batch size, got {c.shape[0]} and {d.shape[0]}")
        if d.ndim not in (3, 4):
            raise ValueError(f"d must be (B, N, dino_dim) or (B, photos, N, dino_dim), got {tuple(d.shape)}")
        sched = make_scheduler(scheduler, self.scheduler.config)
        sched.set_timesteps(int(num_inference_steps), device=self.device)
        names = mode.branches
        tokens = self._branch_tokens(c, d, names)
        scales = {"clip_scale": clip_scale, "dino_scale": dino_scale}
        k = len(names)
        cfg = self.unet.config
        x = initial_noise((c.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size), seed)
        x = (x * sched.init_noise_sigma).to(self.device, self.dtype)
        steps = progress_bar(sched.timesteps) if progress_bar is not None else sched.timesteps
        with photos_per_subject(self.unet, d.shape[1] if d.ndim == 4 else 1):
            for i, t in enumerate(steps):
                inp = sched.scale_model_input(torch.cat([x] * k), t)
                eps = dict(zip(names, self.unet(inp, t, encoder_hidden_states=tokens).sample.chunk(k)))
                x = sched.step(mode.combine(eps, scales), t, x).prev_sample
                if callback_on_step_end is not None:
                    x = (callback_on_step_end(i, t, {"latents": x}) or {}).get("latents", x)
        return decode_images(x, self.vae)
