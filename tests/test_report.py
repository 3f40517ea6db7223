"""`results/report.md`: every table with its verdicts and a sample grid, the fidelity figures, stage times."""

import json
import os
import shutil

import numpy as np
import pytest
import yaml
from PIL import Image

from cafe_core.workbench import tracking
from cafe_core.workbench.config import params_from_dict
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.stages.report import write_report

from helpers import tiny_raw


def _written_results(root):
    """What the table, evaluation and fidelity stages leave behind, in miniature."""
    params = params_from_dict(tiny_raw())
    paths = ProjectPaths(root)
    for target, rows in params.ablations.items():
        folder = paths.ablation(target)
        folder.mkdir(parents=True)
        (folder / "table.md").write_text(f"| variant |\n| --- |\n| {rows[0]} |\n\n| claim (paper) | verdict |\n")
        for variant in rows:
            samples = paths.variant_samples(variant)
            samples.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(samples / "face.png")
    paths.fidelity_results.mkdir(parents=True)
    figures = {"face": {"ID": {"value": 0.4, "ceiling": 0.77, "ci95": [0.3, 0.5]}}, "system": {"assistant": "mse"}}
    (paths.fidelity_results / "metrics.json").write_text(json.dumps(figures))
    return params


def _dvc_project(root, project_root) -> None:
    """The project's ``dvc.yaml`` in a DVC repository at ``root``, over the tiny params."""
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True)
    shutil.copy(project_root / "dvc.yaml", root / "dvc.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))


def test_report_holds_every_table_its_grid_the_fidelity_figures_and_stage_times(tmp_path, project_root):
    _dvc_project(tmp_path, project_root)
    params = _written_results(tmp_path)
    text = write_report(params, tmp_path).read_text()
    for target, rows in params.ablations.items():
        assert f"(`{target}`)" in text and f"| {rows[0]} |" in text
        assert f"![{target} samples](report/{target}.png)" in text
        assert (tmp_path / f"results/report/{target}.png").is_file()
    assert "| face | ID | 0.400 | [0.300, 0.500] | 0.770 |" in text
    assert "No stage run with a recorded time" in text

    run = tracking.open_stage_run("train_generator@main", params, tmp_path)
    tracking.close_stage_run(run, "FINISHED", tmp_path, seconds=90.0)
    again = tracking.open_stage_run("evaluate@both", params, tmp_path)
    tracking.close_stage_run(again, "KILLED", tmp_path, seconds=30.0)  # killed: not a time the stage took
    gone = tracking.open_stage_run("evaluate_assistant@mse", params, tmp_path)  # a stage dvc.yaml no longer has
    tracking.close_stage_run(gone, "FINISHED", tmp_path, seconds=60.0)
    text = write_report(params, tmp_path).read_text()
    assert "| train_generator@main | 1.5 | 1 | 1 |" in text
    assert "evaluate@both" not in text and "evaluate_assistant" not in text


def _stage_run(params, root, stage, seconds, built=None, reused=0):
    """A finished stage run that took ``seconds`` and, if ``built`` is given, counted its work."""
    import time

    import mlflow

    time.sleep(0.01)  # runs are ordered by their start time, in milliseconds
    run = tracking.open_stage_run(stage, params, root)
    if built is not None:
        with mlflow.start_run(run_id=run):
            for _ in range(built):
                tracking.record_work(built=True)
            for _ in range(reused):
                tracking.record_work(built=False)
    tracking.close_stage_run(run, "FINISHED", root, seconds=seconds)


def test_stage_times_count_the_runs_that_built_the_outputs(tmp_path, project_root):
    """A preset's run (seed 0), the full run that added seeds 1 and 2, then a rerun that found
    everything up to date: the stage took the first two."""
    from dvc.repo import Repo

    from cafe_core.workbench.stages.report import pipeline_stages, stage_times

    Repo.init(str(tmp_path), no_scm=True)
    shutil.copy(project_root / "dvc.yaml", tmp_path / "dvc.yaml")
    raw = tiny_raw()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = params_from_dict(raw)
    stages = pipeline_stages(tmp_path)
    assert "pretrain_world" in stages and "report" in stages
    assert {f"train_generator@{g}" for g in raw["generators"]} <= set(stages)
    assert {f"finetune_generator@{g}" for g in raw["finetuned"]} <= set(stages)
    _stage_run(params, tmp_path, "train_generator@main", 600.0, built=1)  # superseded by the next from scratch
    _stage_run(params, tmp_path, "train_generator@main", 300.0, built=1)
    _stage_run(params, tmp_path, "train_generator@main", 540.0, built=2, reused=1)
    _stage_run(params, tmp_path, "train_generator@main", 5.0, built=0, reused=3)
    _stage_run(params, tmp_path, "report", 3.0)  # counts no work: its newest run
    times = stage_times(params, tmp_path)
    assert times["train_generator@main"]["seconds"] == 840.0 and times["train_generator@main"]["runs"] == 2
    assert times["report"]["seconds"] == 3.0
    assert times["report"]["machine"] == tracking.machine()  # the CPU: times from two CPUs differ 1.5 to 2x
    assert f"{os.cpu_count()} CPUs" in tracking.machine()


def test_report_says_which_table_is_missing(tmp_path):
    params = _written_results(tmp_path)
    (ProjectPaths(tmp_path).ablation("ablation_loss") / "table.md").unlink()
    with pytest.raises(FileNotFoundError, match="dvc repro ablation_loss"):
        write_report(params, tmp_path)


def _stopped_run(params, root, stage, seconds):
    """A stage run stopped after ``seconds``, on code state that a later commit replaced (so the
    next run of the stage is a run of its own, not this one continued)."""
    import time

    from mlflow import MlflowClient

    time.sleep(0.01)
    run = tracking.open_stage_run(stage, params, root)
    tracking.close_stage_run(run, "KILLED", root, seconds=seconds)
    MlflowClient(tracking.tracking_uri(root)).set_tag(run, "cafe.pipeline", "an earlier commit's")


def test_stage_times_count_a_stopped_attempt_that_the_finished_run_resumed(tmp_path, project_root):
    """A stage stopped before a commit and resumed after it took both runs; one stopped before the
    stage last finished, or whose work the finished run rebuilt from scratch, took nothing of it."""
    from cafe_core.workbench.stages.report import stage_times

    _dvc_project(tmp_path, project_root)
    params = params_from_dict(tiny_raw())
    _stopped_run(params, tmp_path, "self_distill", 100.0)  # before the stage last finished: superseded
    _stage_run(params, tmp_path, "self_distill", 50.0)
    _stopped_run(params, tmp_path, "self_distill", 1400.0)  # its shards are resumed by the next run
    _stage_run(params, tmp_path, "self_distill", 560.0)  # counts no work: its newest run
    _stopped_run(params, tmp_path, "train_generator@main", 200.0)  # the seed it finished is reused
    _stage_run(params, tmp_path, "train_generator@main", 400.0, built=2, reused=1)
    _stopped_run(params, tmp_path, "train_generator@human", 200.0)  # nothing of it was reused
    _stage_run(params, tmp_path, "train_generator@human", 900.0, built=3)
    _stopped_run(params, tmp_path, "train_generator@human", 70.0)  # after the outputs were built
    times = stage_times(params, tmp_path)
    assert times["self_distill"]["seconds"] == 1960.0 and times["self_distill"]["runs"] == 2
    assert times["train_generator@main"]["seconds"] == 600.0 and times["train_generator@main"]["attempts"] == 2
    assert times["train_generator@human"]["seconds"] == 900.0 and times["train_generator@human"]["runs"] == 1
