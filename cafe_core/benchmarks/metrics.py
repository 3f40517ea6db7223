"""DreamBooth's similarity metrics (paper section 4): DINO, CLIP-I, CLIP-T and the face protocol's ID.

DINO and CLIP-I compare every generated image with every real photo of its subject; CLIP-T
compares each generated image with its *original* prompt (the one without CAFE's chat phrasing,
as the paper does for a fair comparison); ID is the face protocol's identity similarity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.encoders import ClipEncoder, DinoEncoder, IdentityEmbedder, Images

__all__ = [
    "CONTEXT",
    "all_attributes_right",
    "clip_i_similarity",
    "clip_t_similarity",
    "dino_similarity",
    "fidelity_figures",
    "identity_similarity",
]

CONTEXT = "context"
"""A fidelity verdict's key for "the image shows the asked context"; its other keys are attributes."""
Verdict = Mapping[str, bool | None]
"""Per image, whether each identity attribute (None: the context hides it) and the context are right."""


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


def all_attributes_right(verdict: Verdict) -> bool:
    """Every attribute the image's context shows is right."""
    return all(v for k, v in verdict.items() if k != CONTEXT and v is not None)


def fidelity_figures(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """A set of fidelity verdicts as figures.

    ``attributes``: accuracy over every judged attribute of every image; ``all_attributes``: the
    share of images with all of them right; ``context``: the share showing the asked context;
    ``attribute.<name>``: each attribute's accuracy (absent when every image's context hid it).
    """
    if not verdicts:
        raise ValueError("no verdicts to summarise")
    judged = [v for verdict in verdicts for k, v in verdict.items() if k != CONTEXT and v is not None]
    out = {
        "attributes": float(np.mean(judged)),
        "all_attributes": float(np.mean([all_attributes_right(v) for v in verdicts])),
        "context": float(np.mean([v[CONTEXT] for v in verdicts])),
    }
    for name in dict.fromkeys(k for verdict in verdicts for k in verdict if k != CONTEXT):
        hits = [v[name] for v in verdicts if v.get(name) is not None]
        if hits:
            out[f"attribute.{name}"] = float(np.mean(hits))
    return out
