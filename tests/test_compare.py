"""Run comparison: each ablation table's newest finished run read back from the MLflow store, its
bar charts with intervals, and the `mlflow ui` command for this store."""

import numpy as np
import pytest

from cafe_core.workbench import tracking
from cafe_core.workbench.compare import ablation_runs, metric_bars, ui_command
from cafe_core.workbench.config import load_params


def _rows(clip_t: float) -> list[dict]:
    return [
        {
            "variant": "both",
            "domain": "object",
            "DINO": 0.8,
            "CLIP-T": clip_t,
            "ID": None,
            "DINO_ci95": 0.03,
            "CLIP-T_ci95": 0.02,
            "ID_ci95": None,
            "seeds": 3,
        },
        {
            "variant": "both",
            "domain": "face",
            "DINO": None,
            "CLIP-T": 0.5,
            "ID": 0.52,
            "DINO_ci95": None,
            "CLIP-T_ci95": 0.01,
            "ID_ci95": 0.05,
            "seeds": 3,
        },
        {
            "variant": "clip_only",
            "domain": "face",
            "DINO": None,
            "CLIP-T": 0.6,
            "ID": 0.2,
            "DINO_ci95": None,
            "CLIP-T_ci95": 0.02,
            "ID_ci95": 0.04,
            "seeds": 3,
        },
    ]


def test_newest_finished_table_runs_are_read_back_with_verdicts(project_root, tmp_path):
    params = load_params(project_root / "params.yaml")
    assert ablation_runs(params, tmp_path) == {}  # a store without runs: nothing to compare
    for clip_t in (0.4, 0.6):  # an older and a newer run of table 6
        with tracking.start_run("ablation_embeddings", params, root=tmp_path):
            tracking.log_table(_rows(clip_t), "table.json")
            tracking.log_table(
                [
                    {
                        "claim": "CLIP only beats both on CLIP-T",
                        "metric": "CLIP-T",
                        "domain": "face",
                        "difference": 0.1,
                        "ci95": [0.05, 0.15],
                        "verdict": "holds",
                    }
                ],
                "verdicts.json",
            )
    with tracking.start_run("ablation_loss", params, root=tmp_path):
        pass  # a run that logged no table (killed before it wrote one) is skipped
    runs = ablation_runs(params, tmp_path)
    assert list(runs) == ["ablation_embeddings"]
    table = runs["ablation_embeddings"].table
    assert table.loc[table.domain == "object", "CLIP-T"].item() == pytest.approx(0.6)  # the newest run
    assert runs["ablation_embeddings"].verdicts["verdict"].tolist() == ["holds"]
    fig = metric_bars(table, "ID", title="table 6")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["both", "clip_only"]  # rows without ID are left out
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [0.52, 0.2])


def test_ui_command_points_at_this_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    command = ui_command(tmp_path)
    assert command.startswith("bin/with-env mlflow ui --backend-store-uri sqlite:///")
    assert str(tmp_path.resolve()) in command
