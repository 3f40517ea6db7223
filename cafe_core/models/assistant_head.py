"""The assistant's trained parts as one diffusers model: the pipeline's ``assistant_head`` component.

Eq. 2 trains ``V`` (CLIP patches to LM embeddings), ``H`` (the ``[GEN]`` state to ``c_hat``) and
the ``[GEN]`` input embedding; the LM stays frozen. As a ``ModelMixin`` these few million
parameters save and load with diffusers beside the LM (a transformers component of its own).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (ModelMixin: diffusers' loader looks it up here)
from diffusers.configuration_utils import register_to_config
from torch import nn

from .assistant import AssistantConfig

__all__ = ["CafeAssistantHead"]


class CafeAssistantHead(ModelMixin, ConfigMixin):
    """``visual_proj`` (V: patch_dim -> hidden), ``gen_head`` (H: hidden -> clip_dim) and ``gen_embedding``
    ((hidden,): the ``[GEN]`` input), with the :class:`~cafe_core.models.assistant.AssistantConfig`
    they were trained under. Kept in float32 whatever the LM's dtype: they are what AdamW updates."""

    _keep_in_fp32_modules = ["visual_proj", "gen_head", "gen_embedding"]

    @register_to_config
    def __init__(
        self,
        patch_dim: int,
        clip_dim: int,
        hidden_size: int,
        image_token: str = "<image>",
        gen_token: str = "[GEN]",
        lambda_: float = 1.0,
        distance: str = "mse",
    ):
        super().__init__()
        self.visual_proj = nn.Linear(patch_dim, hidden_size)
        self.gen_head = nn.Linear(hidden_size, clip_dim)
        self.gen_embedding = nn.Parameter(torch.zeros(hidden_size))

    @classmethod
    def for_lm(cls, lm: nn.Module, config: AssistantConfig) -> CafeAssistantHead:
        """New V, H and [GEN] for ``lm``, on its device in float32; [GEN] starts at the scale of its
        real token embeddings (the start of eq. 2's training)."""
        embed = lm.get_input_embeddings()
        device = embed.weight.device
        with torch.device(device):
            head = cls(hidden_size=embed.embedding_dim, **asdict(config))
        if device.type != "meta":
            with torch.no_grad():
                head.gen_embedding.normal_(0.0, float(embed.weight.float().std()))
        return head

    @property
    def assistant_config(self) -> AssistantConfig:
        c = self.config
        return AssistantConfig(c.patch_dim, c.clip_dim, c.image_token, c.gen_token, c.lambda_, c.distance)
