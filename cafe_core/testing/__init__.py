"""Tiny, randomly initialised models of every family CAFE uses: the tests' and the GPU script's factories.

Like diffusers' ``get_dummy_components()``, each factory builds the real library class (transformers
``CLIPModel``, ``Dinov2Model``, ``ViTModel``, ``LlamaForCausalLM``; diffusers ``UNet2DConditionModel``)
at widths that run in milliseconds on a CPU, seeded, so every line of the real code path runs.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "tiny_clip_config",
    "tiny_clip_encoder",
    "tiny_clip_tokenizer_files",
    "tiny_dino_encoder",
    "tiny_dinov2_config",
    "tiny_face_embedder",
    "tiny_llama",
    "tiny_llama_config",
    "tiny_sd2_configs",
    "tiny_unet",
    "tiny_vit_config",
    "tiny_word_tokenizer",
    "write_tiny_ip_adapter",
    "write_tiny_onnx_face",
    "write_tiny_sd_pipeline",
]


def tiny_word_tokenizer(words):
    """A CLIP-style word-level tokenizer (``<bos> text <eos>``) over ``words``, in the transformers format.

    Ids: ``<pad>`` 0, ``<unk>`` 1, ``<bos>`` 2, ``<eos>`` 3, then the words; other words map to ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<pad>": 0,
        "<unk>": 1,
        "<bos>": 2,
        "<eos>": 3,
        **{w: i + 4 for i, w in enumerate(dict.fromkeys(words or []))},
    }
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_clip_config(
    vocab_size: int,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    vision_layers: int = 2,
    max_positions: int = 16,
    projection_dim: int = 24,
    bos_token_id: int = 2,
    eos_token_id: int = 3,
    pad_token_id: int = 0,
):
    """A ``CLIPConfig`` 32 wide: text 2 layers, vision ``vision_layers`` layers of ``patch_size`` patches."""
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_positions,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": patch_size,
        },
        projection_dim=projection_dim,
    )


def tiny_clip_encoder(
    words: list[str] | None = None, image_size: int = 32, seed: int = 0, *, tokenizer=None, max_positions: int = 16
):
    """A random tiny CLIP behind :class:`~cafe_core.models.encoders.ClipEncoder`, with a word-level
    tokenizer over ``words`` (others map to ``<unk>``) or the given ``tokenizer``."""
    from transformers import CLIPModel

    from ..models.encoders import ClipEncoder

    tokenizer = tokenizer or tiny_word_tokenizer(words)
    config = tiny_clip_config(
        len(tokenizer),
        image_size=image_size,
        max_positions=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return ClipEncoder(CLIPModel(config), tokenizer)


def tiny_dinov2_config(image_size: int = 32, patch_size: int = 8):
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_dino_encoder(image_size: int = 32, seed: int = 1):
    """A random tiny DINOv2 behind :class:`~cafe_core.models.encoders.DinoEncoder`."""
    from transformers import Dinov2Model

    from ..models.encoders import DinoEncoder

    torch.manual_seed(seed)
    return DinoEncoder(Dinov2Model(tiny_dinov2_config(image_size)))


def tiny_vit_config(image_size: int = 32, patch_size: int = 8):
    from transformers import ViTConfig

    return ViTConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=image_size,
        patch_size=patch_size,
    )


def tiny_face_embedder(image_size: int = 32, seed: int = 2):
    """A random tiny ViT behind :class:`~cafe_core.models.encoders.FaceEmbedder`."""
    from transformers import ViTModel

    from ..models.encoders import FaceEmbedder

    torch.manual_seed(seed)
    return FaceEmbedder(ViTModel(tiny_vit_config(image_size), add_pooling_layer=False))


