"""The world's language: its contexts (DreamBench's four families), vague wishes, captions, prompts and chat turns."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .records import NONE, AmbiguousRequest, Subject


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
