"""The assistant's stages at tiny sizes: the lambda grid chosen on validation, a rerun that trains
nothing, and table 4's evaluation (assistant variants, quality figures and the true-embedding row)."""

import csv
import json

import mlflow
import pytest

from cafe_core.workbench import tracking
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.results import read_quality
from cafe_core.workbench.stages.ablation import ablation_table
from cafe_core.workbench.stages.evaluate import evaluate_variant
from cafe_core.workbench.stages.train_assistant import train_assistant_stage

from helpers import spy_side_by_side

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes


def test_lambda_is_chosen_on_validation_and_published(assistant_project):
    params, root, selection = assistant_project
    first, later = params.seeds[0], params.seeds[1]
    grid = {r["lambda"]: r for r in selection["seeds"][str(first)]["grid"]}
    assert set(grid) == {0.5, 2.0}  # the whole grid on the first training seed
    best = max(grid.values(), key=lambda r: r["score"])
    assert selection["chosen_lambda"] == best["lambda"]
    for r in grid.values():
        assert -1 <= r["score"] <= 1 and -1 <= r["cosine"] <= 1 and 0 <= r["context_accuracy"] <= 1
    inherited = selection["seeds"][str(later)]
    assert [r["lambda"] for r in inherited["grid"]] == [best["lambda"]] == [inherited["chosen_lambda"]]
    for seed in params.seeds:
        out = ProjectPaths(root).assistant("mse", seed)
        chosen = out / "grid" / f"lambda-{best['lambda']:g}"
        assert (out / "assistant.safetensors").read_bytes() == (chosen / "assistant.safetensors").read_bytes()
        assert json.loads((out / "assistant_config.json").read_text())["lambda_"] == best["lambda"]
    one, two = (ProjectPaths(root).assistant("mse", s) / "assistant.safetensors" for s in params.seeds)
    assert one.read_bytes() != two.read_bytes()  # another training seed, another model
    assert json.loads((root / "results/assistant/mse.json").read_text())["chosen_lambda"] == best["lambda"]
    assert not any((root / "models/assistant/.checkpoints").glob("mse-*"))  # finished members leave none
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow-assistant.db'}")
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")}
    stage = runs["train_assistant@mse"]
    assert stage.data.metrics["chosen_lambda"] == best["lambda"]
    members = [f"seed-{first}/lambda-0.5", f"seed-{first}/lambda-2", f"seed-{later}/lambda-{best['lambda']:g}"]
    for name in members:  # one nested run per trained member, with its model logged
        member = runs[name]
        assert member.data.tags["mlflow.parentRunId"] == stage.info.run_id
        assert "val/score" in member.data.metrics
        logged = [a.path for a in mlflow.MlflowClient().list_artifacts(member.info.run_id, "assistant")]
        assert "assistant/assistant.safetensors" in logged
    assert all(r.info.status == "FINISHED" for r in runs.values())


def test_rerun_trains_nothing(assistant_project, monkeypatch):
    params, root, selection = assistant_project

    def fail(*args, **kwargs):
        raise AssertionError("an up-to-date assistant was trained again")

    monkeypatch.setattr("cafe_core.workbench.stages.train_assistant.train_assistant", fail)
    assert train_assistant_stage(params, root, "mse")["chosen_lambda"] == selection["chosen_lambda"]


