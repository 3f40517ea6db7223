"""Eq. 1: the UNet's cross-attention reads CLIP tokens of ``c`` and DINO patch tokens of ``d``.

:class:`ImageConditioner` turns ``(c, d)`` into two token sequences; :class:`CafeAttnProcessor`
replaces each cross-attention processor of a diffusers UNet and attends over both, with
separate key/value projections per source:

- ``joint`` (eq. 1, our reading): ``softmax(Q [K_c; K_d]^T / sqrt(d_k)) [V_c; V_d]``;
- ``decoupled`` (IP-Adapter): ``attn(Q, K_c, V_c) + scale * attn(Q, K_d, V_d)``.

The tokens reach the processors as the tuple ``encoder_hidden_states=(c_tokens, d_tokens)``,
the convention diffusers' IP-Adapter processors use for their image tokens, so nothing splits a
concatenated sequence at a token count.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTENTION_MODES",
    "CafeAttnProcessor",
    "ConditioningConfig",
    "ImageConditioner",
    "cafe_processors",
    "cross_attention_layers",
    "install_cafe_attention",
    "photos_per_subject",
    "set_cafe_attention_scale",
    "split_tokens",
    "uninstall_cafe_attention",
    "without_cafe_attention",
]

ATTENTION_MODES = ("joint", "decoupled")


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


Tokens = tuple[torch.Tensor, torch.Tensor]
"""``(c_tokens (B, clip_tokens, width), d_tokens (B, N, width))``: what the processors attend to."""


class ImageConditioner(nn.Module):
    """Turns (c, d) into cross-attention tokens; learned null tokens stand in for a dropped source.

    ``c`` (B, clip_dim) becomes ``clip_tokens`` tokens, ``d`` (B, N, dino_dim) N tokens, both
    LayerNorm-ed to the width the pretrained cross-attention keys and values expect. A dropped
    condition (classifier-free guidance) is replaced by its null tokens, per sample.
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
        photos: int = 1,
    ) -> Tokens:
        """Condition tokens of a batch.

        Args:
            c: (B, clip_dim) CLIP image embeddings, or None: the null tokens for every sample.
            d: (B, N, dino_dim) DINO patch tokens, or (B, K, N, dino_dim) those of K photos of one
                subject (concatenated into K * N tokens), or None: the null tokens for every sample.
            keep_c, keep_d: (B,) bool; False drops that sample's source (replaced by null tokens).
            batch_size: B when both sources are None.
            photos: K when ``d`` is None: the null tokens are repeated K times, so a branch without
                the photos has as many tokens as one with them (one UNet batch holds both).

        Returns:
            ``(c_tokens (B, clip_tokens, width), d_tokens (B, K * N, width))``.
        """
        cfg = self.config
        if d is not None and d.ndim == 4:
            photos, d = d.shape[1], d.flatten(1, 2)
        b = batch_size or (c.shape[0] if c is not None else d.shape[0])
        null_c = self.null_clip.expand(b, -1, -1)
        null_d = (self.null_dino if photos == 1 else self.null_dino.repeat(photos, 1)).expand(b, -1, -1)
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
        return split_tokens(torch.cat([c_tok, d_tok], dim=1), cfg.clip_tokens)


def split_tokens(tokens: torch.Tensor, clip_tokens: int) -> Tokens:
    """``(c_tokens, d_tokens)`` as two views of one (B, clip_tokens + N, width) buffer.

    Both sources live in one allocation, as they did when the processors split a concatenated
    sequence themselves: the attention then runs the very same kernels on the same memory layout,
    so generators trained before the tuple convention train and sample bit for bit the same.
    """
    return tokens[:, :clip_tokens], tokens[:, clip_tokens:]


