"""`dvc repro pretrain_world`: the stage runs its notebook through papermill, a second run is a no-op."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import git_commit, tiny_raw

pytestmark = pytest.mark.slow  # end-to-end stages at tiny sizes

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def run(cmd, cwd):
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A throwaway copy of the project (tiny params) in its own git + DVC repo."""
    assert DVC is not None, "dvc is not installed: run the tests through bin/with-env"
    root = tmp_path_factory.mktemp("dvcproject")
    for item in ("cafe_core", "notebooks"):
        shutil.copytree(ROOT / item, root / item, ignore=shutil.ignore_patterns("__pycache__"))
    for item in ("dvc.yaml", "pyproject.toml", ".dvcignore"):
        shutil.copy(ROOT / item, root / item)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_raw()))
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "config", "core.analytics", "false"]):
        assert run(cmd, root).returncode == 0
    return root


def test_dvc_repro_runs_notebook_and_writes_metrics(project, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the project's own store, found through DVC_ROOT
    first = run([DVC, "repro", "pretrain_world"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = json.loads((project / "results/world/metrics.json").read_text())
    assert {"value", "chance"} <= set(metrics["clip_caption_retrieval_top1"])
    assert (project / "runs/pretrain_world.ipynb").is_file()  # the executed notebook, with outputs

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = {
        r.data.tags["cafe.role"]: r for r in mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")
    }
    assert set(runs) == {"pipeline", "stage"}
    stage = runs["stage"]
    assert stage.info.run_name == "pretrain_world" and stage.data.tags["cafe.stage"] == "pretrain_world"
    assert stage.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    assert stage.info.status == "FINISHED" and "clip_caption_retrieval_top1/value" in stage.data.metrics
    assert stage.data.tags["mlflow.source.name"] == "notebooks/pretrain_world.ipynb"
    assert stage.data.metrics["stage_seconds"] > 0
    client = mlflow.MlflowClient()
    logged = {a.path for folder in ("", "notebook", "images") for a in client.list_artifacts(stage.info.run_id, folder)}
    assert "notebook/pretrain_world.ipynb" in logged  # the executed notebook, attached to its run
    assert any(p.startswith("images/t2i_samples") for p in logged)

    second = run([DVC, "repro", "pretrain_world"], project)
    assert second.returncode == 0, second.stderr
    assert "didn't change, skipping" in second.stdout
    assert len(mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")) == 2


def test_a_queued_experiment_runs_in_its_own_workspace_and_logs_to_the_one_store(project, monkeypatch):
    """`dvc exp run --queue -S ...` + `dvc queue start`: the main workspace is untouched, the run is in
    the project's store tagged with the experiment, and `dvc exp show` has its scores as columns."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert run([DVC, "repro", "pretrain_world"], project).returncode == 0
    git_commit(project)
    before = (project / "results/world/metrics.json").read_text(), (project / "params.yaml").read_text()
    queued = run(
        [DVC, "exp", "run", "--queue", "-n", "fewer-pairs", "-S", "world_eval.face_pairs=20", "pretrain_world"], project
    )
    assert queued.returncode == 0, queued.stdout + queued.stderr
    started = run([DVC, "queue", "start"], project)
    assert started.returncode == 0, started.stderr
    import time

    for _ in range(240):
        status = run([DVC, "queue", "status"], project).stdout
        if "Success" in status or "Failed" in status:
            break
        time.sleep(1)
    assert "Success" in status, status + run([DVC, "queue", "logs", "fewer-pairs"], project).stdout
    run([DVC, "queue", "stop"], project)
    after = (project / "results/world/metrics.json").read_text(), (project / "params.yaml").read_text()
    assert after == before  # the workspace is untouched
    shown = json.loads(run([DVC, "exp", "show", "--json"], project).stdout)
    names = [e.get("name") for rev in shown for e in (rev.get("experiments") or []) for e in e.get("revs", [])]
    assert "fewer-pairs" in names, shown

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["cafe-mini"], output_format="list")
    exp_runs = [r for r in runs if r.data.tags.get("cafe.dvc_experiment") == "fewer-pairs"]
    assert {r.data.tags["cafe.role"] for r in exp_runs} == {"pipeline", "stage"}
    assert all(r.info.status == "FINISHED" for r in exp_runs)
