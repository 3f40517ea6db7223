"""The diffusers-style call of CafePipeline on random tiny parts: every knob as an argument, several
photos of one subject, references with weights (eq. 4 generalised), precomputed embeddings,
output types, callbacks and the progress bar, and bad values refused by name."""

import numpy as np
import pytest
import torch
from PIL import Image

from cafe_core.models.attention import cafe_processors
from cafe_core.models.guidance import blend_embeddings, mix_embeddings
from cafe_core.testing import tiny_conditions, tiny_generator, tiny_pipeline

from helpers import random_photo


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


PHOTO, REF, REF2 = random_photo(0), random_photo(1), random_photo(2)


def test_output_types_and_repeatable_seeds(pipe):
    pil = pipe(PHOTO, reference_images=REF, num_images_per_prompt=2, seed=5)
    assert len(pil.images) == 2 and all(isinstance(i, Image.Image) and i.size == (8, 8) for i in pil.images)
    assert pil.response is None and pil.history is None and pil.embedding.shape == (24,)
    array = pipe(PHOTO, reference_images=REF, num_images_per_prompt=2, seed=5, output_type="np").images
    assert array.shape == (2, 8, 8, 3) and array.dtype == np.float32 and 0 <= array.min() <= array.max() <= 1
    np.testing.assert_array_equal(np.stack([np.asarray(i) for i in pil.images]), np.round(array * 255))
    tensor = pipe(PHOTO, reference_images=REF, num_images_per_prompt=2, seed=5, output_type="pt").images
    assert tensor.shape == (2, 3, 8, 8)
    torch.testing.assert_close(tensor, torch.from_numpy(array).permute(0, 3, 1, 2))
    other = pipe(PHOTO, reference_images=REF, num_images_per_prompt=2, seed=6, output_type="np").images
    assert not np.array_equal(other, array)
    g1 = pipe(PHOTO, reference_images=REF, generator=torch.Generator().manual_seed(1), output_type="np").images
    g2 = pipe(PHOTO, reference_images=REF, generator=torch.Generator().manual_seed(1), output_type="np").images
    np.testing.assert_array_equal(g1, g2)
    images, response, embedding, history, timings = pipe(PHOTO, reference_images=REF, return_dict=False)
    assert len(images) == 1 and response is None and timings["diffusion"] > 0


def test_knobs_change_the_drawing(pipe):
    base = pipe(PHOTO, reference_images=REF, output_type="np").images
    for knobs in ({"clip_scale": 0.0}, {"dino_scale": 7.0}, {"num_inference_steps": 2}, {"scheduler": "dpmsolver++"}):
        changed = pipe(PHOTO, reference_images=REF, output_type="np", **knobs).images
        assert not np.array_equal(changed, base), knobs


def test_chat_prompt_gives_response_history_and_c_hat_that_can_be_passed_back(pipe):
    out = pipe(PHOTO, "Can you generate an image for this ball on the beach?", output_type="np")
    assert isinstance(out.response, str) and out.history[-1] == {"role": "assistant", "content": out.response}
    assert out.timings["llm"] > 0
    again = pipe(PHOTO, c_hat=out.embedding, output_type="np")  # precomputed c_hat: no LLM
    np.testing.assert_allclose(again.images, out.images, atol=1 / 255)
    assert "llm" not in again.timings
    turn2 = pipe(PHOTO, "Now in the snow.", history=out.history, output_type="np")
    assert [m["role"] for m in turn2.history] == ["user", "assistant", "user", "assistant"]


def test_reference_weights_blend_c_hat_as_eq_4(pipe):
    c_hat = torch.randn(24, generator=torch.Generator().manual_seed(0))
    refs = pipe.clip.image_embeds(np.stack([REF, REF2])).float()
    out = pipe(PHOTO, c_hat=c_hat, reference_images=[REF, REF2], reference_weights=[0.2, 0.3])
    torch.testing.assert_close(out.embedding, mix_embeddings(c_hat, refs, [0.2, 0.3]))
    one = pipe(PHOTO, c_hat=c_hat, reference_images=REF, reference_weights=0.4)
    torch.testing.assert_close(one.embedding, blend_embeddings(c_hat, refs[0], 0.4))
    default = pipe(PHOTO, c_hat=c_hat, reference_images=[REF, REF2])  # 0.5 shared equally
    torch.testing.assert_close(default.embedding, mix_embeddings(c_hat, refs, [0.25, 0.25]))
    zero = pipe(PHOTO, c_hat=c_hat, reference_images=REF, reference_weights=0.0)
    torch.testing.assert_close(zero.embedding, c_hat)
    # Without c_hat the weights are relative: content of one reference, style of another.
    relative = pipe(PHOTO, reference_images=[REF, REF2], reference_weights=[0.1, 0.3])
    torch.testing.assert_close(relative.embedding, mix_embeddings(None, refs, [0.25, 0.75]))
    # Precomputed reference embeddings draw what the images draw.
    a = pipe(PHOTO, reference_images=[REF, REF2], output_type="np").images
    b = pipe(PHOTO, reference_embeds=refs, output_type="np").images
    np.testing.assert_array_equal(a, b)


def test_several_photos_of_one_subject(pipe):
    one = pipe(PHOTO, reference_images=REF, output_type="np").images
    copies = pipe([PHOTO, PHOTO, PHOTO], reference_images=REF, output_type="np").images
    np.testing.assert_allclose(copies, one, atol=1 / 255)  # K copies of a photo draw that photo
    two = pipe([PHOTO, REF2], reference_images=REF, output_type="np").images
    assert not np.allclose(two, one, atol=2 / 255)
    d = pipe.dino.patch_tokens(np.stack([PHOTO, REF2]))
    precomputed = pipe(dino_embeds=d, reference_images=REF, output_type="np").images
    np.testing.assert_array_equal(precomputed, two)


