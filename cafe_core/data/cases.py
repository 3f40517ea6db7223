"""Evaluation cases, whatever their source: a subject's real photos and the prompts to draw it with.

A DreamBench subject, or a held-out CAFE-mini subject, becomes an :class:`EvalCase`; the
evaluation stages score every variant on the same cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CAFE_PROMPT_FORMS", "EvalCase", "EvalPrompt", "cafe_prompt"]

CAFE_PROMPT_FORMS = ("Can you generate an image for {}?", "Generate an image for {}.")
"""The paper's two phrasings of an evaluation prompt for CAFE, picked at random per prompt."""


def cafe_prompt(request: str, rng: np.random.Generator) -> str:
    """Wrap a request ("this dog on the beach") in one of the paper's two forms, chosen with ``rng``."""
    return CAFE_PROMPT_FORMS[int(rng.integers(len(CAFE_PROMPT_FORMS)))].format(request)


class EvalPrompt(NamedTuple):
    """One prompt of a case."""

    prompt: str
    """The plain prompt, e.g. ``"a dog on the beach"``: CLIP-T's text, for every method alike."""
    cafe_prompt: str
    """The same request in CAFE's chat phrasing, e.g. ``"Can you generate an image for this dog on the beach?"``."""
    label: str
    """A short name of what the prompt asks, for sample grids (``"on the beach"``)."""
    key: Any = None
    """The source's own handle of the prompt (the world's context), opaque to everyone else."""


@dataclass(frozen=True, eq=False)  # compared by identity: == on the image array has no single truth value
class EvalCase:
    """A subject with its real photos and prompts. The first photo is the input photo x."""

    subject: str
    """A name for logs and tables."""
    domain: str
    """``"object"`` (scored by DINO and CLIP-I) or ``"face"`` (scored by ID); CLIP-T for both."""
    reference_images: np.ndarray | Sequence[Any]
    """The real photos: uint8 (R, H, W, 3), or a list of PIL images of any sizes."""
    prompts: list[EvalPrompt]
    key: Any = None
    """The source's own handle of the subject (the world's subject), opaque to everyone else."""

    @property
    def input_image(self) -> Any:
        """The photo the assistant is given: the first real photo (one image, as CAFE and Kosmos-G use)."""
        return self.reference_images[0]
