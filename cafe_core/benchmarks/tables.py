"""Result tables: one row per variant and domain, written as CSV and Markdown."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..utils.files import atomic_write_text
from .statistics import METHOD, score_grid, seeds_and_subjects_interval

__all__ = ["COLUMNS", "METRICS", "ProtocolRow", "csv_columns", "interval_rows", "write_scores", "write_table"]

COLUMNS = ("variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID", "attributes", "context")
"""Columns of every protocol table, in order. ``attributes`` and ``context`` are the fidelity
probe's accuracies (CAFE-mini only: empty where the source has no ground truth)."""
METRICS = COLUMNS[2:]


@dataclass(frozen=True)
class ProtocolRow:
    """One line of a protocol table: a model variant's scores on one domain (``None``: not measured).

    ``ci95`` holds each measured score's 95% half-width (by column name) and ``seeds`` how many
    training seeds the means are over (0: a row that trains nothing, the true renders); both
    empty for a row given without intervals. ``intervals`` keeps each score's whole
    :class:`~.statistics.Interval` (``to_dict()``), with the parts of its width from seeds and
    from subjects.
    """

    variant: str
    domain: str
    DINO: float | None = None
    CLIP_I: float | None = None
    CLIP_T: float | None = None
    ID: float | None = None
    attributes: float | None = None
    context: float | None = None
    ci95: Mapping[str, float] = field(default_factory=dict)
    seeds: int | None = None
    intervals: Mapping[str, dict] = field(default_factory=dict, compare=False)

    def scores(self) -> dict[str, float | None]:
        """The scores keyed by column (``CLIP-I`` rather than the attribute name ``CLIP_I``)."""
        return dict(zip(METRICS, (getattr(self, f.name) for f in fields(self)[2:8]), strict=True))

    def to_dict(self) -> dict[str, str | float | int | None]:
        """The row as :func:`csv_columns` name it: scores, then each score's half-width, then seeds."""
        return {
            "variant": self.variant,
            "domain": self.domain,
            **self.scores(),
            **{f"{m}_ci95": self.ci95.get(m) for m in METRICS},
            "seeds": self.seeds,
        }


def csv_columns() -> tuple[str, ...]:
    """``table.csv``'s header: :data:`COLUMNS`, a ``<metric>_ci95`` half-width per metric, ``seeds``."""
    return (*COLUMNS, *(f"{m}_ci95" for m in METRICS), "seeds")


def interval_rows(variant: str, rows_by_seed: Mapping[int, list[dict]]) -> list[ProtocolRow]:
    """A variant's rows, one per domain: each score the mean over (training seed, subject) cells,
    with the 95% half-width of an interval with seeds and subjects both random (:mod:`.statistics`).

    ``rows_by_seed``: each training seed's per-subject rows (``{"subject", "domain", metric: value}``);
    the key None holds the rows of a variant that trains nothing (its ``seeds`` is 0).
    """
    domains = list(dict.fromkeys(r["domain"] for rows in rows_by_seed.values() for r in rows))
    out = []
    for domain in domains:
        subjects = sorted({r["subject"] for rows in rows_by_seed.values() for r in rows if r["domain"] == domain})
        means, half, whole = {}, {}, {}
        for metric in METRICS:
            grid = score_grid(rows_by_seed, metric, domain, subjects)
            if np.isnan(grid).all():
                continue
            interval = seeds_and_subjects_interval(grid)
            means[metric], half[metric], whole[metric] = interval.mean, interval.half_width, interval.to_dict()
        seeds = sum(s is not None for s in rows_by_seed)
        scores = (means.get(m) for m in METRICS)
        out.append(ProtocolRow(variant, domain, *scores, ci95=half, seeds=seeds, intervals=whole))
    return out


def write_table(
    rows: Sequence[ProtocolRow],
    folder: str | os.PathLike[str],
    verdicts: Sequence[Mapping] = (),
    notes: Sequence[str] = (),
    controls: Sequence[Mapping] = (),
) -> tuple[Path, Path]:
    """Write ``table.csv`` and ``table.md`` into ``folder`` atomically; return their paths.

    Scores have 3 decimals, shown in Markdown as ``mean ± half-width`` where the row has
    intervals; unmeasured ones are empty cells, so a reader never mistakes a missing metric for
    a zero. ``verdicts`` (:func:`.claims.judge`'s) are listed under the Markdown table, then
    ``controls`` (judged the same way, but not the paper's claims), then the Markdown lines ``notes``.
    """
    folder = Path(folder)
    header = csv_columns()
    cells = [[_cell(row.to_dict()[c]) for c in header] for row in rows]
    csv_text = io.StringIO()
    csv.writer(csv_text, lineterminator="\n").writerows([header, *cells])
    shown = [[row.variant, row.domain, *(_shown(v, row.ci95.get(m)) for m, v in row.scores().items())] for row in rows]
    markdown = [_md_line(COLUMNS), _md_line(["---"] * len(COLUMNS)), *(_md_line(line) for line in shown)]
    seeds = sorted({row.seeds for row in rows if row.seeds})
    if seeds:
        markdown += [
            "",
            f"Mean over {_seeds(seeds)} and the held-out subjects; ± is the half-width of a 95% {METHOD}.",
        ]
    if verdicts:
        markdown += ["", *_verdict_lines("claim (paper)", verdicts)]
    if controls:
        markdown += ["", *_verdict_lines("control (not a claim of the paper)", controls)]
    markdown += list(notes)
    return (
        atomic_write_text(folder / "table.csv", csv_text.getvalue()),
        atomic_write_text(folder / "table.md", "\n".join(markdown) + "\n"),
    )


def write_scores(rows: Sequence[ProtocolRow], folder: str | os.PathLike[str]) -> Path:
    """Write ``scores.csv``: one line per measured score (``row``, variant, domain, metric, value).

    The long form a bar chart reads (``dvc plots show``: one bar per ``row``, e.g.
    ``both / object / CLIP-T``); unmeasured scores have no line.
    """
    lines = [("row", "variant", "domain", "metric", "value")]
    for row in rows:
        for metric, value in row.scores().items():
            if value is not None:
                lines.append(
                    (f"{row.variant} / {row.domain} / {metric}", row.variant, row.domain, metric, f"{value:.4f}")
                )
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    return atomic_write_text(Path(folder) / "scores.csv", text.getvalue())


def _verdict_lines(heading: str, verdicts: Sequence[Mapping]) -> list[str]:
    """A Markdown table of verdicts: the comparison, its metric, difference, interval and verdict."""
    lines = [
        f"| {heading} | metric | domain | difference | 95% interval | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {v['claim']} | {v['metric']} | {v['domain']} | {_difference(v)} | {v['verdict'].replace('_', ' ')} |"
        for v in verdicts
    ]
    return lines


def _cell(value: str | float | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, (str, int)):
        return str(value)
    return f"{value:.3f}"


def _shown(value: float | None, half_width: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3f}" if half_width is None else f"{value:.3f} ± {half_width:.3f}"


def _seeds(seeds: list[int]) -> str:
    counts = " or ".join(str(n) for n in seeds)
    return f"{counts} training seed" + ("" if seeds == [1] else "s")


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _difference(verdict: Mapping) -> str:
    """The difference and interval cells of a verdict; empty where the claim was not measured."""
    if verdict["difference"] is None:
        return " | "
    low, high = verdict["ci95"]
    return f"{verdict['difference']:+.3f} | [{low:+.3f}, {high:+.3f}]"
