"""Stages ``ablation_embeddings`` (table 6), ``ablation_encoders`` (table 5), ``ablation_loss`` (table 4).

Each collects its evaluated variants (``params.yaml: ablations``, the one list of a table's rows)
into ``results/<target>/table.{md,csv}`` and one MLflow run per variant.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...benchmarks.tables import ProtocolRow, write_table
from ...utils.digest import config_hash
from .. import tracking
from ..config import Params
from ..paths import ProjectPaths

__all__ = ["ablation_table"]


def ablation_table(params: Params, root: Path, target: str) -> list[ProtocolRow]:
    """Collect the variants of `target` into results/<target>/table.{md,csv} and one MLflow run each."""
    if target not in params.ablations:
        raise KeyError(
            f"unknown ablation {target!r} (params.yaml key 'ablations'); known: {', '.join(params.ablations)}"
        )
    paths = ProjectPaths(root)
    rows = []
    for variant in params.ablations[target]:
        path = paths.variant(variant) / "metrics.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `dvc repro evaluate@{variant}` first")
        result = json.loads(path.read_text())
        variant_rows = [
            ProtocolRow(r["variant"], r["domain"], r["DINO"], r["CLIP-I"], r["CLIP-T"], r["ID"]) for r in result["rows"]
        ]
        rows.extend(variant_rows)
        _log_variant_run(root, target, variant, params, variant_rows, path.parent)
    write_table(rows, paths.ablation(target))
    return rows


def _log_variant_run(
    root: Path, target: str, variant: str, params: Params, rows: list[ProtocolRow], folder: Path
) -> None:
    """One MLflow run per variant; a rerun with identical results adds no duplicate."""
    import mlflow

    content = config_hash([r.to_dict() for r in rows])
    mlflow.set_tracking_uri(tracking.tracking_uri(root))
    existing = (
        mlflow.search_runs(
            experiment_names=[target],
            filter_string=f"tags.variant = '{variant}' and tags.content = '{content}'",
            output_format="list",
        )
        if mlflow.get_experiment_by_name(target)
        else []
    )
    if existing:
        return
    run_params = {"variant": variant}
    if variant in params.variants:
        spec = params.variants[variant]
        gen_spec = params.generators[spec.generator]
        run_params.update(generator=spec.generator, guidance=spec.guidance, clip=gen_spec.clip, dino=gen_spec.dino)
    if variant in params.assistants:
        selection = ProjectPaths(root).assistant_selection(variant)
        chosen = json.loads(selection.read_text())["chosen_lambda"] if selection.is_file() else None
        run_params.update(
            distance=params.assistants[variant].distance, chosen_lambda=chosen, generator=params.assistant.generator
        )
    with tracking.start_run(target, variant, run_params, root=root, tags={"variant": variant, "content": content}):
        for row in rows:
            tracking.log_metrics({f"{row.domain}/{k}": v for k, v in row.to_dict().items() if isinstance(v, float)})
        quality = folder / "quality.json"
        if quality.is_file():
            for domain, figures in json.loads(quality.read_text()).items():
                tracking.log_metrics(
                    {f"{domain}/quality/{k}": v for k, v in figures.items() if isinstance(v, (int, float))}
                )
        for png in sorted(folder.glob("samples_*.png")):
            mlflow.log_artifact(str(png))
