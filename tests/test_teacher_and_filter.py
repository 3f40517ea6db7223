"""The teacher's targets and failure modes, its cached sets, and the automatic filter and its calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cafe_core.data.filter import (
    FilterConfig,
    FilterScores,
    _mismatched_partners,
    apply_filter,
    calibrate_thresholds,
    filter_scores,
)
from cafe_core.data.quadruplets import FAILURES, QuadrupletSet
from cafe_core.testing import tiny_clip_encoder, tiny_dino_encoder
from cafe_core.world import World
from cafe_core.world.datasets import NEUTRAL, build_tokenizer
from cafe_core.world.teacher import Teacher, TeacherConfig, make_quadruplets

N = 2000


@pytest.fixture(scope="module")
def quads(world: World) -> QuadrupletSet:
    return make_quadruplets(world, Teacher(), N, split="train", seed=0)


def rows_of(quads: QuadrupletSet, failure: str) -> np.ndarray:
    return np.flatnonzero(quads.failures == FAILURES.index(failure))


def context_of(world: World, subject_id: int, context_id: int):
    return None if context_id == NEUTRAL else world.contexts(world.subject(subject_id).domain)[context_id]


def render_row(world: World, quads: QuadrupletSet, i: int, subject_id: int, context_id: int) -> np.ndarray:
    context = context_of(world, subject_id, context_id)
    return world.render(world.subject(subject_id), context, int(quads.y_seeds[i])).image


def right_render(world: World, quads: QuadrupletSet, i: int) -> np.ndarray:
    """What a faultless teacher would have drawn for row ``i``."""
    return render_row(world, quads, i, int(quads.subject_ids[i]), int(quads.context_ids[i]))


def shown_render(world: World, quads: QuadrupletSet, i: int) -> np.ndarray:
    """A render of what row ``i``'s ground truth says ``y`` shows (before any damage)."""
    return render_row(world, quads, i, int(quads.y_subject_ids[i]), int(quads.y_context_ids[i]))


# --- the teacher ----------------------------------------------------------------------------------


def test_the_world_teacher_answers_requests_as_every_teacher_does(world: World) -> None:
    """The dataset stages take any teacher of cafe_core.data.teachers: the world's answers the same
    requests with its failure modes, and says what each target really shows."""
    from cafe_core.data.teachers import Teacher as TeacherProtocol
    from cafe_core.data.teachers import TeacherRequest

    teacher = Teacher(TeacherConfig(identity_drift_p=0.3, ignore_instruction_p=0.3, artefact_p=0.2), world=world)
    assert isinstance(teacher, TeacherProtocol) and teacher.name == "cafe-mini world teacher"
    subject = world.subjects("object", "train")[2]
    photo = world.render(subject, None, 0).image
    requests = [
        TeacherRequest(photo, "a thing on the beach", seed=s, subject=str(subject.id), context="beach")
        for s in range(60)
    ]
    targets = teacher.make(requests)
    again = teacher.make(requests[:5])
    assert all(
        np.array_equal(a.y, b.y) and a.truth == b.truth for a, b in zip(targets, again)
    )  # a function of the seed
    failures = [t.truth["failure"] for t in targets]
    assert set(failures) == set(FAILURES)  # every failure mode occurs
    right = [t for t in targets if t.truth["failure"] == "none"]
    assert all(t.truth == {"failure": "none", "y_subject": subject.id, "y_context": "beach"} for t in right)
    assert all(t.truth["y_subject"] != subject.id for t in targets if t.truth["failure"] == "identity_drift")
    assert teacher.version != Teacher(TeacherConfig(seed=1), world=world).version
    with pytest.raises(ValueError, match="subject id in a named context"):
        teacher.make([TeacherRequest(photo, "a thing on the beach", seed=0)])
    with pytest.raises(ValueError, match="needs its world"):
        Teacher().make(requests[:1])


def test_make_is_a_function_of_teacher_seed_and_stream(world: World) -> None:
    subject, context = world.subjects("face", "train")[3], world.context("face", "beach")

    def draws(teacher_seed: int) -> list:
        teacher = Teacher(TeacherConfig(seed=teacher_seed))
        rng = np.random.default_rng(5)
        return [teacher.quadruplet(world, subject, context, rng) for _ in range(40)]

    first, again, other = draws(0), draws(0), draws(1)
    for a, b in zip(first, again, strict=True):
        assert (a.failure, a.x_seed, a.y_seed, a.instruction) == (b.failure, b.x_seed, b.y_seed, b.instruction)
        assert (a.y_subject, a.y_context) == (b.y_subject, b.y_context)
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert [q.x_seed for q in other] == [q.x_seed for q in first]  # the stream fixes the scenes ...
    assert [q.failure for q in other] != [q.failure for q in first]  # ... the teacher's seed its mistakes


def test_rows_depend_only_on_seed_and_index(world: World, quads: QuadrupletSet) -> None:
    prefix = make_quadruplets(world, Teacher(), 25, split="train", seed=0)
    assert np.array_equal(prefix.y, quads.y[:25]) and prefix.instructions == quads.instructions[:25]


