"""Configurations of the real checkpoints of the ``sd2`` profile, for wiring checks without weights.

The values are those of the published ``config.json`` files (architecture fields only), written
down here so that the full-size model can be built on torch's ``meta`` device, where it costs no
memory and needs no download: shapes, parameter counts and module wiring of the real model can
then be checked on any machine. Loading the real weights is :mod:`cafe_core.hub`'s job.

Names are Hub repo ids; a diffusers pipeline component is named ``<repo>/<subfolder>``, e.g.
``"stabilityai/stable-diffusion-2-base/unet"``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["REFERENCE_MODELS", "build_on_meta", "reference_config"]

_SD2 = "stabilityai/stable-diffusion-2-base"


def _clip_l14_336() -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=768,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            patch_size=14,
            image_size=336,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=768,
        ),
        projection_dim=768,
        logit_scale_init_value=2.6592,
    )


def _clip_b32() -> Any:
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=512,
            intermediate_size=2048,
            num_hidden_layers=12,
            num_attention_heads=8,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=512,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            patch_size=32,
            image_size=224,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            projection_dim=512,
        ),
        projection_dim=512,
        logit_scale_init_value=2.6592,
    )


def _dinov2(hidden_size: int, layers: int, heads: int, swiglu: bool) -> Callable[[], Any]:
    def make() -> Any:
        from transformers import Dinov2Config

        return Dinov2Config(
            hidden_size=hidden_size,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            mlp_ratio=4,
            use_swiglu_ffn=swiglu,
            patch_size=14,
            image_size=518,
            layerscale_value=1.0,
            layer_norm_eps=1e-6,
            hidden_act="gelu",
            qkv_bias=True,
        )

    return make


def _dino_vits16() -> Any:
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        image_size=224,
        patch_size=16,
        qkv_bias=True,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )


def _llama2_13b_chat() -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=32000,
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        hidden_act="silu",
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        rope_theta=10000.0,
    )


def _sd2_unet() -> dict[str, Any]:
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": True,
        "dual_cross_attention": False,
    }


def _sd2_vae() -> dict[str, Any]:
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def _sd2_scheduler() -> dict[str, Any]:
    # SD2-base ships a PNDM config; the noise schedule fields load as DDPMScheduler / DDIMScheduler too.
    return {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "trained_betas": None,
    }


@dataclass(frozen=True)
class _Reference:
    config: Callable[[], Any]
    library: str  # "transformers" or "diffusers"
    model_class: str | None  # None: a configuration only (a scheduler), not a module
    model_kwargs: tuple[tuple[str, Any], ...] = ()


_REFERENCES: dict[str, _Reference] = {
    "openai/clip-vit-large-patch14-336": _Reference(_clip_l14_336, "transformers", "CLIPModel"),
    "openai/clip-vit-base-patch32": _Reference(_clip_b32, "transformers", "CLIPModel"),
    "facebook/dinov2-giant": _Reference(_dinov2(1536, 40, 24, swiglu=True), "transformers", "Dinov2Model"),
    "facebook/dinov2-base": _Reference(_dinov2(768, 12, 12, swiglu=False), "transformers", "Dinov2Model"),
    "facebook/dino-vits16": _Reference(_dino_vits16, "transformers", "ViTModel", (("add_pooling_layer", False),)),
    "meta-llama/Llama-2-13b-chat-hf": _Reference(_llama2_13b_chat, "transformers", "LlamaForCausalLM"),
    f"{_SD2}/unet": _Reference(_sd2_unet, "diffusers", "UNet2DConditionModel"),
    f"{_SD2}/vae": _Reference(_sd2_vae, "diffusers", "AutoencoderKL"),
    f"{_SD2}/scheduler": _Reference(_sd2_scheduler, "diffusers", None),
}

#: Every name :func:`reference_config` knows.
REFERENCE_MODELS: tuple[str, ...] = tuple(_REFERENCES)


def _lookup(name: str, subfolder: str | None) -> _Reference:
    key = f"{name}/{subfolder}" if subfolder else name
    try:
        return _REFERENCES[key]
    except KeyError:
        known = "\n  ".join(REFERENCE_MODELS)
        raise KeyError(f"No reference configuration for {key!r}. Known:\n  {known}") from None


def reference_config(name: str, *, subfolder: str | None = None) -> Any:
    """The published configuration of a real checkpoint: a fresh ``PretrainedConfig``
    (transformers models) or ``dict`` (diffusers components, loadable with ``Cls.from_config``)."""
    reference = _lookup(name, subfolder)
    config = reference.config()
    return copy.deepcopy(config) if isinstance(config, dict) else config


def build_on_meta(name: str, *, subfolder: str | None = None, dtype: torch.dtype | None = None) -> nn.Module:
    """Build the real-size model on torch's ``meta`` device: every shape, no memory, no weights.

    Meta tensors flow through ``forward`` for shape checks; nothing computes values.
    """
    reference = _lookup(name, subfolder)
    if reference.model_class is None:
        raise ValueError(f"{name!r} is a configuration (e.g. a scheduler), not a module; use reference_config().")
    if reference.library == "transformers":
        import transformers

        model_class = getattr(transformers, reference.model_class)
        with torch.device("meta"):
            model = model_class(reference_config(name, subfolder=subfolder), **dict(reference.model_kwargs))
    else:
        import diffusers

        model_class = getattr(diffusers, reference.model_class)
        with torch.device("meta"):
            model = model_class.from_config(reference_config(name, subfolder=subfolder))
    model = model.eval()
    return model.to(dtype) if dtype is not None else model
