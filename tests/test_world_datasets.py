"""The assistant's training dialogues: subjects split for validation, multi-turn chats, true targets."""

import numpy as np
import pytest

from cafe_core.world.datasets import dialogue_set, validation_subjects


def test_validation_subjects_are_a_disjoint_tenth(world):
    subjects = world.subjects(split="train")
    fit, val = validation_subjects(subjects)
    assert not {s.id for s in fit} & {s.id for s in val}
    assert len(fit) + len(val) == len(subjects)
    assert 0.05 < len(val) / len(subjects) < 0.15
    assert {s.domain for s in val} == {"object", "face"}


def test_dialogues_are_seeded_cached_and_commit_to_their_target(world, tmp_path):
    subjects = world.subjects(split="train")[:40]
    first = dialogue_set(world, subjects, 60, seed=3, multi_turn_p=0.5, cache_dir=tmp_path)
    again = dialogue_set(world, subjects, 60, seed=3, multi_turn_p=0.5, cache_dir=None)
    cached = dialogue_set(world, subjects, 60, seed=3, multi_turn_p=0.5, cache_dir=tmp_path)
    for other in (again, cached):
        assert other.messages == first.messages and other.responses == first.responses and other.valid == first.valid
        np.testing.assert_array_equal(other.y, first.y)
    assert len(list(tmp_path.glob("dialogues-*.safetensors"))) == 1
    assert {s.id for s in subjects} >= set(first.subject_ids.tolist())
    lengths = {len(m) for m in first.messages}
    assert lengths == {1, 3}  # single requests, and requests after an answered turn
    for chat, response, kind, sid, cid, valid in zip(
        first.messages, first.responses, first.kinds, first.subject_ids, first.context_ids, first.valid
    ):
        subject = world.subject(int(sid))
        assert chat[-1]["role"] == "user" and [m["role"] for m in chat[:-1]] in ([], ["user", "assistant"])
        context = world.contexts(subject.domain)[int(cid)]
        assert world.find_context(subject.domain, response) == context  # the answer names y's context
        assert context.name in valid
        if kind != "ambiguous":
            assert valid == [context.name]
    assert any(len(v) > 1 for v in first.valid)  # vague wishes that several contexts fulfil
    assert first.x.shape == first.y.shape == (60, 16, 16, 3)
    assert not np.array_equal(first.x, first.y)


def test_dialogue_set_rejects_bad_arguments(world):
    with pytest.raises(ValueError, match="multi_turn_p"):
        dialogue_set(world, world.subjects(split="train")[:3], 4, seed=0, multi_turn_p=1.5)
    with pytest.raises(ValueError, match="at least one subject"):
        dialogue_set(world, [], 4, seed=0)
