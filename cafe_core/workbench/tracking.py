"""MLflow: one embedded SQLite store per project, reached by an absolute URI.

Every notebook, test and CLI call logs to the same store whatever its working directory,
and `mlflow ui --backend-store-uri $(python -m cafe_core.tracking)` compares the runs.
An explicit `MLFLOW_TRACKING_URI` in the environment wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from .config import project_root
    from .paths import ProjectPaths

    root = Path(root) if root is not None else project_root()
    return f"sqlite:///{ProjectPaths(root).mlflow_store.resolve()}"


def artifact_root(root: str | os.PathLike | None = None) -> str:
    from .config import project_root
    from .paths import ProjectPaths

    root = Path(root) if root is not None else project_root()
    return ProjectPaths(root).mlflow_artifacts.resolve().as_uri()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def start_run(
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[Any]:
    """Open an MLflow run in `experiment`, creating the experiment with a project-local artifact root."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=f"{artifact_root(root)}/{experiment}")
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {})) as run:
        if params:
            flat = _flatten(params)
            # MLflow caps a param value at 6000 chars; ours are short, but lists can grow.
            mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        logger.info("MLflow run %s (%s/%s) at %s", run.info.run_id, experiment, run_name, tracking_uri(root))
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log to the active run, if any: library code can call this unconditionally."""
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(figure: Any, name: str) -> None:
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_figure(figure, name)


if __name__ == "__main__":  # print the URI for `mlflow ui --backend-store-uri ...`
    print(tracking_uri())
