"""Behaviour of the CAFE-mini world that the rest of the project relies on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cafe_core.world.world import (
    ATTRIBUTE_VALUES,
    CLASSES,
    DOMAINS,
    FAMILIES,
    TURN_KINDS,
    World,
    WorldConfig,
    words,
)


def _region(rendering, bbox=None) -> np.ndarray:
    x0, y0, x1, y1 = bbox or rendering.bbox
    return rendering.image[y0:y1, x0:x1].astype(np.int16)


def _union(a, b) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _twin(world: World, subject, key: str):
    """Subjects that differ from ``subject`` in exactly the detail ``key``."""
    return [
        other
        for other in world.subjects(subject.domain)
        if other.cls == subject.cls
        and other.attr(key) != subject.attr(key)
        and all(v == subject.attr(k) for k, v in other.attrs if k != key)
    ]


# --- subjects and split ---------------------------------------------------------------------------


def test_subject_ids_are_unique_and_stable(world):
    subjects = world.subjects()
    assert [s.id for s in subjects] == list(range(len(subjects)))
    assert all(world.subject(s.id) == s for s in subjects[::50])
    other = World(WorldConfig(seed=7))
    assert [(s.id, s.cls, s.attrs) for s in other.subjects()] == [(s.id, s.cls, s.attrs) for s in subjects]
    with pytest.raises(KeyError):
        world.subject(len(subjects))


def test_subject_details_use_the_declared_vocabulary(world):
    for domain in DOMAINS:
        subjects = world.subjects(domain)
        assert {s.cls for s in subjects} == set(CLASSES[domain])
        for s in subjects:
            assert tuple(k for k, _ in s.attrs) == tuple(ATTRIBUTE_VALUES[domain])
            assert all(v in ATTRIBUTE_VALUES[domain][k] for k, v in s.attrs)
    plain = next(s for s in world.subjects("object") if s.attr("pattern") == "plain")
    assert plain.attr("pattern_colour") == "none"
    assert world.subject(0).name == "red ball"
    striped = next(s for s in world.subjects("object") if s.attr("pattern") == "stripes")
    assert striped.name == f"{striped.attr('colour')} {striped.cls} with {striped.attr('pattern_colour')} stripes"


def test_split_is_disjoint_stratified_and_seeded(world):
    for domain in DOMAINS:
        train, held_out = world.subjects(domain, "train"), world.subjects(domain, "eval")
        assert {s.id for s in train}.isdisjoint({s.id for s in held_out})
        assert len(train) + len(held_out) == len(world.subjects(domain))
        assert len(held_out) / len(world.subjects(domain)) == pytest.approx(world.config.eval_fraction, abs=0.03)
        for cls in CLASSES[domain]:
            assert any(s.cls == cls for s in train)
            assert any(s.cls == cls for s in held_out)
    assert all(s.split == "eval" for s in world.subjects(split="eval"))

    same = World(WorldConfig(seed=0))
    other = World(WorldConfig(seed=1))
    assert [s.split for s in same.subjects()] == [s.split for s in world.subjects()]
    assert [s.split for s in other.subjects()] != [s.split for s in world.subjects()]


# --- contexts -------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_domain_has_25_contexts_in_all_families(world, domain):
    contexts = world.contexts(domain)
    assert len(contexts) == 25
    assert {c.family for c in contexts} == set(FAMILIES)
    assert [c.id for c in contexts] == list(range(25))
    assert len({c.name for c in contexts}) == 25
    assert all(c.domain == domain and c.phrase.count("{}") == 1 for c in contexts)
    assert all(world.context(domain, c.name) == c for c in contexts)
    with pytest.raises(KeyError):
        world.context(domain, "moon")


def test_prompts_use_dreambench_wording(world):
    ball, man = world.subject(0), world.subjects("face")[0]
    assert world.prompt(ball, world.context("object", "beach")) == "a ball on the beach"
    assert world.prompt(ball, world.context("object", "red")) == "a red ball"
    assert world.prompt(ball, world.context("object", "sketch")) == "a pencil sketch of a ball"
    assert world.prompt(ball, world.context("object", "water")) == "a ball floating on top of water"
    assert world.prompt(man, world.context("face", "santa_hat")) == "a man wearing a santa hat"
    assert world.prompt(man, None) == "a photo of a man"
    with pytest.raises(ValueError, match="domain"):
        world.prompt(ball, world.context("face", "santa_hat"))


# --- rendering ------------------------------------------------------------------------------------


def test_renders_are_deterministic(world):
    again = World(WorldConfig(seed=0))
    other_world = World(WorldConfig(seed=1))
    for domain in DOMAINS:
        subject = world.subjects(domain)[11]
        for context in (None, world.context(domain, "beach"), world.context(domain, "painting")):
            first = world.render(subject, context, seed=3)
            assert np.array_equal(first.image, again.render(subject, context, seed=3).image)
            assert first.bbox == again.render(subject, context, seed=3).bbox
            assert not np.array_equal(first.image, world.render(subject, context, seed=4).image)
            assert not np.array_equal(first.image, other_world.render(subject, context, seed=3).image)


@pytest.mark.parametrize("config", [WorldConfig(), WorldConfig(image_size=24, render_scale=2)])
def test_render_shape_dtype_and_box(config):
    world = World(config)
    size = config.image_size
    for domain in DOMAINS:
        for context in [None, *world.contexts(domain)]:
            r = world.render(world.subjects(domain)[5], context, seed=2)
            assert r.image.shape == (size, size, 3)
            assert r.image.dtype == np.uint8
            x0, y0, x1, y1 = r.bbox
            assert 0 <= x0 < x1 <= size
            assert 0 <= y0 < y1 <= size
            assert r.context is context
            assert r.seed == 2


@pytest.mark.parametrize("domain", DOMAINS)
def test_contexts_of_one_subject_render_differently(world, domain):
    contexts = [None, *world.contexts(domain)]
    for subject in world.subjects(domain)[::97]:
        images = [world.render(subject, c, seed=1).image.astype(np.int16) for c in contexts]
        for (i, a), (j, b) in itertools.combinations(enumerate(images), 2):
            assert np.abs(a - b).mean() > 3.0, (subject.name, contexts[i], contexts[j])


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_identity_detail_changes_the_subject_region(world, domain):
    """Two subjects that differ in one detail differ inside the subject box of the same scene."""
    for key in ATTRIBUTE_VALUES[domain]:
        checked = 0
        for subject in world.subjects(domain)[::23]:
            for twin in _twin(world, subject, key)[:2]:
                a, b = world.render(subject, None, seed=5), world.render(twin, None, seed=5)
                box = _union(a.bbox, b.bbox)
                diff = np.abs(_region(a, box) - _region(b, box))
                assert diff.max() > 20, (key, subject.name, twin.name)
                assert diff.mean() > 1.0, (key, subject.name, twin.name)
                if domain == "object":  # same scene: nothing outside the object's box changes
                    outside = np.ones(a.image.shape[:2], bool)
                    x0, y0, x1, y1 = box
                    outside[y0:y1, x0:x1] = False
                    assert np.array_equal(a.image[outside], b.image[outside])
                checked += 1
        assert checked > 0, key


def test_property_red_recolours_the_body(world):
    def red_share(rendering) -> float:
        r, g, b = np.moveaxis(_region(rendering), -1, 0)
        return float(((r > 100) & (r > 2 * g) & (r > 2 * b)).mean())

    red = world.context("object", "red")
    for subject in world.subjects("object"):
        if subject.attr("pattern") != "plain" or subject.attr("colour") == "red" or subject.id % 3:
            continue
        assert red_share(world.render(subject, None, seed=subject.id)) < 0.05, subject.name
        assert red_share(world.render(subject, red, seed=subject.id)) > 0.15, subject.name


@pytest.mark.parametrize("domain", DOMAINS)
def test_black_and_white_is_grayscale(world, domain):
    bw = world.context(domain, "black_and_white")
    for subject in world.subjects(domain)[::61]:
        image = world.render(subject, bw, seed=subject.id).image
        assert np.array_equal(image[..., 0], image[..., 1])
        assert np.array_equal(image[..., 1], image[..., 2])
        assert image.std() > 10  # still a picture, not a flat grey


def test_render_batch_matches_render(world):
    subjects = [world.subject(3), world.subjects("face")[40], world.subject(200)]
    contexts = [None, world.context("face", "chef_outfit"), world.context("object", "sketch")]
    seeds = [0, 7, 2]
    batch = world.render_batch(subjects, contexts, seeds)
    assert batch.shape == (3, 16, 16, 3)
    assert batch.dtype == np.uint8
    for image, subject, context, seed in zip(batch, subjects, contexts, seeds, strict=True):
        assert np.array_equal(image, world.render(subject, context, seed).image)
    with pytest.raises(ValueError, match="lengths differ"):
        world.render_batch(subjects, contexts, seeds[:2])


# --- language -------------------------------------------------------------------------------------


def test_captions_name_details_only_as_configured(world):
    rng = np.random.default_rng(0)
    never, always = World(WorldConfig(caption_detail_p=0.0)), World(WorldConfig(caption_detail_p=1.0))
    for domain in DOMAINS:
        for subject in world.subjects(domain)[::41]:
            for context in [None, *world.contexts(domain)[::4]]:
                prompt = world.prompt(subject, context)
                assert never.caption(subject, context, rng) == prompt
                assert len(always.caption(subject, context, rng)) > len(prompt)
    orange = next(s for s in world.subjects("object") if s.attr("colour") == "orange" and s.cls == "cone")
    assert always.caption(orange, None, rng).startswith("a photo of an orange cone")


def test_captions_never_name_details_the_context_overrides():
    world = World(WorldConfig(caption_detail_p=1.0))
    rng = np.random.default_rng(1)
    blue = next(s for s in world.subjects("object") if s.attr("colour") == "blue")
    for _ in range(20):
        assert "blue" not in words(world.caption(blue, world.context("object", "red"), rng))
        assert "blue" not in words(world.caption(blue, world.context("object", "black_and_white"), rng))


def test_every_generated_word_is_in_the_vocabulary():
    world = World(WorldConfig(caption_detail_p=0.7))
    vocabulary = world.vocabulary()
    assert vocabulary == sorted(set(vocabulary))
    assert all(w == w.lower() for w in vocabulary)
    known, rng = set(vocabulary), np.random.default_rng(0)
    texts = []
    for domain in DOMAINS:
        for subject in world.subjects(domain)[::13]:
            for context in [None, *world.contexts(domain)]:
                texts += [world.prompt(subject, context), world.caption(subject, context, rng)]
            for kind in TURN_KINDS:
                turn = world.turn(subject, kind, rng)
                texts += [turn.user, turn.response]
    assert set(words(" ".join(texts))) <= known


def test_turns_commit_to_the_requested_context(world):
    rng = np.random.default_rng(0)
    for domain in DOMAINS:
        subject = world.subjects(domain)[9]
        for context, kind in itertools.product(world.contexts(domain), ("declarative", "interrogative")):
            turn = world.turn(subject, kind, rng, context)
            assert turn.kind == kind
            assert turn.context == context
            assert subject.cls in words(turn.user)
            assert subject.cls in words(turn.response)
        with pytest.raises(ValueError, match="domain"):
            world.turn(subject, "declarative", rng, world.contexts("face" if domain == "object" else "object")[0])
    with pytest.raises(ValueError, match="turn kind"):
        world.turn(world.subject(0), "rhetorical", rng)


def test_paper_prompt_forms_are_among_the_user_turns(world):
    rng = np.random.default_rng(0)
    ball, beach = world.subject(0), world.context("object", "beach")
    users = {world.turn(ball, kind, rng, beach).user for kind in ("declarative", "interrogative") for _ in range(60)}
    assert {
        "Can you generate an image for this ball on the beach?",
        "Generate an image for this ball on the beach.",
    } <= users


@pytest.mark.parametrize("domain", DOMAINS)
def test_ambiguous_turns_pick_a_valid_context_and_say_why(world, domain):
    requests = world.ambiguous_requests(domain)
    assert len(requests) >= 6
    names = {c.name for c in world.contexts(domain)}
    assert all(len(r.contexts) >= 2 and set(r.contexts) <= names and r.domain == domain for r in requests)

    rng = np.random.default_rng(0)
    for subject in world.subjects(domain)[::37]:
        for _ in range(10):
            turn = world.turn(subject, "ambiguous", rng)
            wishes = [r for r in requests if turn.user in {t.format(subject.cls) for t in r.templates}]
            assert any(turn.context.name in r.contexts for r in wishes), turn
            assert "because" in words(turn.response)
            assert subject.cls in words(turn.response)

    for request in requests:
        for name in request.contexts:
            assert world.turn(subject, "ambiguous", rng, world.context(domain, name)).context.name == name
    never_wished = names - {n for r in requests for n in r.contexts}
    for name in sorted(never_wished)[:1]:
        with pytest.raises(ValueError, match="no ambiguous"):
            world.turn(subject, "ambiguous", rng, world.context(domain, name))


@pytest.mark.parametrize("domain", DOMAINS)
def test_find_context_recovers_what_a_turn_commits_to(world, domain):
    rng = np.random.default_rng(0)
    subjects = world.subjects(domain)[::53]
    for context, kind in itertools.product(world.contexts(domain), ("declarative", "interrogative")):
        for subject in subjects[:4]:
            turn = world.turn(subject, kind, rng, context)
            assert world.find_context(domain, turn.response) == context, turn.response
            assert world.find_context(domain, turn.user) == context, turn.user
    for subject in subjects:
        for _ in range(15):
            turn = world.turn(subject, "ambiguous", rng)
            assert world.find_context(domain, turn.response) == turn.context, turn.response
            assert world.find_context(domain, turn.user) is None, turn.user  # a vague wish names no context


def test_find_context_refuses_texts_that_commit_to_nothing_or_to_several(world):
    assert world.find_context("object", "Here is your ball.") is None
    assert world.find_context("object", "Here is your ball on the beach, or in the snow.") is None
    assert world.find_context("object", "HERE IS YOUR BALL ON THE BEACH!").name == "beach"
    assert world.find_context("face", "Here is the man wearing a santa hat.").name == "santa_hat"
