"""Helpers shared by the tests: model folders in the real on-disk layouts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cafe_core.encoders import ClipEncoder, DinoEncoder, FaceEmbedder


def write_hub_cache(cache: Path, repo_id: str, source: Path, revision: str = "main") -> Path:
    """Copy ``source`` into ``cache`` in the Hub cache layout (blobs, snapshot symlinks, refs)."""
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
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


# ----------------------------------------------------------------------------- tiny encoders in memory


def tiny_clip_encoder(
    words: list[str] | None = None, image_size: int = 32, seed: int = 0, *, tokenizer=None, max_positions: int = 16
) -> ClipEncoder:
    """A randomly initialised tiny CLIP, with a word-level tokenizer over ``words`` (others map to
    <unk>) or with the given ``tokenizer``."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from cafe_core.encoders import ClipEncoder

    tokenizer = tokenizer or tiny_word_tokenizer(words)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": max_positions,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(seed)
    return ClipEncoder(CLIPModel(config), tokenizer)


def tiny_dino_encoder(image_size: int = 32, seed: int = 1) -> DinoEncoder:
    """A randomly initialised tiny DINOv2 behind :class:`~cafe_core.encoders.DinoEncoder`."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    from cafe_core.encoders import DinoEncoder

    config = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=image_size, patch_size=8
    )
    torch.manual_seed(seed)
    return DinoEncoder(Dinov2Model(config))


def tiny_face_embedder(image_size: int = 32, seed: int = 2) -> FaceEmbedder:
    """A randomly initialised tiny ViT behind :class:`~cafe_core.encoders.FaceEmbedder`."""
    import torch
    from transformers import ViTConfig, ViTModel

    from cafe_core.encoders import FaceEmbedder

    config = ViTConfig(
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        image_size=image_size,
        patch_size=8,
    )
    torch.manual_seed(seed)
    return FaceEmbedder(ViTModel(config, add_pooling_layer=False))


def tiny_raw(steps: int = 4) -> dict:
    """params.yaml with every size shrunk so the whole pipeline runs in seconds."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["pretrain"].update(dataset_size=600, dialogues=300, checkpoint_every=2)
    for name in ("clip", "clip_eval", "clip_small", "dino", "dino_eval", "dino_small", "face_id", "lm"):
        raw["pretrain"][name].update(steps=steps, batch_size=32)
    raw["pretrain"]["t2i"].update(steps=steps, batch_size=8, sample_steps=3)
    raw["world_eval"] = dict(retrieval_images=40, views_per_subject=1, face_pairs=40, lm_dialogues=20, t2i_samples=10)
    raw["teacher"].update(quadruplets=400, clip_threshold=-1.0, dino_threshold=-1.0)  # tiny encoders: keep all
    raw["generator"].update(steps=steps, batch_size=8, checkpoint_every=2, sample_every=2, sample_steps=3)
    raw["assistant"].update(dialogues=120, val_dialogues=6, steps=steps, batch_size=8, checkpoint_every=2, max_new_tokens=12)
    raw["assistants"] = {"mse": {"distance": "mse", "lambdas": [0.5, 2.0]}, "neg_cosine": {"distance": "neg_cosine", "lambdas": [1.0]}}
    raw["evaluation"] = dict(object_subjects=2, face_subjects=2, prompts=2, images_per_prompt=1, references=2)
    return raw


def tiny_word_tokenizer(words):
    """A CLIP-style word-level tokenizer (<bos> text <eos>) over `words`, in the transformers format."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3, **{w: i + 4 for i, w in enumerate(dict.fromkeys(words))}}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
