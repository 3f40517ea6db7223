"""The data sources ``params.yaml: data`` names, built for the stages (the seam of :mod:`cafe_core.data.sources`)."""

from __future__ import annotations

from pathlib import Path

from ..data.sources import DataSource, FolderSource
from .config import Params, ParamsError
from .paths import ProjectPaths

__all__ = ["evaluation_source", "training_source"]


def _world(params: Params, fidelity_probe: Path | None = None) -> DataSource:
    from ..world import make_world
    from ..world.source import WorldSource
    from ..world.teacher import Teacher, TeacherConfig

    t = params.teacher
    world = make_world(params)
    config = TeacherConfig(t.identity_drift_p, t.ignore_instruction_p, t.artefact_p, seed=params.seed)
    return WorldSource(world, Teacher(config, world=world), fidelity_probe=fidelity_probe)


def training_source(params: Params, root: Path) -> DataSource:
    """``data.train``: ``world``, or a folder (relative to the project) in the project's format, whose
    dialogues are read from ``teacher_data``'s scored copy of it."""
    name = params.data.train
    if name == "world":
        return _world(params)
    if name == "dreambench":
        raise ParamsError("data.train: dreambench holds evaluation data only; name `world` or a folder")
    return FolderSource(Path(root) / name, scored=ProjectPaths(root).dataset("teacher"))


def evaluation_source(params: Params, root: Path) -> DataSource:
    """``data.evaluation``: ``world`` (held-out subjects with ground truth) or ``dreambench``."""
    name = params.data.evaluation
    if name == "world":
        from ..world.fidelity import PROBE_FOLDER

        model_root = ProjectPaths(root).model_root(params.profile)
        return _world(params, fidelity_probe=model_root / PROBE_FOLDER if model_root is not None else None)
    if name == "dreambench":
        from ..benchmarks.dreambench import DreamBenchSource

        return DreamBenchSource()
    raise ParamsError(f"data.evaluation must be `world` or `dreambench`, got {name!r}")
