"""Result tables: one row per variant and domain, written as CSV and Markdown."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ..utils.files import atomic_write_text

__all__ = ["COLUMNS", "ProtocolRow", "write_table"]

COLUMNS = ("variant", "domain", "DINO", "CLIP-I", "CLIP-T", "ID")
"""Columns of every protocol table, in order."""


@dataclass(frozen=True)
class ProtocolRow:
    """One line of a protocol table: a model variant's scores on one domain (``None``: not measured)."""

    variant: str
    domain: str
    DINO: float | None = None
    CLIP_I: float | None = None
    CLIP_T: float | None = None
    ID: float | None = None

    def to_dict(self) -> dict[str, str | float | None]:
        """The row keyed by :data:`COLUMNS` (``CLIP-I`` rather than the attribute name ``CLIP_I``)."""
        return dict(zip(COLUMNS, (getattr(self, f.name) for f in fields(self)), strict=True))


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


def _cell(value: str | float | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else f"{value:.3f}"


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
