"""`dvc repro pretrain_world`: the stage runs its notebook through papermill, a second run is a no-op."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import tiny_raw

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
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("CAFE_PROJECT_ROOT", str(project))
    first = run([DVC, "repro", "pretrain_world"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    metrics = json.loads((project / "results/world/metrics.json").read_text())
    assert {"value", "chance"} <= set(metrics["clip_caption_retrieval_top1"])
    assert (project / "runs/pretrain_world.ipynb").is_file()  # the executed notebook, with outputs

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["world_pretraining"], output_format="list")
    assert len(runs) == 1
    assert "clip_caption_retrieval_top1/value" in runs[0].data.metrics
    artifacts = [a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id)]
    assert "t2i_samples.png" in artifacts

    second = run([DVC, "repro", "pretrain_world"], project)
    assert second.returncode == 0, second.stderr
    assert "didn't change, skipping" in second.stdout
    assert len(mlflow.search_runs(experiment_names=["world_pretraining"], output_format="list")) == 1
