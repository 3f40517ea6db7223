"""Scratch roots for the trial scripts: a project-shaped folder that links what it reuses."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def link_into(root: Path, project: Path, paths: Iterable[str | Path]) -> None:
    """Symlink each of ``paths`` (relative to both roots) from ``project`` into ``root``.

    A path the project has not made yet is left for the trial to make in its own root, and one
    already linked is kept, so a trial resumed in the same root links nothing twice.
    """
    for rel in paths:
        mine, theirs = root / rel, project / rel
        mine.parent.mkdir(parents=True, exist_ok=True)
        if theirs.exists() and not mine.is_symlink():
            mine.symlink_to(theirs)