def tiny_llama_config(
    vocab_size: int, *, heads: int = 4, kv_heads: int | None = None, bos_token_id: int = 2, eos_token_id: int = 3
):
    """A 2-layer, 32-wide ``LlamaConfig`` (``kv_heads < heads`` gives grouped-query attention)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        max_position_embeddings=128,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def tiny_llama(vocab_size: int, seed: int = 0):
    """A random tiny ``LlamaForCausalLM`` in eval mode."""
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(vocab_size)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_unet(seed: int = 0, *, sample_size: int = 8, cross_attention_dim: int = 24):
    """A pixel-space ``UNet2DConditionModel`` with one cross-attention resolution (and the mid block)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_sd2_configs() -> dict[str, Any]:
    """The ``sd2`` profile's architectures at tiny widths, with the real token counts and image sizes.

    CLIP ViT-L/14@336 (24 x 24 patches, 768-d projection), DINOv2-giant (patch 14 at 518, SwiGLU),
    a Llama with Llama-2's vocabulary, and the SD2-base UNet / VAE layouts (4 levels, latent space).
    """
    from transformers import CLIPConfig, Dinov2Config, LlamaConfig

    from ..models.reference import reference_config

    sd2 = "stabilityai/stable-diffusion-2-base"
    unet, vae = reference_config(sd2, subfolder="unet"), reference_config(sd2, subfolder="vae")
    small = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}
    return {
        "clip": CLIPConfig(
            text_config={**small, "num_hidden_layers": 1},
            vision_config={**small, "num_hidden_layers": 3, "patch_size": 14, "image_size": 336},
            projection_dim=768,
        ),
        "dino": Dinov2Config(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=14,
            image_size=518,
            use_swiglu_ffn=True,
        ),
        "lm": LlamaConfig(
            vocab_size=32000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "unet": {
            **unet,
            "block_out_channels": [32, 64, 64, 64],
            "attention_head_dim": [1, 2, 2, 2],
            "layers_per_block": 1,
            "cross_attention_dim": 64,
        },
        "vae": {**vae, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1},
    }


TINY_CLIP_DIM, TINY_DINO_DIM, TINY_DINO_TOKENS = 12, 10, 16
"""Widths of :func:`tiny_generator`'s conditions: c (12,), d (16 tokens, 10 wide)."""


def tiny_generator(attention: str = "joint", seed: int = 0):
    """G on :func:`tiny_unet`, reading two CLIP tokens and 16 DINO tokens, with a 100-step DDPM schedule."""
    from diffusers import DDPMScheduler

    from ..models.attention import ConditioningConfig
    from ..models.generator import CafeGenerator

    cfg = ConditioningConfig(
        TINY_CLIP_DIM, TINY_DINO_DIM, TINY_DINO_TOKENS, cross_attention_dim=24, clip_tokens=2, attention=attention
    )
    return CafeGenerator(tiny_unet(seed), DDPMScheduler(num_train_timesteps=100), cfg)


def tiny_conditions(batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ``(c (B, 12), d (B, 16, 10))`` for :func:`tiny_generator`."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TINY_CLIP_DIM, generator=g), torch.randn(
        batch, TINY_DINO_TOKENS, TINY_DINO_DIM, generator=g
    )


def write_tiny_onnx_face(folder, seed: int = 0, size: int = 112, dim: int = 16):
    """A random ONNX face-recognition network in the layout insightface ships ArcFace in.

    ``folder/model.onnx``: input ``input.1`` (N, 3, size, size), output (N, dim), through a strided
    convolution, ReLU, global average pooling and a linear layer. Needs the ``onnx`` package.
    """
    from pathlib import Path

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = {
        "conv_w": rng.normal(0, 0.3, (8, 3, 8, 8)).astype(np.float32),
        "conv_b": np.zeros(8, np.float32),
        "fc_w": rng.normal(0, 0.5, (dim, 8)).astype(np.float32),
        "fc_b": rng.normal(0, 0.1, dim).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input.1", "conv_w", "conv_b"], ["c"], strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_face",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])],
        initializer=[numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return folder


def tiny_clip_tokenizer_files(folder) -> None:
    """``vocab.json`` and ``merges.txt`` of a byte-level CLIP BPE with no merges: every character
    is a token (with and without the end-of-word mark), as ``CLIPTokenizer`` reads them."""
    import json
    from pathlib import Path

    from tokenizers.pre_tokenizers import ByteLevel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted(ByteLevel.alphabet())  # the 256 characters byte-level BPE writes bytes as
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_tiny_sd_pipeline(folder, *, cross_attention_dim: int = 32, seed: int = 0):
    """A Stable-Diffusion-1.x-layout pipeline folder (unet, vae, text_encoder, tokenizer, scheduler,
    ``model_index.json``) at tiny widths: 16 x 16 images, 8 x 8 latents. Returns the folder."""
    from pathlib import Path

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    tiny_clip_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        latent_channels=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cross_attention_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False)
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def write_tiny_ip_adapter(folder, unet, *, image_embed_dim: int = 16, seed: int = 0):
    """An IP-Adapter repository in h94/IP-Adapter's layout for ``unet``: ``models/ip-adapter_sd15.safetensors``
    (``image_proj.*`` and ``ip_adapter.<n>.to_{k,v}_ip.weight`` for each cross-attention, n = 1, 3, 5, ...)
    and ``models/image_encoder`` (a ``CLIPVisionModelWithProjection``). Returns the folder."""
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    torch.manual_seed(seed)
    cross = unet.config.cross_attention_dim
    widths = list(unet.config.block_out_channels)
    tensors = {
        "image_proj.proj.weight": torch.randn(4 * cross, image_embed_dim) * 0.02,  # 4 image tokens
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        block = name.split(".")
        hidden = (
            widths[-1]
            if block[0] == "mid_block"
            else (widths[int(block[1])] if block[0] == "down_blocks" else widths[::-1][int(block[1])])
        )
        for proj in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{key}.{proj}.weight"] = torch.randn(hidden, cross) * 0.02
        key += 2
    (folder / "models").mkdir(parents=True, exist_ok=True)
    save_file(tensors, folder / "models/ip-adapter_sd15.safetensors")
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=image_embed_dim,
        )
    )
    encoder.save_pretrained(folder / "models/image_encoder")
    return folder