class CafeAttnProcessor(nn.Module):
    """Cross-attention over CLIP tokens and DINO tokens, with separate keys/values per source.

    ``K_c, V_c`` are the pretrained ``to_k``/``to_v`` of the layer; ``K_d, V_d`` start as copies
    of them, so at step 0 both sources are read the way the pretrained model reads its text.
    Like diffusers' ``AttnProcessor2_0`` it applies the layer's spatial, group, cross and q/k
    norms when the layer has them, and an attention mask over the keys ``[c tokens; d tokens]``
    (what the UNet passes from ``encoder_attention_mask``).

    ``scale`` weighs the DINO source: in ``decoupled`` mode it multiplies the DINO attention; in
    ``joint`` mode it multiplies the DINO keys' share of the one softmax (a log-scale bias on
    their logits), so 0 ignores the photo's tokens and 1 is eq. 1 as trained.

    ``photos`` is how many photos of one subject the DINO tokens hold, concatenated
    (:func:`photos_per_subject`). In ``joint`` mode each photo's keys get a ``-log(photos)`` bias, so
    the photos share the mass one photo had against the CLIP tokens, and K copies of one photo
    attend exactly as that photo alone; ``decoupled`` mode needs nothing (its DINO softmax is its own).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        mode: str = "joint",
        scale: float = 1.0,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        """Fresh ``K_d``/``V_d`` of a layer whose keys map ``in_features`` tokens to ``out_features``
        (:meth:`from_attention` starts them as copies of the pretrained ``to_k``/``to_v``)."""
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"mode must be one of {ATTENTION_MODES}, got {mode!r}")
        self.mode = mode
        self.scale = scale
        self.photos = 1
        self.to_k_dino = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.to_v_dino = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_attention(cls, attn, mode: str = "joint", scale: float = 1.0) -> CafeAttnProcessor:
        """The processor of a pretrained cross-attention layer ``attn``: ``K_d, V_d`` copy its ``to_k, to_v``."""
        k = attn.to_k
        proc = cls(
            k.in_features, k.out_features, k.bias is not None, mode, scale, device=k.weight.device, dtype=k.weight.dtype
        )
        with torch.no_grad():
            for new, old in ((proc.to_k_dino, attn.to_k), (proc.to_v_dino, attn.to_v)):
                new.weight.copy_(old.weight)
                if old.bias is not None:
                    new.bias.copy_(old.bias)
        return proc

    @property
    def shape(self) -> tuple[int, int, bool]:
        """``(in_features, out_features, bias)`` of ``K_d`` (and ``V_d``): what rebuilds it empty."""
        k = self.to_k_dino
        return k.in_features, k.out_features, k.bias is not None

    @property
    def scale(self) -> float:
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        if not value >= 0:
            raise ValueError(f"the DINO attention scale must be >= 0, got {value}")
        self._scale = float(value)

    @staticmethod
    def _heads(attn, x: torch.Tensor) -> torch.Tensor:
        """(B, L, heads * dk) -> (B, heads, L, dk)."""
        b, n, inner = x.shape
        return x.view(b, n, attn.heads, inner // attn.heads).transpose(1, 2)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        """One cross-attention: ``hidden_states`` (B, L, C) or (B, C, H, W), tokens ``(c_tok, d_tok)``."""
        if not isinstance(encoder_hidden_states, tuple) or len(encoder_hidden_states) != 2:
            raise ValueError(
                "CafeAttnProcessor is a cross-attention processor: pass encoder_hidden_states=(c_tokens, d_tokens)"
            )
        # One alias per layer: the keys' and values' gradients of this layer meet here first, then the
        # layers' meet in the tokens, the order of sums the generators trained before used (bit for bit).
        c_tok, d_tok = (t.view(t.shape) for t in encoder_hidden_states)
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, ch, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, ch, h * w).transpose(1, 2)
        batch, n_c = c_tok.shape[0], c_tok.shape[1]
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, n_c + d_tok.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            c_tok, d_tok = attn.norm_encoder_hidden_states(c_tok), attn.norm_encoder_hidden_states(d_tok)
        q = self._heads(attn, attn.to_q(hidden_states))
        k_c, v_c = self._heads(attn, attn.to_k(c_tok)), self._heads(attn, attn.to_v(c_tok))
        k_d, v_d = self._heads(attn, self.to_k_dino(d_tok)), self._heads(attn, self.to_v_dino(d_tok))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k_c, k_d = attn.norm_k(k_c), attn.norm_k(k_d)
        if self.mode == "joint":
            weight = self.scale / self.photos
            if weight != 1.0:
                bias = torch.zeros(1, 1, 1, n_c + d_tok.shape[1], dtype=q.dtype, device=q.device)
                bias[..., n_c:] = math.log(weight) if weight > 0 else float("-inf")
                mask = bias if mask is None else mask + bias
            out = F.scaled_dot_product_attention(q, torch.cat([k_c, k_d], 2), torch.cat([v_c, v_d], 2), attn_mask=mask)
        else:
            mask_c, mask_d = (None, None) if mask is None else (mask[..., :n_c], mask[..., n_c:])
            out = F.scaled_dot_product_attention(
                q, k_c, v_c, attn_mask=mask_c
            ) + self.scale * F.scaled_dot_product_attention(q, k_d, v_d, attn_mask=mask_d)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, ch, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_layers(unet) -> dict:
    """``{processor name: attention layer}`` of every cross-attention of ``unet``, in its layer order."""
    names = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
    if not names:
        raise ValueError("the UNet has no cross-attention layers to condition")
    return {name: unet.get_submodule(name.removesuffix(".processor")) for name in names}


def install_cafe_attention(unet, processors: Sequence[CafeAttnProcessor]) -> list[CafeAttnProcessor]:
    """Put ``processors`` (one per cross-attention layer, in the UNet's layer order; see
    :func:`cross_attention_layers`) into ``unet``; self-attention layers get diffusers' ``AttnProcessor2_0``."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    layers, processors = cross_attention_layers(unet), list(processors)
    if len(processors) != len(layers):
        raise ValueError(f"the UNet has {len(layers)} cross-attention layers, got {len(processors)} processors")
    for (name, layer), proc in zip(layers.items(), processors):
        k = layer.to_k
        if proc.shape != (k.in_features, k.out_features, k.bias is not None):
            raise ValueError(f"{name}: the processor's keys are {proc.shape}, the layer's {tuple(k.weight.shape)}")
    by_name = dict(zip(layers, processors))
    unet.set_attn_processor(
        {name: by_name[name] if name in by_name else AttnProcessor2_0() for name in unet.attn_processors}
    )
    return processors


