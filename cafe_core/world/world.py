"""CAFE-mini: the procedural world that every foundation model of the project is trained in.

The paper takes CLIP, DINO, an LLM and Stable Diffusion off the shelf. Nothing can be
downloaded here, so the ``mini`` profile pretrains tiny versions of them in this world,
where the ground truth of every image is known: which subject (a coarse class that captions
name, plus fine identity details that only a close look sees), which DreamBench-style
context, which random seed.

Two domains mirror the paper: ``object`` (eight shapes with a colour and a pattern) and
``face`` (men and women with skin tone, hair, eye colour and face shape). Each domain has 25
contexts in DreamBench's four prompt families. All language (prompts, captions, chat turns,
responses) comes from templates over a finite vocabulary, so a small LM can learn it and
:meth:`World.find_context` can grade what an assistant commits to.

Rendering is pure numpy and runs ~100k times during pretraining: a scene is drawn with hard
edges at ``image_size * render_scale`` pixels, then box-downsampled, which anti-aliases it.
Every pixel is a deterministic function of (world seed, subject, context, render seed).
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

__all__ = [
    "ATTRIBUTE_VALUES",
    "CLASSES",
    "DOMAINS",
    "FAMILIES",
    "NONE",
    "SPLITS",
    "TURN_KINDS",
    "AmbiguousRequest",
    "Context",
    "Rendering",
    "Subject",
    "Turn",
    "World",
    "WorldConfig",
    "words",
]

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


# --- Contexts and language ------------------------------------------------------------------------


@dataclass(frozen=True)
class _ContextSpec:
    """Language and rendering facts about a context that its public record does not carry."""

    name: str
    family: str
    phrase: str
    keys: tuple[str, ...]
    """Word sequences that, found in a text, mean this context (see ``World.find_context``)."""
    request: str = ""
    """How a user asks for it, ``this {}`` standing for the subject; derived from the phrase when empty."""
    hides: frozenset[str] = frozenset()
    """Identity attributes that the context overrides or makes invisible."""


def _recontext(name: str, phrase: str, *keys: str) -> _ContextSpec:
    return _ContextSpec(name, "recontextualization", phrase, keys)


def _accessory(name: str, phrase: str, *keys: str) -> _ContextSpec:
    return _ContextSpec(name, "accessorization", phrase, keys)


def _property(name: str, phrase: str, request: str, *keys: str, hides: frozenset[str] = frozenset()) -> _ContextSpec:
    return _ContextSpec(name, "property", phrase, keys, request, hides)


def _style(name: str, phrase: str, medium: str, hides: frozenset[str], *keys: str) -> _ContextSpec:
    return _ContextSpec(name, "style", phrase, keys, f"this {{}} as {medium}", hides)


_SHARED_BACKGROUNDS = (
    _recontext("jungle", "a {} in the jungle", "jungle"),
    _recontext("snow", "a {} in the snow", "snow"),
    _recontext("beach", "a {} on the beach", "beach"),
    _recontext("cobblestone_street", "a {} on a cobblestone street", "cobblestone"),
    _recontext("pink_fabric", "a {} on top of pink fabric", "pink fabric"),
    _recontext("wooden_floor", "a {} on top of a wooden floor", "wooden floor"),
    _recontext("city", "a {} with a city in the background", "city"),
    _recontext("mountain", "a {} with a mountain in the background", "mountain"),
    _recontext("blue_house", "a {} with a blue house in the background", "blue house"),
)
_OBJECT_COLOURLESS = frozenset({"colour", "pattern_colour"})
_FACE_COLOURLESS = frozenset({"skin_tone", "hair_colour", "eye_colour"})


def _styles(colourless: frozenset[str]) -> tuple[_ContextSpec, ...]:
    return (
        _style("sketch", "a pencil sketch of a {}", "a pencil sketch", colourless, "pencil sketch", "sketch"),
        _style(
            "black_and_white",
            "a black and white photo of a {}",
            "a black and white photo",
            colourless,
            "black and white",
        ),
        _style("painting", "a painting of a {}", "a painting", frozenset(), "painting"),
    )


_CONTEXT_SPECS: dict[str, tuple[_ContextSpec, ...]] = {
    "object": (
        *_SHARED_BACKGROUNDS,
        _recontext("wheat_field", "a {} with a wheat field in the background", "wheat field"),
        _recontext("autumn_leaves", "a {} with a tree and autumn leaves in the background", "autumn leaves"),
        _recontext("water", "a {} floating on top of water", "floating"),
        _recontext("sunflowers", "a {} on top of green grass with sunflowers around it", "sunflowers"),
        _recontext("dirt_road", "a {} on top of a dirt road", "dirt road"),
        _accessory("red_hat", "a {} wearing a red hat", "red hat"),
        _accessory("pink_glasses", "a {} wearing pink glasses", "pink glasses"),
        _accessory("rainbow_scarf", "a {} wearing a rainbow scarf", "rainbow scarf"),
        _property("red", "a red {}", "a red version of this {}", "red version", hides=frozenset({"colour"})),
        _property(
            "purple", "a purple {}", "a purple version of this {}", "purple version", hides=frozenset({"colour"})
        ),
        _property("shiny", "a shiny {}", "a shiny version of this {}", "shiny"),
        _property("wet", "a wet {}", "a wet version of this {}", "wet"),
        _property("cube_shaped", "a cube shaped {}", "a cube shaped version of this {}", "cube shaped"),
        *_styles(_OBJECT_COLOURLESS),
    ),
    "face": (
        *_SHARED_BACKGROUNDS,
        _recontext("purple_rug", "a {} on top of a purple rug in a forest", "purple rug"),
        _accessory("red_hat", "a {} wearing a red hat", "red hat"),
        _accessory("santa_hat", "a {} wearing a santa hat", "santa hat"),
        _accessory("rainbow_scarf", "a {} wearing a rainbow scarf", "rainbow scarf"),
        _accessory("top_hat", "a {} wearing a black top hat and a monocle", "top hat", "monocle"),
        _accessory("chef_outfit", "a {} in a chef outfit", "chef"),
        _accessory("firefighter_outfit", "a {} in a firefighter outfit", "firefighter"),
        _accessory("police_outfit", "a {} in a police outfit", "police"),
        _accessory("pink_glasses", "a {} wearing pink glasses", "pink glasses"),
        _accessory("yellow_shirt", "a {} wearing a yellow shirt", "yellow shirt"),
        _accessory("wizard_outfit", "a {} in a purple wizard outfit", "wizard"),
        _property("smiling", "a smiling {}", "this {} smiling", "smiling"),
        _property(
            "red_hair",
            "a red haired {}",
            "this {} with red hair",
            "red hair",
            "red haired",
            hides=frozenset({"hair_colour"}),
        ),
        *_styles(_FACE_COLOURLESS),
    ),
}

_NEUTRAL_PHRASE = "a photo of a {}"

_AMBIGUOUS: dict[str, tuple[AmbiguousRequest, ...]] = {
    "object": (
        AmbiguousRequest(
            "festive",
            "object",
            ("Make it festive!", "Can you make my {} look festive?", "Get this {} ready for the holidays."),
            ("snow", "red_hat", "rainbow_scarf"),
            "it gives a cheerful holiday feeling",
        ),
        AmbiguousRequest(
            "creative",
            "object",
            (
                "I want something creative, help me.",
                "Surprise me with something artistic.",
                "Do something creative with my {}.",
            ),
            ("sketch", "painting", "black_and_white"),
            "an artistic style is a creative way to show it",
        ),
        AmbiguousRequest(
            "summer",
            "object",
            ("Take it on a summer holiday.", "Send my {} somewhere sunny.", "Where would this {} go in summer?"),
            ("beach", "water", "sunflowers", "wheat_field"),
            "it is a warm and sunny place for a summer holiday",
        ),
        AmbiguousRequest(
            "fancy",
            "object",
            ("Make it look fancy.", "Can you make my {} look elegant?", "Give this {} a luxury touch."),
            ("shiny", "pink_glasses", "painting"),
            "it looks elegant and special",
        ),
        AmbiguousRequest(
            "winter",
            "object",
            ("Show it somewhere cold.", "Take my {} on a winter trip.", "I want a wintry picture of this {}."),
            ("snow", "mountain"),
            "it is a cold winter scene",
        ),
        AmbiguousRequest(
            "nature",
            "object",
            ("Take it outdoors.", "Put my {} out in nature.", "I would like a picture of this {} in nature."),
            ("jungle", "mountain", "wheat_field", "sunflowers", "autumn_leaves"),
            "it is a peaceful place in nature",
        ),
        AmbiguousRequest(
            "town",
            "object",
            ("Take it to town.", "Show my {} somewhere urban.", "Can this {} go on a trip to town?"),
            ("city", "cobblestone_street", "blue_house"),
            "it feels like a trip to town",
        ),
        AmbiguousRequest(
            "cozy",
            "object",
            ("Make it cozy.", "Put my {} somewhere homely.", "I want a warm and cozy picture."),
            ("wooden_floor", "pink_fabric", "autumn_leaves"),
            "it feels warm and homely",
        ),
        AmbiguousRequest(
            "colourful",
            "object",
            ("Make it more colourful!", "Give my {} a bright new look.", "This {} looks dull, change that."),
            ("red", "purple", "rainbow_scarf"),
            "it adds a bold and bright colour",
        ),
        AmbiguousRequest(
            "vintage",
            "object",
            ("Make it look old.", "Give it a vintage feel.", "Can you make this {} look like an old picture?"),
            ("black_and_white", "sketch"),
            "it looks like a picture from long ago",
        ),
    ),
    "face": (
        AmbiguousRequest(
            "festive",
            "face",
            ("Make it festive!", "Can you make this {} look festive?", "Get this {} ready for the holidays."),
            ("santa_hat", "snow", "red_hat", "rainbow_scarf"),
            "it gives a cheerful holiday feeling",
        ),
        AmbiguousRequest(
            "creative",
            "face",
            (
                "I want something creative, help me.",
                "Surprise me with something artistic.",
                "Do something creative with this {}.",
            ),
            ("sketch", "painting", "black_and_white", "wizard_outfit"),
            "it is a creative and artistic way to show a person",
        ),
        AmbiguousRequest(
            "summer",
            "face",
            ("Take this {} on a summer holiday.", "Send this {} somewhere sunny.", "Get this {} ready for summer."),
            ("beach", "yellow_shirt", "pink_glasses"),
            "it is bright and sunny, just right for summer",
        ),
        AmbiguousRequest(
            "fancy",
            "face",
            ("Make it look fancy.", "Can you make this {} look elegant?", "Dress this {} up for a gala."),
            ("top_hat", "black_and_white", "painting"),
            "it looks elegant and classy",
        ),
        AmbiguousRequest(
            "job",
            "face",
            ("Show this {} at work.", "What job would suit this {}?", "Dress this {} up for an important job."),
            ("chef_outfit", "firefighter_outfit", "police_outfit"),
            "it is the uniform of a job that helps people",
        ),
        AmbiguousRequest(
            "happy",
            "face",
            ("Make this {} look happy.", "Cheer this {} up!", "I want a joyful picture of this {}."),
            ("smiling", "rainbow_scarf", "yellow_shirt"),
            "it brings a happy and cheerful mood",
        ),
        AmbiguousRequest(
            "winter",
            "face",
            ("Show this {} somewhere cold.", "Take this {} on a winter trip.", "I want a wintry picture of this {}."),
            ("snow", "mountain"),
            "it is a cold winter scene",
        ),
        AmbiguousRequest(
            "magic",
            "face",
            ("Make it magical.", "Turn this {} into a fairy tale hero.", "I want something from a fantasy story."),
            ("wizard_outfit", "jungle", "painting"),
            "it has a magical, fairy tale feel",
        ),
        AmbiguousRequest(
            "makeover",
            "face",
            ("Give this {} a new look.", "I want a makeover.", "Change the look of this {} a bit."),
            ("red_hair", "pink_glasses", "red_hat"),
            "it is a striking change that still shows the same person",
        ),
        AmbiguousRequest(
            "town",
            "face",
            ("Take this {} to town.", "Show this {} somewhere urban.", "Can this {} go on a trip to town?"),
            ("city", "cobblestone_street", "blue_house"),
            "it feels like a trip to town",
        ),
    ),
}

# User messages: "{}" is the request, e.g. "this ball on the beach". The first form of each kind
# is the one the paper prompts CAFE with on DreamBench.
_USER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "declarative": (
        "Generate an image for {}.",
        "Generate an image of {}.",
        "Show me {}.",
        "Draw {}.",
        "Please make a picture of {}.",
        "I want to see {}.",
    ),
    "interrogative": (
        "Can you generate an image for {}?",
        "Could you show me {}?",
        "Can you draw {}?",
        "Would you make a picture of {}?",
        "What would {} look like?",
        "Is it possible to see {}?",
    ),
}

# Responses never name attribute values (only which details were kept), so that the words that
# commit to a context are unambiguous for find_context. {target} is the request seen from the
# assistant ("your ball on the beach", "the woman in a chef outfit"), {subject} the subject alone.
_RESPONSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "declarative": (
        "Sure! Here is {target}, with the same {kept} as in your photo.",
        "Here you go: {target}. I kept the {kept} of {subject}.",
        "Done! I made {target}, keeping the {kept} from your photo.",
        "Okay, this is {target}, with the {kept} unchanged.",
    ),
    "interrogative": (
        "Yes, I can! Here is {target}, with the same {kept} as in your photo.",
        "Of course. I made {target} and kept the {kept} of {subject}.",
        "Sure, here is {target}, keeping the {kept} from your photo.",
    ),
    "ambiguous": (
        "Good idea! Here is {target}, because {reason}. I kept the {kept} from your photo.",
        "How about {target}? I chose it because {reason}, and kept the {kept} of {subject}.",
        "I made {target} because {reason}, keeping the {kept} from your photo.",
    ),
}

# (noun a response uses, attribute it stands for), in the order responses list them.
_KEPT_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "object": (("colour", "colour"), ("pattern", "pattern")),
    "face": (
        ("face shape", "face_shape"),
        ("skin tone", "skin_tone"),
        ("eye colour", "eye_colour"),
        ("hairstyle", "hair_style"),
        ("hair colour", "hair_colour"),
    ),
}
_FALLBACK_KEPT = "shape"
_OWNER = {"object": "your", "face": "the"}  # "your ball", but "the man" rather than "your man"


def _request(spec: _ContextSpec) -> str:
    """How a user asks for a context, ``this {}`` standing for the subject: "this {} on the beach"."""
    return spec.request or spec.phrase.replace("a {}", "this {}", 1)


_ARTICLE_RE = re.compile(r"\ba (?=[aeiou])")


def _fix_articles(text: str) -> str:
    """Turn "a orange ball" into "an orange ball" (templates always write "a")."""
    return _ARTICLE_RE.sub("an ", text)


def _join_and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _detail_fragments(subject: Subject, hidden: frozenset[str]) -> list[tuple[bool, str]]:
    """Caption fragments for the subject's visible details, as (is_prefix, text).

    Prefixes go before the class word ("red ball"), the rest after "with" ("with white stripes").
    """
    a = dict(subject.attrs)
    fragments: list[tuple[bool, str]] = []
    if subject.domain == "object":
        if "colour" not in hidden:
            fragments.append((True, a["colour"]))
        if a["pattern"] != "plain":
            colour = "" if "pattern_colour" in hidden else a["pattern_colour"] + " "
            pattern = f"a {colour}checker pattern" if a["pattern"] == "checker" else colour + a["pattern"]
            fragments.append((False, pattern))
        return fragments
    style = a["hair_style"]
    colour = "" if "hair_colour" in hidden or a["hair_colour"] == NONE else a["hair_colour"] + " "
    if "hair_style" not in hidden:
        if style == "bald":
            fragments.append((True, "bald"))
        elif style == "bun":
            fragments.append((False, f"{colour}hair in a bun"))
        else:
            fragments.append((False, f"{style} {colour}hair"))
    if "skin_tone" not in hidden:
        fragments.append((False, f"{a['skin_tone']} skin"))
    if "eye_colour" not in hidden:
        fragments.append((False, f"{a['eye_colour']} eyes"))
    fragments.append((False, f"a {a['face_shape']} face"))
    return fragments


def _noun_phrase(cls: str, fragments: Sequence[tuple[bool, str]]) -> str:
    head = " ".join([text for is_prefix, text in fragments if is_prefix] + [cls])
    tail = [text for is_prefix, text in fragments if not is_prefix]
    return f"{head} with {_join_and(tail)}" if tail else head


# --- Rendering: colours and primitives -------------------------------------------------------------
# The canvas is channel-first, (3, S, S) float32 in [0, 1]: numpy fills a mask in three planes
# about four times faster than in interleaved RGB, and filling masks is most of a render's cost.
# Colours are (3, 1, 1) arrays so that they broadcast against the planes.


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    return np.asarray((r, g, b), np.float32).reshape(3, 1, 1)


def _palette(**colours: tuple[float, float, float]) -> dict[str, np.ndarray]:
    return {name: _rgb(*rgb) for name, rgb in colours.items()}


_BODY_RGB = _palette(
    red=(0.86, 0.1, 0.1),
    orange=(0.97, 0.52, 0.08),
    yellow=(0.97, 0.87, 0.12),
    green=(0.18, 0.68, 0.18),
    teal=(0.05, 0.58, 0.58),
    blue=(0.14, 0.28, 0.9),
    purple=(0.55, 0.18, 0.75),
    pink=(0.98, 0.5, 0.74),
)
_PATTERN_RGB = _palette(white=(0.97, 0.97, 0.97), black=(0.07, 0.07, 0.07), gold=(0.83, 0.66, 0.18))
_SKIN_RGB = _palette(
    pale=(0.99, 0.88, 0.8),
    fair=(0.93, 0.75, 0.6),
    tan=(0.8, 0.58, 0.4),
    brown=(0.58, 0.38, 0.24),
    dark=(0.34, 0.21, 0.13),
)
_HAIR_RGB = _palette(
    black=(0.07, 0.06, 0.06),
    brown=(0.38, 0.22, 0.1),
    blond=(0.94, 0.8, 0.42),
    auburn=(0.55, 0.17, 0.07),
    grey=(0.66, 0.66, 0.66),
    red=(0.93, 0.2, 0.05),
)
_EYE_RGB = _palette(brown=(0.33, 0.18, 0.08), blue=(0.15, 0.45, 0.95), green=(0.15, 0.62, 0.25))
_C = _palette(
    white=(0.97, 0.97, 0.97),
    black=(0.06, 0.06, 0.07),
    grey=(0.35, 0.35, 0.38),
    red=(0.86, 0.1, 0.12),
    pink=(1.0, 0.38, 0.72),
    gold=(0.9, 0.72, 0.2),
    yellow=(0.97, 0.85, 0.15),
    purple=(0.45, 0.15, 0.62),
    navy=(0.1, 0.14, 0.36),
    shirt=(0.32, 0.35, 0.42),
    firecoat=(0.2, 0.19, 0.18),
    mouth=(0.55, 0.22, 0.22),
    lips=(0.45, 0.08, 0.1),
    cheek=(0.95, 0.5, 0.5),
    droplet=(0.82, 0.92, 1.0),
    wet_tint=(0.02, 0.06, 0.14),
    surf=(0.95, 0.97, 0.97),
    seeds=(0.33, 0.18, 0.05),
    skirting=(0.3, 0.18, 0.1),
    graphite=(0.22, 0.22, 0.25),
    varnish=(0.04, 0.02, -0.04),
)
_RAINBOW = np.asarray(
    [(0.9, 0.1, 0.1), (0.98, 0.55, 0.05), (0.97, 0.9, 0.1), (0.15, 0.7, 0.2), (0.15, 0.35, 0.9), (0.5, 0.15, 0.7)],
    np.float32,
).T  # (3, 6)


@dataclass(frozen=True)
class _Grid:
    """Pixel-centre coordinates in [0, 1] of the high-resolution canvas, kept 1-D for cheap broadcasting."""

    size: int
    y: np.ndarray  # (S, 1)
    x: np.ndarray  # (1, S)
    hatch: np.ndarray  # (S, S) bool, diagonal hatching for the sketch style
    strokes: np.ndarray  # (S, S) float, brush texture for the painting style

    @classmethod
    def make(cls, size: int, scale: int) -> _Grid:
        c = (np.arange(size, dtype=np.float32) + 0.5) / np.float32(size)
        i = np.arange(size)
        hatch = (i[:, None] + i[None, :]) % max(2 * scale, 4) < max(scale // 2, 1)
        x, y = c[None, :], c[:, None]
        strokes = np.sin(x * 47.0 + 3.0 * np.sin(y * 11.0)) * np.sin(y * 31.0 - x * 9.0)
        return cls(size, y, x, hatch, strokes)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float = 0.05) -> np.ndarray:
    """A colour varied per render, so that a background is recognisable but never twice the same."""
    return (_rgb(*rgb) * (1.0 + rng.uniform(-amount, amount, (3, 1, 1)))).astype(np.float32)


def _rows(t: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Row colours (3, n, 1) of a vertical gradient; t is (n, 1) in [0, 1]."""
    return top + (bottom - top) * np.clip(t, 0.0, 1.0)


