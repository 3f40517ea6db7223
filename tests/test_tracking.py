"""MLflow as the workbench uses it: lineage tags, a pipeline run over stage runs, resumed and dead runs,
and parallel writers that lose nothing."""

import multiprocessing
import os
import subprocess
import sys

import mlflow
import pytest

from cafe_core.workbench import tracking
from cafe_core.workbench.config import params_from_dict

from helpers import git_commit, tiny_raw


@pytest.fixture
def params():
    return params_from_dict(tiny_raw())


def _runs(uri, experiment="cafe-mini"):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def _open_and_log(args):
    uri, root, index = args
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from cafe_core.workbench import tracking
    from cafe_core.workbench.config import params_from_dict

    from helpers import tiny_raw

    with tracking.start_run(f"writer-{index}", params_from_dict(tiny_raw()), root=root):
        tracking.log_metrics({"index": index})


def _four_writers(uri, root):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.map(_open_and_log, [(uri, str(root), i) for i in range(4)])


@pytest.mark.slow  # four processes, each importing MLflow
def test_four_writers_on_a_fresh_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    _four_writers(uri, tmp_path)
    runs = [r for r in _runs(uri) if r.data.tags["cafe.role"] == "stage"]
    assert sorted(r.data.metrics["index"] for r in runs) == [0, 1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in runs)
    pipelines = [r for r in _runs(uri) if r.data.tags["cafe.role"] == "pipeline"]
    assert len(pipelines) == 1 and {r.data.tags["mlflow.parentRunId"] for r in runs} == {pipelines[0].info.run_id}


@pytest.mark.slow  # four processes, each importing MLflow
def test_four_writers_creating_an_experiment_on_an_existing_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'existing.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("something-else")
    _four_writers(uri, tmp_path)
    assert sorted(r.data.metrics["index"] for r in _runs(uri) if "index" in r.data.metrics) == [0, 1, 2, 3]


def test_runs_carry_lineage_and_open_in_the_training_view(tmp_path, params, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    head = git_commit(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "evaluate@both")
    monkeypatch.setenv("DVC_EXP_NAME", "sweep-1")
    with tracking.start_run("evaluate@both", params, root=tmp_path):
        tracking.log_metrics({"object/CLIP-T": 0.5})
    (run,) = [r for r in _runs(tracking.tracking_uri()) if r.data.tags["cafe.role"] == "stage"]
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == head and tags["cafe.git_dirty"] == "false"
    assert tags["cafe.stage"] == "evaluate@both" and tags["cafe.dvc_experiment"] == "sweep-1"
    assert tags["cafe.profile"] == "mini" and tags["cafe.seed"] == "0"
    exp = mlflow.get_experiment_by_name("cafe-mini")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (tmp_path / "params.yaml").write_text("seed: 1\n")  # an uncommitted change is another pipeline state
    assert tracking.code_state(tmp_path)["key"] != tags["cafe.pipeline"]
    assert tracking.code_state(tmp_path)["dirty"] == "true"


def test_a_stage_handed_a_pipeline_run_that_lost_the_race_closes_onto_the_kept_one(tmp_path, params):
    """On a server store two writers can each make the pipeline run; the later-stamped one is
    deleted, maybe after another writer was handed it (CI saw the close fail on the deleted run)."""
    run_id = tracking.open_stage_run("evaluate@both", params, tmp_path)
    client = mlflow.MlflowClient(tracking.tracking_uri(tmp_path))
    run = client.get_run(run_id)
    kept = run.data.tags["mlflow.parentRunId"]
    pipeline_tags = client.get_run(kept).data.tags
    lost = client.create_run(run.info.experiment_id, tags=pipeline_tags).info.run_id
    client.set_tag(run_id, "mlflow.parentRunId", lost)
    client.delete_run(lost)
    tracking.close_stage_run(run_id, "FINISHED", tmp_path)
    assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == kept
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_pipeline_run_being_made_by_another_writer_is_not_marked_dead(tmp_path, params):
    """MLflow makes every run RUNNING; a pipeline run stays so until its writer ends (or deletes)
    it. Another writer's sweep of dead runs marked it KILLED, and failed when it had been deleted
    (CI saw this with four writers on a server store)."""
    run_id = tracking.open_stage_run("evaluate@both", params, tmp_path)
    client = mlflow.MlflowClient(tracking.tracking_uri(tmp_path))
    run = client.get_run(run_id)
    pipeline_tags = client.get_run(run.data.tags["mlflow.parentRunId"]).data.tags
    being_made = client.create_run(run.info.experiment_id, tags=pipeline_tags).info.run_id
    assert tracking.mark_dead_runs(run.info.experiment_id, tmp_path) == 0
    assert client.get_run(being_made).info.status == "RUNNING"
    tracking.close_stage_run(run_id, "FINISHED", tmp_path)


def test_a_killed_stage_is_marked_and_its_rerun_continues_the_same_run(tmp_path, params):
    uri = tracking.tracking_uri()
    code = (
        "import os, sys; sys.path.insert(0, 'tests')\n"
        "from cafe_core.workbench import tracking\n"
        "from cafe_core.workbench.config import params_from_dict\n"
        "from helpers import tiny_raw\n"
        f"run = tracking.open_stage_run('train_generator@main', params_from_dict(tiny_raw()), {str(tmp_path)!r})\n"
        "print(run, flush=True); os._exit(9)  # dies with its run RUNNING, as under SIGKILL\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, env=os.environ)
    dead = out.stdout.strip().splitlines()[-1]
    assert mlflow.MlflowClient(uri).get_run(dead).info.status == "RUNNING"
    again = tracking.open_stage_run("train_generator@main", params, tmp_path)
    run = mlflow.MlflowClient(uri).get_run(again)
    assert again == dead and run.info.status == "RUNNING" and run.data.tags["cafe.attempt"] == "2"
    tracking.close_stage_run(again, "FINISHED", tmp_path)
    assert all(r.info.status == "FINISHED" for r in _runs(uri))


def test_a_dvc_experiment_logs_to_the_store_of_the_repository_dvc_started_in(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "main"))
    workspace = tmp_path / "main/.dvc/tmp/exps/tmp1234"  # where `dvc exp run --temp` runs a stage
    workspace.mkdir(parents=True)
    assert tracking.tracking_uri(workspace) == f"sqlite:///{(tmp_path / 'main' / 'mlflow.db').resolve()}"
    assert tracking.tracking_uri(tmp_path / "other") == f"sqlite:///{(tmp_path / 'other' / 'mlflow.db').resolve()}"


@pytest.mark.slow  # starts an MLflow server
def test_writers_on_several_machines_share_an_mlflow_server(tmp_path):
    """The multi-machine path (README): `mlflow server` over SQLite, writers reach it by HTTP."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
    server = subprocess.Popen(
        [mlflow_bin, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        + [
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "art"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        _four_writers(uri, tmp_path)
        runs = _runs(uri)
        assert sorted(r.data.metrics["index"] for r in runs if "index" in r.data.metrics) == [0, 1, 2, 3]
        assert all(r.info.status == "FINISHED" for r in runs)
        (pipeline,) = [r for r in runs if r.data.tags["cafe.role"] == "pipeline"]
        assert {r.data.tags["mlflow.parentRunId"] for r in runs if r is not pipeline} == {pipeline.info.run_id}
    finally:
        server.terminate()
        server.wait(timeout=30)