def tiny_pipeline(*, assistant: bool = True, seed: int = 0):
    """A whole :class:`~cafe_core.pipeline.CafePipeline` of random tiny parts (diffusers'
    ``get_dummy_components`` idea): CLIP (24-d embeddings, 16 patches), DINOv2 (16 tokens of 32),
    G on :func:`tiny_unet` (8 x 8 pixels), and an assistant on :func:`tiny_llama` with the CAFE-mini
    world's chat tokenizer (``assistant=False``: the fast path only). Photos may be any size."""
    from diffusers import DDPMScheduler

    from ..models.assistant import AssistantConfig, CafeAssistant
    from ..models.attention import ConditioningConfig
    from ..models.generator import CafeGenerator
    from ..pipeline import CafePipeline, Sampling
    from ..world import World
    from ..world.datasets import build_tokenizer

    clip, dino = tiny_clip_encoder(["a"], seed=seed), tiny_dino_encoder(seed=seed + 1)
    cfg = ConditioningConfig(24, 32, 16, cross_attention_dim=24, clip_tokens=2)
    torch.manual_seed(seed + 2)
    generator = CafeGenerator(tiny_unet(seed + 3), DDPMScheduler(num_train_timesteps=100), cfg).eval()
    lm = None
    if assistant:
        tokenizer = build_tokenizer(World(), for_clip=False)
        llama = tiny_llama(len(tokenizer) + 2, seed + 4)
        torch.manual_seed(seed + 5)
        lm = CafeAssistant(llama, tokenizer, AssistantConfig(patch_dim=32, clip_dim=24)).eval()
    return CafePipeline.from_parts(lm, clip, dino, generator, Sampling(steps=4), max_new_tokens=8)
