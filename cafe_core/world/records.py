"""The world's public records: subjects, contexts, renderings, chat turns, and the vocabulary of details."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DOMAINS = ("object", "face")
FAMILIES = ("recontextualization", "accessorization", "property", "style")
SPLITS = ("train", "eval")
TURN_KINDS = ("declarative", "interrogative", "ambiguous")
CLASSES: dict[str, tuple[str, ...]] = {
    "object": ("ball", "box", "cone", "gem", "star", "ring", "cup", "tower"),
    "face": ("man", "woman"),
}

NONE = "none"
"""Attribute value of a detail a subject lacks (a plain object's pattern colour, a bald man's hair colour)."""

ATTRIBUTE_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "object": {
        "colour": ("red", "orange", "yellow", "green", "teal", "blue", "purple", "pink"),
        "pattern": ("plain", "stripes", "dots", "checker"),
        "pattern_colour": (NONE, "white", "black", "gold"),
    },
    "face": {
        "skin_tone": ("pale", "fair", "tan", "brown", "dark"),
        "hair_colour": (NONE, "black", "brown", "blond", "auburn", "grey"),
        "hair_style": ("short", "bald", "long", "bun"),
        "eye_colour": ("brown", "blue", "green"),
        "face_shape": ("narrow", "wide"),
    },
}
"""Every fine identity detail per domain, in the order of :attr:`Subject.attrs` (handy for label heads)."""

_HAIR_STYLES = {"man": ("short", "bald"), "woman": ("long", "bun")}

_TOKEN_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Split text into the world's tokens: lowercase alphanumeric runs and single symbols."""
    return _TOKEN_RE.findall(text.lower())


# --- Public records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """Everything that fixes a world; two worlds with equal configs are identical."""

    seed: int = 0
    image_size: int = 16
    """Output side in pixels."""
    render_scale: int = 4
    """Scenes are drawn at ``image_size * render_scale`` and box-downsampled (anti-aliasing)."""
    eval_fraction: float = 0.2
    """Share of subjects per domain held out for evaluation (tuning-free means unseen subjects)."""
    caption_detail_p: float = 0.3
    """Probability that a caption also names fine details (colour, pattern, hair colour ...)."""

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.image_size < 1 or self.render_scale < 1:
            raise ValueError(f"image_size and render_scale must be >= 1, got {self.image_size} and {self.render_scale}")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if not 0.0 <= self.caption_detail_p <= 1.0:
            raise ValueError(f"caption_detail_p must be in [0, 1], got {self.caption_detail_p}")


@dataclass(frozen=True)
class Subject:
    """One customizable subject: a coarse class plus the fine details that make it *this* one."""

    id: int
    """Unique over the whole world and stable across world seeds."""
    domain: str
    cls: str
    """Coarse class word that captions name, e.g. ``"ball"`` or ``"woman"``."""
    attrs: tuple[tuple[str, str], ...]
    """Fine identity details, keys as in :data:`ATTRIBUTE_VALUES` (value ``"none"`` when absent)."""
    split: str
    """``"train"`` or ``"eval"``; eval subjects are never shown during training."""

    def attr(self, key: str) -> str:
        for k, value in self.attrs:
            if k == key:
                return value
        raise KeyError(f"{self.domain} subject {self.id} has no attribute {key!r}")

    @property
    def name(self) -> str:
        """Short human label naming every detail, e.g. ``"red ball with white stripes"``."""
        from .language import _detail_fragments, _noun_phrase  # the language reads these records

        return _noun_phrase(self.cls, _detail_fragments(self, frozenset()))


@dataclass(frozen=True)
class Context:
    """A DreamBench-style context: background, accessory, property change or style."""

    id: int
    """Index within its domain's list."""
    name: str
    """Slug, e.g. ``"beach"``, ``"santa_hat"``, ``"shiny"``, ``"sketch"``."""
    family: str
    phrase: str
    """DreamBench wording; ``{}`` stands for the subject's noun phrase: ``"a {} on the beach"``."""
    domain: str


@dataclass(frozen=True, eq=False)  # compared by identity: == on the image array has no single truth value
class Rendering:
    """A rendered image and its ground truth."""

    image: np.ndarray
    """uint8, (H, W, 3)."""
    subject: Subject
    context: Context | None
    """``None`` is the neutral context: a user's plain photo of their subject."""
    seed: int
    bbox: tuple[int, int, int, int]
    """Subject box in output pixels, ``(x0, y0, x1, y1)``, ends exclusive: an object's body, a face's head."""


@dataclass(frozen=True)
class Turn:
    """One chat exchange: what the user asked, what the assistant answered, and the target context."""

    kind: str
    """``"declarative"``, ``"interrogative"`` or ``"ambiguous"``."""
    user: str
    response: str
    """Says what the assistant made (and, for ambiguous wishes, why)."""
    context: Context
    """The context the response commits to: ground truth for the image to generate."""
    valid: tuple[str, ...] = ()
    """Names of every context that fulfils the request: the asked one, or all of a vague wish's."""


@dataclass(frozen=True)
class AmbiguousRequest:
    """A vague wish that several contexts fulfil; the assistant picks one and says why."""

    name: str
    domain: str
    templates: tuple[str, ...]
    """User messages; ``{}`` is replaced by the class word."""
    contexts: tuple[str, ...]
    """Names of the contexts of :attr:`domain` that fulfil the wish."""
    reason: str
    """Clause that follows ``"because"`` in the response."""
