"""The `sd2` profile's models load offline from tiny checkpoints in the real layouts (issue 13, item 1):
from the Hugging Face cache under HF_HUB_OFFLINE=1 and from a model root, with the shapes the real
models have, and the variants real checkpoints bring (v prediction, GQA, patch 16, registers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cafe_core.testing.checkpoints import LLAMA2_CHAT_TEMPLATE, SD2_CHECKPOINTS, VARIANT_CHECKPOINTS
from cafe_core.workbench.config import PROFILES

SD2 = PROFILES["sd2"]
PHOTO = np.random.default_rng(0).integers(0, 256, (300, 260, 3), dtype=np.uint8)  # not square, not the input size


@pytest.fixture
def offline_hub(tiny_sd2_hub, monkeypatch, no_network):
    """The tiny checkpoints as the only Hugging Face cache, offline, with no model root."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_sd2_hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CAFE_MODEL_ROOT", raising=False)
    return tiny_sd2_hub


def test_every_model_the_profile_names_is_written():
    named = {SD2.clip, SD2.dino, SD2.clip_small, SD2.dino_small, SD2.lm, SD2.text_to_image}
    named |= {SD2.eval_clip, SD2.eval_dino, SD2.face_id}
    assert named == set(SD2_CHECKPOINTS)
    assert not named & set(VARIANT_CHECKPOINTS)