def _layered(g: _Grid, bands: Sequence[tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Canvas of horizontal bands from the top down: ``(bottom_edge, colour)`` or ``(bottom_edge, top, bottom)``.

    The last band must end at 1.0.
    """
    rows = np.empty((3, g.size, 1), np.float32)
    start = 0.0
    for end, top, *bottom in bands:
        sel = (g.y[:, 0] >= start) & (g.y[:, 0] < end)
        rows[:, sel] = _rows((g.y[sel] - start) / max(end - start, 1e-6), top, bottom[0] if bottom else top)
        start = end
    return np.repeat(rows, g.size, axis=2)


def _cell_noise(ix: np.ndarray, iy: np.ndarray, salt: float) -> np.ndarray:
    """Cheap deterministic hash in [0, 1) of integer cell coordinates."""
    h = np.sin(ix * 12.9898 + iy * 78.233 + salt) * 43758.547
    return (h - np.floor(h)).astype(np.float32)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1.0


def _rect(u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return ((u >= u0) & (u <= u1)) & ((v >= v0) & (v <= v1))


def _triangle(
    u: np.ndarray, v: np.ndarray, apex: tuple[float, float], left: float, right: float, base: float
) -> np.ndarray:
    """Triangle with an apex point and a horizontal base from ``left`` to ``right`` at height ``base``."""
    t = (base - v) / (base - apex[1])  # 0 on the base, 1 at the apex
    return (t >= 0.0) & (t <= 1.0) & (u >= left + (apex[0] - left) * t) & (u <= right + (apex[0] - right) * t)


def _paint(canvas: np.ndarray, mask: np.ndarray, rgb: np.ndarray, alpha: float = 1.0) -> None:
    """Fill ``mask`` (any shape broadcastable to (S, S)) with a colour or a (3, S, S) colour field."""
    np.copyto(canvas, rgb if alpha >= 1.0 else canvas * (1.0 - alpha) + rgb * alpha, where=mask)


def _rainbow(canvas: np.ndarray, mask: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _paint(canvas, mask, _RAINBOW[:, np.floor((u + v) * 3.0).astype(np.int64) % _RAINBOW.shape[1]])


def _downsample(canvas: np.ndarray, k: int) -> np.ndarray:
    """Mean over k x k blocks: the anti-aliasing step (``mean(axis=(1, 3))`` is several times slower)."""
    rows = sum(canvas[:, i::k] for i in range(k))
    return sum(rows[:, :, j::k] for j in range(k)) * np.float32(1.0 / (k * k))


# --- Rendering: backgrounds (each one must stay distinct after downsampling to 16x16) -------------

_Background = Callable[[_Grid, np.random.Generator], np.ndarray]


def _phases(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)


def _sky(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return _jitter(rng, (0.45, 0.68, 0.94)), _jitter(rng, (0.72, 0.84, 0.96))


def _bg_neutral(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    base = _jitter(rng, (0.84, 0.84, 0.84), 0.03) * np.float32(1.0 + rng.uniform(-0.06, 0.06))
    return _layered(g, [(1.0, base + 0.04, base - 0.05)])


def _bg_jungle(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    canvas = _layered(g, [(1.0, _jitter(rng, (0.07, 0.28, 0.09)), _jitter(rng, (0.12, 0.38, 0.1)))])
    p = _phases(rng, 3)
    t = np.sin(g.x * 37.0 + p[0]) * np.sin(g.y * 29.0 + p[1]) + 0.6 * np.sin((g.x - g.y) * 53.0 + p[2])
    _paint(canvas, t > 0.55, _jitter(rng, (0.28, 0.62, 0.18)))
    _paint(canvas, t > 1.2, _jitter(rng, (0.58, 0.8, 0.28)))
    _paint(canvas, t < -0.75, _jitter(rng, (0.02, 0.14, 0.05)))
    return canvas


def _bg_snow(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.5 + rng.uniform(-0.06, 0.06)
    canvas = _layered(
        g,
        [
            (h - 0.05, _jitter(rng, (0.76, 0.82, 0.9), 0.03), _jitter(rng, (0.86, 0.9, 0.95), 0.03)),
            (h, _jitter(rng, (0.2, 0.28, 0.26)), _jitter(rng, (0.25, 0.32, 0.3))),  # snowy pines on the horizon
            (1.0, _rgb(0.99, 0.99, 1.0), _jitter(rng, (0.86, 0.9, 0.97), 0.03)),
        ],
    )
    cells = np.float32(12.0)
    flakes = _cell_noise(np.floor(g.x * cells), np.floor(g.y * cells), rng.uniform(0.0, 100.0)) > 0.9
    _paint(canvas, flakes & (g.y < h - 0.05), _C["white"])
    return canvas


def _bg_beach(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.32 + rng.uniform(-0.04, 0.04)
    sea = _jitter(rng, (0.04, 0.38, 0.68))
    sand = (1.0, _jitter(rng, (0.96, 0.86, 0.62)), _jitter(rng, (0.9, 0.77, 0.5)))
    return _layered(g, [(h, *_sky(rng)), (h + 0.17, sea, sea * 1.15), (h + 0.2, _C["surf"]), sand])


def _bg_cobblestone(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.36 + rng.uniform(-0.04, 0.04)
    wall = _jitter(rng, (0.72, 0.66, 0.58)), _jitter(rng, (0.66, 0.6, 0.52))
    canvas = _layered(g, [(h, *wall), (1.0, wall[1])])
    row = np.floor((g.y - h) / 0.08)
    col = (g.x + rng.uniform(0.0, 0.12) + (row % 2) * 0.06) / 0.12
    stone = 0.36 + 0.24 * _cell_noise(np.floor(col), row, rng.uniform(0.0, 100.0))
    mortar = (((g.y - h) / 0.08) % 1.0 < 0.2) | (col % 1.0 < 0.15)
    ground = g.y >= h
    _paint(canvas, ground, stone * _jitter(rng, (1.0, 0.98, 1.04), 0.02))
    _paint(canvas, ground & mortar, _jitter(rng, (0.2, 0.19, 0.18)))
    return canvas


def _bg_pink_fabric(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    p = _phases(rng, 2)
    folds = 1.0 + 0.13 * np.sin(g.x * 16.0 + 2.5 * np.sin(g.y * 6.0 + p[0]) + p[1])
    return _jitter(rng, (0.96, 0.6, 0.76)) * folds


def _bg_wooden_floor(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.42 + rng.uniform(-0.04, 0.04)
    wall = (h, _jitter(rng, (0.92, 0.87, 0.76), 0.03), _jitter(rng, (0.86, 0.8, 0.68), 0.03))
    canvas = _layered(g, [wall, (h + 0.03, _C["skirting"]), (1.0, _jitter(rng, (0.6, 0.38, 0.19)))])
    board = np.floor((g.y - h) / 0.09)
    grain = (0.85 + 0.3 * _cell_noise(board, board, 7.0)) * (1.0 + 0.07 * np.sin(g.x * 90.0 + board * 3.0))
    gaps = ((g.y - h) / 0.09) % 1.0 < 0.15
    _paint(canvas, g.y >= h + 0.03, canvas * np.where(gaps, np.float32(0.55), grain))
    return canvas


def _bg_city(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    road = (1.0, _jitter(rng, (0.26, 0.26, 0.28)), _jitter(rng, (0.2, 0.2, 0.22)))
    canvas = _layered(g, [(0.86, *_sky(rng)), road])
    blocks = 7
    tops = rng.uniform(0.12, 0.5, blocks).astype(np.float32)
    greys = (rng.uniform(0.3, 0.55, blocks) * np.asarray([[0.95], [0.97], [1.05]])).astype(np.float32)
    index = np.minimum((g.x * blocks).astype(np.int64), blocks - 1)
    building = (g.y >= tops[index]) & (g.y < 0.86)
    _paint(canvas, building, greys[:, index])
    windows = building & ((g.x * (blocks * 3.0)) % 1.0 > 0.45) & ((g.y * 16.0) % 1.0 > 0.45) & (g.y < 0.8)
    _paint(canvas, windows, _jitter(rng, (0.96, 0.86, 0.42)))
    return canvas


def _bg_mountain(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    ground = 0.74 + rng.uniform(-0.03, 0.03)
    grass = (1.0, _jitter(rng, (0.36, 0.56, 0.24)), _jitter(rng, (0.28, 0.46, 0.18)))
    canvas = _layered(g, [(ground, *_sky(rng)), grass])
    px, py = 0.5 + rng.uniform(-0.2, 0.2), 0.14 + rng.uniform(0.0, 0.08)
    rock = (g.y > py + np.abs(g.x - px) * 1.1) & (g.y < ground)
    _paint(canvas, rock, _jitter(rng, (0.42, 0.41, 0.52)))
    _paint(canvas, rock & (g.y < py + 0.13), _C["white"])
    return canvas


def _bg_blue_house(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lawn = (1.0, _jitter(rng, (0.35, 0.6, 0.22)), _jitter(rng, (0.28, 0.5, 0.18)))
    canvas = _layered(g, [(0.74, *_sky(rng)), lawn])
    hx = 0.5 + rng.uniform(-0.06, 0.06)
    _paint(canvas, _rect(g.x, g.y, hx - 0.36, hx + 0.36, 0.38, 0.74), _jitter(rng, (0.18, 0.36, 0.82)))
    _paint(canvas, _triangle(g.x, g.y, (hx, 0.12), hx - 0.44, hx + 0.44, 0.38), _jitter(rng, (0.5, 0.14, 0.1)))
    windows = _rect(g.x, g.y, hx - 0.31, hx - 0.19, 0.46, 0.58) | _rect(g.x, g.y, hx + 0.19, hx + 0.31, 0.46, 0.58)
    _paint(canvas, windows, _C["white"])
    return canvas


def _bg_wheat_field(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.38 + rng.uniform(-0.04, 0.04)
    field = (1.0, _jitter(rng, (0.92, 0.78, 0.35)), _jitter(rng, (0.8, 0.58, 0.18)))
    canvas = _layered(g, [(h, *_sky(rng)), field])
    stalks = 1.0 + 0.14 * np.sin(g.x * 110.0 + 3.0 * np.sin(g.y * 20.0 + _phases(rng, 1)))
    _paint(canvas, g.y >= h, canvas * stalks)
    return canvas


def _bg_autumn_leaves(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.64 + rng.uniform(-0.04, 0.04)
    ground = (1.0, _jitter(rng, (0.66, 0.34, 0.1)), _jitter(rng, (0.52, 0.26, 0.08)))
    canvas = _layered(g, [(h, _jitter(rng, (0.88, 0.46, 0.12))), ground])
    tx = rng.uniform(0.15, 0.85)
    _paint(canvas, _rect(g.x, g.y, tx - 0.05, tx + 0.05, 0.3, h), _jitter(rng, (0.33, 0.19, 0.09)))
    p = _phases(rng, 3)
    t = np.sin(g.x * 41.0 + p[0]) * np.sin(g.y * 33.0 + p[1]) + 0.6 * np.sin((g.x + g.y) * 57.0 + p[2])
    crown = g.y < h
    _paint(canvas, (t > 0.6) & crown, _jitter(rng, (0.76, 0.16, 0.07)))
    _paint(canvas, (t < -0.8) & crown, _jitter(rng, (0.97, 0.72, 0.16)))
    _paint(canvas, (t > 0.6) & ~crown, _jitter(rng, (0.8, 0.5, 0.12)))
    return canvas


def _bg_water(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.14 + rng.uniform(-0.03, 0.03)
    water = (1.0, _jitter(rng, (0.08, 0.34, 0.58)), _jitter(rng, (0.14, 0.48, 0.7)))
    canvas = _layered(g, [(h, *_sky(rng)), water])
    waves = np.sin(g.y * 70.0 + 2.0 * np.sin(g.x * 18.0 + _phases(rng, 1))) > 0.7
    _paint(canvas, waves & (g.y > h), _jitter(rng, (0.45, 0.7, 0.88)))
    return canvas


def _bg_sunflowers(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.4 + rng.uniform(-0.04, 0.04)
    grass = (1.0, _jitter(rng, (0.3, 0.62, 0.18)), _jitter(rng, (0.2, 0.48, 0.1)))
    canvas = _layered(g, [(h, *_sky(rng)), grass])
    # At most one flower per cell of a shifted grid: as cheap as a texture, looks scattered.
    cell, salt = 0.2, rng.uniform(0.0, 100.0)
    fx, fy = (g.x + rng.uniform(0.0, cell)) / cell, (g.y + rng.uniform(0.0, cell)) / cell
    ix, iy = np.floor(fx), np.floor(fy)
    du = fx - ix - 0.3 - 0.4 * _cell_noise(ix, iy, salt)
    dv = fy - iy - 0.5
    d2 = du * du + dv * dv
    flower = (_cell_noise(iy, ix, salt) > 0.3) & ((iy + 0.5) * cell > h + 0.05)
    _paint(canvas, flower & (d2 < (0.06 / cell) ** 2), _jitter(rng, (0.99, 0.8, 0.05)))
    _paint(canvas, flower & (d2 < (0.024 / cell) ** 2), _C["seeds"])
    return canvas


def _bg_dirt_road(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.36 + rng.uniform(-0.03, 0.03)
    fields = (1.0, _jitter(rng, (0.4, 0.6, 0.25)), _jitter(rng, (0.32, 0.5, 0.2)))
    canvas = _layered(g, [(h, *_sky(rng)), fields])
    t = (g.y - h) / (1.0 - h)
    offset = np.abs(g.x - 0.5 - rng.uniform(-0.1, 0.1) * (1.0 - t)) / (0.04 + 0.5 * t)
    road = (offset < 1.0) & (t >= 0.0)
    _paint(canvas, road, _jitter(rng, (0.62, 0.46, 0.28)))
    _paint(canvas, road & (np.abs(offset - 0.5) < 0.1), _jitter(rng, (0.45, 0.32, 0.18)))
    return canvas


def _bg_purple_rug(g: _Grid, rng: np.random.Generator) -> np.ndarray:
    h = 0.6 + rng.uniform(-0.03, 0.03)
    forest = (h, _jitter(rng, (0.1, 0.3, 0.12)), _jitter(rng, (0.14, 0.36, 0.14)))
    canvas = _layered(g, [forest, (1.0, _jitter(rng, (0.2, 0.38, 0.14)))])
    trunks = ((g.x * 6.0 + rng.uniform(0.0, 1.0)) % 1.0 < 0.2) & (g.y < h)
    _paint(canvas, trunks, _jitter(rng, (0.3, 0.2, 0.12)))
    _paint(canvas, _rect(g.x, g.y, 0.08, 0.92, h + 0.05, 0.97), _jitter(rng, (0.6, 0.3, 0.66)))
    _paint(canvas, _rect(g.x, g.y, 0.12, 0.88, h + 0.08, 0.94), _jitter(rng, (0.46, 0.14, 0.54)))
    return canvas


_BACKGROUNDS: dict[str, _Background] = {
    "jungle": _bg_jungle,
    "snow": _bg_snow,
    "beach": _bg_beach,
    "cobblestone_street": _bg_cobblestone,
    "pink_fabric": _bg_pink_fabric,
    "wooden_floor": _bg_wooden_floor,
    "city": _bg_city,
    "mountain": _bg_mountain,
    "blue_house": _bg_blue_house,
    "wheat_field": _bg_wheat_field,
    "autumn_leaves": _bg_autumn_leaves,
    "water": _bg_water,
    "sunflowers": _bg_sunflowers,
    "dirt_road": _bg_dirt_road,
    "purple_rug": _bg_purple_rug,
}


# --- Rendering: objects (body coordinates u, v in [-1, 1], v pointing down) -----------------------


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    turn = (np.arctan2(u, -v) * (5.0 / (2.0 * np.pi))) % 1.0
    return u * u + v * v < (0.45 + 0.55 * np.abs(turn - 0.5) * 2.0) ** 2


def _cup(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    half_width = 0.72 - 0.2 * (v + 0.75) / 1.55
    body = (np.abs(u + 0.15) < half_width) & (v > -0.75) & (v < 0.8)
    r2 = (u - 0.5) ** 2 + v**2
    return body | ((r2 < 0.38**2) & (r2 > 0.2**2) & (u > 0.5))


def _tower(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    battlements = (np.floor((u + 0.45) / 0.18) % 2 == 0) & (v > -1.0)
    return (np.abs(u) < 0.45) & ((v > -0.75) | battlements) & (v < 1.0)


def _cube_faces(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Front, top and side faces of a cube seen slightly from above and the right."""
    front = _rect(u, v, -0.82, 0.52, -0.5, 0.9)
    rise = -0.5 - v  # how far above the front face's top edge
    top = (rise >= 0.0) & (rise <= 0.36) & (u >= -0.82 + rise) & (u <= 0.52 + rise)
    run = u - 0.52
    side = (run >= 0.0) & (run <= 0.36) & (v <= 0.9 - run) & (v >= -0.5 - run)
    return front, top, side


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "ball": lambda u, v: u * u + v * v < 1.0,
    "box": lambda u, v: (np.abs(u) < 0.85) & (np.abs(v) < 0.85),
    "cone": lambda u, v: _triangle(u, v, (0.0, -1.0), -0.95, 0.95, 0.9),
    "gem": lambda u, v: np.abs(u) / 0.8 + np.abs(v) < 1.0,
    "star": _star,
    "ring": lambda u, v: np.abs(u * u + v * v - 0.6) < 0.4,
    "cup": _cup,
    "tower": _tower,
}


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if pattern == "stripes":
        return np.floor((v + 4.0) * 2.2) % 2 == 1
    if pattern == "dots":
        return ((u + 4.0) % 0.7 - 0.35) ** 2 + ((v + 4.0) % 0.7 - 0.35) ** 2 < 0.21**2
    return (np.floor((u + 4.0) / 0.55) + np.floor((v + 4.0) / 0.55)) % 2 == 0


def _object_hat(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _paint(canvas, _ellipse(u, v, 0.0, -1.02, 0.46, 0.4) & (v < -1.02), _C["red"])
    _paint(canvas, _rect(u, v, -0.78, 0.78, -1.08, -0.92), _C["red"] * 0.8)


def _object_glasses(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    for cu in (-0.38, 0.38):
        r2 = (u - cu) ** 2 + (v + 0.25) ** 2
        _paint(canvas, r2 < 0.18**2, _C["pink"], alpha=0.45)
        _paint(canvas, (r2 < 0.31**2) & (r2 >= 0.18**2), _C["pink"])
    _paint(canvas, _rect(u, v, -0.1, 0.1, -0.3, -0.2), _C["pink"])


def _object_scarf(canvas: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    _rainbow(canvas, _rect(u, v, -1.0, 1.0, 0.02, 0.42) | _rect(u, v, 0.25, 0.55, 0.42, 1.0), u, v)


_OBJECT_ACCESSORIES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = {
    "red_hat": _object_hat,
    "pink_glasses": _object_glasses,
    "rainbow_scarf": _object_scarf,
}


def _draw_object(
    canvas: np.ndarray, g: _Grid, subject: Subject, ctx: str, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Draw an object subject onto the canvas; returns its box in [0, 1] image units."""
    cx, cy = 0.5 + rng.uniform(-0.1, 0.1), 0.56 + rng.uniform(-0.07, 0.07)
    s = 0.27 * rng.uniform(0.88, 1.12)
    u, v = (g.x - cx) / s, (g.y - cy) / s
    colour = _BODY_RGB[ctx] if ctx in ("red", "purple") else _BODY_RGB[subject.attr("colour")]
    pattern_rgb = _PATTERN_RGB.get(subject.attr("pattern_colour"))
    if ctx == "wet":  # soaked surfaces look darker and bluer
        colour = colour * 0.62 + _C["wet_tint"]
        if pattern_rgb is not None:
            pattern_rgb = pattern_rgb * 0.62 + _C["wet_tint"]

    if ctx != "water":
        _paint(canvas, _ellipse(g.x, g.y, cx, cy + 0.93 * s, 0.9 * s, 0.2 * s), canvas * 0.7)  # shadow
    shade = 1.0 - (0.22 if ctx == "shiny" else 0.09) * (u + v)
    if ctx == "cube_shaped":
        front, top, side = _cube_faces(u, v)
        body = front | top | side
        shade = np.where(top, np.float32(1.25), np.where(side, np.float32(0.7), np.float32(1.0))) * shade
    else:
        body = _SHAPES[subject.cls](u, v)
    _paint(canvas, body, colour * shade)
    if pattern_rgb is not None:
        _paint(canvas, body & _pattern_mask(subject.attr("pattern"), u, v), pattern_rgb * shade)

    if ctx == "shiny":
        _paint(canvas, body & _ellipse(u, v, -0.35, -0.42, 0.3, 0.22), _C["white"], alpha=0.85)
    elif ctx == "wet":
        for cu, cv in rng.uniform(-0.65, 0.65, (7, 2)):
            _paint(canvas, body & _ellipse(u, v, cu, cv, 0.11, 0.14), _C["droplet"], alpha=0.85)
    elif ctx in _OBJECT_ACCESSORIES:
        _OBJECT_ACCESSORIES[ctx](canvas, u, v)
    return cx - s, cy - s, cx + s, cy + s


# --- Rendering: faces (head coordinates u, v: one unit = head half-size, origin at head centre) ---


@dataclass(frozen=True)
class _Head:
    u: np.ndarray
    v: np.ndarray
    rx: float
    ry: float
    eye_u: float
    torso: np.ndarray


_FACE_RADII = {"narrow": (0.7, 1.0), "wide": (0.95, 0.9)}
_SHIRTS = {
    "chef_outfit": _C["white"],
    "firefighter_outfit": _C["firecoat"],
    "police_outfit": _C["navy"] * 1.3,
    "yellow_shirt": _C["yellow"],
    "wizard_outfit": _C["purple"],
}
_EYE_V = -0.1


def _brimmed(canvas: np.ndarray, h: _Head, crown: np.ndarray, rgb: np.ndarray, brim_width: float) -> None:
    _paint(canvas, crown, rgb)
    _paint(canvas, _rect(h.u, h.v, -brim_width, brim_width, -h.ry + 0.18, -h.ry + 0.32), rgb * 0.8)


def _face_red_hat(canvas: np.ndarray, h: _Head) -> None:
    crown = _ellipse(h.u, h.v, 0.0, -h.ry + 0.2, h.rx * 0.95, 0.62) & (h.v < -h.ry + 0.25)
    _brimmed(canvas, h, crown, _C["red"], h.rx * 1.3)


def _face_santa_hat(canvas: np.ndarray, h: _Head) -> None:
    base = -h.ry + 0.25
    _paint(canvas, _triangle(h.u, h.v, (0.8, -h.ry - 0.85), -h.rx, h.rx, base), _C["red"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.08, h.rx * 1.08, base - 0.08, base + 0.14), _C["white"])
    _paint(canvas, _ellipse(h.u, h.v, 0.8, -h.ry - 0.85, 0.2, 0.2), _C["white"])


def _face_scarf(canvas: np.ndarray, h: _Head) -> None:
    _rainbow(canvas, _rect(h.u, h.v, -0.8, 0.8, 0.85, 1.25) | _rect(h.u, h.v, 0.2, 0.5, 1.25, 2.1), h.u, h.v)


def _face_top_hat(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _rect(h.u, h.v, -0.52, 0.52, -h.ry - 1.0, -h.ry + 0.2), _C["black"])
    _paint(canvas, _rect(h.u, h.v, -0.52, 0.52, -h.ry - 0.05, -h.ry + 0.06), _C["grey"])
    _paint(canvas, _rect(h.u, h.v, -0.95, 0.95, -h.ry + 0.14, -h.ry + 0.26), _C["black"])
    r2 = (h.u - h.eye_u) ** 2 + (h.v - _EYE_V) ** 2
    _paint(canvas, (r2 < 0.27**2) & (r2 > 0.19**2), _C["gold"])  # monocle and its chain
    _paint(canvas, _rect(h.u, h.v, h.eye_u + 0.2, h.eye_u + 0.26, _EYE_V, 0.7), _C["gold"])


def _face_chef(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _ellipse(h.u, h.v, 0.0, -h.ry - 0.55, 0.8, 0.52), _C["white"])
    _paint(canvas, _rect(h.u, h.v, -0.62, 0.62, -h.ry - 0.3, -h.ry + 0.25), _C["white"] * 0.94)
    buttons = _ellipse(h.u, h.v, 0.25, 1.55, 0.09, 0.09) | _ellipse(h.u, h.v, 0.25, 1.95, 0.09, 0.09)
    _paint(canvas, h.torso & buttons, _C["black"])


def _face_firefighter(canvas: np.ndarray, h: _Head) -> None:
    crown = _ellipse(h.u, h.v, 0.0, -h.ry + 0.15, h.rx * 1.05, 0.62) & (h.v < -h.ry + 0.25)
    _brimmed(canvas, h, crown, _C["red"] * 0.95, h.rx * 1.45)
    reflective = ((h.v > 1.5) & (h.v < 1.68)) | (np.abs(np.abs(h.u) - 0.55) < 0.09)
    _paint(canvas, h.torso & reflective, _C["yellow"])


def _face_police(canvas: np.ndarray, h: _Head) -> None:
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.1, h.rx * 1.1, -h.ry - 0.3, -h.ry + 0.2), _C["navy"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 0.95, h.rx * 0.95, -h.ry + 0.2, -h.ry + 0.32), _C["black"])
    badges = _ellipse(h.u, h.v, 0.0, -h.ry - 0.05, 0.12, 0.12) | (h.torso & _ellipse(h.u, h.v, 0.6, 1.6, 0.13, 0.13))
    _paint(canvas, badges, _C["gold"])


def _face_glasses(canvas: np.ndarray, h: _Head) -> None:
    for cu in (-h.eye_u, h.eye_u):
        r2 = (h.u - cu) ** 2 + (h.v - _EYE_V) ** 2
        _paint(canvas, r2 < 0.2**2, _C["pink"], alpha=0.35)
        _paint(canvas, (r2 < 0.29**2) & (r2 >= 0.2**2), _C["pink"])
    _paint(canvas, _rect(h.u, h.v, -h.eye_u + 0.2, h.eye_u - 0.2, _EYE_V - 0.04, _EYE_V + 0.04), _C["pink"])


def _face_wizard(canvas: np.ndarray, h: _Head) -> None:
    base = -h.ry + 0.25
    _paint(canvas, _triangle(h.u, h.v, (0.15, -h.ry - 1.3), -h.rx * 1.05, h.rx * 1.05, base), _C["purple"])
    _paint(canvas, _rect(h.u, h.v, -h.rx * 1.45, h.rx * 1.45, base - 0.06, base + 0.08), _C["purple"] * 0.8)
    stars = _ellipse(h.u, h.v, 0.0, -h.ry - 0.35, 0.12, 0.12) | (h.torso & _ellipse(h.u, h.v, -0.5, 1.75, 0.12, 0.12))
    _paint(canvas, stars, _C["gold"])


_FACE_ACCESSORIES: dict[str, Callable[[np.ndarray, _Head], None]] = {
    "red_hat": _face_red_hat,
    "santa_hat": _face_santa_hat,
    "rainbow_scarf": _face_scarf,
    "top_hat": _face_top_hat,
    "chef_outfit": _face_chef,
    "firefighter_outfit": _face_firefighter,
    "police_outfit": _face_police,
    "pink_glasses": _face_glasses,
    "wizard_outfit": _face_wizard,
}


def _draw_face(
    canvas: np.ndarray, g: _Grid, subject: Subject, ctx: str, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """Draw a face subject (head and shoulders); returns the head box (hair included) in [0, 1] image units."""
    cx, cy = 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.04, 0.04)
    hs = 0.24 * rng.uniform(0.93, 1.07)
    u, v = (g.x - cx) / hs, (g.y - cy) / hs
    rx, ry = _FACE_RADII[subject.attr("face_shape")]
    skin = _SKIN_RGB[subject.attr("skin_tone")]
    style, hair_colour = subject.attr("hair_style"), subject.attr("hair_colour")
    if ctx == "red_hair":
        style, hair_colour = ("short" if style == "bald" else style), "red"
    hair = _HAIR_RGB.get(hair_colour)
    shade = 1.0 - 0.06 * (u + v)

    torso = _ellipse(u, v, 0.0, 2.15, 1.6, 1.05)
    _paint(canvas, torso, _SHIRTS.get(ctx, _C["shirt"]) * shade)
    if style == "long":
        back = _ellipse(u, v, 0.0, -0.05, rx + 0.22, ry + 0.12) | _rect(u, v, -rx - 0.22, rx + 0.22, 0.0, 1.45)
        _paint(canvas, back, hair)
    _paint(canvas, _rect(u, v, -0.28, 0.28, 0.5, 1.2), skin * 0.85)  # neck
    _paint(canvas, _ellipse(u, v, 0.0, 0.0, rx, ry), skin * shade)
    if style != "bald":
        cap = _ellipse(u, v, 0.0, -0.04, rx * 1.1, ry * 1.08) & ~_ellipse(u, v, 0.0, 0.3, rx * 0.98, ry * 0.95)
        _paint(canvas, cap & (v < (0.45 if style == "long" else 0.05)), hair)
        if style == "bun":
            _paint(canvas, _ellipse(u, v, 0.0, -ry - 0.18, 0.34, 0.3), hair)

    eye_u = 0.42 * rx
    # Irises only: at 16x16 an eye is about one pixel, which should show the eye colour.
    eyes = _ellipse(u, v, -eye_u, _EYE_V, 0.2, 0.17) | _ellipse(u, v, eye_u, _EYE_V, 0.2, 0.17)
    _paint(canvas, eyes, _EYE_RGB[subject.attr("eye_colour")])
    _paint(canvas, _rect(u, v, -0.05, 0.05, 0.05, 0.3), skin * 0.8)  # nose
    if ctx == "smiling":
        lips = (u * u < 0.42**2) & (v > 0.4 + 0.9 * u * u) & (v < 0.6 + 0.35 * u * u)
        _paint(canvas, lips, _C["lips"])
        _paint(canvas, lips & (v < 0.47 + 0.8 * u * u), _C["white"])
        cheeks = _ellipse(u, v, -0.62 * rx, 0.3, 0.16, 0.12) | _ellipse(u, v, 0.62 * rx, 0.3, 0.16, 0.12)
        _paint(canvas, cheeks, _C["cheek"], alpha=0.45)
    else:
        _paint(canvas, _rect(u, v, -0.25, 0.25, 0.5, 0.57), _C["mouth"])

    if ctx in _FACE_ACCESSORIES:
        _FACE_ACCESSORIES[ctx](canvas, _Head(u, v, rx, ry, eye_u, torso))
    top = ry + {"bald": 0.0, "bun": 0.48}.get(style, 0.08)
    half_width = rx + {"bald": 0.0, "long": 0.22}.get(style, 0.1)
    return cx - half_width * hs, cy - top * hs, cx + half_width * hs, cy + ry * hs


# --- Rendering: styles (whole-image transforms on the high-resolution canvas) ---------------------


def _luma(canvas: np.ndarray) -> np.ndarray:
    return 0.299 * canvas[0] + 0.587 * canvas[1] + 0.114 * canvas[2]


def _style_black_and_white(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lum = np.clip((_luma(canvas) - 0.5) * 1.15 + 0.5, 0.0, 1.0)
    return np.broadcast_to(lum, canvas.shape)


def _style_sketch(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    lum = _luma(canvas)
    step = max(g.size // 32, 1)  # edges about two output pixels wide survive the downsampling
    grad = np.zeros_like(lum)
    grad[:, step:-step] += np.abs(lum[:, 2 * step :] - lum[:, : -2 * step])
    grad[step:-step] += np.abs(lum[2 * step :] - lum[: -2 * step])
    ink = np.clip(np.clip(grad * 5.0, 0.0, 1.0) + g.hatch * np.clip(0.55 - lum, 0.0, 1.0), 0.0, 1.0)
    paper = _jitter(rng, (0.97, 0.96, 0.92), 0.02)
    return paper + (_C["graphite"] - paper) * ink


def _style_painting(canvas: np.ndarray, g: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Soft, vivid colours with brush strokes, in a gilded frame (what "a painting of" looks like at 16x16)."""
    r = max(g.size // 64, 1)  # a light blur: stronger ones wipe out patterns, i.e. identity
    border = max(g.size // 16, r)  # the frame hides the r pixels at the edge that the blur leaves alone
    k, n = 2 * r + 1, g.size - 2 * r
    rows = sum(canvas[:, i : i + n] for i in range(k))
    blurred = canvas.copy()
    blurred[:, r:-r, r:-r] = sum(rows[:, :, j : j + n] for j in range(k)) * np.float32(1.0 / (k * k))
    mean = blurred.mean(axis=0)
    strokes = np.roll(g.strokes, tuple(rng.integers(0, g.size, 2)), axis=(0, 1))
    out = (mean + (blurred - mean) * 1.6) * (1.0 + 0.14 * strokes) + _C["varnish"]
    frame = _jitter(rng, (0.62, 0.45, 0.16), 0.06)
    out[:, :border], out[:, -border:], out[:, :, :border], out[:, :, -border:] = frame, frame, frame, frame
    return out


_STYLES: dict[str, Callable[[np.ndarray, _Grid, np.random.Generator], np.ndarray]] = {
    "sketch": _style_sketch,
    "black_and_white": _style_black_and_white,
    "painting": _style_painting,
}


# --- The world ------------------------------------------------------------------------------------


def _make_subjects(config: WorldConfig) -> tuple[Subject, ...]:
    """Every combination of class and details, with ids in a fixed order and a seeded, stratified split.

    The split is stratified by (class, first detail), so every class, and every class-colour /
    class-skin-tone pair, has both train and eval subjects.
    """
    rows: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []
    values = ATTRIBUTE_VALUES["object"]
    for cls, colour, pattern in itertools.product(CLASSES["object"], values["colour"], values["pattern"]):
        for pattern_colour in (NONE,) if pattern == "plain" else values["pattern_colour"][1:]:
            rows.append((cls, "object", (("colour", colour), ("pattern", pattern), ("pattern_colour", pattern_colour))))
    values = ATTRIBUTE_VALUES["face"]
    for cls in CLASSES["face"]:
        for style in _HAIR_STYLES[cls]:
            hair_colours = (NONE,) if style == "bald" else values["hair_colour"][1:]
            for skin, hair, eyes, shape in itertools.product(
                values["skin_tone"], hair_colours, values["eye_colour"], values["face_shape"]
            ):
                attrs = (
                    ("skin_tone", skin),
                    ("hair_colour", hair),
                    ("hair_style", style),
                    ("eye_colour", eyes),
                    ("face_shape", shape),
                )
                rows.append((cls, "face", attrs))

    strata: dict[tuple[str, str, str], list[int]] = {}
    for index, (cls, domain, attrs) in enumerate(rows):
        strata.setdefault((domain, cls, attrs[0][1]), []).append(index)
    rng = np.random.default_rng([config.seed, 0x5B117])
    held_out: set[int] = set()
    for members in strata.values():
        n_eval = min(len(members) - 1, max(1, round(config.eval_fraction * len(members))))
        held_out.update(members[i] for i in rng.permutation(len(members))[:n_eval])
    return tuple(
        Subject(index, domain, cls, attrs, "eval" if index in held_out else "train")
        for index, (cls, domain, attrs) in enumerate(rows)
    )


class World:
    """The CAFE-mini world: subjects, contexts, renderer and language, all fixed by a :class:`WorldConfig`."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self._subjects = _make_subjects(self.config)
        self._contexts = {
            domain: tuple(Context(i, s.name, s.family, s.phrase, domain) for i, s in enumerate(specs))
            for domain, specs in _CONTEXT_SPECS.items()
        }
        self._specs = {(domain, s.name): s for domain, specs in _CONTEXT_SPECS.items() for s in specs}
        self._by_name = {(c.domain, c.name): c for cs in self._contexts.values() for c in cs}
        self._keys = {
            domain: [(f" {key} ", c) for c in self._contexts[domain] for key in self._specs[domain, c.name].keys]
            for domain in DOMAINS
        }
        self._grid = _Grid.make(self.config.image_size * self.config.render_scale, self.config.render_scale)
        logger.debug(
            "CAFE-mini world (seed %d): %d subjects, %d held out",
            self.config.seed,
            len(self._subjects),
            sum(s.split == "eval" for s in self._subjects),
        )

    # --- subjects and contexts --------------------------------------------------------------------

    def subjects(self, domain: str | None = None, split: str | None = None) -> list[Subject]:
        if domain is not None:
            _check_domain(domain)
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [
            s for s in self._subjects if (domain is None or s.domain == domain) and (split is None or s.split == split)
        ]

    def subject(self, id: int) -> Subject:
        if not 0 <= id < len(self._subjects):
            raise KeyError(f"no subject with id {id}; ids run from 0 to {len(self._subjects) - 1}")
        return self._subjects[id]

    def contexts(self, domain: str) -> list[Context]:
        _check_domain(domain)
        return list(self._contexts[domain])

    def context(self, domain: str, name: str) -> Context:
        _check_domain(domain)
        try:
            return self._by_name[domain, name]
        except KeyError:
            names = ", ".join(c.name for c in self._contexts[domain])
            raise KeyError(f"no {domain} context {name!r}; known: {names}") from None

    def ambiguous_requests(self, domain: str) -> list[AmbiguousRequest]:
        _check_domain(domain)
        return list(_AMBIGUOUS[domain])

    # --- rendering --------------------------------------------------------------------------------

    def render(self, subject: Subject, context: Context | None = None, seed: int = 0) -> Rendering:
        """Draw ``subject`` in ``context`` (``None``: a plain user photo).

        ``seed`` picks the scene: pose, background variation, light and noise. The same
        (context, seed) gives the same scene for every subject of a domain.
        """
        image, bbox = self._render(subject, context, seed)
        return Rendering(image, subject, context, seed, bbox)

    def render_batch(
        self, subjects: Sequence[Subject], contexts: Sequence[Context | None], seeds: Sequence[int]
    ) -> np.ndarray:
        """Images of ``render`` for aligned sequences, stacked as uint8 (N, H, W, 3)."""
        if not len(subjects) == len(contexts) == len(seeds):
            raise ValueError(f"lengths differ: {len(subjects)} subjects, {len(contexts)} contexts, {len(seeds)} seeds")
        size = self.config.image_size
        out = np.empty((len(subjects), size, size, 3), np.uint8)
        for i, (subject, context, seed) in enumerate(zip(subjects, contexts, seeds, strict=True)):
            out[i] = self._render(subject, context, seed)[0]
        return out

    def _render(
        self, subject: Subject, context: Context | None, seed: int
    ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        self._check_context(subject, context)
        if seed < 0:
            raise ValueError(f"render seed must be >= 0, got {seed}")
        # The subject is not part of the stream: one (context, seed) is one scene, so two subjects
        # rendered alike differ only where their identities differ.
        domain = DOMAINS.index(subject.domain)
        rng = np.random.default_rng([self.config.seed, domain, 0 if context is None else context.id + 1, seed])
        g, ctx = self._grid, "" if context is None else context.name
        canvas = _BACKGROUNDS.get(ctx, _bg_neutral)(g, rng)
        draw = _draw_object if subject.domain == "object" else _draw_face
        box = draw(canvas, g, subject, ctx, rng)
        canvas *= (np.float32(rng.uniform(0.9, 1.1)) * (1.0 + rng.uniform(-0.03, 0.03, (3, 1, 1)))).astype(np.float32)
        if ctx in _STYLES:
            canvas = _STYLES[ctx](canvas, g, rng)

        size = self.config.image_size
        small = _downsample(canvas, self.config.render_scale)
        small += rng.normal(0.0, 0.012, (size, size)).astype(np.float32)  # luminance noise keeps greys grey
        image = np.ascontiguousarray((np.clip(small, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0))
        x0, y0, x1, y1 = (np.clip(edge * size, 0, size) for edge in box)  # every pixel the box touches
        return image, (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))

    # --- language ---------------------------------------------------------------------------------

    def prompt(self, subject: Subject, context: Context | None) -> str:
        """The DreamBench-style prompt naming only the class, e.g. ``"a ball on the beach"``."""
        self._check_context(subject, context)
        phrase = _NEUTRAL_PHRASE if context is None else context.phrase
        return _fix_articles(phrase.format(subject.cls))

    def caption(self, subject: Subject, context: Context | None, rng: np.random.Generator) -> str:
        """The prompt, sometimes (``caption_detail_p``) naming some visible fine details too.

        Details that the context overrides or hides (the colour of "a red ball", the skin tone of
        a black and white photo) are never named, so captions never contradict their image.
        """
        self._check_context(subject, context)
        phrase = _NEUTRAL_PHRASE if context is None else context.phrase
        fragments = _detail_fragments(subject, self._hidden(subject, context))
        chosen: list[tuple[bool, str]] = []
        if fragments and rng.random() < self.config.caption_detail_p:
            keep = rng.random(len(fragments)) < 0.5
            keep[rng.integers(len(fragments))] = True
            chosen = [f for f, k in zip(fragments, keep, strict=True) if k]
        return _fix_articles(phrase.format(_noun_phrase(subject.cls, chosen)))

    def turn(self, subject: Subject, kind: str, rng: np.random.Generator, context: Context | None = None) -> Turn:
        """A user message about ``subject`` and the assistant's explaining response.

        Declarative and interrogative turns ask for ``context`` (drawn with ``rng`` when ``None``).
        Ambiguous turns voice a vague wish; the assistant commits to one of its valid contexts
        (``context`` if given, which must then be valid for some wish) and says why.
        """
        if kind not in TURN_KINDS:
            raise ValueError(f"unknown turn kind {kind!r}; expected one of {TURN_KINDS}")
        if context is not None:
            self._check_context(subject, context)
        domain, cls = subject.domain, subject.cls
        if kind == "ambiguous":
            wishes = [r for r in _AMBIGUOUS[domain] if context is None or context.name in r.contexts]
            if not wishes:
                raise ValueError(f"no ambiguous {domain} request leads to context {context.name!r}")
            wish = _pick(rng, wishes)
            if context is None:
                context = self._by_name[domain, _pick(rng, wish.contexts)]
            user, reason = _pick(rng, wish.templates).format(cls), wish.reason
        else:
            if context is None:
                context = _pick(rng, self._contexts[domain])
            user, reason = _pick(rng, _USER_TEMPLATES[kind]).format(self._ask(context, "this", cls)), ""
        owner = _OWNER[domain]
        response = _pick(rng, _RESPONSE_TEMPLATES[kind]).format(
            target=self._ask(context, owner, cls),
            subject=f"{owner} {cls}",
            kept=self._kept(subject, context),
            reason=reason,
        )
        valid = wish.contexts if kind == "ambiguous" else (context.name,)
        return Turn(kind, _fix_articles(user), _fix_articles(response), context, valid)

    def find_context(self, domain: str, text: str) -> Context | None:
        """The single context a text commits to, or ``None`` when it names none or several.

        Used to grade assistant responses: each context has key words ("on the beach" -> "beach",
        "santa hat", "red version") that no other context's wording contains.
        """
        _check_domain(domain)
        haystack = f" {' '.join(words(text))} "
        found = {c.id: c for key, c in self._keys[domain] if key in haystack}
        return next(iter(found.values())) if len(found) == 1 else None

    def vocabulary(self) -> list[str]:
        """Every word any prompt, caption, turn or response can contain, lowercase and sorted."""
        return list(self._vocabulary)

    @functools.cached_property
    def _vocabulary(self) -> tuple[str, ...]:
        placeholder = re.compile(r"\{[a-z]*\}")
        texts = [_NEUTRAL_PHRASE, "an", *(s.name for s in self._subjects)]  # "an": see _fix_articles
        texts += [f"{spec.phrase} {_request(spec)}" for specs in _CONTEXT_SPECS.values() for spec in specs]
        texts += [" ".join(r.templates) + " " + r.reason for rs in _AMBIGUOUS.values() for r in rs]
        texts += [t for ts in (*_USER_TEMPLATES.values(), *_RESPONSE_TEMPLATES.values()) for t in ts]
        texts += [noun for nouns in _KEPT_NOUNS.values() for noun, _ in nouns] + [_FALLBACK_KEPT]
        vocab = {w for text in texts for w in words(placeholder.sub(" ", text))}
        return tuple(sorted(vocab))

    # --- helpers ----------------------------------------------------------------------------------

    def _check_context(self, subject: Subject, context: Context | None) -> None:
        if context is not None and context.domain != subject.domain:
            raise ValueError(
                f"context {context.name!r} is of the {context.domain} domain, subject {subject.id} of {subject.domain}"
            )

    def request(self, subject: Subject, context: Context, determiner: str = "this") -> str:
        """How a user asks for `context`, e.g. "this ball on the beach", "this man smiling"."""
        return self._ask(context, determiner, subject.cls)

    def _ask(self, context: Context, determiner: str, cls: str) -> str:
        """The request for a context, e.g. ("this", "ball") -> "this ball on the beach"."""
        return _request(self._specs[context.domain, context.name]).replace("this {}", f"{determiner} {{}}").format(cls)

    def _hidden(self, subject: Subject, context: Context | None) -> frozenset[str]:
        if context is None:
            return frozenset()
        hidden = self._specs[context.domain, context.name].hides
        if context.name == "red_hair" and subject.attr("hair_style") == "bald":
            hidden |= {"hair_style"}  # a bald man given red hair gets short hair
        return hidden

    def _kept(self, subject: Subject, context: Context) -> str:
        """Which identity details the response promises to keep: "colour and pattern"."""
        hidden = self._hidden(subject, context)
        nouns = [noun for noun, key in _KEPT_NOUNS[subject.domain] if key not in hidden and subject.attr(key) != NONE]
        return _join_and(nouns) if nouns else _FALLBACK_KEPT


def _pick(rng: np.random.Generator, options: Sequence[_T]) -> _T:
    return options[rng.integers(len(options))]


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")


def make_world(params) -> World:
    """The world a params file describes (its ``world`` section)."""
    from dataclasses import asdict

    return World(WorldConfig(**asdict(params.world)))
