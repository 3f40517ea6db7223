"""Two-knob guidance as data, and eq. 4's blend of embeddings."""

import numpy as np
import pytest
import torch

from cafe_core.models.guidance import GUIDANCE_MODES, blend_embeddings, guidance_mode
from cafe_core.testing import TINY_DINO_TOKENS, tiny_generator
from cafe_core.testing import tiny_conditions as cond

DINO_TOKENS = TINY_DINO_TOKENS


def test_guidance_table_is_the_documented_formula():
    g = torch.Generator().manual_seed(0)
    eps = {name: torch.randn(3, 4, generator=g) for name in ("00", "c0", "0d", "cd")}
    scales = {"clip_scale": 2.5, "dino_scale": 4.0}
    both = eps["00"] + 2.5 * (eps["c0"] - eps["00"]) + 4.0 * (eps["cd"] - eps["c0"])
    torch.testing.assert_close(GUIDANCE_MODES["both"].combine(eps, scales), both, rtol=0, atol=0)
    torch.testing.assert_close(
        GUIDANCE_MODES["clip_only"].combine(eps, scales), eps["00"] + 2.5 * (eps["c0"] - eps["00"])
    )
    torch.testing.assert_close(
        GUIDANCE_MODES["dino_only"].combine(eps, scales), eps["00"] + 4.0 * (eps["0d"] - eps["00"])
    )
    assert GUIDANCE_MODES["both"].branches == ("00", "c0", "cd")
    assert GUIDANCE_MODES["dino_only"].branches == ("00", "0d")
    with pytest.raises(ValueError, match="guidance must be one of"):
        guidance_mode("text")


def test_guidance_scales_change_the_output():
    gen = tiny_generator().eval()
    with torch.no_grad():
        for p in gen.conditioner.parameters():
            p.add_(torch.randn_like(p))
    c, d = cond(2)
    base = gen.generate(c, d, clip_scale=1.0, dino_scale=1.0, num_inference_steps=3)
    more_d = gen.generate(c, d, clip_scale=1.0, dino_scale=5.0, num_inference_steps=3)
    assert not np.array_equal(base, more_d)


def test_blend_keeps_endpoints_and_interpolates_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 8, generator=g), 3 * torch.randn(4, 8, generator=g)
    torch.testing.assert_close(blend_embeddings(a, b, 0.0), a)
    torch.testing.assert_close(blend_embeddings(a, b, 1.0), b)
    mid = blend_embeddings(a, b, 0.5)
    torch.testing.assert_close(mid.norm(dim=-1), 0.5 * a.norm(dim=-1) + 0.5 * b.norm(dim=-1))
    with pytest.raises(ValueError, match="lambda"):
        blend_embeddings(a, b, 1.5)


def test_dpm_solver_holds_a_pixel_model_to_its_range_as_ddim_does():
    """A pixel-space model (its scheduler clips the clean sample) keeps DPM-Solver++'s clean-sample
    prediction in [-1, 1], as DDIM does; a latent-space config (SD2: no clipping) is left alone."""
    from diffusers import DDPMScheduler

    from cafe_core.models.text_to_image import make_scheduler

    pixels = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2").config
    latents = DDPMScheduler(num_train_timesteps=100, clip_sample=False).config
    assert make_scheduler("ddim", pixels).config.clip_sample
    held = make_scheduler("dpmsolver++", pixels)
    assert held.config.thresholding and held.config.sample_max_value == 1.0
    assert not make_scheduler("dpmsolver++", latents).config.thresholding

    def last_step(scheduler, eps_scale):
        """One final step from x_t = 0 with a huge noise estimate: the clean-sample guess is -eps * sigma / alpha."""
        scheduler.set_timesteps(4)
        x = torch.zeros(1, 3, 4, 4)
        eps = torch.full_like(x, eps_scale)
        for t in scheduler.timesteps:
            x = scheduler.step(eps, t, x).prev_sample
        return x

    assert last_step(held, 50.0).abs().max() <= 1.0 + 1e-5
    assert last_step(make_scheduler("dpmsolver++", latents), 50.0).abs().max() > 1.5
