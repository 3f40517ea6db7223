"""Stages ``ablation_embeddings`` (table 6), ``ablation_encoders`` (table 5), ``ablation_loss`` (table 4).

Each collects its evaluated variants (``params.yaml: ablations``, the one list of a table's rows)
into ``results/<target>/table.{md,csv}`` and one MLflow run that links to their evaluation runs.
"""

from __future__ import annotations

from pathlib import Path

from ...benchmarks.tables import ProtocolRow, protocol_rows, write_scores, write_table
from ...utils.digest import file_digest
from .. import tracking
from ..config import Params
from ..paths import ProjectPaths
from ..results import read_scores

__all__ = ["ablation_table"]


def ablation_table(params: Params, root: Path, target: str) -> list[ProtocolRow]:
    """Collect the variants of ``target`` into ``results/<target>/table.{md,csv}`` and one MLflow run.

    The table's run logs the table (``log_table``) and links to each row's evaluation run
    (tag ``cafe.source_run.<variant>``: the run whose metrics file is the one read here) rather
    than copying its scores.
    """
    if target not in params.ablations:
        raise KeyError(
            f"unknown ablation {target!r} (params.yaml key 'ablations'); known: {', '.join(params.ablations)}"
        )
    paths = ProjectPaths(root)
    rows, links = [], {}
    with tracking.start_run(target, params, log_params={"rows": params.ablations[target]}, root=root):
        for variant in params.ablations[target]:
            rows.extend(protocol_rows(variant, read_scores(root, variant)))
            digest = file_digest(paths.variant_metrics(variant))
            source = tracking.find_run({"cafe.metrics_digest": digest}, params, root)
            if source is not None:
                links[f"cafe.source_run.{variant}"] = source
        table = (*write_table(rows, paths.ablation(target)), write_scores(rows, paths.ablation(target)))
        tracking.log_table([r.to_dict() for r in rows], "table.json")
        tracking.set_tags(links)
        for path in table:
            tracking.log_artifact(path)
    return rows
