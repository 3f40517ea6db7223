"""DreamBooth's similarity metrics (paper section 4): DINO, CLIP-I, CLIP-T and the face protocol's ID.

DINO and CLIP-I compare every generated image with every real photo of its subject; CLIP-T
compares each generated image with its *original* prompt (the one without CAFE's chat phrasing,
as the paper does for a fair comparison); ID is the face protocol's identity similarity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models.encoders import ClipEncoder, DinoEncoder, IdentityEmbedder, Images

__all__ = ["clip_i_similarity", "clip_t_similarity", "dino_similarity", "identity_similarity"]


def dino_similarity(dino: DinoEncoder, generated: Images, references: Images, *, batch_size: int = 32) -> float:
    """DINO: mean cosine similarity of DINO CLS embeddings, generated vs real photos.

    DreamBooth's protocol: every generated image is compared with every real photo of its
    subject, and all pairs are averaged (the mean over generated images of their mean over
    references, since every image has the same number of references).
    """
    return _mean_pairwise_cosine(
        dino.cls_embeds(generated, batch_size=batch_size), dino.cls_embeds(references, batch_size=batch_size)
    )


def clip_i_similarity(clip: ClipEncoder, generated: Images, references: Images, *, batch_size: int = 32) -> float:
    """CLIP-I: as :func:`dino_similarity`, with CLIP image embeddings."""
    return _mean_pairwise_cosine(
        clip.image_embeds(generated, batch_size=batch_size), clip.image_embeds(references, batch_size=batch_size)
    )


def clip_t_similarity(clip: ClipEncoder, generated: Images, prompts: Sequence[str], *, batch_size: int = 32) -> float:
    """CLIP-T: mean cosine similarity between each generated image and its own original prompt.

    ``prompts[i]`` is the prompt of ``generated[i]``: the plain DreamBench prompt ("a dog in the
    jungle"), not the chat phrasing CAFE was given.
    """
    images = clip.image_embeds(generated, batch_size=batch_size)
    if len(prompts) != len(images):
        raise ValueError(
            f"CLIP-T needs one prompt per generated image: got {len(images)} images, {len(prompts)} prompts"
        )
    texts = clip.text_embeds(list(prompts), batch_size=batch_size)
    return F.cosine_similarity(images.float(), texts.float(), dim=-1).mean().item()


def identity_similarity(
    face: IdentityEmbedder, generated: Images, references: Images, *, batch_size: int = 32
) -> float:
    """ID: as :func:`dino_similarity`, with a face-recognition embedder (the face protocol's metric)."""
    return _mean_pairwise_cosine(
        face.embed(generated, batch_size=batch_size), face.embed(references, batch_size=batch_size)
    )


def _mean_pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all (row of ``a``, row of ``b``) pairs."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    return (a @ b.T).mean().item()
