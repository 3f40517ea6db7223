"""The real sd2-profile models, built on the meta device: shapes and parameter counts, no weights."""

from __future__ import annotations

import pytest
import torch

from cafe_core.models.encoders import ClipEncoder, DinoEncoder
from cafe_core.models.reference import REFERENCE_MODELS, build_on_meta, reference_config

SD2 = "stabilityai/stable-diffusion-2-base"
META = torch.device("meta")


def num_params(model: torch.nn.Module) -> int:
    """Tight expected counts below are those of the published checkpoints: they catch config typos."""
    return sum(p.numel() for p in model.parameters())


def test_clip_l14_336() -> None:
    encoder = ClipEncoder(build_on_meta("openai/clip-vit-large-patch14-336"))
    assert (encoder.image_size, encoder.embed_dim, encoder.num_patches, encoder.patch_dim) == (336, 768, 576, 1024)
    image = torch.empty(1, 3, 336, 336, device=META)
    assert encoder.image_embeds(image).shape == (1, 768)
    assert encoder.patch_features(image, layer=-2).shape == (1, 576, 1024)
    ids = torch.zeros(1, 77, dtype=torch.long, device=META)
    with torch.no_grad():
        assert encoder.model.text_model(input_ids=ids).last_hidden_state.shape == (1, 77, 768)
    assert num_params(encoder) == pytest.approx(427.94e6, rel=1e-3)


def test_clip_b32_for_evaluation() -> None:
    encoder = ClipEncoder(build_on_meta("openai/clip-vit-base-patch32"))
    assert encoder.image_embeds(torch.empty(2, 3, 224, 224, device=META)).shape == (2, 512)
    assert encoder.num_patches == 49
    assert num_params(encoder) == pytest.approx(151.28e6, rel=1e-3)


@pytest.mark.parametrize(
    ("name", "size", "tokens", "width", "params"),
    [
        ("facebook/dinov2-giant", 518, 1369, 1536, 1.1365e9),
        ("facebook/dinov2-base", 518, 1369, 768, 86.58e6),
        ("facebook/dino-vits16", 224, 196, 384, 21.67e6),
    ],
)
def test_dino_family(name: str, size: int, tokens: int, width: int, params: float) -> None:
    encoder = DinoEncoder(build_on_meta(name))
    assert (encoder.image_size, encoder.num_patches, encoder.hidden_size) == (size, tokens, width)
    image = torch.empty(1, 3, size, size, device=META)
    assert encoder.patch_tokens(image).shape == (1, tokens, width)
    assert encoder.cls_embeds(image).shape == (1, width)
    assert num_params(encoder) == pytest.approx(params, rel=1e-3)


def test_llama2_13b_chat() -> None:
    model = build_on_meta("meta-llama/Llama-2-13b-chat-hf")
    assert model.config.hidden_size == 5120
    assert all(p.device == META for p in model.parameters())
    ids = torch.zeros(1, 9, dtype=torch.long, device=META)
    with torch.no_grad():
        output = model(input_ids=ids, output_hidden_states=True)
    assert output.logits.shape == (1, 9, 32000)
    assert output.hidden_states[-1].shape == (1, 9, 5120)
    assert num_params(model) == pytest.approx(13.016e9, rel=1e-3)


def test_sd2_unet_vae_and_scheduler() -> None:
    unet = build_on_meta(SD2, subfolder="unet")
    latents = torch.empty(2, 4, 64, 64, device=META)
    timesteps = torch.zeros(2, dtype=torch.long, device=META)
    context = torch.empty(2, 77, 1024, device=META)
    with torch.no_grad():
        assert unet(latents, timesteps, encoder_hidden_states=context).sample.shape == (2, 4, 64, 64)
    assert num_params(unet) == pytest.approx(865.91e6, rel=1e-3)

    vae = build_on_meta(f"{SD2}/vae")
    with torch.no_grad():
        assert vae.decode(torch.empty(1, 4, 64, 64, device=META)).sample.shape == (1, 3, 512, 512)
    assert vae.config.scaling_factor == 0.18215
    assert num_params(vae) == pytest.approx(83.654e6, rel=1e-3)

    from diffusers import DDIMScheduler, DDPMScheduler

    config = reference_config(SD2, subfolder="scheduler")
    for scheduler_class in (DDPMScheduler, DDIMScheduler):
        scheduler = scheduler_class.from_config(config)
        assert scheduler.config.prediction_type == "epsilon" and len(scheduler.betas) == 1000
        torch.testing.assert_close(scheduler.betas[[0, -1]], torch.tensor([0.00085, 0.012]))
    with pytest.raises(ValueError, match="not a module"):
        build_on_meta(f"{SD2}/scheduler")


def test_configs_are_fresh_copies_and_unknown_names_are_listed() -> None:
    assert len(REFERENCE_MODELS) == 9
    first = reference_config(f"{SD2}/unet")
    first["block_out_channels"].append(1)
    assert reference_config(f"{SD2}/unet")["block_out_channels"] == [320, 640, 1280, 1280]
    with pytest.raises(KeyError, match="facebook/dinov2-giant"):
        reference_config("facebook/dinov2-huge")


def test_sd2_generator_wiring_on_meta():
    """G at real size: SD2-base UNet read through CLIP-L/14-336 (768) and DINOv2-giant (1536 x 256) tokens."""
    from diffusers import DDPMScheduler

    from cafe_core.models.attention import ConditioningConfig
    from cafe_core.models.generator import CafeGenerator
    from cafe_core.models.reference import build_on_meta, reference_config

    unet = build_on_meta("stabilityai/stable-diffusion-2-base", subfolder="unet")
    scheduler = DDPMScheduler.from_config(
        reference_config("stabilityai/stable-diffusion-2-base", subfolder="scheduler")
    )
    cfg = ConditioningConfig(clip_dim=768, dino_dim=1536, dino_tokens=256, cross_attention_dim=1024, clip_tokens=4)
    gen = CafeGenerator(unet, scheduler, cfg)
    assert len(gen.processors) == 16  # every cross-attention of SD2's UNet
    b = 2
    tokens = gen.conditioner(torch.zeros(b, 768, device="meta"), torch.zeros(b, 256, 1536, device="meta"))
    assert tokens[0].shape == (b, 4, 1024) and tokens[1].shape == (b, 256, 1024)
    out = gen.unet(
        torch.zeros(b, 4, 64, 64, device="meta"), torch.zeros(b, device="meta"), encoder_hidden_states=tokens
    ).sample
    assert out.shape == (b, 4, 64, 64)
    new = sum(p.numel() for p in gen.conditioner.parameters()) + sum(p.numel() for p in gen.processors.parameters())
    assert 20e6 < new < 80e6  # the new layers: projections, null tokens, DINO keys/values
