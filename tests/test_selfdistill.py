"""Table 3's data (paper 3.2-3.3): the review stage (D_human), self-distillation (D_self, D_union),
G trained on each, and the table with its training-data block and verdicts."""

import dataclasses
import json

import numpy as np
import pytest

from cafe_core.data.dataset import open_dataset
from cafe_core.data.quadruplets import write_dataset
from cafe_core.data.review import ReviewLog
from cafe_core.workbench.config import params_from_dict
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.sources import training_source
from cafe_core.workbench.stages.review import review_stage

from helpers import tiny_raw


def _teacher_project(tmp_path, n: int = 80, **review):
    """A project holding only a teacher dataset: the world's quadruplets, scored, half failing a test."""
    raw = tiny_raw()
    raw["review"].update(review)
    params = params_from_dict(raw)
    quads = training_source(params, tmp_path).quadruplets(n, seed=0)
    rng = np.random.default_rng(0)
    write_dataset(
        quads,
        ProjectPaths(tmp_path).dataset("teacher"),
        clip_score=rng.random(n),
        dino_score=rng.random(n),
        thresholds=(0.3, 0.3),
    )
    return params, quads


def test_the_simulated_review_decides_every_automatically_kept_row(tmp_path):
    params, quads = _teacher_project(tmp_path, error_rate=0.2, seconds_per_decision=26.0)
    teacher = open_dataset(tmp_path / "data/datasets/teacher")
    report = review_stage(params, tmp_path)
    human = open_dataset(tmp_path / "data/datasets/human")
    auto = np.flatnonzero(teacher.kept())
    assert report["reviewer"] == "simulated" and report["reviewed"] == len(auto) == len(human)
    assert human.column("id") == [teacher.column("id")[i] for i in auto]  # the kept rows, in order, whole
    np.testing.assert_array_equal(human.images("y"), teacher.images("y", auto))
    decisions = human.column("review")
    good = [quads.failure_names()[i] == "none" for i in auto]
    wrong = np.mean([(d == "accept") != g for d, g in zip(decisions, good, strict=True)])
    assert report["simulated_error_rate"] == pytest.approx(wrong) and 0 < wrong < 0.5
    assert report["accepted"] == decisions.count("accept") == human.kept().sum()
    assert report["review_seconds"] == pytest.approx(26.0 * len(auto))
    stats = json.loads((tmp_path / "results/datasets/human.json").read_text())
    assert stats["added_cost"]["seconds"] == pytest.approx(26.0 * len(auto))
    assert "simulated" in stats["added_cost"]["what"] and stats["stages"]["kept"] == report["accepted"]
    assert review_stage(params, tmp_path) == report  # a rerun decides the same


def test_a_reviewers_decisions_file_is_what_the_stage_reads(tmp_path):
    params, _ = _teacher_project(tmp_path, decisions="data/reviews/mine.jsonl")
    teacher = open_dataset(tmp_path / "data/datasets/teacher")
    ids = np.array(teacher.column("id"))[teacher.kept()]
    log = ReviewLog(tmp_path / "data/reviews/mine.jsonl")
    log.record(ids[0], "accept", reviewer="ana", seconds=4.0)
    log.record(ids[1], "reject", reviewer="ana", seconds=6.0)
    log.record(ids[2], "accept", reviewer="ana", seconds=5.0)
    log.undo(reviewer="ana")  # withdrawn: the row stays unreviewed
    report = review_stage(params, tmp_path)
    human = open_dataset(tmp_path / "data/datasets/human")
    assert report["reviewer"] == "people" and human.column("id") == list(ids[:2])
    assert human.column("review") == ["accept", "reject"] and human.kept().tolist() == [True, False]
    assert report["review_seconds"] == 15.0  # an undone decision's time was spent too
    with pytest.raises(FileNotFoundError, match="does not exist"):
        review_stage(
            params_from_dict({**tiny_raw(), "review": {**tiny_raw()["review"], "decisions": "no.jsonl"}}), tmp_path
        )


