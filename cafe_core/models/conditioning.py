"""What CAFE adds to a pretrained UNet, as one diffusers model: the pipeline's ``conditioning`` component.

IP-Adapter ships its additions as ``image_proj`` plus the ``to_k_ip``/``to_v_ip`` of each
cross-attention layer; CAFE's are the :class:`~cafe_core.models.attention.ImageConditioner`
(``(c, d)`` to tokens) and the ``K_d``/``V_d`` of each :class:`~cafe_core.models.attention.CafeAttnProcessor`.
As a ``ModelMixin`` they save and load with diffusers (``config.json`` and
``diffusion_pytorch_model.safetensors``), so the UNet beside them stays a plain diffusers UNet.
"""

from __future__ import annotations

from dataclasses import asdict

from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin: diffusers' loader looks it up here)
from diffusers.configuration_utils import register_to_config
from torch import nn

from .attention import (
    CafeAttnProcessor,
    ConditioningConfig,
    ImageConditioner,
    cross_attention_layers,
    install_cafe_attention,
)

__all__ = ["CafeConditioning"]


class CafeConditioning(ModelMixin, ConfigMixin):
    """The conditioner and the per-layer DINO keys/values of eq. 1, saved apart from the UNet.

    ``layers`` lists ``(in_features, out_features, bias)`` of each cross-attention layer's keys, in
    the UNet's layer order: enough to rebuild the processors empty before their weights load.
    The state-dict keys (``conditioner.*``, ``processors.<n>.*``) are those of a generator folder's
    ``cafe_conditioning.safetensors``.
    """

    @register_to_config
    def __init__(
        self,
        clip_dim: int,
        dino_dim: int,
        dino_tokens: int,
        cross_attention_dim: int,
        clip_tokens: int = 4,
        attention: str = "joint",
        decoupled_scale: float = 1.0,
        layers: list[list] | None = None,
    ):
        super().__init__()
        cfg = self.conditioning_config
        self.conditioner = ImageConditioner(cfg)
        self.processors = nn.ModuleList(
            CafeAttnProcessor(int(i), int(o), bool(b), cfg.attention, cfg.decoupled_scale) for i, o, b in layers or []
        )

    @property
    def conditioning_config(self) -> ConditioningConfig:
        c = self.config
        return ConditioningConfig(
            c.clip_dim, c.dino_dim, c.dino_tokens, c.cross_attention_dim, c.clip_tokens, c.attention, c.decoupled_scale
        )

    @classmethod
    def for_unet(cls, unet, config: ConditioningConfig) -> CafeConditioning:
        """New conditioning for a pretrained ``unet``: a fresh conditioner, and ``K_d, V_d`` copied from
        each cross-attention layer's keys and values (the start of eq. 3's training). Not installed."""
        processors = [
            CafeAttnProcessor.from_attention(layer, config.attention, config.decoupled_scale)
            for layer in cross_attention_layers(unet).values()
        ]
        made = cls(**asdict(config))
        made.processors = nn.ModuleList(processors)
        made.register_to_config(layers=[list(p.shape) for p in processors])
        # nn.Module.to: diffusers' ModelMixin.to warns about float32 modules on any dtype, even with none.
        return nn.Module.to(made, unet.device, unet.dtype)

    def install(self, unet) -> list[CafeAttnProcessor]:
        """Put this conditioning's processors into ``unet``'s cross-attention layers (shared, not copied)."""
        return install_cafe_attention(unet, self.processors)
