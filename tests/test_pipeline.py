"""CafePipeline at tiny sizes: a chat turn (encoders -> M -> G) with timings, multi-turn chat about one
photo, bad input, the fast path and eq. 4's blend, and missing models naming the stage to run."""

import numpy as np
import pytest
import torch

from cafe_core.pipeline import CafePipeline
from cafe_core.world import make_world

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes


@pytest.fixture(scope="module")
def pipe(assistant_project):
    params, root, _ = assistant_project
    return CafePipeline.from_params(params, root, assistant="mse", device="cpu")


@pytest.fixture(scope="module")
def photo(assistant_project):
    params, _, _ = assistant_project
    world = make_world(params)
    return world.render(world.subjects("object", "eval")[0], None, seed=1).image


def test_chat_turn_returns_response_images_embedding_and_timings(pipe, photo):
    result = pipe.chat(photo, "Can you generate an image for this ball on the beach?", seed=3, num_images=2)
    assert isinstance(result.response, str) and result.response
    assert result.images.shape == (2, 16, 16, 3) and result.images.dtype == np.uint8
    assert result.embedding.shape == (pipe.assistant.config.clip_dim,) and torch.isfinite(result.embedding).all()
    parts = ("encoders", "llm", "diffusion")
    assert all(result.timings[p] > 0 for p in parts)
    assert result.timings["total"] >= sum(result.timings[p] for p in parts)
    assert result.history == [
        {"role": "user", "content": "Can you generate an image for this ball on the beach?"},
        {"role": "assistant", "content": result.response},
    ]
    again = pipe.chat(photo, "Can you generate an image for this ball on the beach?", seed=3, num_images=2)
    np.testing.assert_array_equal(result.images, again.images)


def test_multi_turn_keeps_the_photo_and_its_features(pipe, photo, monkeypatch):
    first = pipe.chat(photo, "Draw this ball on the beach.", seed=0)
    calls = []
    original = pipe.clip.patch_features
    monkeypatch.setattr(pipe.clip, "patch_features", lambda *a, **k: calls.append(1) or original(*a, **k))
    second = pipe.chat(photo, "Draw this ball in the snow.", first.history, seed=0)
    assert calls == []  # same photo: its features are reused
    assert [m["role"] for m in second.history] == ["user", "assistant", "user", "assistant"]
    prompt = pipe.assistant.build_prompt(second.history[:-1])
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("beach") < prompt.index("snow")
    # The second turn's c_hat is read after the second request: a different prediction.
    assert not torch.allclose(first.embedding, second.embedding)


def test_chat_rejects_bad_input(pipe, photo):
    with pytest.raises(ValueError, match="non-empty"):
        pipe.chat(photo, "   ")
    with pytest.raises(ValueError, match="uint8"):
        pipe.chat(photo.astype(np.float32), "Draw this ball.")
    with pytest.raises(ValueError, match="end with the user"):
        pipe.respond([photo], [[{"role": "assistant", "content": "hi"}]])


def test_fast_path_draws_one_image_per_reference(pipe, photo, assistant_project):
    params, _, _ = assistant_project
    world = make_world(params)
    refs = world.render_batch(world.subjects("object", "eval")[:3], world.contexts("object")[:3], [0, 1, 2])
    images, timings = pipe.generate(photo, refs, seed=0)
    assert images.shape == (3, 16, 16, 3) and timings["diffusion"] > 0
    one, _ = pipe.generate(photo, refs[0], seed=0)
    np.testing.assert_allclose(one[0], images[0], atol=2)  # same draw; batching may move a value by 1
    c_hat = pipe.chat(photo, "Draw this ball.").embedding
    blended, _ = pipe.generate(photo, refs[0], seed=0, c_hat=c_hat, blend=1.0)
    np.testing.assert_allclose(blended, one, atol=2)  # blend 1: the reference alone


def test_missing_models_name_the_stage_to_run(assistant_project, tmp_path):
    params, _, _ = assistant_project
    with pytest.raises(FileNotFoundError, match=r"dvc repro train_generator@main"):
        CafePipeline.from_params(params, tmp_path, device="cpu")
    with pytest.raises(KeyError, match="unknown assistant 'nope'"):
        CafePipeline.from_params(params, tmp_path, assistant="nope", device="cpu")