def cafe_processors(unet) -> dict[str, CafeAttnProcessor]:
    """The installed :class:`CafeAttnProcessor` of each cross-attention layer, by processor name."""
    return {name: p for name, p in unet.attn_processors.items() if isinstance(p, CafeAttnProcessor)}


def uninstall_cafe_attention(unet) -> dict:
    """Restore diffusers' default processors; returns the previous ones (pass them to
    ``unet.set_attn_processor`` to reinstall). The UNet then reads text tokens again."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    previous = unet.attn_processors
    unet.set_attn_processor(AttnProcessor2_0())
    return previous


@contextlib.contextmanager
def without_cafe_attention(unet):
    """Within the block ``unet`` has diffusers' default processors (to save it as a plain UNet); the CAFE
    processors are put back after, whatever happens."""
    previous = uninstall_cafe_attention(unet)
    try:
        yield unet
    finally:
        unet.set_attn_processor(previous)


@contextlib.contextmanager
def photos_per_subject(unet, photos: int):
    """Within the block, every CAFE processor reads its DINO tokens as ``photos`` photos' tokens
    concatenated (see :class:`CafeAttnProcessor`); restored to one photo after."""
    if photos < 1:
        raise ValueError(f"photos must be >= 1, got {photos}")
    processors = list(cafe_processors(unet).values())
    for proc in processors:
        proc.photos = photos
    try:
        yield
    finally:
        for proc in processors:
            proc.photos = 1


def set_cafe_attention_scale(unet, scale: float) -> None:
    """Set the DINO source's weight in every CAFE processor (see :class:`CafeAttnProcessor`)."""
    processors = cafe_processors(unet)
    if not processors:
        raise ValueError("this UNet has no CAFE attention processors installed")
    for proc in processors.values():
        proc.scale = scale
