"""The base text-to-image model: a diffusers UNet on a CLIP text encoder (the world's, or SD2's).

One class serves both profiles. Configuration decides the rest: a `vae/` folder means
latent diffusion (SD2); without one the UNet works in pixel space (CAFE-mini's 16x16 world).
Folders follow the diffusers pipeline layout (`model_index.json`, `unet/`, `scheduler/`,
`text_encoder/`, `tokenizer/`, optional `vae/`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hub import resolve_model

logger = logging.getLogger(__name__)

SCHEDULERS = ("ddim", "dpmsolver++", "ddpm")


def make_scheduler(kind: str, config: dict):
    """A sampling scheduler built from the training scheduler's config (diffusers convention)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    if kind == "ddim":
        return DDIMScheduler.from_config(config)
    if kind == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    if kind == "ddpm":
        return DDPMScheduler.from_config(config)
    raise ValueError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")


class _OnUNetDevice:
    """Device and dtype of a model are those of its UNet."""

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype


class TextToImage(_OnUNetDevice):
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
    ) -> "TextToImage":
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        path = resolve_model(name_or_path, model_root=model_root)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, use_safetensors=True)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, use_safetensors=True)
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

    # --- conditioning ------------------------------------------------------------------

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Last hidden states of the text encoder, padded to its full context (as SD does)."""
        max_len = self.text_encoder.config.max_position_embeddings
        batch = self.tokenizer(prompts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            out = self.text_encoder(input_ids=batch.input_ids.to(self.device))
        return out.last_hidden_state.to(self.dtype)

    # --- sampling --------------------------------------------------------------------------

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


# --- CAFE's generator G: the UNet conditioned on a CLIP image embedding and DINO patch tokens ---

ATTENTION_MODES = ("joint", "decoupled")
GUIDANCE = ("both", "clip_only", "dino_only")


@dataclass(frozen=True)
class ConditioningConfig:
    """Shapes and switches of the image conditioning; saved beside the UNet."""

    clip_dim: int  # size of c = E_c(image), the projected CLIP embedding
    dino_dim: int  # width of the DINO patch tokens d
    dino_tokens: int  # number of DINO patch tokens
    cross_attention_dim: int  # the UNet's cross-attention width
    clip_tokens: int = 4  # c becomes this many tokens
    attention: str = "joint"  # "joint": one softmax over [K_c; K_d] (eq. 1); "decoupled": IP-Adapter-style sum
    decoupled_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")


class ImageConditioner(nn.Module):
    """Turns (c, d) into cross-attention tokens; learned null tokens stand in for a dropped source.

    c (B, clip_dim) -> `clip_tokens` tokens; d (B, N, dino_dim) -> N tokens; both LayerNorm-ed
    to the width the pretrained cross-attention keys and values expect. A dropped condition
    (classifier-free guidance) is replaced by its null tokens, per sample.
    """

    def __init__(self, config: ConditioningConfig):
        super().__init__()
        self.config = config
        w = config.cross_attention_dim
        self.clip_proj = nn.Linear(config.clip_dim, config.clip_tokens * w)
        self.clip_norm = nn.LayerNorm(w)
        self.dino_proj = nn.Linear(config.dino_dim, w)
        self.dino_norm = nn.LayerNorm(w)
        self.null_clip = nn.Parameter(torch.zeros(config.clip_tokens, w))
        self.null_dino = nn.Parameter(torch.zeros(config.dino_tokens, w))

    def forward(
        self,
        c: torch.Tensor | None,
        d: torch.Tensor | None,
        keep_c: torch.Tensor | None = None,
        keep_d: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """(B, clip_tokens + N, width). `keep_*` are (B,) bool masks; None source = dropped everywhere."""
        cfg = self.config
        b = batch_size or (c.shape[0] if c is not None else d.shape[0])
        null_c = self.null_clip.expand(b, -1, -1)
        null_d = self.null_dino.expand(b, -1, -1)
        if c is None:
            c_tok = null_c
        else:
            c_tok = self.clip_norm(self.clip_proj(c.to(self.clip_proj.weight.dtype)).view(b, cfg.clip_tokens, -1))
            if keep_c is not None:
                c_tok = torch.where(keep_c.view(b, 1, 1), c_tok, null_c)
        if d is None:
            d_tok = null_d
        else:
            d_tok = self.dino_norm(self.dino_proj(d.to(self.dino_proj.weight.dtype)))
            if keep_d is not None:
                d_tok = torch.where(keep_d.view(b, 1, 1), d_tok, null_d)
        return torch.cat([c_tok, d_tok], dim=1)


class CafeAttnProcessor(nn.Module):
    """Cross-attention over CLIP tokens and DINO tokens, with separate keys/values per source.

    `joint` (eq. 1, our reading): softmax(Q [K_c; K_d]^T / sqrt(d_k)) [V_c; V_d].
    `decoupled` (IP-Adapter): attn(Q, K_c, V_c) + scale * attn(Q, K_d, V_d).
    K_c, V_c are the pretrained `to_k`/`to_v` of the layer; K_d, V_d start as copies of them,
    so at step 0 both sources are read the way the pretrained model reads its text tokens.
    """

    def __init__(self, attn, clip_tokens: int, mode: str = "joint", scale: float = 1.0):
        super().__init__()
        self.clip_tokens = clip_tokens
        self.mode = mode
        self.scale = scale
        self.to_k_dino = self._copy(attn.to_k)
        self.to_v_dino = self._copy(attn.to_v)

    @staticmethod
    def _copy(layer: nn.Linear) -> nn.Linear:
        """A new projection with the pretrained one's weights, on its device (meta included)."""
        w = layer.weight
        new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        return new

    def _heads(self, attn, x: torch.Tensor) -> torch.Tensor:
        b, n, inner = x.shape
        return x.view(b, n, attn.heads, inner // attn.heads).transpose(1, 2)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("CafeAttnProcessor is a cross-attention processor: pass the (c, d) tokens")
        residual = hidden_states
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        c_tok = encoder_hidden_states[:, : self.clip_tokens]
        d_tok = encoder_hidden_states[:, self.clip_tokens :]
        q = self._heads(attn, attn.to_q(hidden_states))
        k_c, v_c = self._heads(attn, attn.to_k(c_tok)), self._heads(attn, attn.to_v(c_tok))
        k_d, v_d = self._heads(attn, self.to_k_dino(d_tok)), self._heads(attn, self.to_v_dino(d_tok))
        if self.mode == "joint":
            out = F.scaled_dot_product_attention(q, torch.cat([k_c, k_d], 2), torch.cat([v_c, v_d], 2))
        else:
            out = F.scaled_dot_product_attention(q, k_c, v_c) + self.scale * F.scaled_dot_product_attention(q, k_d, v_d)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_cafe_attention(unet, config: ConditioningConfig) -> nn.ModuleList:
    """Swap every cross-attention processor of `unet` for a CafeAttnProcessor; returns them."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors: dict = {}
    modules = []
    for name in unet.attn_processors:
        layer = unet.get_submodule(name.removesuffix(".processor"))
        if name.endswith("attn2.processor"):
            proc = CafeAttnProcessor(layer, config.clip_tokens, config.attention, config.decoupled_scale)
            modules.append(proc)
            processors[name] = proc
        else:
            processors[name] = AttnProcessor2_0()
    if not modules:
        raise ValueError("the UNet has no cross-attention layers to condition")
    unet.set_attn_processor(processors)
    return nn.ModuleList(modules)


CONDITIONING_FILE = "cafe_conditioning.safetensors"
CONDITIONING_CONFIG = "cafe_conditioning.json"


class CafeGenerator(_OnUNetDevice, nn.Module):
    """G(c, d): the pretrained UNet, its text encoder removed, read through CLIP and DINO tokens."""

    def __init__(self, unet, scheduler, config: ConditioningConfig, vae=None):
        super().__init__()
        self.unet = unet
        self.scheduler = scheduler
        self.config = config
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.conditioner = ImageConditioner(config).to(unet.device, unet.dtype)
        # The processors are submodules of the UNet's attention layers already; a plain list
        # (not registered again) keeps every parameter under exactly one state-dict key.
        self._processors = list(install_cafe_attention(unet, config))

    @property
    def processors(self) -> nn.ModuleList:
        """The CafeAttnProcessors (shared with the UNet), for saving them apart from it."""
        return nn.ModuleList(self._processors)

    # --- construction and persistence ------------------------------------------------

    @classmethod
    def from_text_to_image(cls, t2i: TextToImage, *, clip_dim: int, dino_dim: int, dino_tokens: int, **kwargs) -> "CafeGenerator":
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

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {
            **{f"conditioner.{k}": v for k, v in self.conditioner.state_dict().items()},
            **{f"processors.{k}": v for k, v in self.processors.state_dict().items()},
        }

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """diffusers layout for the UNet (default processors), our file for the conditioning."""
        from diffusers.models.attention_processor import AttnProcessor2_0
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cafe = self.unet.attn_processors
        self.unet.set_attn_processor(AttnProcessor2_0())
        try:
            self.unet.save_pretrained(path / "unet")
        finally:
            self.unet.set_attn_processor(cafe)
        self.scheduler.save_pretrained(path / "scheduler")
        if self.vae is not None:
            self.vae.save_pretrained(path / "vae")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.trainable_state().items()}, path / CONDITIONING_FILE)
        (path / CONDITIONING_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> "CafeGenerator":
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONDITIONING_CONFIG).is_file():
            raise FileNotFoundError(f"{path} is not a CAFE generator folder (no {CONDITIONING_CONFIG}); train one first")
        config = ConditioningConfig(**json.loads((path / CONDITIONING_CONFIG).read_text()))
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, use_safetensors=True).to(device)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler")
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, use_safetensors=True).to(device)
        gen = cls(unet, scheduler, config, vae=vae)
        state = load_file(path / CONDITIONING_FILE)
        gen.conditioner.load_state_dict({k[len("conditioner.") :]: v for k, v in state.items() if k.startswith("conditioner.")})
        gen.processors.load_state_dict({k[len("processors.") :]: v for k, v in state.items() if k.startswith("processors.")})
        return gen.eval().requires_grad_(False)

    # --- training ----------------------------------------------------------------------------

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B, 3, H, W) -> the space the UNet denoises (VAE latents or [-1, 1] pixels)."""
        x = images.to(self.device, self.dtype) * 2 - 1
        if self.vae is not None:
            with torch.no_grad():
                x = self.vae.encode(x).latent_dist.sample() * self.vae.config.scaling_factor
        return x

    def forward(
        self,
        target: torch.Tensor,
        c: torch.Tensor,
        d: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        keep_c: torch.Tensor,
        keep_d: torch.Tensor,
    ) -> torch.Tensor:
        """Eq. 3: epsilon-prediction MSE; `keep_*` (B,) bool say which samples keep c and d.

        The randomness (noise, timesteps, drops) comes from the caller, so a batch split over
        processes sees exactly the draws the whole batch would have had in one process.
        """
        dev = self.device
        tokens = self.conditioner(c.to(dev), d.to(dev), keep_c.to(dev), keep_d.to(dev))
        noise, timesteps = noise.to(target), timesteps.to(dev)
        pred = self.unet(self.scheduler.add_noise(target, noise, timesteps), timesteps, encoder_hidden_states=tokens).sample
        return F.mse_loss(pred.float(), noise.float())

    def training_draws(self, target_shape: tuple, generator: torch.Generator, drop_p: float = 0.1) -> dict:
        """Noise, timesteps and independent c/d drops (p = `drop_p` each) for one batch."""
        b = target_shape[0]
        return {
            "noise": torch.randn(target_shape, generator=generator),
            "timesteps": torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator),
            "keep_c": torch.rand(b, generator=generator) >= drop_p,
            "keep_d": torch.rand(b, generator=generator) >= drop_p,
        }

    # --- sampling ---------------------------------------------------------------------------

    def _branches(self, c: torch.Tensor, d: torch.Tensor, guidance: str) -> tuple[torch.Tensor, list[str]]:
        """Condition tokens of every guidance branch, stacked into one batch."""
        b = c.shape[0]
        cond = self.conditioner
        table = {
            "00": lambda: cond(None, None, batch_size=b),
            "c0": lambda: cond(c, None, batch_size=b),
            "0d": lambda: cond(None, d, batch_size=b),
            "cd": lambda: cond(c, d),
        }
        names = {"both": ["00", "c0", "cd"], "clip_only": ["00", "c0"], "dino_only": ["00", "0d"]}[guidance]
        return torch.cat([table[n]() for n in names]), names

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
        seed: int | list[int] = 0,
        scheduler: str = "ddim",
    ) -> np.ndarray:
        """Sample one image per (c, d) row; all guidance branches share one UNet batch.

        both: eps = e(0,0) + s_c [e(c,0) - e(0,0)] + s_d [e(c,d) - e(c,0)]
        clip_only: e(0,0) + s_c [e(c,0) - e(0,0)];  dino_only: e(0,0) + s_d [e(0,d) - e(0,0)]
        """
        if guidance not in GUIDANCE:
            raise ValueError(f"guidance must be one of {GUIDANCE}, got {guidance!r}")
        c = c.to(self.device, self.dtype)
        d = d.to(self.device, self.dtype)
        if c.shape[0] != d.shape[0]:
            raise ValueError(f"c and d must have the same batch size, got {c.shape[0]} and {d.shape[0]}")
        sched = make_scheduler(scheduler, self.scheduler.config)
        sched.set_timesteps(num_inference_steps, device=self.device)
        tokens, names = self._branches(c, d, guidance)
        k = len(names)
        cfg = self.unet.config
        x = initial_noise((c.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size), seed)
        x = (x * sched.init_noise_sigma).to(self.device, self.dtype)
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x] * k), t)
            eps = dict(zip(names, self.unet(inp, t, encoder_hidden_states=tokens).sample.chunk(k)))
            if guidance == "both":
                e = eps["00"] + clip_scale * (eps["c0"] - eps["00"]) + dino_scale * (eps["cd"] - eps["c0"])
            elif guidance == "clip_only":
                e = eps["00"] + clip_scale * (eps["c0"] - eps["00"])
            else:
                e = eps["00"] + dino_scale * (eps["0d"] - eps["00"])
            x = sched.step(e, t, x).prev_sample
        return decode_images(x, self.vae)


def initial_noise(shape: tuple[int, ...], seed: int | list[int]) -> torch.Tensor:
    """Starting noise on the CPU (same on every device): one generator, or one per sample."""
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


def blend_embeddings(c_hat: torch.Tensor, c_ref: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 4: c_lambda = (1 - lambda) c_hat + lambda c_ref, rescaled to the interpolated norm.

    A straight average of two embeddings shrinks its norm when they disagree; the UNet was
    trained on embeddings of real images, whose norms it has learned. We keep the direction
    of the linear mix and give it the linear mix of the two norms.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    mix = (1 - lam) * c_hat + lam * c_ref
    norm = (1 - lam) * c_hat.norm(dim=-1, keepdim=True) + lam * c_ref.norm(dim=-1, keepdim=True)
    return mix / mix.norm(dim=-1, keepdim=True).clamp_min(1e-8) * norm
