"""Eq. 1: CAFE's cross-attention over CLIP tokens and DINO tokens, installed in a diffusers UNet."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from cafe_core.models.attention import (
    CafeAttnProcessor,
    cafe_processors,
    set_cafe_attention_scale,
    uninstall_cafe_attention,
)
from cafe_core.testing import TINY_DINO_TOKENS, tiny_generator, tiny_unet
from cafe_core.testing import tiny_conditions as cond

DINO_TOKENS = TINY_DINO_TOKENS


def test_every_cross_attention_gets_a_cafe_processor_initialised_from_pretrained_kv():
    gen = tiny_generator()
    procs = {k: v for k, v in gen.unet.attn_processors.items()}
    cross = [k for k in procs if k.endswith("attn2.processor")]
    assert cross and all(isinstance(procs[k], CafeAttnProcessor) for k in cross)
    assert not any(isinstance(procs[k], CafeAttnProcessor) for k in procs if k.endswith("attn1.processor"))
    layer = gen.unet.get_submodule(cross[0].removesuffix(".processor"))
    torch.testing.assert_close(procs[cross[0]].to_k_dino.weight, layer.to_k.weight)
    assert procs[cross[0]].to_k_dino.weight.data_ptr() != layer.to_k.weight.data_ptr()  # a copy, trained apart


def test_joint_attention_matches_one_softmax_over_both_sources():
    gen = tiny_generator()
    name = next(k for k in gen.unet.attn_processors if k.endswith("attn2.processor"))
    attn = gen.unet.get_submodule(name.removesuffix(".processor"))
    proc = attn.processor
    h = torch.randn(2, 5, attn.to_q.in_features)
    tokens = torch.randn(2, 2 + DINO_TOKENS, 24)
    out = proc(attn, h, (tokens[:, :2], tokens[:, 2:]))
    q = attn.to_q(h)
    k = torch.cat([attn.to_k(tokens[:, :2]), proc.to_k_dino(tokens[:, 2:])], 1)
    v = torch.cat([attn.to_v(tokens[:, :2]), proc.to_v_dino(tokens[:, 2:])], 1)
    heads = attn.heads
    split = lambda x: x.view(2, x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5, -1)
    ref = attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(2, 5, -1))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_dropped_condition_uses_null_tokens():
    gen = tiny_generator()
    c, d = cond(2)
    keep = torch.tensor([True, False])
    c_tok, d_tok = gen.conditioner(c, d, keep, keep)
    torch.testing.assert_close(c_tok[1], gen.conditioner.null_clip)
    torch.testing.assert_close(d_tok[1], gen.conditioner.null_dino)
    assert not torch.allclose(c_tok[0], gen.conditioner.null_clip)


def _one_layer(attention="joint"):
    gen = tiny_generator(attention)
    name = next(k for k in gen.unet.attn_processors if k.endswith("attn2.processor"))
    attn = gen.unet.get_submodule(name.removesuffix(".processor"))
    g = torch.Generator().manual_seed(5)
    h = torch.randn(2, 5, attn.to_q.in_features, generator=g)
    tokens = (torch.randn(2, 2, 24, generator=g), torch.randn(2, DINO_TOKENS, 24, generator=g))
    return gen, attn, h, tokens


def _clip_only(attn, h, c_tok):
    """Attention over the CLIP tokens alone, with the layer's own projections."""
    heads = attn.heads
    split = lambda x: x.view(2, x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = attn.to_q(h), attn.to_k(c_tok), attn.to_v(c_tok)
    w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5, -1)
    return attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(2, 5, -1))


@pytest.mark.parametrize("attention", ["joint", "decoupled"])
def test_attention_mask_over_the_dino_keys_leaves_the_clip_tokens(attention):
    gen, attn, h, tokens = _one_layer(attention)
    keys = torch.ones(2, 2 + DINO_TOKENS)
    keys[:, 2:] = 0  # the UNet's encoder_attention_mask turns this into a -10000 bias
    bias = (1 - keys) * -10000.0
    out = attn.processor(attn, h, tokens, attention_mask=bias[:, None])
    if attention == "joint":
        torch.testing.assert_close(out, _clip_only(attn, h, tokens[0]), rtol=1e-4, atol=1e-5)
    else:  # the DINO attention then averages its (all masked) values uniformly; CLIP's part is unchanged
        assert torch.isfinite(out).all()
        unmasked = attn.processor(attn, h, tokens)
        assert not torch.allclose(out, unmasked)


def test_scale_weighs_the_dino_tokens_and_zero_ignores_them():
    gen, attn, h, tokens = _one_layer("joint")
    as_trained = attn.processor(attn, h, tokens)
    set_cafe_attention_scale(gen.unet, 0.0)
    torch.testing.assert_close(attn.processor(attn, h, tokens), _clip_only(attn, h, tokens[0]), rtol=1e-4, atol=1e-5)
    set_cafe_attention_scale(gen.unet, 1.0)
    torch.testing.assert_close(attn.processor(attn, h, tokens), as_trained, rtol=0, atol=0)
    set_cafe_attention_scale(gen.unet, 3.0)
    assert all(p.scale == 3.0 for p in cafe_processors(gen.unet).values())
    assert not torch.allclose(attn.processor(attn, h, tokens), as_trained)
    with pytest.raises(ValueError, match=">= 0"):
        set_cafe_attention_scale(gen.unet, -1.0)


def test_processor_refuses_a_concatenated_token_sequence():
    _, attn, h, tokens = _one_layer()
    with pytest.raises(ValueError, match=r"\(c_tokens, d_tokens\)"):
        attn.processor(attn, h, torch.cat(tokens, dim=1))


def test_uninstall_restores_diffusers_processors_and_reinstalls():
    gen = tiny_generator()
    previous = uninstall_cafe_attention(gen.unet)
    assert all(isinstance(p, AttnProcessor2_0) for p in gen.unet.attn_processors.values())
    assert not cafe_processors(gen.unet)
    gen.unet.set_attn_processor(previous)
    assert len(cafe_processors(gen.unet)) == len(gen.processors) > 0
    with pytest.raises(ValueError, match="no CAFE attention processors"):
        set_cafe_attention_scale(tiny_unet(), 0.5)
