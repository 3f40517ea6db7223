"""MLflow: one store per project, runs with lineage, safe under parallel writers.

Layout of what is logged (experiment ``cafe-<profile>``, shown in MLflow's model-training view):

- a **pipeline run** per state of the code and params that stages ran on (git commit, its
  uncommitted diff, the DVC experiment name): the parent of every stage run of one
  ``dvc repro`` or ``dvc exp run``;
- a **stage run** per DVC stage item (``train_generator@main``, ``evaluate@both``), opened by
  the notebook runner, which attaches the executed notebook to it; a stage killed and rerun on
  the same state continues its own run;
- **nested runs** inside a stage, e.g. one per lambda of an assistant's grid.

Every run is tagged with the commit, the DVC experiment and stage, the profile and the seed.
The store is the project's SQLite file, reached by an absolute URI from any working directory;
an experiment run by DVC in a temporary workspace (``--temp``, ``--queue``) logs to the store of
the repository DVC was started in (``DVC_ROOT``). An explicit ``MLFLOW_TRACKING_URI`` (e.g. an
``mlflow server`` shared by several machines) wins. ``python -m cafe_core.workbench.tracking``
prints the URI for ``mlflow ui --backend-store-uri``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUN_ENV = "CAFE_MLFLOW_RUN_ID"
"""Set by the notebook runner for its kernel: the stage run that the stage's code logs into."""

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""Opens the experiment in MLflow's model-training view (runs and metrics), not the GenAI one."""


# --- where ---------------------------------------------------------------------------------------


def store_root(root: str | os.PathLike | None = None) -> Path:
    """The project whose store is used: ``root`` (default: cwd's project), except in the temporary
    workspace of a DVC experiment (below ``<repo>/.dvc/``), whose runs go to the repository DVC
    was started in (``DVC_ROOT``, which DVC sets to the parent for ``--temp`` and ``--queue``)."""
    from .config import project_root

    project = Path(root) if root is not None else project_root()
    parent = os.environ.get("DVC_ROOT")
    if parent and project.resolve().is_relative_to(Path(parent).resolve() / ".dvc"):
        return Path(parent)
    return project


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from .paths import ProjectPaths

    return f"sqlite:///{ProjectPaths(store_root(root)).mlflow_store.resolve()}"


def artifact_root(root: str | os.PathLike | None = None) -> str:
    from .paths import ProjectPaths

    return ProjectPaths(store_root(root)).mlflow_artifacts.resolve().as_uri()


def experiment_name(params: Any = None) -> str:
    """``cafe-<profile>``: the runs of one profile share metric columns."""
    profile = getattr(getattr(params, "profile", None), "name", None)
    return f"cafe-{profile}" if profile else "cafe"


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise schema migration and get-or-create on a SQLite store (a lock file beside it).

    Without it, four processes opening a fresh store at once lost three runs to the migration
    (``duplicate column name``) and two creating one experiment lost one (``UNIQUE constraint``).
    A server store serialises on its own side; there the lock is a no-op.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        yield


_READY: set[str] = set()


