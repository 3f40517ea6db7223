"""Tiny random checkpoints in the real on-disk layouts of the ``sd2`` profile's models.

No weights can be downloaded here, so the ``sd2`` code path is proven on stand-ins: every model the
profile names (:data:`cafe_core.workbench.config.PROFILES`), written with random weights at tiny
widths but with the files, configs, processors, tokenizers and image sizes the published repositories
have, so that the loaders, stages and pipeline run exactly as they would on the real weights.

    write_tiny_checkpoints(root)                     # <root>/<repo id>/...: a model root (CAFE_MODEL_ROOT)
    write_tiny_checkpoints(cache, layout="hub")      # the Hugging Face cache layout: HF_HUB_CACHE=cache

The repositories (:data:`SD2_CHECKPOINTS`) and what each keeps of the real one:

- ``stabilityai/stable-diffusion-2-base``: a diffusers pipeline folder (unet, vae, scheduler,
  text_encoder, tokenizer, feature_extractor, ``model_index.json``): SD2's four-level UNet and VAE
  layouts and its PNDM epsilon schedule; 64 x 64 images (8 x 8 latents) instead of 512 x 512;
- ``openai/clip-vit-large-patch14-336``: ``CLIPModel`` at 336 px in 14 px patches (576 patch tokens),
  768-d projection, CLIP's byte-level BPE tokenizer files and ``preprocessor_config.json``;
- ``facebook/dinov2-giant``: ``Dinov2Model`` with SwiGLU, patch 14 at 518, and the processor that
  crops 224 (256 patch tokens), as the published one does;
- ``meta-llama/Llama-2-13b-chat-hf``: ``LlamaForCausalLM`` in sharded safetensors with an index,
  ``generation_config.json`` (sampling defaults of the chat model), a byte-fallback BPE tokenizer with
  Llama-2's ``<s>``/``</s>``/``<unk>`` ids and Llama-2-chat's chat template in ``tokenizer_config.json``;
- ``openai/clip-vit-base-patch32`` and ``facebook/dino-vits16``: the evaluation encoders (CLIP B/32
  also table 5's smaller E_c, beside ``facebook/dinov2-base``, its smaller E_d);
- ``arcface_w600k_r50``: an ONNX face-recognition network in insightface's layout (``model.onnx``).

Variants (``variants=True``, :data:`VARIANT_CHECKPOINTS`): what real checkpoints have and the
defaults do not: ``stabilityai/stable-diffusion-2`` (SD2-768: v prediction, Euler scheduler, 96 px
here), ``meta-llama/Llama-2-70b-chat-hf`` (grouped-query attention: fewer key/value heads),
``openai/clip-vit-base-patch16`` (another patch size) and ``facebook/dinov2-with-registers-giant``
(register tokens between CLS and the patches).
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

__all__ = [
    "LLAMA2_CHAT_TEMPLATE",
    "SD2_CHECKPOINTS",
    "VARIANT_CHECKPOINTS",
    "write_hub_cache",
    "write_tiny_checkpoints",
]

LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
"""The chat template of meta-llama/Llama-2-*-chat-hf's ``tokenizer_config.json``, as published."""

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


# --- writers, one per model family ----------------------------------------------------------------


def _clip(folder: Path, *, image_size: int, patch_size: int, projection_dim: int, seed: int) -> None:
    """A ``CLIPModel`` with OpenAI's file set: weights, config, BPE tokenizer, image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from . import tiny_clip_tokenizer_files

    tiny_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "hidden_act": "quick_gelu"}
    config = CLIPConfig(
        text_config={
            **small,
            "num_hidden_layers": 1,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**small, "num_hidden_layers": 2, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    crop = {"height": image_size, "width": image_size}
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size=crop, image_mean=CLIP_MEAN, image_std=CLIP_STD
    ).save_pretrained(folder)


def _dinov2(folder: Path, *, registers: int = 0, swiglu: bool = True, seed: int) -> None:
    """DINOv2's layout (patch 14 at 518; giant's SwiGLU, base's MLP) and its processor (resize 256, crop 224)."""
    from transformers import (
        BitImageProcessor,
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    shape = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14, "image_size": 518}
    torch.manual_seed(seed)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(**shape, use_swiglu_ffn=swiglu, num_register_tokens=registers)
        )
    else:
        model = Dinov2Model(Dinov2Config(**shape, use_swiglu_ffn=swiglu))
    model.save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_convert_rgb=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        resample=3,
    ).save_pretrained(folder)


def _dino_vits16(folder: Path, *, seed: int) -> None:
    """facebook/dino-vits16: a ``ViTModel`` in 16 px patches at 224, without the pooler."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    config = ViTConfig(
        hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=224, patch_size=16
    )
    torch.manual_seed(seed)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(
        size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
    ).save_pretrained(folder)


def _llama_tokenizer():
    """A byte-fallback BPE with Llama-2's special ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2), its
    ``▁`` word marker, and single characters for tokens: every text encodes, as with Llama's."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(char, len(vocab))
    merges = [("▁", c) for c in string.ascii_lowercase]  # a few merges, so the BPE has something to merge
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=merges)


