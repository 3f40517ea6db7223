"""Teacher quadruplets ``(x, instruction, y)`` as index-aligned arrays, with what each target really shows.

The format every source of teacher data produces and the filter reads: subject photos ``x``,
targets ``y``, their instructions, and ground-truth labels that only graders read
(:data:`FAILURES`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from ..utils.files import atomic_save_safetensors

__all__ = ["FAILURES", "QuadrupletSet", "load_quadruplets", "save_quadruplets"]

logger = logging.getLogger(__name__)

FAILURES = ("none", "identity_drift", "ignored_instruction", "artefacts")
"""Ground-truth outcomes of the teacher; a quadruplet set stores each as its index here."""


@dataclass(eq=False)
class QuadrupletSet:
    """Index-aligned quadruplets: arrays for the images and ground truth, lists for the texts."""

    x: np.ndarray
    """uint8 (N, H, W, 3) subject photos."""
    y: np.ndarray
    """uint8 (N, H, W, 3) teacher targets."""
    subject_ids: np.ndarray
    context_ids: np.ndarray
    """The instructions' contexts (ids within the subject's domain)."""
    y_subject_ids: np.ndarray
    y_context_ids: np.ndarray
    """What ``y`` shows; :data:`cafe_core.world.NEUTRAL` for a neutral scene."""
    failures: np.ndarray
    """Indices into :data:`FAILURES` (ground truth, never an input of the filter)."""
    x_seeds: np.ndarray
    y_seeds: np.ndarray
    instructions: list[str]
    classes: list[str]
    """Each subject's class word, as the instruction names it (the filter's null pairs keep it)."""

    def __len__(self) -> int:
        return len(self.x)

    def select(self, index: np.ndarray | slice) -> QuadrupletSet:
        """The rows at ``index`` (integers, a boolean mask such as :func:`apply_filter`'s, or a slice)."""
        rows = np.arange(len(self))[index]
        columns = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return QuadrupletSet(
            **{name: v[rows] if isinstance(v, np.ndarray) else [v[i] for i in rows] for name, v in columns.items()}
        )

    def failure_names(self) -> list[str]:
        return [FAILURES[code] for code in self.failures]


def save_quadruplets(quads: QuadrupletSet, path: str | Path) -> Path:
    """One safetensors file: the arrays as tensors, the texts as JSON metadata; written atomically."""
    arrays = {f.name: v for f in dataclasses.fields(quads) if isinstance(v := getattr(quads, f.name), np.ndarray)}
    meta = {"instructions": quads.instructions, "classes": quads.classes}
    return atomic_save_safetensors(arrays, path, metadata={"meta": json.dumps(meta)})


def load_quadruplets(path: str | Path) -> QuadrupletSet:
    """What :func:`save_quadruplets` wrote."""
    arrays = load_file(path)
    with safe_open(path, "np") as f:
        texts = json.loads(f.metadata()["meta"])
    logger.info("loaded %d quadruplets from %s", len(arrays["x"]), path)
    return QuadrupletSet(**arrays, **texts)