@pytest.mark.slow
def test_table_3_from_the_review_and_self_distillation(assistant_project):
    """Self-distillation makes every request's target once per training seed (a rerun makes none),
    the union lists both datasets, each G trains on its own, and table 3 says what each had."""
    from cafe_core.workbench.stages.ablation import ablation_table
    from cafe_core.workbench.stages.evaluate import evaluate_variant
    from cafe_core.workbench.stages.self_distill import self_distill_stage
    from cafe_core.workbench.stages.train_generator import train_generator_stage

    params, root, _ = assistant_project
    params = dataclasses.replace(params, seeds=params.seeds[:1])  # seed loops: test_assistant_stage's tables
    paths = ProjectPaths(root)
    review_stage(params, root)
    made = self_distill_stage(params, root)
    teacher = open_dataset(paths.dataset("teacher"))
    for seed in params.seeds:
        own = open_dataset(paths.dataset("selfdistill") / f"seed-{seed}")
        assert made[seed]["rows"] == len(own) == params.selfdistill.requests
        row = own.row(0)
        assert row["teacher"] == "self-distill" and f"training seed {seed}" in row["teacher_version"]
        assert row["clip_score"] is not None and row["dino_pass"] is not None and row["truth"] is None
        assert own.column("instruction") == teacher.column("instruction")[: len(own)]  # the teacher's requests
        union = open_dataset(paths.dataset("union") / f"seed-{seed}")
        assert len(union) == len(teacher) + len(own)
        assert union.column("id") == teacher.column("id") + own.column("id")
        assert made[seed]["generation_seconds"] > 0
    first = open_dataset(paths.dataset("selfdistill") / f"seed-{params.seeds[0]}").images("y")
    again = self_distill_stage(params, root)
    assert {s: r["rows"] for s, r in again.items()} == {s: r["rows"] for s, r in made.items()}
    np.testing.assert_array_equal(open_dataset(paths.dataset("selfdistill") / "seed-0").images("y"), first)

    for name in ("human", "selfdistill", "union", "continued"):
        train_generator_stage(params, root, name)
    for variant in params.ablations["ablation_selfdistill"]:  # the D_auto row is the full system, `both`
        evaluate_variant(params, root, variant)
    ablation_table(params, root, "ablation_selfdistill")
    folder = paths.ablation("ablation_selfdistill")
    datasets = {d["variant"]: d for d in json.loads((folder / "datasets.json").read_text())}
    assert set(datasets) == {"both", "continued", "human", "selfdistill", "union"}
    assert datasets["human"]["init"] is None and datasets["human"]["steps"] == params.generator.steps
    assert datasets["union"]["init"] == datasets["continued"]["init"] == "main"  # paper 3.3: fine-tuned
    assert datasets["continued"]["dataset"] == "teacher"
    assert datasets["both"]["dataset"] == "teacher" and datasets["both"]["added_seconds"] == 0
    assert datasets["union"]["samples"] == datasets["both"]["samples"] + datasets["selfdistill"]["samples"]
    assert datasets["selfdistill"]["added_seconds"] == datasets["union"]["added_seconds"] > 0
    verdicts = json.loads((folder / "verdicts.json").read_text())
    assert len(verdicts) == 6 and {v["verdict"] for v in verdicts} <= {"holds", "reversed", "within_noise"}
    controls = json.loads((folder / "controls.json").read_text())  # the fine-tuned rows against `continued`
    assert [(c["higher"], c["lower"]) for c in controls if c["metric"] == "ID"] == [
        ("continued", "both"),
        ("selfdistill", "continued"),
        ("union", "continued"),
    ]
    assert all(c["seeds"] == len(params.seeds) and c["verdict"] != "not_measured" for c in controls)
    table = (folder / "table.md").read_text()
    assert "| human | `human` | from the base model," in table and "simulated reviewer seconds" in table
    assert "| union | `union` | G `main` fine-tuned, 2 steps |" in table
    claims, controls_md = table.index("| claim (paper) |"), table.index("| control (not a claim of the paper) |")
    assert claims < controls_md < table.index("| row | trained on |")
    assert "| fine-tuning on D_union gives a higher ID than on D_auto | ID | face |" in table