def test_the_hub_layout_is_the_caches(offline_hub):
    """Content-addressed blobs, snapshot symlinks and a main ref: what `hf download` leaves."""
    repo = offline_hub / "models--meta-llama--Llama-2-13b-chat-hf"
    commit = (repo / "refs" / "main").read_text()
    snapshot = repo / "snapshots" / commit
    index = json.loads((snapshot / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(
        (snapshot / s).is_symlink() and (snapshot / s).resolve().parent.name == "blobs" for s in shards
    )
    config = json.loads((snapshot / "tokenizer_config.json").read_text())
    assert config["chat_template"] == LLAMA2_CHAT_TEMPLATE and not (snapshot / "chat_template.jinja").exists()


def test_conditioning_encoders_have_the_real_token_layouts(offline_hub):
    from cafe_core.models.encoders import ClipEncoder, DinoEncoder

    clip = ClipEncoder.from_pretrained(SD2.clip)
    assert clip.image_size == 336
    assert clip.image_embeds(PHOTO).shape == (1, 768)
    assert clip.patch_features(PHOTO).shape == (1, (336 // 14) ** 2, 32)  # 576 patches, as ViT-L/14@336
    dino = DinoEncoder.from_pretrained(SD2.dino)
    assert dino.image_size == 224  # the published processor crops 224 from DINOv2's 518 positions
    assert dino.patch_tokens(PHOTO).shape == (1, (224 // 14) ** 2, 48)


def test_evaluation_models_load_as_the_metrics_use_them(offline_hub):
    from cafe_core.models.encoders import ClipEncoder, DinoEncoder, load_face_embedder

    eval_clip = ClipEncoder.from_pretrained(SD2.eval_clip)
    assert eval_clip.image_embeds(PHOTO).shape == (1, 512)
    assert eval_clip.text_embeds(["a dog on the beach"]).shape == (1, 512)
    eval_dino = DinoEncoder.from_pretrained(SD2.eval_dino)
    assert eval_dino.cls_embeds(PHOTO).shape == (1, 24) and eval_dino.num_patches == (224 // 16) ** 2
    face = load_face_embedder(SD2.face_id)
    vectors = face.embed(np.stack([PHOTO[:112, :112]] * 2))
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(2))


def test_the_llm_speaks_llama2_chat(offline_hub):
    """The assistant writes its prompt with Llama-2-chat's own template, system turn and BOS included,
    and decodes greedily whatever sampling defaults the chat model's generation_config.json sets."""
    from cafe_core.models.assistant import AssistantConfig, CafeAssistant

    assistant = CafeAssistant.from_pretrained(SD2.lm, config=AssistantConfig(patch_dim=32, clip_dim=768))
    prompt = assistant.build_prompt(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "on a beach, please"}]
    )
    assert prompt == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image> on a beach, please [/INST]"
    assert assistant.unknown_words("a wörd nobody wrote down") == []  # byte fallback: every word encodes
    patches = torch.randn(1, 9, 32)
    ids = [assistant.encode_prompt([{"role": "user", "content": "on a beach"}])]
    first = assistant.generate(ids, patches, max_new_tokens=4)
    again = assistant.generate(ids, patches, max_new_tokens=4)
    assert first[0] == again[0] and first[1].shape == (1, 768)
    torch.testing.assert_close(first[1], again[1])


def test_the_sd2_base_pipeline_folder_draws_in_latent_space(offline_hub):
    from cafe_core.models.text_to_image import TextToImage

    t2i = TextToImage.from_pretrained(SD2.text_to_image)
    assert t2i.vae is not None and t2i.scheduler.config.prediction_type == "epsilon"
    images = t2i(["a red ball"], num_inference_steps=2, seed=0)
    assert images.shape == (1, 64, 64, 3) and images.dtype == np.uint8  # 8 x 8 latents, VAE factor 8


def test_chat_on_the_whole_sd2_stack(offline_hub):
    """Photo and message in, answer, c_hat and an image out: every sd2 checkpoint in one pipeline."""
    from cafe_core.models.assistant import AssistantConfig, CafeAssistant
    from cafe_core.models.encoders import ClipEncoder, DinoEncoder
    from cafe_core.models.generator import CafeGenerator
    from cafe_core.models.text_to_image import TextToImage
    from cafe_core.pipeline import CafePipeline, Sampling

    clip, dino = ClipEncoder.from_pretrained(SD2.clip), DinoEncoder.from_pretrained(SD2.dino)
    generator = CafeGenerator.from_text_to_image(
        TextToImage.from_pretrained(SD2.text_to_image), clip_dim=768, dino_dim=48, dino_tokens=256
    )
    assistant = CafeAssistant.from_pretrained(SD2.lm, config=AssistantConfig(patch_dim=32, clip_dim=768))
    pipe = CafePipeline.from_parts(assistant, clip, dino, generator, Sampling(steps=2), max_new_tokens=4)
    out = pipe(PHOTO, "draw it in the snow", output_type="np", seed=0)
    assert out.images.shape == (1, 64, 64, 3) and out.embedding.shape == (768,) and isinstance(out.response, str)


def test_the_model_root_layout_loads_the_same_models(tiny_sd2_root, monkeypatch, no_network):
    from cafe_core.models.encoders import ClipEncoder, DinoEncoder, load_face_embedder
    from cafe_core.utils.hub import resolve_model

    monkeypatch.setenv("HF_HUB_CACHE", str(tiny_sd2_root / "no-cache-here"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in SD2_CHECKPOINTS:
        assert resolve_model(name, model_root=tiny_sd2_root) == (tiny_sd2_root / name).resolve()
    assert ClipEncoder.from_pretrained(SD2.clip, model_root=tiny_sd2_root).image_embeds(PHOTO).shape == (1, 768)
    assert DinoEncoder.from_pretrained(SD2.dino, model_root=tiny_sd2_root).patch_tokens(PHOTO).shape[1] == 256
    assert load_face_embedder(SD2.face_id, model_root=tiny_sd2_root).embed(PHOTO[None, :112, :112]).shape == (1, 16)


# --- variants -------------------------------------------------------------------------------------


def test_sd2_768_trains_g_on_the_velocity(offline_hub):
    """SD2-768's scheduler predicts v: G's loss follows it (a UNet fine-tuned on epsilon would unlearn it)."""
    from cafe_core.models.generator import CafeGenerator
    from cafe_core.models.text_to_image import TextToImage

    t2i = TextToImage.from_pretrained("stabilityai/stable-diffusion-2")
    assert t2i.scheduler.config.prediction_type == "v_prediction" and t2i.unet.config.sample_size == 12
    g = CafeGenerator.from_text_to_image(t2i, clip_dim=8, dino_dim=6, dino_tokens=4)
    target = g.encode_target(torch.rand(2, 3, 96, 96))
    assert target.shape == (2, 4, 12, 12)
    draws = g.training_draws(target.shape, torch.Generator().manual_seed(0))
    c, d = torch.randn(2, 8), torch.randn(2, 4, 6)
    with torch.no_grad():
        loss = g(target, c, d, **draws)
        tokens = g.conditioner(c, d, draws["keep_c"], draws["keep_d"])
        noisy = g.scheduler.add_noise(target, draws["noise"], draws["timesteps"])
        pred = g.unet(noisy, draws["timesteps"], encoder_hidden_states=tokens).sample
    velocity = g.scheduler.get_velocity(target, draws["noise"], draws["timesteps"])
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(pred, velocity))


def test_g_in_latent_space_trains_from_cached_vae_distributions_the_same_way_every_run(offline_hub, tmp_path):
    """SD2's targets are cached once as the VAE's latent distributions (what a 1M-sample dataset can
    hold on disk); each step draws its latents from them with the step's own seed, so a run (or
    a resumed one) trains the same weights whatever torch's global generator holds."""
    from cafe_core.models.generator import CafeGenerator, target_parameters
    from cafe_core.models.text_to_image import TextToImage
    from cafe_core.workbench.training import GeneratorTraining, train_generator

    t2i = TextToImage.from_pretrained("stabilityai/stable-diffusion-2-base")
    images = torch.rand(4, 3, 96, 96)
    parameters = target_parameters(images, t2i.vae)
    assert parameters.shape == (4, 8, 12, 12)  # mean and log-variance of 4 latent channels
    g = CafeGenerator.from_text_to_image(t2i, clip_dim=8, dino_dim=6, dino_tokens=4)
    noise = torch.randn(4, 4, 12, 12)
    mean, logvar = parameters.chunk(2, dim=1)
    torch.testing.assert_close(
        g.sample_target(parameters, noise), (mean + (0.5 * logvar).exp() * noise) * t2i.vae.config.scaling_factor
    )
    c, d = torch.randn(4, 8), torch.randn(4, 4, 6)
    weights = []
    for global_seed in (1, 2):
        torch.manual_seed(0)  # G's new layers start alike, as the stage seeds them
        g = CafeGenerator.from_text_to_image(
            TextToImage.from_pretrained("stabilityai/stable-diffusion-2-base"), clip_dim=8, dino_dim=6, dino_tokens=4
        )
        torch.manual_seed(global_seed)
        train_generator(g, parameters, c, d, GeneratorTraining(2, 2, 1e-3), tmp_path / f"run-{global_seed}")
        weights.append(g.unet.state_dict())
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0, msg=name)


def test_a_grouped_query_llama_chats(offline_hub):
    from cafe_core.models.assistant import AssistantConfig, CafeAssistant

    assistant = CafeAssistant.from_pretrained(
        "meta-llama/Llama-2-70b-chat-hf", config=AssistantConfig(patch_dim=32, clip_dim=768)
    )
    config = assistant.lm.config
    assert config.num_key_value_heads < config.num_attention_heads
    ids = [assistant.encode_prompt([{"role": "user", "content": "on a beach"}])]
    text, c_hat = assistant.generate(ids, torch.randn(1, 9, 32), max_new_tokens=3)
    assert c_hat.shape == (1, 768) and isinstance(text[0], str)


@pytest.mark.parametrize(
    ("name", "method", "tokens"),
    [
        ("openai/clip-vit-base-patch16", "patch_features", (224 // 16) ** 2),
        ("facebook/dinov2-with-registers-giant", "patch_tokens", (224 // 14) ** 2),  # registers are not patches
    ],
)
def test_other_patch_sizes_and_register_tokens(offline_hub, name, method, tokens):
    from cafe_core.models.encoders import ClipEncoder, DinoEncoder

    encoder = (ClipEncoder if method == "patch_features" else DinoEncoder).from_pretrained(name)
    assert getattr(encoder, method)(PHOTO).shape[1] == tokens
