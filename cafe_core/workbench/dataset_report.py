"""A dataset's statistics as a figure and an MLflow record (issue 11: one report per dataset)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..data.dataset import Dataset
from . import tracking

__all__ = ["log_dataset_report", "score_histograms"]


def score_histograms(dataset: Dataset, thresholds: Mapping[str, float] | None = None, bins: int = 40):
    """Histograms of the filter's two scores, kept and rejected rows apart, each threshold drawn.

    ``thresholds``: ``{"clip_score": 0.3, "dino_score": 0.6}`` (either may be left out). Rows a
    test has not scored are left out of its panel. Returns a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    t = dataset.table(["clip_score", "dino_score", "clip_pass", "dino_pass"]).to_pydict()
    fig = Figure(figsize=(8, 3))
    for ax, score, passed, title in zip(
        fig.subplots(1, 2),
        ("clip_score", "dino_score"),
        ("clip_pass", "dino_pass"),
        ("CLIP(y, instruction)", "DINO(x, y)"),
        strict=True,
    ):
        values = np.array([v if v is not None else np.nan for v in t[score]], dtype=np.float64)
        kept = np.array([p is True for p in t[passed]])
        known = ~np.isnan(values)
        if known.any():
            edges = np.histogram_bin_edges(values[known], bins=bins)
            ax.hist(values[known & kept], bins=edges, alpha=0.7, label=f"passed ({int((known & kept).sum())})")
            ax.hist(values[known & ~kept], bins=edges, alpha=0.7, label=f"failed ({int((known & ~kept).sum())})")
            ax.legend(fontsize=7)
        if thresholds and score in thresholds:
            ax.axvline(thresholds[score], color="black", linestyle="--", linewidth=1)
        ax.set_title(f"{title}, {int(known.sum())} scored", fontsize=9)
        ax.set_xlabel("cosine similarity", fontsize=8)
    fig.suptitle(f"{dataset.folder.name}: {len(dataset)} rows", fontsize=10)
    fig.tight_layout()
    return fig


def log_dataset_report(dataset: Dataset, name: str, thresholds: Mapping[str, float] | None = None) -> dict:
    """Log the dataset's statistics (metrics and a JSON), its score histograms and its class and
    context balance (tables) to the active MLflow run, under ``name``; returns the statistics."""
    import mlflow

    stats = dataset.statistics()
    numbers = {**stats["stages"], **{f"pass_rate_{k}": v for k, v in stats["pass_rate"].items() if v is not None}}
    tracking.log_metrics({f"{name}/{k}": float(v) for k, v in numbers.items()})
    if mlflow.active_run() is not None:
        mlflow.log_dict(stats, f"datasets/{name}/statistics.json")
    tracking.log_figure(score_histograms(dataset, thresholds), f"datasets/{name}/scores.png")
    for part, key in (("classes", "class"), ("contexts", "context")):
        rows = [{key: k, "rows": v} for k, v in stats[part].items()]
        if rows:
            tracking.log_table(rows, f"datasets/{name}/{part}.json")
    return stats