@pytest.mark.parametrize("mode", ["joint", "decoupled"])
def test_g_reads_k_copies_of_a_photo_as_the_photo(mode):
    gen = tiny_generator(mode).eval()
    c, d = tiny_conditions(2)
    alone = gen.generate(c, d, num_inference_steps=3, seed=0)
    copies = gen.generate(c, d[:, None].expand(-1, 3, -1, -1), num_inference_steps=3, seed=0)
    np.testing.assert_allclose(copies.astype(int), alone.astype(int), atol=1)
    assert all(p.photos == 1 for p in cafe_processors(gen.unet).values())  # restored after the call


def test_dino_only_needs_no_c(pipe):
    out = pipe(PHOTO, guidance="dino_only", output_type="np")
    assert out.images.shape == (1, 8, 8, 3) and torch.count_nonzero(out.embedding) == 0


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    seen = []

    def callback(p, i, t, kwargs):
        assert p is pipe and set(kwargs) == {"latents"}
        seen.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 3 else kwargs

    out = pipe(PHOTO, reference_images=REF, num_inference_steps=4, callback_on_step_end=callback, output_type="np")
    assert seen == [0, 1, 2, 3]
    np.testing.assert_allclose(out.images, 0.5, atol=1 / 255)  # pixel space: zero is mid-grey


def test_progress_bar_follows_its_config(pipe, capsys):
    pipe.set_progress_bar_config(disable=False, desc="drawing")
    try:
        pipe(PHOTO, reference_images=REF, num_inference_steps=2)
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert "drawing" in capsys.readouterr().err
    pipe(PHOTO, reference_images=REF, num_inference_steps=2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"reference_weights": 1.5}, "reference_weights"),
        ({"reference_weights": -0.1}, "reference_weights"),
        ({"c_hat": torch.zeros(24), "reference_images": [REF, REF2], "reference_weights": [0.6, 0.6]}, "sum to 1.2"),
        ({"reference_weights": [0.5, 0.5]}, "2 weights for 1"),
        ({"clip_scale": -1.0}, "clip_scale"),
        ({"dino_scale": float("nan")}, "dino_scale"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"output_type": "latent"}, "output_type"),
        ({"guidance": "text"}, "guidance"),
        ({"scheduler": "euler"}, "scheduler"),
        ({"seed": 1, "generator": torch.Generator()}, "generator or seed"),
        ({"reference_embeds": torch.zeros(2, 5)}, "reference_embeds"),
        ({"callback_on_step_end_tensor_inputs": ("noise_pred",)}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_values_are_refused_by_name(pipe, kwargs, named):
    kwargs = {"reference_images": REF, **kwargs}
    if "reference_embeds" in kwargs:
        kwargs.pop("reference_images")
    with pytest.raises(ValueError, match=named):
        pipe(PHOTO, **kwargs)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("reference_weights", 1.5),
        ("clip_scale", -1.0),
        ("num_inference_steps", 2.5),
        ("num_images_per_prompt", True),
        ("output_type", "latent"),
        ("guidance", "text"),
        ("scheduler", "euler"),
    ],
)
def test_a_bad_argument_error_carries_its_name(pipe, name, value):
    """The CLI and the widgets say it in their own words (`--blend`) from the name, not from the text."""
    from cafe_core.utils.errors import ArgumentError

    with pytest.raises(ArgumentError) as err:
        pipe(PHOTO, reference_images=REF, **{name: value})
    assert err.value.name == name and str(err.value) == f"{name} {err.value.problem}"


def test_missing_inputs_say_what_is_needed(pipe):
    with pytest.raises(ValueError, match="nothing says what to draw"):
        pipe(PHOTO)
    with pytest.raises(ValueError, match="image is required"):
        pipe(reference_images=REF)
    with pytest.raises(ValueError, match="prompt must be a non-empty"):
        pipe(PHOTO, "  ")
    with pytest.raises(ValueError, match="prompt .* or c_hat"):
        pipe(PHOTO, "Draw it.", c_hat=torch.zeros(24))
    fast = tiny_pipeline(assistant=False)
    with pytest.raises(ValueError, match="no assistant"):
        fast(PHOTO, "Draw it.")


def test_scale_grid_varies_one_knob_per_axis_from_one_noise(pipe):
    grid = pipe.scale_grid(PHOTO, reference_images=REF, clip_scales=(0.0, 4.0), dino_scales=(1.0, 2.0, 6.0))
    assert grid.shape == (2, 3, 8, 8, 3) and grid.dtype == np.uint8
    cell = pipe(PHOTO, reference_images=REF, clip_scale=4.0, dino_scale=2.0, output_type="np").images[0]
    np.testing.assert_array_equal(grid[1, 1], np.round(cell * 255).astype(np.uint8))
    assert len({grid[i, j].tobytes() for i in range(2) for j in range(3)}) == 6
    chat = pipe.scale_grid(PHOTO, "Draw this ball on the beach.", clip_scales=(3.0,), dino_scales=(3.0,))
    turn = pipe(PHOTO, "Draw this ball on the beach.", output_type="np").images[0]
    np.testing.assert_allclose(chat[0, 0], np.round(turn * 255), atol=1)
    with pytest.raises(ValueError, match="clip_scale"):
        pipe.scale_grid(PHOTO, reference_images=REF, clip_scales=(-1.0,))