def test_assistant_variants_quality_figures_and_table(assistant_project):
    params, root, _ = assistant_project
    train_assistant_stage(params, root, "neg_cosine")
    for variant in ("both", "neg_cosine", "gt_embedding", "real_images"):
        result = evaluate_variant(params, root, variant)
        assert isinstance(result["object"]["DINO"], float) and isinstance(result["face"]["ID"], float)
    quality = read_quality(root, "both")  # averaged over the training seeds
    for domain in ("object", "face"):
        q = quality[domain]
        assert q["seeds"] == len(params.seeds)
        assert q["turns"] == params.evaluation.prompts * params.evaluation.images_per_prompt * 2
        assert -1 <= q["cosine"] <= 1
        for key in (
            "names_class_and_context",
            "image_matches_response",
            "image_matches_response_ceiling",
            "ambiguous_valid_with_reason",
            "ambiguous_names_class",
            "ambiguous_reason_fits_context",
            "second_turn_names_context",
            "drawn_context_is_named",
            "ambiguous_drawn_context_is_named",
        ):
            assert 0 <= q[key] <= 1
        for key in (
            "second_turn_cosine",
            "same_request_alone_cosine",
            "second_turn_identity",
            "same_request_alone_identity",
        ):
            assert -1 <= q[key] <= 1
    assert not (root / "results/variants/gt_embedding/quality.json").exists()
    rows = ablation_table(params, root, "ablation_loss")
    with open(root / "results/ablation_loss/table.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == [r.variant for r in rows]
    assert [r["variant"] for r in table[::2]] == ["both", "neg_cosine", "gt_embedding", "real_images"]
    assert [r["seeds"] for r in table[::2]] == [str(len(params.seeds))] * 3 + ["0"]  # the true renders train nothing
    verdicts = json.loads((root / "results/ablation_loss/verdicts.json").read_text())
    assert [(v["higher"], v["lower"], v["metric"], v["seeds"]) for v in verdicts] == [
        ("both", "neg_cosine", "ID", len(params.seeds)),
        ("both", "neg_cosine", "CLIP-T", len(params.seeds)),
    ]
    intervals = json.loads((root / "results/ablation_loss/intervals.json").read_text())
    both_face = next(r for r in intervals if r["variant"] == "both" and r["domain"] == "face")
    assert set(both_face["intervals"]["ID"]) >= {"half_width_from_seeds", "half_width_from_subjects", "ci95"}
    assert read_quality(root, "neg_cosine") is not None
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")}
    assert runs["evaluate@both"].data.params["assistant"] == "mse"
    assert "object/quality/cosine" in runs["evaluate@both"].data.metrics


def test_seeds_of_a_one_lambda_grid_train_side_by_side(assistant_project, tmp_path, monkeypatch):
    """A grid of one lambda leaves nothing for the first seed to choose, so with
    ``compute.seed_processes: 2`` every seed trains at once, a process each: each seed is published,
    its MLflow run nested in the stage's, which counts both; a rerun finds them trained."""
    import dataclasses
    import shutil

    from mlflow import MlflowClient

    params, root, _ = assistant_project
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("assistant", "*.db", "mlruns"))
    side = dataclasses.replace(params, compute=dataclasses.replace(params.compute, seed_processes=2))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(tracking.RUN_ENV, raising=False)
    (lam,) = params.assistants["neg_cosine"].lambdas
    handed = spy_side_by_side(monkeypatch, "cafe_core.workbench.stages.train_assistant")
    selection = train_assistant_stage(side, copy, "neg_cosine")
    assert handed == [params.seeds]
    assert sorted(selection["seeds"]) == [str(s) for s in params.seeds]
    assert {entry["chosen_lambda"] for entry in selection["seeds"].values()} == {lam}
    for seed in params.seeds:
        assert (ProjectPaths(copy).assistant("neg_cosine", seed) / "assistant.safetensors").is_file()
    assert train_assistant_stage(side, copy, "neg_cosine")["seeds"] == selection["seeds"]  # found trained
    assert handed == [params.seeds]  # nothing left for a worker
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(tracking.experiment_name(params)).experiment_id
    stage = "tags.`cafe.stage` = 'train_assistant@neg_cosine' and tags.`cafe.role` = 'stage'"
    first, again = client.search_runs([exp], stage, order_by=["start_time"])
    assert (first.data.tags["cafe.built"], again.data.tags["cafe.reused"]) == ("2", "2")
    members = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{first.info.run_id}'", order_by=["run_name"])
    assert [r.info.run_name for r in members] == [f"seed-{s}/lambda-{lam:g}" for s in params.seeds]
