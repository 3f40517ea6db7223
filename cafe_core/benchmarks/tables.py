"""Result tables: one row per variant and domain, written as CSV and Markdown."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ..utils.files import atomic_write_text

__all__ = ["COLUMNS", "ProtocolRow", "protocol_rows", "write_scores", "write_table"]

COLUMNS = ("variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID", "attributes", "context")
"""Columns of every protocol table, in order. ``attributes`` and ``context`` are the fidelity
probe's accuracies (CAFE-mini only: empty where the source has no ground truth)."""


@dataclass(frozen=True)
class ProtocolRow:
    """One line of a protocol table: a model variant's scores on one domain (``None``: not measured)."""

    variant: str
    domain: str
    DINO: float | None = None
    CLIP_I: float | None = None
    CLIP_T: float | None = None
    ID: float | None = None
    attributes: float | None = None
    context: float | None = None

    def to_dict(self) -> dict[str, str | float | None]:
        """The row keyed by :data:`COLUMNS` (``CLIP-I`` rather than the attribute name ``CLIP_I``)."""
        return dict(zip(COLUMNS, (getattr(self, f.name) for f in fields(self)), strict=True))


def protocol_rows(variant: str, metrics: Mapping[str, Mapping[str, float]]) -> list[ProtocolRow]:
    """A variant's scores (``{domain: {metric: score}}``) as rows, one per domain."""
    return [ProtocolRow(variant, domain, *(m.get(column) for column in COLUMNS[2:])) for domain, m in metrics.items()]


def write_table(rows: Sequence[ProtocolRow], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``table.csv`` and ``table.md`` into ``folder`` atomically; return their paths.

    Scores have 3 decimals; unmeasured ones are empty cells, so a reader never mistakes a
    missing metric for a zero.
    """
    folder = Path(folder)
    cells = [[_cell(value) for value in row.to_dict().values()] for row in rows]
    csv_text = io.StringIO()
    csv.writer(csv_text, lineterminator="\n").writerows([COLUMNS, *cells])
    markdown = [_md_line(COLUMNS), _md_line(["---"] * len(COLUMNS)), *(_md_line(line) for line in cells)]
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
        for metric, value in list(row.to_dict().items())[2:]:
            if value is not None:
                lines.append(
                    (f"{row.variant} / {row.domain} / {metric}", row.variant, row.domain, metric, f"{value:.4f}")
                )
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(lines)
    return atomic_write_text(Path(folder) / "scores.csv", text.getvalue())


def _cell(value: str | float | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else f"{value:.3f}"


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
