"""The fidelity probe (CAFE-mini's judge of attributes and context) and the figures built on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cafe_core.benchmarks.metrics import CONTEXT, fidelity_figures
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.stages.fidelity_report import fidelity_report
from cafe_core.world import World, WorldConfig
from cafe_core.world.datasets import render_set
from cafe_core.world.fidelity import (
    ATTRIBUTES,
    PHOTO,
    FidelityProbe,
    _groups_from_labels,
    _targets,
    hidden_groups,
    label_groups,
    truth,
)


def test_label_groups_cover_every_attribute_and_context_and_read_back_from_labels(world):
    groups = label_groups(world)
    for domain in ("object", "face"):
        names = [g.name for g in groups if g.domain == domain]
        assert names == [*ATTRIBUTES[domain], CONTEXT]
        (context,) = [g for g in groups if g.domain == domain and g.name == CONTEXT]
        assert context.values == (PHOTO, *(c.name for c in world.contexts(domain)))
    assert [g.start for g in groups[1:]] == [g.stop for g in groups[:-1]]  # contiguous slices
    labels = {i: f"{g.domain}/{g.name}={v}" for g in groups for i, v in enumerate(g.values, g.start)}
    assert _groups_from_labels(labels) == groups
    assert _groups_from_labels({str(k): v for k, v in labels.items()}) == groups  # as config.json stores them


def test_contexts_that_override_a_detail_are_not_asked_about_it(world):
    ball = next(s for s in world.subjects("object") if s.cls == "ball")
    assert "colour" in hidden_groups(world, ball, world.context("object", "red"))
    assert "class" in hidden_groups(world, ball, world.context("object", "cube_shaped"))
    assert hidden_groups(world, ball, world.context("object", "beach")) == frozenset()
    assert hidden_groups(world, ball, None) == frozenset()
    bald = next(s for s in world.subjects("face") if s.attr("hair_style") == "bald")
    assert {"hair_colour", "hair_style"} <= hidden_groups(world, bald, world.context("face", "red_hair"))


def test_training_targets_ask_only_what_the_image_shows(world):
    groups = label_groups(world)
    data = render_set(world, 200, split="train", seed=3)
    targets = _targets(world, data, groups).numpy()
    for row in range(len(data)):
        subject = world.subject(int(data.subject_ids[row]))
        cid = int(data.context_ids[row])
        context = None if cid < 0 else world.contexts(subject.domain)[cid]
        for j, g in enumerate(groups):
            if g.domain != subject.domain or g.name in hidden_groups(world, subject, context):
                assert targets[row, j] == -100
            elif g.name == CONTEXT:
                assert g.values[targets[row, j]] == (PHOTO if context is None else context.name)
            else:
                assert g.values[targets[row, j]] == truth(subject, g)


def test_judge_marks_each_attribute_and_the_context(world, monkeypatch):
    subject = next(s for s in world.subjects("object", "eval") if s.attr("pattern") != "plain")
    contexts = [world.context("object", "beach"), world.context("object", "red")]
    probe = FidelityProbe.__new__(FidelityProbe)
    probe.groups = label_groups(world)
    answers = {g.name: [truth(subject, g)] * 2 for g in probe.domain_groups("object") if g.name != CONTEXT}
    answers["colour"] = [answers["colour"][0], "teal" if subject.attr("colour") != "teal" else "red"]
    answers["pattern"] = ["plain", subject.attr("pattern")]  # wrong pattern on the beach
    answers[CONTEXT] = ["beach", "snow"]  # the red one is drawn in the wrong context
    monkeypatch.setattr(probe, "predict", lambda images, domain: answers)
    first, second = probe.judge(world, subject, contexts, np.zeros((2, 16, 16, 3), np.uint8))
    assert first == {"class": True, "colour": True, "pattern": False, "pattern_colour": True, CONTEXT: True}
    assert second == {"class": True, "colour": None, "pattern": True, "pattern_colour": True, CONTEXT: False}


def test_fidelity_figures_count_only_judged_attributes():
    verdicts = [
        {"class": True, "colour": True, "pattern": False, CONTEXT: True},
        {"class": True, "colour": None, "pattern": True, CONTEXT: False},
    ]
    figures = fidelity_figures(verdicts)
    assert figures["attributes"] == pytest.approx(4 / 5)
    assert figures["all_attributes"] == pytest.approx(1 / 2)  # the second image: every judged one right
    assert figures["context"] == pytest.approx(1 / 2)
    assert figures["attribute.colour"] == 1.0 and figures["attribute.pattern"] == 0.5
    with pytest.raises(ValueError, match="no verdicts"):
        fidelity_figures([])


@pytest.mark.slow  # pretrains the tiny world and its probe
def test_probe_stage_saves_a_probe_that_describes_itself(tiny_world):
    params, root = tiny_world
    probe = FidelityProbe.from_pretrained(ProjectPaths(root).foundation_model("fidelity_probe"))
    assert probe.groups == label_groups(World(WorldConfig(**vars(params.world))))
    accuracy = json.loads((root / "results/fidelity/probe.json").read_text())
    for domain in ("object", "face"):
        figures = accuracy[domain]
        assert figures["images"] > 0
        assert set(figures) == {"images", *ATTRIBUTES[domain], CONTEXT, "all_attributes"}
        assert all(0.0 <= figures[k] <= 1.0 for k in figures if k != "images")
    images = np.zeros((3, 16, 16, 3), np.uint8)
    predicted = probe.predict(images, "face")
    assert set(predicted) == {*ATTRIBUTES["face"], CONTEXT} and all(len(v) == 3 for v in predicted.values())
    with pytest.raises(ValueError, match=r"uint8 \(N, 16, 16, 3\)"):
        probe.predict(np.zeros((3, 8, 8, 3), np.uint8), "face")
    with pytest.raises(FileNotFoundError, match="dvc repro fidelity_probe"):
        FidelityProbe.from_pretrained(root / "nowhere")


@pytest.mark.slow  # trains G and the assistant, evaluates the full system
def test_fidelity_report_sets_the_system_beside_true_renders(assistant_project):
    from cafe_core.workbench.results import read_subject_scores
    from cafe_core.workbench.stages.evaluate import evaluate_variant

    params, root, _ = assistant_project
    system = params.fidelity.variant
    for variant in (system, "real_images"):
        result = evaluate_variant(params, root, variant)
        assert {"attributes", "all_attributes", "context"} <= set(result["object"]) & set(result["face"])
    subjects = read_subject_scores(root, system)  # one row per training seed and subject
    assert len(subjects) == len(params.seeds) * (params.evaluation.object_subjects + params.evaluation.face_subjects)
    assert sorted({r["seed"] for r in subjects}) == params.seeds
    report = fidelity_report(params, root)
    assert report == json.loads((root / "results/fidelity/metrics.json").read_text())
    for domain, identity in (("object", None), ("face", "ID")):
        figures = report[domain]
        expected = {"attribute_accuracy", "all_attributes", "context_accuracy", "CLIP-T", "per_attribute"}
        words = {"reason_fits_context", "drawn_context_is_named", "ambiguous_drawn_context_is_named"}
        assert set(figures) == expected | words | ({identity} if identity else set())
        for name, f in figures.items():
            if name == "per_attribute":
                assert set(f) <= set(ATTRIBUTES[domain])
            elif name in words:
                assert 0.0 <= f["value"] <= 1.0
            else:
                low, high = f["ci95"]
                assert low <= f["value"] <= high and f["ceiling"] is not None
                assert f["half_width_from_seeds"] >= 0 and f["half_width_from_subjects"] >= 0
    assert report["system"]["variant"] == system
    assert report["system"]["assistant"] == params.variants[system].assistant
    assert report["system"]["training_seeds"] == params.seeds


def test_a_reason_fits_only_the_contexts_its_wish_leads_to(world):
    from cafe_core.world.quality import _reason_fits

    rng = np.random.default_rng(0)
    for subject in (world.subjects("object")[0], world.subjects("face")[0]):
        domain = subject.domain
        for _ in range(10):
            turn = world.turn(subject, "ambiguous", rng)
            assert _reason_fits(world, domain, turn.response, turn.context)  # the world's own answers fit
            wish = next(w for w in world.ambiguous_requests(domain) if w.reason in turn.response)
            other = next(w for w in world.ambiguous_requests(domain) if turn.context.name not in w.contexts)
            borrowed = turn.response.replace(wish.reason, other.reason)
            assert not _reason_fits(world, domain, borrowed, turn.context)
        assert not _reason_fits(world, domain, "Here it is.", None)
