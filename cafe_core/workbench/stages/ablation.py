"""Stages ``ablation_embeddings`` (table 6), ``ablation_encoders`` (table 5), ``ablation_loss`` (table 4).

Each collects its evaluated variants (``params.yaml: ablations``, the one list of a table's rows)
into ``results/<target>/table.{md,csv}``, each score with its 95% interval (``intervals.json``:
each interval whole, with the parts of its width from training seeds and from subjects), judges
the paper's claims about those rows into ``results/<target>/verdicts.json`` (and the comparisons
the table's design calls for, ``claims.CONTROLS``, into ``controls.json``), and logs one MLflow run that
links to the rows' evaluation runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ...benchmarks.claims import CLAIMS, CONTROLS, Claim, judge
from ...benchmarks.tables import ProtocolRow, interval_rows, write_scores, write_table
from ...utils.digest import file_digest
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params
from ..paths import ProjectPaths
from ..results import read_dataset_summary, read_subject_scores, rows_by_seed

__all__ = ["ablation_table"]

logger = logging.getLogger(__name__)


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
    variants = params.ablations[target]
    rows, links = [], {}
    with tracking.start_run(target, params, log_params={"rows": variants}, root=root):
        scores = {v: rows_by_seed(read_subject_scores(root, v)) for v in variants}
        for variant in variants:
            rows.extend(interval_rows(variant, scores[variant]))
            digest = file_digest(paths.variant_metrics(variant))
            source = tracking.find_run({"cafe.metrics_digest": digest}, params, root)
            if source is not None:
                links[f"cafe.source_run.{variant}"] = source
        verdicts = [judge(c, scores) for c in _present(CLAIMS.get(target, ()), target, variants)]
        controls = [judge(c, scores) for c in _present(CONTROLS.get(target, ()), target, variants)]
        folder = paths.ablation(target)
        datasets = _training_data(params, root, variants)
        notes = _datasets_note(datasets) if datasets else ()
        table = (
            *write_table(rows, folder, verdicts, notes=notes, controls=controls),
            write_scores(rows, folder),
            atomic_write_json(folder / "verdicts.json", verdicts),
            atomic_write_json(folder / "intervals.json", [_widths(r) for r in rows]),
        )
        if target in CONTROLS:  # written even when its rows are missing, so DVC finds the output
            table += (atomic_write_json(folder / "controls.json", controls),)
        if datasets:  # the rows' G trained on different data (table 3): what each had, and its cost
            table += (atomic_write_json(folder / "datasets.json", datasets),)
        tracking.log_table([r.to_dict() for r in rows], "table.json")  # verdicts, controls, datasets: below
        tracking.set_tags(links)
        for path in table:
            tracking.log_artifact(path)
    return rows


def _training_data(params: Params, root: Path, variants: list[str]) -> list[dict]:
    """Per row whose G trained on another dataset than some other row's: the dataset, its rows
    (mean over training seeds), the cost it added, and where its G started (``init``: a G it
    fine-tuned, or None for the base model) for how many ``steps``; empty when every row shares one dataset."""
    specs = {v: params.generators[params.variants[v].generator] for v in variants if v in params.variants}
    if len({spec.data for spec in specs.values()}) < 2:
        return []
    out = []
    for variant, spec in specs.items():
        summary = read_dataset_summary(root, spec.data)
        if summary is None:
            raise FileNotFoundError(
                f"no statistics of dataset {spec.data!r} (results/datasets/): run the stage that makes it"
            )
        steps = spec.steps or params.generator.steps
        out.append({"variant": variant, **summary, "init": spec.init, "steps": steps})
    return out


def _datasets_note(datasets: list[dict]) -> list[str]:
    """The training data of each row, as Markdown under the table."""
    lines = [
        "",
        "| row | trained on | G's training | samples | added cost (s) | what the cost is |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in datasets:
        start = f"G `{d['init']}` fine-tuned" if d.get("init") else "from the base model"
        lines.append(
            f"| {d['variant']} | `{d['dataset']}` | {start}, {d['steps']:,} steps | {d['samples']:,.0f} "
            f"| {d['added_seconds']:,.0f} | {d['added_cost']} |"
        )
    return lines


def _widths(row: ProtocolRow) -> dict:
    """A row's intervals with both parts of each width: from training seeds, from subjects."""
    return {"variant": row.variant, "domain": row.domain, "seeds": row.seeds, "intervals": dict(row.intervals)}


def _present(claims: Sequence[Claim], target: str, variants: list[str]) -> list[Claim]:
    """The ``claims`` about ``target`` whose two rows are both in the table (a warning for each other)."""
    kept = [c for c in claims if c.higher in variants and c.lower in variants]
    for c in claims:
        if c not in kept:
            logger.warning(
                "%s: no verdict on %r: rows %s and %s are not both there", target, c.claim, c.higher, c.lower
            )
    return kept
