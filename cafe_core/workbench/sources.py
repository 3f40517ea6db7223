"""The training data ``params.yaml: data.train`` names, built for the stages (:mod:`cafe_core.data.sources`).

Evaluation data is built apart (:mod:`cafe_core.workbench.evaluation_sources`), so what trains a
model never imports the benchmarks it is scored on.
"""

from __future__ import annotations

from pathlib import Path

from ..data.sources import DataSource, FolderSource
from .config import Params, ParamsError
from .paths import ProjectPaths

__all__ = ["training_source", "world_source"]


def world_source(params: Params, fidelity_probe: Path | None = None) -> DataSource:
    """CAFE-mini's world with its teacher (and, for evaluation, the fidelity probe's folder)."""
    from ..world import make_world
    from ..world.source import WorldSource
    from ..world.teacher import Teacher, TeacherConfig

    t = params.teacher
    world = make_world(params)
    config = TeacherConfig(t.identity_drift_p, t.ignore_instruction_p, t.artefact_p, seed=params.seed)
    return WorldSource(world, Teacher(config, world=world), fidelity_probe=fidelity_probe)


def training_source(params: Params, root: Path) -> DataSource:
    """``data.train``: ``world``, or a key of ``data.folders``: a folder (relative to the project) in
    the project's format, whose dialogues are read from ``teacher_data``'s scored copy of it."""
    name = params.data.train
    if not isinstance(name, str):
        raise ParamsError(f"data.train names one source (`world` or a key of data.folders), got {name!r}")
    if name == "world":
        return world_source(params)
    folder = params.data.folder(name)
    if folder is None:
        raise ParamsError(f"data.train: {name} holds evaluation data only; name `world` or a key of data.folders")
    return FolderSource(Path(root) / folder, scored=ProjectPaths(root).dataset("teacher"), name=folder)
