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
import re
from collections.abc import Sequence

import numpy as np

from .language import (
    _AMBIGUOUS,
    _CONTEXT_SPECS,
    _FALLBACK_KEPT,
    _KEPT_NOUNS,
    _NEUTRAL_PHRASE,
    _OWNER,
    _RESPONSE_TEMPLATES,
    _USER_TEMPLATES,
    _detail_fragments,
    _fix_articles,
    _join_and,
    _noun_phrase,
    _request,
)
from .records import (
    _HAIR_STYLES,
    _T,
    ATTRIBUTE_VALUES,
    CLASSES,
    DOMAINS,
    FAMILIES,
    NONE,
    SPLITS,
    TURN_KINDS,
    AmbiguousRequest,
    Context,
    Rendering,
    Subject,
    Turn,
    WorldConfig,
    logger,
    words,
)
from .rendering.backgrounds import _BACKGROUNDS, _bg_neutral
from .rendering.canvas import _downsample, _Grid
from .rendering.faces import _draw_face
from .rendering.objects import _draw_object
from .rendering.styles import _STYLES

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
        fragments = _detail_fragments(subject, self.hidden_details(subject, context))
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

    def hidden_details(self, subject: Subject, context: Context | None) -> frozenset[str]:
        """The identity details ``context`` overrides or hides for ``subject`` (a red ball's colour, a
        sketch's skin tone): captions and responses leave them out, and graders do not ask them."""
        if context is None:
            return frozenset()
        hidden = self._specs[context.domain, context.name].hides
        if context.name == "red_hair" and subject.attr("hair_style") == "bald":
            hidden |= {"hair_style"}  # a bald man given red hair gets short hair
        return hidden

    def _kept(self, subject: Subject, context: Context) -> str:
        """Which identity details the response promises to keep: "colour and pattern"."""
        hidden = self.hidden_details(subject, context)
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
