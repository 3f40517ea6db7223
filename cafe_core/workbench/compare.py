"""Comparing runs in the MLflow store: each ablation table's newest finished run, as data and charts.

The table stages log their rows and verdicts as MLflow tables (``table.json``, ``verdicts.json``);
this reads them back with ``mlflow.search_runs`` and ``MlflowClient.load_table``, so the comparison
shows what the store holds (any run, any commit), not what happens to be in ``results/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tracking

__all__ = ["METRICS", "TableRun", "ablation_runs", "metric_bars", "ui_command"]

METRICS = ("DINO", "CLIP-I", "CLIP-T", "ID", "attributes", "context")
"""The metric columns of every ablation table, each with its ``<metric>_ci95`` half-width."""


@dataclass
class TableRun:
    """One ablation table as its newest finished MLflow run logged it."""

    target: str  # the ablation (params.yaml `ablations` key), also the run's name
    run_id: str
    started: Any  # pandas Timestamp (UTC)
    commit: str | None  # the code's git commit (mlflow.source.git.commit), if recorded
    table: Any  # pandas DataFrame: variant, domain, the metrics, their _ci95 half-widths, seeds
    verdicts: Any  # pandas DataFrame: claim, metric, domain, difference, ci95, verdict (empty if none)


def ablation_runs(params, root: str | os.PathLike | None = None) -> dict[str, TableRun]:
    """The newest FINISHED run of each ablation in ``params.ablations`` found in the store, by target.

    Targets never run are left out (a fresh clone has none until ``dvc repro``)."""
    import mlflow
    import pandas as pd

    uri = tracking.tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name(params))
    if experiment is None:
        return {}
    out = {}
    for target in params.ablations:
        runs = mlflow.search_runs(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"attributes.run_name = '{target}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if runs.empty:
            continue
        run = runs.iloc[0]
        artifacts = {a.path for a in client.list_artifacts(run.run_id)}
        if "table.json" not in artifacts:
            continue
        table = _json_table(client, run.run_id, "table.json")
        verdicts = _json_table(client, run.run_id, "verdicts.json") if "verdicts.json" in artifacts else pd.DataFrame()
        commit = run.get("tags.mlflow.source.git.commit")
        out[target] = TableRun(
            target, run.run_id, run.start_time, commit if isinstance(commit, str) else None, table, verdicts
        )
    return out


def _json_table(client, run_id: str, name: str):
    """A run's JSON artifact as a DataFrame: an MLflow table (``log_table``: columns and data) or a
    list of records (the stage's own file, e.g. ``verdicts.json``)."""
    import json

    import pandas as pd

    data = json.loads(Path(client.download_artifacts(run_id, name)).read_text())
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return pd.DataFrame(data["data"], columns=data["columns"])
    return pd.DataFrame(data)


def metric_bars(table, metric: str, *, title: str = ""):
    """A bar per row (variant) and domain of ``table`` for ``metric``, its 95% interval as the error bar;
    domains without the metric (ID on objects) are left out. A matplotlib Figure (outside pyplot)."""
    import numpy as np
    from matplotlib.figure import Figure

    if metric not in table.columns:
        raise KeyError(f"{metric!r} is not a column of the table; it has {', '.join(map(str, table.columns))}")
    rows = table[table[metric].notna()]
    variants = list(dict.fromkeys(rows["variant"]))
    domains = list(dict.fromkeys(rows["domain"]))
    fig = Figure(figsize=(1.2 + 0.9 * len(variants) * max(1, len(domains)) / 2, 2.8))
    ax = fig.subplots()
    width = 0.8 / max(1, len(domains))
    for k, domain in enumerate(domains):
        part = rows[rows["domain"] == domain].set_index("variant").reindex(variants)
        errors = part.get(f"{metric}_ci95")
        x = np.arange(len(variants)) + (k - (len(domains) - 1) / 2) * width
        ax.bar(x, part[metric], width, yerr=None if errors is None else errors.fillna(0), capsize=3, label=domain)
    ax.set_xticks(np.arange(len(variants)), variants, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title or metric)
    if len(domains) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def ui_command(root: str | os.PathLike | None = None) -> str:
    """The command that opens MLflow's UI on this project's store (its comparison view included)."""
    return f"bin/with-env mlflow ui --backend-store-uri {tracking.tracking_uri(root)} --port 5000"