def test_failure_rates_match_the_config(quads: QuadrupletSet) -> None:
    config = TeacherConfig()
    mistakes = [config.identity_drift_p, config.ignore_instruction_p, config.artefact_p]
    expected = [1 - sum(mistakes), *mistakes]
    rates = np.bincount(quads.failures, minlength=len(FAILURES)) / len(quads)
    np.testing.assert_allclose(rates, expected, atol=0.03)


def test_right_targets_render_the_instruction(world: World, quads: QuadrupletSet) -> None:
    assert set(quads.subject_ids) <= {s.id for s in world.subjects(split="train")}
    for i in rows_of(quads, "none")[:50]:
        subject = world.subject(int(quads.subject_ids[i]))
        context = context_of(world, subject.id, int(quads.context_ids[i]))
        assert np.array_equal(quads.y[i], right_render(world, quads, i))
        assert np.array_equal(quads.x[i], world.render(subject, None, int(quads.x_seeds[i])).image)
        assert quads.x_seeds[i] != quads.y_seeds[i]
        assert quads.instructions[i] == world.prompt(subject, context) and quads.classes[i] == subject.cls


def test_identity_drift_keeps_class_and_context_but_changes_details(world: World, quads: QuadrupletSet) -> None:
    changed = []
    for i in rows_of(quads, "identity_drift"):
        subject, drifted = world.subject(int(quads.subject_ids[i])), world.subject(int(quads.y_subject_ids[i]))
        assert drifted.id != subject.id and (drifted.cls, drifted.split) == (subject.cls, subject.split)
        assert quads.y_context_ids[i] == quads.context_ids[i]
        changed.append(sum(a != b for a, b in zip(subject.attrs, drifted.attrs)))
        if len(changed) <= 50:
            assert np.array_equal(quads.y[i], shown_render(world, quads, i))
            assert np.abs(quads.y[i].astype(int) - right_render(world, quads, i)).max() > 24  # visible
    assert np.mean(np.array(changed) == 1) > 0.3  # mostly subtle drift, but not only
    assert max(changed) >= 3


def test_ignored_instruction_keeps_subject_but_not_context(world: World, quads: QuadrupletSet) -> None:
    rows = rows_of(quads, "ignored_instruction")
    assert np.array_equal(quads.y_subject_ids[rows], quads.subject_ids[rows])
    assert not np.any(quads.y_context_ids[rows] == quads.context_ids[rows])
    assert 0.35 < np.mean(quads.y_context_ids[rows] == NEUTRAL) < 0.65  # neutral or another context
    for i in rows[:50]:
        assert np.array_equal(quads.y[i], shown_render(world, quads, i))


def test_artefacts_damage_the_right_render(world: World, quads: QuadrupletSet) -> None:
    rows = rows_of(quads, "artefacts")
    assert np.array_equal(quads.y_subject_ids[rows], quads.subject_ids[rows])
    assert np.array_equal(quads.y_context_ids[rows], quads.context_ids[rows])
    damage = [np.abs(quads.y[i].astype(int) - right_render(world, quads, i)).mean() for i in rows]
    assert min(damage) > 3.0  # mean change, in levels of 255


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        TeacherConfig(identity_drift_p=0.5, ignore_instruction_p=0.4, artefact_p=0.2)
    with pytest.raises(ValueError, match="seed"):
        TeacherConfig(seed=-1)


