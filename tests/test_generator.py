"""CAFE's generator G: conditioning through attention processors, eq. 3 loss, two-knob sampling."""

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from cafe_core.diffusion import (
    CafeAttnProcessor,
    CafeGenerator,
    ConditioningConfig,
    blend_embeddings,
)

CLIP_DIM, DINO_DIM, DINO_TOKENS = 12, 10, 16


def tiny_unet(seed=0):
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_generator(attention="joint", seed=0):
    unet = tiny_unet(seed)
    cfg = ConditioningConfig(CLIP_DIM, DINO_DIM, DINO_TOKENS, cross_attention_dim=24, clip_tokens=2, attention=attention)
    return CafeGenerator(unet, DDPMScheduler(num_train_timesteps=100), cfg)


def cond(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, CLIP_DIM, generator=g), torch.randn(b, DINO_TOKENS, DINO_DIM, generator=g)


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
    out = proc(attn, h, tokens)
    q = attn.to_q(h)
    k = torch.cat([attn.to_k(tokens[:, :2]), proc.to_k_dino(tokens[:, 2:])], 1)
    v = torch.cat([attn.to_v(tokens[:, :2]), proc.to_v_dino(tokens[:, 2:])], 1)
    heads = attn.heads
    split = lambda x: x.view(2, x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (q.shape[-1] // heads) ** 0.5, -1)
    ref = attn.to_out[0]((w @ split(v)).transpose(1, 2).reshape(2, 5, -1))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", ["joint", "decoupled"])
def test_loss_trains_unet_conditioner_and_new_projections(attention):
    gen = tiny_generator(attention)
    c, d = cond(4)
    target = torch.rand(4, 3, 8, 8) * 2 - 1
    draws = gen.training_draws(target.shape, torch.Generator().manual_seed(0), drop_p=0.1)
    loss = gen(target, c, d, **draws)
    loss.backward()
    assert torch.isfinite(loss)
    proc = next(p for p in gen.processors)
    assert proc.to_k_dino.weight.grad is not None and proc.to_k_dino.weight.grad.abs().sum() > 0
    assert gen.conditioner.clip_proj.weight.grad.abs().sum() > 0
    assert gen.conditioner.dino_proj.weight.grad.abs().sum() > 0


def test_dropped_condition_uses_null_tokens():
    gen = tiny_generator()
    c, d = cond(2)
    keep = torch.tensor([True, False])
    tokens = gen.conditioner(c, d, keep, keep)
    torch.testing.assert_close(tokens[1, :2], gen.conditioner.null_clip)
    torch.testing.assert_close(tokens[1, 2:], gen.conditioner.null_dino)
    assert not torch.allclose(tokens[0, :2], gen.conditioner.null_clip)


def test_drop_rates_are_independent_and_near_p():
    gen = tiny_generator()
    draws = gen.training_draws((20000, 3, 8, 8), torch.Generator().manual_seed(0), drop_p=0.1)
    drop_c, drop_d = ~draws["keep_c"], ~draws["keep_d"]
    assert abs(drop_c.float().mean() - 0.1) < 0.01 and abs(drop_d.float().mean() - 0.1) < 0.01
    assert abs((drop_c & drop_d).float().mean() - 0.01) < 0.004  # independent: p^2


@pytest.mark.parametrize("guidance", ["both", "clip_only", "dino_only"])
@pytest.mark.parametrize("scheduler", ["ddim", "dpmsolver++"])
def test_sampling_is_seeded_and_batched(guidance, scheduler):
    gen = tiny_generator().eval()
    c, d = cond(3)
    a = gen.generate(c, d, guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    b = gen.generate(c, d, guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    assert a.shape == (3, 8, 8, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    single = gen.generate(c[:1], d[:1], guidance=guidance, num_inference_steps=4, seed=7, scheduler=scheduler)
    assert np.abs(single[0].astype(int) - a[0].astype(int)).max() <= 1  # batching does not change a sample


def test_guidance_scales_change_the_output():
    gen = tiny_generator().eval()
    with torch.no_grad():
        for p in gen.conditioner.parameters():
            p.add_(torch.randn_like(p))
    c, d = cond(2)
    base = gen.generate(c, d, clip_scale=1.0, dino_scale=1.0, num_inference_steps=3)
    more_d = gen.generate(c, d, clip_scale=1.0, dino_scale=5.0, num_inference_steps=3)
    assert not np.array_equal(base, more_d)


def test_save_and_load_round_trip(tmp_path):
    gen = tiny_generator("decoupled")
    with torch.no_grad():
        for p in gen.processors.parameters():
            p.add_(0.1)
    gen.save_pretrained(tmp_path / "g")
    assert (tmp_path / "g" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    again = CafeGenerator.from_pretrained(tmp_path / "g")
    assert again.config == gen.config
    c, d = cond(2)
    np.testing.assert_array_equal(
        gen.eval().generate(c, d, num_inference_steps=3), again.generate(c, d, num_inference_steps=3)
    )
    with pytest.raises(FileNotFoundError, match="not a CAFE generator folder"):
        CafeGenerator.from_pretrained(tmp_path)


def test_bad_inputs_fail_clearly():
    gen = tiny_generator().eval()
    c, d = cond(2)
    with pytest.raises(ValueError, match="same batch size"):
        gen.generate(c, d[:1])
    with pytest.raises(ValueError, match="guidance must be one of"):
        gen.generate(c, d, guidance="text")
    with pytest.raises(ValueError, match="attention must be one of"):
        ConditioningConfig(1, 1, 1, 1, attention="sum")


def test_blend_keeps_endpoints_and_interpolates_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), 3 * torch.randn(4, 8, generator=g)
    torch.testing.assert_close(blend_embeddings(a, b, 0.0), a)
    torch.testing.assert_close(blend_embeddings(a, b, 1.0), b)
    mid = blend_embeddings(a, b, 0.5)
    torch.testing.assert_close(mid.norm(dim=-1), 0.5 * a.norm(dim=-1) + 0.5 * b.norm(dim=-1))
    with pytest.raises(ValueError, match="lambda"):
        blend_embeddings(a, b, 1.5)


def _toy_data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    c = torch.from_numpy(rng.normal(size=(n, CLIP_DIM))).float()
    d = torch.from_numpy(rng.normal(size=(n, DINO_TOKENS, DINO_DIM))).float()
    return targets, c, d


class Killed(Exception):
    pass


def test_interrupted_generator_training_resumes_to_the_same_weights(tmp_path):
    from cafe_core.train import GeneratorTraining, train_generator

    targets, c, d = _toy_data()
    cfg = GeneratorTraining(steps=6, batch_size=4, lr=1e-3, checkpoint_every=2)
    reference = tiny_generator()
    train_generator(reference, targets, c, d, cfg, tmp_path / "a")

    def die_at_4(step):
        if step == 4:
            raise Killed

    interrupted = tiny_generator()
    with pytest.raises(Killed):
        train_generator(interrupted, targets, c, d, cfg, tmp_path / "b", on_checkpoint=die_at_4)
    resumed = tiny_generator()  # a fresh process would rebuild the model from the pretrained weights
    train_generator(resumed, targets, c, d, cfg, tmp_path / "b")
    for (name, p), q in zip(reference.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


def test_nan_loss_stops_generator_training(tmp_path):
    from cafe_core.train import GeneratorTraining, TrainingDivergedError, train_generator

    targets, c, d = _toy_data()
    c[:] = float("nan")
    with pytest.raises(TrainingDivergedError, match="loss became nan"):
        train_generator(tiny_generator(), targets, c, d, GeneratorTraining(steps=3, batch_size=4, lr=1e-3), tmp_path)


def test_per_image_seeds_make_an_image_independent_of_its_batch():
    gen = tiny_generator().eval()
    c, d = cond(3)
    batch = gen.generate(c, d, num_inference_steps=3, seed=[5, 6, 7])
    alone = gen.generate(c[2:], d[2:], num_inference_steps=3, seed=[7])
    assert np.abs(batch[2].astype(int) - alone[0].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="2 seeds for 3 images"):
        gen.generate(c, d, num_inference_steps=3, seed=[1, 2])