def _llama(folder: Path, *, kv_heads: int, seed: int) -> None:
    """Llama-2-chat's file set: sharded safetensors + index, config, generation config, tokenizer
    whose ``tokenizer_config.json`` carries the chat template (as the published repositories do)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _llama_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=0, do_sample=True, temperature=0.6, top_p=0.9, max_length=4096
    )
    model.save_pretrained(folder, max_shard_size="200KB")  # several shards and an index, as 13B ships
    tokenizer.save_pretrained(folder)
    template = folder / "chat_template.jinja"  # transformers 5 writes it apart; the Hub repo has it inline
    template.unlink(missing_ok=True)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    tok_config.update(chat_template=LLAMA2_CHAT_TEMPLATE, legacy=False, add_bos_token=True, add_eos_token=False)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))


def _sd2(folder: Path, *, v_prediction: bool, seed: int) -> None:
    """A Stable Diffusion 2 pipeline folder: SD2's UNet/VAE layouts (tiny widths), the OpenCLIP-H text
    encoder's place taken by a tiny ``CLIPTextModel``, and the published scheduler of each model:
    PNDM epsilon (2-base, 512 px) or Euler v-prediction (2, 768 px). Images here: 64 or 96 px."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from . import tiny_clip_tokenizer_files, tiny_sd2_configs

    configs = tiny_sd2_configs()
    latent = 12 if v_prediction else 8
    tiny_clip_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77, pad_token="!")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**configs["unet"], "sample_size": latent})
    vae = AutoencoderKL.from_config({**configs["vae"], "sample_size": latent * 8})
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=configs["unet"]["cross_attention_dim"],
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    schedule = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    if v_prediction:
        scheduler = EulerDiscreteScheduler(**schedule, prediction_type="v_prediction")
    else:
        scheduler = PNDMScheduler(**schedule, prediction_type="epsilon", skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(crop_size={"height": 224, "width": 224}),
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _face(folder: Path, *, seed: int) -> None:
    from . import write_tiny_onnx_face

    write_tiny_onnx_face(folder, seed=seed)


Writer = Callable[[Path, int], None]

SD2_CHECKPOINTS: dict[str, Writer] = {
    "stabilityai/stable-diffusion-2-base": lambda f, s: _sd2(f, v_prediction=False, seed=s),
    "openai/clip-vit-large-patch14-336": lambda f, s: _clip(
        f, image_size=336, patch_size=14, projection_dim=768, seed=s
    ),
    "facebook/dinov2-giant": lambda f, s: _dinov2(f, seed=s),
    "facebook/dinov2-base": lambda f, s: _dinov2(f, seed=s, swiglu=False),
    "meta-llama/Llama-2-13b-chat-hf": lambda f, s: _llama(f, kv_heads=4, seed=s),
    "openai/clip-vit-base-patch32": lambda f, s: _clip(f, image_size=224, patch_size=32, projection_dim=512, seed=s),
    "facebook/dino-vits16": lambda f, s: _dino_vits16(f, seed=s),
    "arcface_w600k_r50": lambda f, s: _face(f, seed=s),
}
"""Every checkpoint the ``sd2`` profile names, by the name it resolves (a Hub repo id, or the face
model's folder name)."""

VARIANT_CHECKPOINTS: dict[str, Writer] = {
    "stabilityai/stable-diffusion-2": lambda f, s: _sd2(f, v_prediction=True, seed=s),
    "meta-llama/Llama-2-70b-chat-hf": lambda f, s: _llama(f, kv_heads=2, seed=s),
    "openai/clip-vit-base-patch16": lambda f, s: _clip(f, image_size=224, patch_size=16, projection_dim=512, seed=s),
    "facebook/dinov2-with-registers-giant": lambda f, s: _dinov2(f, registers=4, seed=s),
}
"""Layouts real checkpoints have and the defaults do not (v prediction, GQA, patch 16, registers)."""


# --- layouts --------------------------------------------------------------------------------------


def write_hub_cache(cache: str | os.PathLike, repo_id: str, source: str | os.PathLike, revision: str = "main") -> Path:
    """Copy the folder ``source`` into ``cache`` in the Hugging Face cache layout (content-addressed
    blobs, a snapshot of relative symlinks, ``refs/<revision>``); returns the snapshot folder."""
    cache, source = Path(cache), Path(source)
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    for file in sorted(source.rglob("*")):
        if not file.is_file():
            continue
        data = file.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def write_tiny_checkpoints(
    root: str | os.PathLike, *, layout: str = "folder", variants: bool = False, seed: int = 0
) -> dict[str, Path]:
    """Write every ``sd2`` checkpoint (and the variants) under ``root``; returns name -> its folder.

    ``layout="folder"``: ``<root>/<name>``, a model root (``CAFE_MODEL_ROOT=<root>`` or
    ``model_root=<root>``). ``layout="hub"``: ``root`` is a Hugging Face cache (``HF_HUB_CACHE=<root>``,
    with ``HF_HUB_OFFLINE=1``), each model a snapshot in it. Seeds are ``seed`` plus the model's index.
    """
    if layout not in ("folder", "hub"):
        raise ValueError(f"layout must be 'folder' or 'hub', got {layout!r}")
    writers = {**SD2_CHECKPOINTS, **(VARIANT_CHECKPOINTS if variants else {})}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, (name, write) in enumerate(writers.items()):
        if layout == "folder":
            folder = root / name
            write(folder, seed + i)
            written[name] = folder
            continue
        with tempfile.TemporaryDirectory() as tmp:
            write(Path(tmp), seed + i)
            written[name] = write_hub_cache(root, name, tmp)
    return written