def test_cache_round_trips_and_is_keyed_by_config(world: World, tmp_path: Path) -> None:
    fresh = make_quadruplets(world, Teacher(), 30, split="eval", seed=3, cache_dir=tmp_path)
    (path,) = tmp_path.glob("quadruplets-eval-*.safetensors")
    cached = make_quadruplets(world, Teacher(), 30, split="eval", seed=3, cache_dir=tmp_path)
    for name, value in vars(fresh).items():
        loaded = getattr(cached, name)
        assert np.array_equal(loaded, value) if isinstance(value, np.ndarray) else loaded == value, name
    assert cached.y.dtype == np.uint8 and cached.failures.dtype == np.int64
    make_quadruplets(world, Teacher(TeacherConfig(artefact_p=0.2)), 30, split="eval", seed=3, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and path.is_file()
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_select_takes_rows_of_every_field(quads: QuadrupletSet) -> None:
    keep = np.zeros(len(quads), bool)
    keep[[2, 7]] = True
    part = quads.select(keep)
    assert len(part) == 2 and part.instructions == [quads.instructions[2], quads.instructions[7]]
    assert np.array_equal(part.y, quads.y[[2, 7]])
    assert part.failure_names() == [quads.failure_names()[i] for i in (2, 7)]


# --- the filter -----------------------------------------------------------------------------------


def scores(clip_sim, dino_sim, clip_null=(0.0,), dino_null=(0.0,)) -> FilterScores:
    return FilterScores(*(np.asarray(v, float) for v in (clip_sim, dino_sim, clip_null, dino_null)))


def test_apply_filter_needs_both_tests() -> None:
    mask = apply_filter(scores([0.35, 0.30, 0.29, 0.9], [0.7, 0.6, 0.9, 0.59]), FilterConfig(0.3, 0.6))
    assert mask.dtype == bool and mask.tolist() == [True, True, False, False]


def test_null_partners_share_the_group_and_differ_in_key() -> None:
    groups = np.array(["ball"] * 6 + ["man"] * 3 + ["cup"] * 2)
    keys = np.array([1, 1, 2, 3, 3, 3, 4, 5, 5, 6, 6])  # the two cups share a key: no partner
    rows, partners = _mismatched_partners(groups, keys, np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(9))
    assert np.all(groups[rows] == groups[partners]) and np.all(keys[rows] != keys[partners])
    rows, partners = _mismatched_partners(np.zeros(3000), np.arange(3000) % 3, np.random.default_rng(1))
    counts = np.bincount(partners[rows % 3 == 0] % 3, minlength=3)  # key-0 rows draw keys 1 and 2 evenly
    assert rows.size == 3000 and counts[0] == 0 and abs(counts[1] - counts[2]) < 0.15 * counts.sum()


def test_filter_scores_with_tiny_encoders(world: World, quads: QuadrupletSet) -> None:
    part = quads.select(slice(0, 64))
    clip = tiny_clip_encoder(image_size=16, tokenizer=build_tokenizer(world, for_clip=True), max_positions=32)
    dino = tiny_dino_encoder(image_size=16)
    result = filter_scores(part, clip, dino, batch_size=16)
    assert result.clip_sim.shape == result.dino_sim.shape == (64,)
    image, text = clip.image_embeds(part.y[5], normalize=True), clip.text_embeds(part.instructions[5], normalize=True)
    assert result.clip_sim[5] == pytest.approx(float((image * text).sum()), abs=1e-5)
    assert result.dino_sim[5] == pytest.approx(
        float(torch.cosine_similarity(dino.cls_embeds(part.x[5]), dino.cls_embeds(part.y[5])).item()), abs=1e-5
    )
    assert 0 < len(result.clip_null) <= 64 and 0 < len(result.dino_null) <= 64
    for values in vars(result).values():
        assert np.all(np.abs(values) <= 1 + 1e-6)
    again = filter_scores(part, clip, dino, seed=0)
    np.testing.assert_allclose(again.dino_null, result.dino_null, atol=1e-6)  # seeded nulls, whatever the batching

    calibration = calibrate_thresholds(result, part.failures)
    as_json = json.loads(json.dumps(calibration.to_dict()))
    assert as_json["filter"]["clip_threshold"] == calibration.filter.clip_threshold


# --- calibration ----------------------------------------------------------------------------------


def test_calibration_sets_thresholds_between_nulls_and_matches() -> None:
    rng = np.random.default_rng(0)
    codes = {name: i for i, name in enumerate(FAILURES)}
    failures = np.repeat([codes["none"], codes["identity_drift"], codes["ignored_instruction"]], [600, 200, 200])
    clip_sim = np.where(failures == codes["ignored_instruction"], 0.2, 0.8) + rng.normal(0, 0.05, failures.size)
    dino_sim = np.where(failures == codes["identity_drift"], 0.3, 0.8) + rng.normal(0, 0.05, failures.size)
    nulls = 0.2 + rng.normal(0, 0.05, 1000), 0.3 + rng.normal(0, 0.05, 1000)
    calibration = calibrate_thresholds(scores(clip_sim, dino_sim, *nulls), failures)

    assert 0.25 < calibration.filter.clip_threshold < 0.7 and 0.35 < calibration.filter.dino_threshold < 0.7
    assert calibration.filter.clip_threshold == pytest.approx(np.quantile(nulls[0], 0.95))  # no labels used
    rates = calibration.rejection_rates
    assert set(rates) == {"none", "identity_drift", "ignored_instruction"}  # modes absent from the data are left out
    assert rates["identity_drift"]["dino"] > 0.9 and rates["identity_drift"]["clip"] < 0.05
    assert rates["ignored_instruction"]["clip"] > 0.9 and rates["ignored_instruction"]["dino"] < 0.05
    assert rates["none"]["filter"] < 0.05 and calibration.precision > 0.95 and calibration.recall > 0.95
    assert calibration.kept_fraction == pytest.approx(0.6, abs=0.03)
    quantiles = calibration.score_quantiles["clip"]
    assert quantiles["ignored_instruction"]["q95"] < calibration.filter.clip_threshold < quantiles["none"]["q05"]
    assert calibration.null_quantiles["dino"]["q50"] == pytest.approx(0.3, abs=0.01)


def test_calibration_needs_null_pairs() -> None:
    with pytest.raises(ValueError, match="null"):
        calibrate_thresholds(scores([0.5], [0.5], [], []), np.array([0]))
