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

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..utils.errors import ArgumentError

__all__ = [
    "BRANCHES",
    "GUIDANCE",
    "GUIDANCE_MODES",
    "GuidanceMode",
    "blend_embeddings",
    "check_reference_weights",
    "guidance_mode",
    "mix_embeddings",
]

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
        raise ArgumentError("guidance", f"must be one of {GUIDANCE}, got {name!r}") from None


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


def check_reference_weights(weights: Sequence[float], count: int, *, with_c_hat: bool) -> list[float]:
    """The weights as floats, or an :class:`~cafe_core.utils.errors.ArgumentError` naming
    ``reference_weights``: one per reference, each in [0, 1]; beside ``c_hat`` summing to at most 1,
    without it not all 0."""
    w = [float(x) for x in weights]
    name = "reference_weights"
    if len(w) != count:
        raise ArgumentError(name, f"must give one weight per reference image: got {len(w)} weights for {count}")
    if any(not 0.0 <= x <= 1.0 for x in w):
        raise ArgumentError(name, f"must each lie in [0, 1], got {w}")
    total = sum(w)
    if with_c_hat and total > 1.0 + 1e-6:
        raise ArgumentError(name, f"sum to {total:g}: with c_hat they may sum to at most 1 (its share is 1 - sum)")
    if not with_c_hat and count and total <= 0:
        raise ArgumentError(name, f"must not all be 0 without a c_hat to draw from, got {w}")
    return w


def mix_embeddings(base: torch.Tensor | None, references: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Eq. 4 with several references: ``c = (1 - sum w_i) base + sum w_i c_i``, norms mixed alike.

    Args:
        base: (D,) the assistant's ``c_hat``, or None: the references alone, their weights then
            relative (scaled to sum to 1), e.g. content from one reference and style from another.
        references: (R, D) the references' CLIP embeddings ``E_c(ref_i)``.
        weights: R weights, each in [0, 1]; with a ``base`` they sum to at most 1 (the rest is the base's).

    Returns:
        (D,) the mixed embedding, rescaled as :func:`blend_embeddings` does (the mix of the norms).
    """
    w = [float(x) for x in weights]
    if len(w) != len(references):
        raise ValueError(f"reference_weights: got {len(w)} weights for {len(references)} reference images")
    if any(not 0.0 <= x <= 1.0 for x in w):
        raise ValueError(f"reference_weights must each lie in [0, 1], got {w}")
    total = sum(w)
    if base is None:
        if total <= 0:
            raise ValueError(f"reference_weights must not all be 0 without a c_hat to draw from, got {w}")
        w, total = [x / total for x in w], 1.0
    elif total > 1.0 + 1e-6:
        raise ValueError(
            f"reference_weights sum to {total:g}: with c_hat they may sum to at most 1 (its share is 1 - sum)"
        )
    vectors = references if base is None else torch.cat([base.reshape(1, -1).to(references), references])
    coeffs = torch.tensor(
        w if base is None else [max(0.0, 1.0 - total), *w], dtype=vectors.dtype, device=vectors.device
    )
    mix = coeffs @ vectors
    norm = coeffs @ vectors.norm(dim=-1)
    return mix / mix.norm().clamp_min(1e-8) * norm
