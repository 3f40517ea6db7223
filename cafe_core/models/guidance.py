"""Sampling with two conditions, and eq. 4's blending of embeddings.

Guidance is data: each mode of :data:`GUIDANCE_MODES` names the branches the UNet evaluates
(which of ``c`` and ``d`` each branch sees) and the terms that combine their predictions::

    both:      eps = e(0,0) + s_c [e(c,0) - e(0,0)] + s_d [e(c,d) - e(c,0)]
    clip_only: eps = e(0,0) + s_c [e(c,0) - e(0,0)]
    dino_only: eps = e(0,0) + s_d [e(0,d) - e(0,0)]

``s_c`` (``clip_scale``) says how strongly to draw what ``c`` describes; ``s_d``
(``dino_scale``) how faithfully to keep the subject of the photo ``d`` comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BRANCHES", "GUIDANCE", "GUIDANCE_MODES", "GuidanceMode", "blend_embeddings", "guidance_mode"]

BRANCHES: dict[str, tuple[bool, bool]] = {
    "00": (False, False),
    "c0": (True, False),
    "0d": (False, True),
    "cd": (True, True),
}
"""Branch name -> (sees c, sees d); an unseen source is replaced by its learned null tokens."""


@dataclass(frozen=True)
class GuidanceMode:
    """The branches one guidance mode evaluates and how their noise predictions combine.

    ``terms`` are ``(scale name, branch, minus branch)``: the estimate starts at ``base`` and adds
    ``scale * (eps[branch] - eps[minus branch])`` for each term, in order.
    """

    base: str
    terms: tuple[tuple[str, str, str], ...]

    @property
    def branches(self) -> tuple[str, ...]:
        """Every branch the mode reads, base first, each once (the order of the UNet batch)."""
        names = [self.base]
        for _, plus, minus in self.terms:
            names += [b for b in (plus, minus) if b not in names]
        return tuple(names)

    def combine(self, eps: dict[str, torch.Tensor], scales: dict[str, float]) -> torch.Tensor:
        """The guided noise estimate from each branch's prediction (all of one shape)."""
        out = eps[self.base]
        for scale, plus, minus in self.terms:
            out = out + scales[scale] * (eps[plus] - eps[minus])
        return out


GUIDANCE_MODES: dict[str, GuidanceMode] = {
    "both": GuidanceMode("00", (("clip_scale", "c0", "00"), ("dino_scale", "cd", "c0"))),
    "clip_only": GuidanceMode("00", (("clip_scale", "c0", "00"),)),
    "dino_only": GuidanceMode("00", (("dino_scale", "0d", "00"),)),
}
GUIDANCE = tuple(GUIDANCE_MODES)


def guidance_mode(name: str) -> GuidanceMode:
    try:
        return GUIDANCE_MODES[name]
    except KeyError:
        raise ValueError(f"guidance must be one of {GUIDANCE}, got {name!r}") from None


def blend_embeddings(c_hat: torch.Tensor, c_ref: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 4: ``c_lambda = (1 - lambda) c_hat + lambda c_ref``, rescaled to the interpolated norm.

    Args:
        c_hat: (B, D) or (D,) predicted CLIP embeddings.
        c_ref: the reference images' CLIP embeddings, broadcastable against ``c_hat``.
        lam: lambda in [0, 1]; 0 is ``c_hat`` alone, 1 the reference alone.

    A straight average of two embeddings shrinks its norm when they disagree; the UNet was
    trained on embeddings of real images, whose norms it has learned. We keep the direction
    of the linear mix and give it the linear mix of the two norms.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must lie in [0, 1], got {lam}")
    mix = (1 - lam) * c_hat + lam * c_ref
    norm = (1 - lam) * c_hat.norm(dim=-1, keepdim=True) + lam * c_ref.norm(dim=-1, keepdim=True)
    return mix / mix.norm(dim=-1, keepdim=True).clamp_min(1e-8) * norm
