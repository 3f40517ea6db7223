"""CafePipeline as a diffusers DiffusionPipeline: the whole system saves and loads with diffusers'
own save_pretrained / from_pretrained (every component a class diffusers knows how to load), the
UNet stays a plain diffusers UNet, and .to() and model CPU offload come from diffusers."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, UNet2DConditionModel

from cafe_core.models.attention import cafe_processors
from cafe_core.pipeline import CafePipeline, Sampling
from cafe_core.testing import tiny_pipeline

from helpers import random_photo

PHOTO, REF = random_photo(0), random_photo(1)
ASK = "can you draw it on the beach ?"


def _draw(pipe, **kwargs):
    return pipe(PHOTO, seed=3, num_images_per_prompt=2, output_type="np", **kwargs)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_pipe):
    folder = tmp_path_factory.mktemp("cafe") / "pipeline"
    tiny_pipe.save_pretrained(folder)
    return folder


def test_saved_system_loads_with_diffusers_and_draws_the_same(tiny_pipe, saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == "CafePipeline"
    assert index["conditioning"] == ["cafe_core.models.conditioning", "CafeConditioning"]
    assert index["assistant_head"] == ["cafe_core.models.assistant_head", "CafeAssistantHead"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["language_model"][0] == "transformers"
    assert index["sampling"]["steps"] == 4 and index["max_new_tokens"] == 8 and index["reference_weight"] == 0.5

    loaded = CafePipeline.from_pretrained(saved)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded, DiffusionPipeline) and loaded.sampling == Sampling(steps=4)
    assert len(cafe_processors(loaded.unet)) == len(cafe_processors(tiny_pipe.unet)) > 0
    for kwargs in ({"prompt": ASK}, {"reference_images": REF}):
        want, got = _draw(tiny_pipe, **kwargs), _draw(loaded, **kwargs)
        np.testing.assert_array_equal(got.images, want.images)
        torch.testing.assert_close(got.embedding, want.embedding)
        assert got.response == want.response


def test_the_saved_unet_is_a_plain_diffusers_unet(saved, tiny_pipe):
    """The CAFE processors' weights live in `conditioning/`, not in the UNet's file."""
    unet, info = UNet2DConditionModel.from_pretrained(saved / "unet", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert not cafe_processors(unet)
    assert len(cafe_processors(tiny_pipe.unet)) > 0  # saving put the pipeline's processors back


def test_fast_path_pipeline_saves_without_a_language_model(tmp_path):
    pipe = tiny_pipeline(assistant=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["language_model"] == [None, None] and not (tmp_path / "language_model").exists()
    loaded = CafePipeline.from_pretrained(tmp_path)
    assert loaded.assistant is None
    np.testing.assert_array_equal(_draw(loaded, reference_images=REF).images, _draw(pipe, reference_images=REF).images)
    with pytest.raises(ValueError, match="no assistant"):
        loaded(PHOTO, ASK)


def test_assistant_parts_come_together(tiny_pipe):
    parts = dict(tiny_pipe.components, assistant_head=None)
    with pytest.raises(ValueError, match="come together"):
        CafePipeline(**parts)


def test_reference_weight_is_the_default_lambda_beside_c_hat(tiny_pipe):
    """Eq. 4's lambda when references come without weights: the pipeline's config (from_params: selfdistill.lam)."""
    from cafe_core.models.guidance import mix_embeddings

    c_hat, ref = torch.randn(24), tiny_pipe.clip.image_embeds(REF[None])
    pipe = CafePipeline(**tiny_pipe.components, sampling=tiny_pipe.sampling, reference_weight=0.2)
    got = pipe(PHOTO, c_hat=c_hat, reference_images=REF, output_type="np").embedding
    torch.testing.assert_close(got, mix_embeddings(c_hat, ref.float(), [0.2]))
    with pytest.raises(ValueError, match="reference_weights"):
        CafePipeline(**tiny_pipe.components, reference_weight=1.5)


def test_to_moves_every_part_the_views_read():
    pipe = tiny_pipeline(assistant=False).to(dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.generator.dtype == pipe.clip.dtype == pipe.dino.dtype == torch.bfloat16
    assert all(p.to_k_dino.weight.dtype == torch.bfloat16 for p in cafe_processors(pipe.unet).values())
    assert _draw(pipe, reference_images=REF).images.shape == (2, 8, 8, 3)


def test_model_cpu_offload_draws_the_same(tiny_pipe):
    """diffusers' offload hooks (here onto the CPU itself: no accelerator in CI) leave the images unchanged."""
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.enable_model_cpu_offload(device="cpu")
    try:
        for kwargs in ({"prompt": ASK}, {"reference_images": REF}):
            np.testing.assert_array_equal(_draw(pipe, **kwargs).images, _draw(tiny_pipe, **kwargs).images)
    finally:
        pipe.remove_all_hooks()
