"""Frozen encoders on tiny models written in the real on-disk layouts, loaded the way users load them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cafe_core.models.encoders import ClipEncoder, DinoEncoder, FaceEmbedder, IdentityEmbedder, ImageTransform
from cafe_core.testing import tiny_clip_config, tiny_dinov2_config, tiny_vit_config, tiny_word_tokenizer
from cafe_core.testing.checkpoints import write_hub_cache
from cafe_core.utils.hub import ModelNotFoundError

IMAGE = 32
WORDS = "a photo of the dog cat toy red blue green on beach with hat in snow".split()

CLIP_PREPROCESSOR = {  # the fields of openai/clip-vit-*'s preprocessor_config.json, at tiny size
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": IMAGE},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": IMAGE, "width": IMAGE},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}
BIT_PREPROCESSOR = {  # facebook/dinov2-*: resize the shorter side to 256/224 of the crop, crop 224
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 36},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": IMAGE, "width": IMAGE},
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}
VIT_PREPROCESSOR = {  # facebook/dino-vits16 (legacy ViTFeatureExtractor: an int size, no crop)
    "feature_extractor_type": "ViTFeatureExtractor",
    "do_resize": True,
    "size": IMAGE,
    "resample": 2,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


# --- tiny models on disk --------------------------------------------------------------------------


def write_tiny_clip(folder: Path) -> Path:
    from transformers import CLIPModel

    torch.manual_seed(0)
    tokenizer = tiny_word_tokenizer(WORDS)
    config = tiny_clip_config(len(tokenizer.get_vocab()), image_size=IMAGE, vision_layers=3, max_positions=12)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return folder


def write_tiny_dinov2(folder: Path) -> Path:
    from transformers import Dinov2Model

    torch.manual_seed(1)
    Dinov2Model(tiny_dinov2_config(image_size=64)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(BIT_PREPROCESSOR))
    return folder


def write_tiny_vit(folder: Path, with_pooler: bool) -> Path:
    from transformers import ViTModel

    torch.manual_seed(2)
    ViTModel(tiny_vit_config(image_size=IMAGE), add_pooling_layer=with_pooler).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(VIT_PREPROCESSOR))
    return folder


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model root holding ``tiny/clip``, ``tiny/dinov2``, ``tiny/vit`` and ``tiny/face``."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_clip(root / "tiny" / "clip")
    write_tiny_dinov2(root / "tiny" / "dinov2")
    write_tiny_vit(root / "tiny" / "vit", with_pooler=True)
    write_tiny_vit(root / "tiny" / "face", with_pooler=False)
    return root


@pytest.fixture(scope="module")
def clip(models_dir: Path) -> ClipEncoder:
    return ClipEncoder.from_pretrained(models_dir / "tiny" / "clip")


@pytest.fixture(scope="module")
def dino(models_dir: Path) -> DinoEncoder:
    return DinoEncoder.from_pretrained(models_dir / "tiny" / "dinov2")


@pytest.fixture
def images() -> np.ndarray:
    """Five uint8 RGB images (N, H, W, 3) at model resolution."""
    return np.random.default_rng(0).integers(0, 256, size=(5, IMAGE, IMAGE, 3), dtype=np.uint8)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --- loading paths --------------------------------------------------------------------------------


def test_clip_loads_from_folder_model_root_and_hub_cache(
    models_dir: Path, clip: ClipEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    cache = tmp_path / "hf-cache"
    write_hub_cache(cache, "tiny-org/tiny-clip", models_dir / "tiny" / "clip")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CAFE_MODEL_ROOT", raising=False)

    from_root = ClipEncoder.from_pretrained("tiny/clip", model_root=models_dir)
    from_cache = ClipEncoder.from_pretrained("tiny-org/tiny-clip")
    assert same_weights(clip, from_root) and same_weights(clip, from_cache)
    assert torch.equal(clip.text_embeds(["a red dog"]), from_cache.text_embeds(["a red dog"]))


def test_dino_and_face_load_from_hub_cache(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    cache = tmp_path / "hf-cache"
    write_hub_cache(cache, "tiny-org/tiny-dinov2", models_dir / "tiny" / "dinov2")
    write_hub_cache(cache, "tiny-org/tiny-face", models_dir / "tiny" / "face")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert DinoEncoder.from_pretrained("tiny-org/tiny-dinov2").num_patches == 16
    assert FaceEmbedder.from_pretrained("tiny-org/tiny-face").hidden_size == 24


def test_missing_model_raises_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ModelNotFoundError, match="openai/clip-vit-large-patch14-336"):
        ClipEncoder.from_pretrained("openai/clip-vit-large-patch14-336", model_root=tmp_path)
    with pytest.raises(ModelNotFoundError, match="facebook/dinov2-giant"):
        DinoEncoder.from_pretrained("facebook/dinov2-giant")


def test_wrong_model_family_is_a_clear_error(models_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs a full CLIPModel"):
        ClipEncoder.from_pretrained(models_dir / "tiny" / "dinov2")
    with pytest.raises(ValueError, match="supports model types"):
        DinoEncoder.from_pretrained(models_dir / "tiny" / "clip")


# --- CLIP -----------------------------------------------------------------------------------------


def test_clip_shapes(clip: ClipEncoder, images: np.ndarray) -> None:
    assert (clip.image_size, clip.embed_dim, clip.patch_dim, clip.num_patches) == (IMAGE, 24, 32, 16)
    assert clip.image_embeds(images).shape == (5, 24)
    assert clip.patch_features(images).shape == (5, 16, 32)
    assert clip.text_embeds(["a dog", "a red toy on the beach"]).shape == (2, 24)
    hidden, mask = clip.text_hidden_states(["a dog", "a red toy on the beach"])
    assert hidden.shape == (2, 8, 32) and mask.tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0]


def test_patch_features_are_the_requested_hidden_layer(clip: ClipEncoder, images: np.ndarray) -> None:
    pixels = clip.preprocess(images)
    with torch.no_grad():
        hidden = clip.model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == 4  # embeddings + 3 blocks
    torch.testing.assert_close(clip.patch_features(images), hidden[-2][:, 1:])
    torch.testing.assert_close(clip.patch_features(images, layer=-1), hidden[-1][:, 1:])


def test_clip_input_types_agree(clip: ClipEncoder, images: np.ndarray) -> None:
    reference = clip.image_embeds(images)
    as_pil = [Image.fromarray(image) for image in images]
    as_float = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(clip.image_embeds(as_pil), reference)
    torch.testing.assert_close(clip.image_embeds(as_float), reference)
    torch.testing.assert_close(clip.image_embeds(list(images)), reference)
    torch.testing.assert_close(clip.image_embeds(as_pil[2]), reference[2:3])  # a single PIL image


def test_batching_equals_unbatched(clip: ClipEncoder, dino: DinoEncoder, images: np.ndarray) -> None:
    torch.testing.assert_close(clip.image_embeds(images, batch_size=2), clip.image_embeds(images))
    torch.testing.assert_close(clip.patch_features(images, batch_size=3), clip.patch_features(images))
    texts = ["a dog", "a red toy on the beach", "a cat in snow"]
    torch.testing.assert_close(clip.text_embeds(texts, batch_size=1), clip.text_embeds(texts))
    torch.testing.assert_close(clip.text_hidden_states(texts, batch_size=2)[0], clip.text_hidden_states(texts)[0])
    torch.testing.assert_close(dino.patch_tokens(images, batch_size=2), dino.patch_tokens(images))
    with pytest.raises(ValueError, match="positive"):
        clip.image_embeds(images, batch_size=0)


def test_text_embeds_are_deterministic_and_padding_free(clip: ClipEncoder) -> None:
    alone = clip.text_embeds(["a dog"])
    padded = clip.text_embeds(["a dog", "a blue cat with hat on the beach"])[:1]
    torch.testing.assert_close(alone, padded)  # pooled at EOS, so padding changes nothing
    assert torch.equal(clip.text_embeds(["a dog"]), alone)
    assert not torch.allclose(alone, clip.text_embeds(["a cat"]))


def test_long_texts_are_truncated(clip: ClipEncoder) -> None:
    hidden, mask = clip.text_hidden_states([" ".join(WORDS * 3)])
    assert hidden.shape[1] == clip.max_text_length == 12 and mask.all()
    assert clip.text_embeds(" ".join(WORDS * 3)).shape == (1, 24)


def test_normalisation(clip: ClipEncoder, dino: DinoEncoder, images: np.ndarray) -> None:
    ones = torch.ones(5)
    torch.testing.assert_close(clip.image_embeds(images, normalize=True).norm(dim=-1), ones)
    torch.testing.assert_close(clip.text_embeds(["a dog", "a cat"], normalize=True).norm(dim=-1), ones[:2])
    torch.testing.assert_close(dino.cls_embeds(images, normalize=True).norm(dim=-1), ones)
    assert not torch.allclose(clip.image_embeds(images).norm(dim=-1), ones)


def test_frozen_and_outputs_usable_in_training(clip: ClipEncoder, images: np.ndarray) -> None:
    assert not any(p.requires_grad for p in clip.parameters())
    clip.train()
    assert not clip.training and not clip.model.training
    features = clip.patch_features(images[:2])
    assert not features.requires_grad and not features.is_inference()
    projector = torch.nn.Linear(clip.patch_dim, 8)
    target = clip.image_embeds(images[:2])
    loss = projector(features).mean() + torch.nn.functional.mse_loss(target, target * 0 + 1)
    loss.backward()  # encoder outputs feed trainable layers and losses
    assert projector.weight.grad is not None


def test_bfloat16_is_respected(models_dir: Path, clip: ClipEncoder, images: np.ndarray) -> None:
    half = ClipEncoder.from_pretrained(models_dir / "tiny" / "clip", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.preprocess(images).dtype == torch.bfloat16
    embeds = half.image_embeds(images)
    assert embeds.dtype == torch.bfloat16 and half.text_embeds(["a dog"]).dtype == torch.bfloat16
    similarity = torch.cosine_similarity(embeds.float(), clip.image_embeds(images), dim=-1)
    assert similarity.min() > 0.98
    dino_half = DinoEncoder.from_pretrained(models_dir / "tiny" / "dinov2", dtype="bfloat16")
    assert dino_half.patch_tokens(images).dtype == torch.bfloat16


# --- DINO and faces -------------------------------------------------------------------------------


def test_dinov2_tokens(dino: DinoEncoder, images: np.ndarray) -> None:
    assert (dino.image_size, dino.hidden_size, dino.num_patches) == (IMAGE, 32, 16)
    tokens = dino.patch_tokens(images)
    assert tokens.shape == (5, 16, 32)
    with torch.no_grad():
        full = dino.model(pixel_values=dino.preprocess(images)).last_hidden_state
    torch.testing.assert_close(tokens, full[:, 1:])
    torch.testing.assert_close(dino.cls_embeds(images), full[:, 0])
    assert not any(p.requires_grad for p in dino.parameters())


def test_register_tokens_are_dropped() -> None:
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=IMAGE,
        patch_size=8,
        num_register_tokens=4,
    )
    encoder = DinoEncoder(Dinov2WithRegistersModel(config))
    assert encoder.num_prefix_tokens == 5
    assert encoder.patch_tokens(torch.rand(2, 3, IMAGE, IMAGE)).shape == (2, 16, 16)


def test_dino_v1_vit_for_evaluation(models_dir: Path, images: np.ndarray) -> None:
    encoder = DinoEncoder.from_pretrained(models_dir / "tiny" / "vit")
    assert encoder.model.pooler is not None  # the checkpoint has one, so it is loaded, not re-initialised
    assert encoder.patch_tokens(images).shape == (5, 16, 24)
    assert encoder.cls_embeds(images[0]).shape == (1, 24)


def test_face_embedder(models_dir: Path, images: np.ndarray) -> None:
    face = FaceEmbedder.from_pretrained(models_dir / "tiny" / "face")
    assert isinstance(face, IdentityEmbedder)
    assert face.model.pooler is None
    embeds = face.embed(images, batch_size=2)
    assert embeds.shape == (5, 24)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(face.embed(images[1]), embeds[1:2])


# --- preprocessing --------------------------------------------------------------------------------


def test_transforms_follow_the_processor_styles() -> None:
    clip = ImageTransform.from_config(CLIP_PREPROCESSOR, default_size=0)
    bit = ImageTransform.from_config(BIT_PREPROCESSOR, default_size=0)
    vit = ImageTransform.from_config(VIT_PREPROCESSOR, default_size=0)
    assert (clip.size, clip.resize_to, clip.crop, clip.interpolation) == (IMAGE, IMAGE, True, "bicubic")
    assert (bit.size, bit.resize_to, bit.crop) == (IMAGE, 36, True)
    assert (vit.size, vit.crop, vit.interpolation) == (IMAGE, False, "bilinear")
    assert ImageTransform.from_config({}, default_size=7).size == 7


def test_other_sizes_are_resized_and_centre_cropped(clip: ClipEncoder) -> None:
    wide = np.zeros((48, 96, 3), dtype=np.uint8)
    wide[:, 12:84] = 255  # white beyond the centre square (and the filter's reach), black margins
    pixels = clip.preprocess([wide, np.full((IMAGE, IMAGE, 3), 255, np.uint8)])
    assert pixels.shape == (2, 3, IMAGE, IMAGE)
    torch.testing.assert_close(pixels[0], pixels[1])  # the crop kept the centre, not the margins
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        clip.preprocess(torch.rand(2, IMAGE, IMAGE, 3))


# --- open_clip ------------------------------------------------------------------------------------


def test_open_clip_wrapper(tmp_path: Path) -> None:
    open_clip = pytest.importorskip("open_clip")
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": IMAGE, "layers": 3, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    (tmp_path / "cafe-tiny-openclip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "cafe-tiny-openclip.json")

    encoder = ClipEncoder.from_open_clip("cafe-tiny-openclip", pretrained=None)
    images = torch.rand(3, 3, IMAGE, IMAGE)
    assert (encoder.embed_dim, encoder.patch_dim, encoder.num_patches) == (16, 32, 16)
    embeds = encoder.image_embeds(images, normalize=True)
    assert embeds.shape == (3, 16)
    torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(encoder.image_embeds(images, batch_size=2), encoder.image_embeds(images))
    assert encoder.text_embeds(["a dog", "a cat"]).shape == (2, 16)
    assert encoder.patch_features(images).shape == (3, 16, 32)
    hidden, mask = encoder.text_hidden_states(["a dog"])
    assert hidden.shape == (1, 16, 32) and mask[0, :4].all() and not mask[0, 4:].any()
    with pytest.raises(ValueError, match="safetensors"):
        ClipEncoder.from_open_clip("cafe-tiny-openclip", pretrained="openai")


def test_open_clip_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "open_clip":
            raise ImportError("No module named 'open_clip'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'cafe-core\[openclip\]'"):
        ClipEncoder.from_open_clip("ViT-B-32")


def test_eos_mismatch_is_warned(clip: ClipEncoder, caplog: pytest.LogCaptureFixture) -> None:
    config = clip.model.config.text_config
    with caplog.at_level("WARNING", logger="cafe_core.models.encoders"):
        ClipEncoder._check_eos(clip.tokenizer, config)
        assert not caplog.records
        ClipEncoder._check_eos(clip.tokenizer, type(config)(eos_token_id=2))  # legacy: pools the highest id
    assert "pool the wrong token" in caplog.text


# --- ONNX face recognition (the sd2 profile's face model) ----------------------------------------


def test_onnx_face_embedder_in_the_insightface_layout(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from cafe_core.models.encoders import OnnxFaceEmbedder, load_face_embedder
    from cafe_core.testing import write_tiny_onnx_face

    folder = write_tiny_onnx_face(tmp_path / "models" / "arcface_w600k_r50")
    face = load_face_embedder("arcface_w600k_r50", model_root=tmp_path / "models")
    assert isinstance(face, OnnxFaceEmbedder) and isinstance(face, IdentityEmbedder) and face.image_size == 112
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (3, 150, 130, 3), dtype=np.uint8)  # any size: resized and centre-cropped
    emb = face.embed(photos, batch_size=2)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    torch.testing.assert_close(face.embed(photos[:1]), emb[:1])
    assert float(emb[0] @ face.embed(photos[:1])[0]) == pytest.approx(1.0, abs=1e-5)
    (folder / "model.onnx").unlink()
    assert not isinstance(load_face_embedder(write_tiny_vit(tmp_path / "vit", with_pooler=False)), OnnxFaceEmbedder)
    with pytest.raises(FileNotFoundError, match="no model.onnx"):
        OnnxFaceEmbedder.from_pretrained(folder)