def _client(root: str | os.PathLike | None = None):
    """An MlflowClient on the project's store, its schema migrated once under the lock."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if uri not in _READY:
        with _store_lock(uri):
            MlflowClient(uri).search_experiments(max_results=1)  # creates and migrates the store
        _READY.add(uri)
    return MlflowClient(uri)


def experiment_id(name: str, root: str | os.PathLike | None = None) -> str:
    """Get or create experiment ``name`` (artifacts kept in the project), tagged for the training view."""
    from mlflow.exceptions import MlflowException

    client = _client(root)
    with _store_lock(tracking_uri(root)):
        found = client.get_experiment_by_name(name)
        if found is None:
            try:
                return client.create_experiment(
                    name, artifact_location=f"{artifact_root(root)}/{name}", tags=EXPERIMENT_KIND
                )
            except MlflowException:  # created meanwhile by a writer on another machine (server store)
                found = client.get_experiment_by_name(name)
        if found.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
            client.set_experiment_tag(
                found.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND["mlflow.experimentKind"]
            )
        return found.experiment_id


# --- what ran: tags ------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_state(root: str | os.PathLike | None = None) -> dict[str, str]:
    """The commit, whether the tree has uncommitted changes, and a key of the whole state.

    The key covers the commit, the uncommitted diff of tracked files (``dvc.lock`` aside, which
    the stages themselves rewrite) and the DVC experiment, so every stage of one ``dvc repro``
    finds the same pipeline run.
    """
    from .config import project_root

    root = Path(root) if root is not None else project_root()
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or "none"
    diff = _git(root, "diff", "HEAD", "--no-ext-diff", "--", ".", ":(exclude)dvc.lock") or ""
    experiment = os.environ.get("DVC_EXP_NAME", "")
    baseline = os.environ.get("DVC_EXP_BASELINE_REV", "")
    key = hashlib.sha256("\0".join([commit, baseline, experiment, diff]).encode()).hexdigest()[:16]
    return {
        "commit": baseline or commit,
        "dirty": str(bool(diff.strip())).lower(),
        "experiment": experiment,
        "key": key,
    }


def _process_tags() -> dict[str, str]:
    import psutil

    me = psutil.Process()
    return {
        "cafe.host": socket.gethostname(),
        "cafe.pid": str(me.pid),
        "cafe.pid_started": f"{me.create_time():.3f}",
        "cafe.machine": machine(),
    }


def machine() -> str:
    """The CPU a stage ran on, as its times need: a virtual machine's model name can be only "AMD
    EPYC", and the same name has come with and without AVX-512 (1.5 to 2x apart on the world's
    training), so its family, model and vector extensions are named too."""
    import platform

    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    flags = set(fields.get("flags", "").split())
    vector = [name for flag, name in (("avx512f", "AVX-512"), ("amx_tile", "AMX")) if flag in flags]
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} model "
        f"{fields.get('model', '?')}), {os.cpu_count()} CPUs, {' + '.join(vector) or 'no AVX-512'}"
    )


def _process_alive(tags: Mapping[str, str]) -> bool:
    import psutil

    if tags.get("cafe.host") != socket.gethostname():
        return True  # another machine's: not ours to judge
    try:
        proc = psutil.Process(int(tags.get("cafe.pid", "-1")))
        return abs(proc.create_time() - float(tags.get("cafe.pid_started", "0"))) < 1.0
    except (psutil.Error, ValueError):
        return False


def run_tags(params: Any = None, root: str | os.PathLike | None = None, stage: str | None = None) -> dict[str, str]:
    """Tags of a run: commit, DVC experiment and stage, profile, seed, the process that owns it."""
    state = code_state(root)
    tags = {
        "mlflow.source.git.commit": state["commit"],
        "cafe.git_dirty": state["dirty"],
        "cafe.pipeline": state["key"],
        "cafe.dvc_experiment": state["experiment"] or "workspace",
        **_process_tags(),
    }
    stage = stage or os.environ.get("DVC_STAGE")
    if stage:
        tags["cafe.stage"] = stage
    if params is not None:
        tags["cafe.profile"] = params.profile.name
        tags["cafe.seed"] = str(params.seed)
    return tags


# --- runs ----------------------------------------------------------------------------------------


def mark_dead_runs(exp_id: str, root: str | os.PathLike | None = None) -> int:
    """Mark KILLED every RUNNING stage run of this host whose process is gone; returns how many.

    A pipeline run is RUNNING only between its creation and its writer's ``set_terminated`` (and
    it has no process), so it is left to that writer, which may also delete it.
    """
    client = _client(root)
    dead = [
        r
        for r in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=1000)
        if r.data.tags.get("cafe.role") != "pipeline" and not _process_alive(r.data.tags)
    ]
    for run in dead:
        client.set_terminated(run.info.run_id, status="KILLED")
        logger.warning("MLflow run %s (%s) lost its process: marked KILLED", run.info.run_id, run.info.run_name)
    return len(dead)


def pipeline_run(exp_id: str, params: Any = None, root: str | os.PathLike | None = None) -> str:
    """The id of the pipeline run for the current code state, created on first use.

    It is FINISHED from birth (each stage run closing moves its end time): a pipeline is never
    left RUNNING after a ``dvc repro`` was killed.
    """
    client = _client(root)
    tags = run_tags(params, root)
    key = tags["cafe.pipeline"]
    query = f"tags.`cafe.pipeline` = '{key}' and tags.`cafe.role` = 'pipeline'"
    with _store_lock(tracking_uri(root)):
        found = client.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], max_results=1)
        if found:
            return found[0].info.run_id
        exp = tags["cafe.dvc_experiment"]
        name = f"pipeline {tags['mlflow.source.git.commit'][:7]}{'+dirty' if tags['cafe.git_dirty'] == 'true' else ''}"
        name += f" {exp}" if exp != "workspace" else ""
        keep = {k: v for k, v in tags.items() if not k.startswith("cafe.pid") and k != "cafe.stage"}
        run = client.create_run(exp_id, run_name=name, tags={**keep, "cafe.role": "pipeline"})
        client.set_terminated(run.info.run_id, status="FINISHED")
    # Without a shared lock (a server store), writers may each have made one: all keep the oldest.
    oldest = _oldest_pipeline(client, exp_id, key)
    if oldest != run.info.run_id:
        client.delete_run(run.info.run_id)
    return oldest


def _oldest_pipeline(client: Any, exp_id: str, key: str) -> str:
    """The pipeline run all writers of code state ``key`` keep: the oldest one not deleted."""
    query = f"tags.`cafe.pipeline` = '{key}' and tags.`cafe.role` = 'pipeline'"
    return client.search_runs([exp_id], query, order_by=["attributes.start_time ASC"], max_results=1)[0].info.run_id


def open_stage_run(
    stage: str, params: Any = None, root: str | os.PathLike | None = None, *, source: str | None = None
) -> str:
    """The run of DVC stage item ``stage``: the one a killed attempt left on this code state
    (continued, its attempt count raised), else a new one nested in the pipeline run.
    ``source``: the notebook that runs the stage, shown as the run's source."""
    client = _client(root)
    exp_id = experiment_id(experiment_name(params), root)
    mark_dead_runs(exp_id, root)
    parent = pipeline_run(exp_id, params, root)
    tags = run_tags(params, root, stage=stage)
    query = (
        f"tags.`cafe.stage` = '{stage}' and tags.`cafe.pipeline` = '{tags['cafe.pipeline']}'"
        " and tags.`cafe.role` = 'stage' and attributes.status != 'FINISHED'"
    )
    previous = client.search_runs([exp_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if previous and previous[0].info.status != "RUNNING":  # FAILED, or KILLED by mark_dead_runs
        run = previous[0]
        attempt = int(run.data.tags.get("cafe.attempt", "1")) + 1
        client.update_run(run.info.run_id, status="RUNNING")
        for k, v in {**_process_tags(), "cafe.attempt": str(attempt)}.items():
            client.set_tag(run.info.run_id, k, v)
        logger.info("continuing MLflow run %s of %s (attempt %d)", run.info.run_id, stage, attempt)
        return run.info.run_id
    tags.update({"cafe.role": "stage", "cafe.attempt": "1", "mlflow.parentRunId": parent})
    if source:
        tags.update({"mlflow.source.name": source, "mlflow.source.type": "NOTEBOOK"})
    run = client.create_run(exp_id, run_name=stage, tags=tags)
    from .config import project_root

    lock = Path(root or project_root()) / "requirements.lock"
    if lock.is_file():  # the resolved versions the stage ran with
        client.log_artifact(run.info.run_id, str(lock), "environment")
    return run.info.run_id


def close_stage_run(
    run_id: str,
    status: str,
    root: str | os.PathLike | None = None,
    *,
    seconds: float | None = None,
    notebook: str | os.PathLike | None = None,
) -> None:
    """End a stage run (after logging this attempt's wall time and its executed notebook, if
    given) and move its pipeline run's end time."""
    client = _client(root)
    if seconds is not None:
        client.log_metric(run_id, "stage_seconds", seconds)
    if notebook is not None and Path(notebook).is_file():
        client.log_artifact(run_id, str(notebook), "notebook")
    client.set_terminated(run_id, status=status)
    run = client.get_run(run_id)
    parent, key = run.data.tags.get("mlflow.parentRunId"), run.data.tags.get("cafe.pipeline")
    if parent and key:
        # On a server store a writer that made its pipeline run at the same moment as another's
        # may have been handed a run that lost afterwards (a client clock older by a millisecond
        # lands later): re-parent onto the one kept before moving its end time.
        kept = _oldest_pipeline(client, run.info.experiment_id, key)
        if kept != parent:
            client.set_tag(run_id, "mlflow.parentRunId", kept)
        client.set_terminated(kept, status="FINISHED")


def _log_params(params: Mapping[str, Any] | None) -> None:
    import mlflow

    if params:
        # MLflow caps a param value at 6000 chars; ours are short, but lists can grow.
        flat = {k: str(v)[:500] for k, v in flatten(params).items()}
        existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
        mlflow.log_params({k: v for k, v in flat.items() if k not in existing})  # a continued run keeps its own


@contextlib.contextmanager
def start_run(
    name: str,
    params: Any = None,
    *,
    log_params: Mapping[str, Any] | None = None,
    root: str | os.PathLike | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Log into a run for the duration of the block.

    Inside another active run: a nested run named ``name``. Under the notebook runner (the
    kernel's ``CAFE_MLFLOW_RUN_ID``): the stage's own run. Otherwise (a stage function called
    from Python): a new stage run ``name`` under the pipeline run. ``params`` (a
    :class:`~cafe_core.workbench.config.Params`) picks the experiment and the profile/seed tags;
    ``log_params`` are logged flattened.
    """
    import mlflow

    client = _client(root)
    active = mlflow.active_run()
    handed = os.environ.get(RUN_ENV)
    own = None
    if active is not None or _PARENT_RUN is not None:
        extra = {**run_tags(params, root), "cafe.role": "nested", **dict(tags or {})}
        if active is not None:
            exp_id = active.info.experiment_id  # the parent's experiment, not MLflow's default one
            context = mlflow.start_run(run_name=name, nested=True, experiment_id=exp_id, tags=extra)
        else:  # a worker process (workbench.processes): nested in the run active where it was started
            exp_id = client.get_run(_PARENT_RUN).info.experiment_id
            context = mlflow.start_run(run_name=name, parent_run_id=_PARENT_RUN, experiment_id=exp_id, tags=extra)
    elif handed:
        context = mlflow.start_run(run_id=handed, tags=dict(tags or {}))
    else:
        own = open_stage_run(name, params, root)
        context = mlflow.start_run(run_id=own, tags=dict(tags or {}))
    try:
        with context as run:
            _log_params(log_params)
            logger.info("MLflow run %s (%s) at %s", run.info.run_id, name, client.tracking_uri)
            yield run
    except KeyboardInterrupt:
        client.set_terminated(own or handed or context.info.run_id, status="KILLED")
        raise
    if own is not None:
        close_stage_run(own, "FINISHED", root)


_PARENT_RUN: str | None = None
_FORWARDED: list[bool] | None = None


@contextlib.contextmanager
def nested_under(run_id: str | None) -> Iterator[list[bool]]:
    """In a worker process, runs started in the block nest in ``run_id`` (the run active in the
    process that started the worker), which stays open: the worker neither logs into it nor ends
    it. The kernel's ``CAFE_MLFLOW_RUN_ID`` is hidden in the block, so an interrupted worker
    marks its own run KILLED, not the stage's. Yields the units of work (:func:`record_work`)
    recorded outside any run in the block, for the starting process to record on its run."""
    global _PARENT_RUN, _FORWARDED
    saved, handed = (_PARENT_RUN, _FORWARDED), os.environ.pop(RUN_ENV, None)
    _PARENT_RUN, _FORWARDED = run_id, []
    try:
        yield _FORWARDED
    finally:
        _PARENT_RUN, _FORWARDED = saved
        if handed is not None:
            os.environ[RUN_ENV] = handed


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``: MLflow params and metrics are flat."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


# --- logging into the active run (no-ops without one: library code calls them unconditionally) ---


def _active() -> bool:
    import mlflow

    return mlflow.active_run() is not None


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    if _active():
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)


def log_figure(figure: Any, name: str) -> None:
    import mlflow

    if _active():
        mlflow.log_figure(figure, name)


def log_image(image: Any, key: str, step: int | None = None) -> None:
    """An image (a matplotlib figure or an array) under ``key`` at ``step``: MLflow's image slider."""
    import mlflow

    if not _active():
        return
    if hasattr(image, "canvas"):
        from .plots import figure_to_array

        image = figure_to_array(image)
    mlflow.log_image(image, key=key, step=step or 0)


def log_table(rows: list[Mapping[str, Any]], name: str) -> None:
    import mlflow

    if _active():
        mlflow.log_table({k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}, name)


def log_artifacts(folder: str | os.PathLike, path: str | None = None) -> None:
    import mlflow

    if _active():
        mlflow.log_artifacts(str(folder), path)


def log_artifact(path: str | os.PathLike, folder: str | None = None) -> None:
    import mlflow

    if _active():
        mlflow.log_artifact(str(path), folder)


def find_run(tags: Mapping[str, str], params: Any = None, root: str | os.PathLike | None = None) -> str | None:
    """The newest FINISHED run of the profile's experiment carrying all of ``tags``, or None."""
    client = _client(root)
    exp = client.get_experiment_by_name(experiment_name(params))
    if exp is None:
        return None
    query = " and ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ["attributes.status = 'FINISHED'"])
    found = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


def set_tags(tags: Mapping[str, str]) -> None:
    import mlflow

    if _active():
        mlflow.set_tags(dict(tags))


_WORK: dict[str, dict[str, int]] = {}


def record_work(built: bool) -> None:
    """Count, on the active run, one unit of a stage's work (a trained folder, a scored training
    seed) that it did (``built``) or found up to date; tags ``cafe.built`` and ``cafe.reused``.

    A run that reused everything (its outputs were built by an earlier run) is fast and says
    nothing of what the stage costs: the report times the runs that built (:func:`work_runs`).
    """
    run = active_run_id()
    if run is None:
        if _FORWARDED is not None:  # a worker's: the stage's process counts it (nested_under)
            _FORWARDED.append(built)
        return
    counts = _WORK.setdefault(run, {"built": 0, "reused": 0})
    counts["built" if built else "reused"] += 1
    set_tags({"cafe.built": str(counts["built"]), "cafe.reused": str(counts["reused"])})


def work_runs(runs: list) -> list:
    """Of one stage's finished runs (newest first), those whose work its outputs hold.

    A run that counted no work (a stage without reusable units) stands alone: the newest one.
    Otherwise: every run that built something, newest first, down to the first that built
    everything it needed (reused nothing); runs that only reused are left out. Resuming a
    preset with more seeds thus sums the run that trained the first seed and the one that
    trained the others.
    """
    counted = [r for r in runs if "cafe.built" in r.data.tags]
    if not counted:
        return runs[:1]
    out = []
    for run in counted:
        built, reused = int(run.data.tags["cafe.built"]), int(run.data.tags.get("cafe.reused", "0"))
        if built:
            out.append(run)
            if not reused:
                break
    return out


def active_run_id() -> str | None:
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run is not None else None


if __name__ == "__main__":  # print the URI for `mlflow ui --backend-store-uri ...`
    print(tracking_uri())
