"""Scratch roots for the trial scripts: a project-shaped folder that links what it reuses, and their overrides."""

from __future__ import annotations

import argparse
import dataclasses
import json
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


def parse_overrides(text: str) -> dict:
    """A trial's JSON overrides, ``'{"lr": 1e-3}'``, as a dict (an argparse ``type``: bad text is a usage error)."""
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"overrides must be a JSON object: {e}") from None
    if not isinstance(overrides, dict):
        raise argparse.ArgumentTypeError(f"overrides must be a JSON object, got {text!r}")
    return overrides


def with_overrides(section, overrides: dict, name: str):
    """``section`` (a params dataclass named ``name`` in params.yaml) with ``overrides``' keys replaced.

    An unknown key is a ValueError naming the known ones, rather than dataclasses' bare TypeError.
    """
    known = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {name} key {unknown[0]!r}; the keys are {', '.join(sorted(known))}")
    return dataclasses.replace(section, **overrides)
