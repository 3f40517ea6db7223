"""Teacher quadruplets ``(x, instruction, y)`` as index-aligned arrays, with what each target really shows.

The in-memory form every source of teacher data produces and the filter reads: subject photos
``x``, targets ``y``, their instructions, and ground-truth labels that only graders read
(:data:`FAILURES`). On disk they are a dataset (:mod:`cafe_core.data.dataset`):
:func:`write_dataset` writes one with the filter's scores and decisions, :func:`read_quadruplets`
reads one back (a user's own too).
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
from .dataset import COLUMNS, Dataset, DatasetWriter, open_dataset

__all__ = [
    "FAILURES",
    "QuadrupletSet",
    "load_quadruplets",
    "read_quadruplets",
    "save_quadruplets",
    "write_dataset",
]

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
    provenance: list[dict] | None = None
    """Per row, the dataset columns beyond the arrays and texts, where known: ``teacher``,
    ``teacher_version``, ``subject``, ``context``, ``truth`` (JSON), ``messages``, ``response``, ``kind``."""

    def __len__(self) -> int:
        return len(self.x)

    def select(self, index: np.ndarray | slice) -> QuadrupletSet:
        """The rows at ``index`` (integers, a boolean mask such as :func:`apply_filter`'s, or a slice)."""
        rows = np.arange(len(self))[index]
        columns = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return QuadrupletSet(
            **{
                name: v[rows] if isinstance(v, np.ndarray) else None if v is None else [v[i] for i in rows]
                for name, v in columns.items()
            }
        )

    def failure_names(self) -> list[str]:
        return [FAILURES[code] for code in self.failures]


def save_quadruplets(quads: QuadrupletSet, path: str | Path) -> Path:
    """One safetensors file: the arrays as tensors, the texts as JSON metadata; written atomically."""
    arrays = {f.name: v for f in dataclasses.fields(quads) if isinstance(v := getattr(quads, f.name), np.ndarray)}
    meta = {"instructions": quads.instructions, "classes": quads.classes}  # provenance is the dataset's
    return atomic_save_safetensors(arrays, path, metadata={"meta": json.dumps(meta)})


def load_quadruplets(path: str | Path) -> QuadrupletSet:
    """What :func:`save_quadruplets` wrote."""
    arrays = load_file(path)
    with safe_open(path, "np") as f:
        texts = json.loads(f.metadata()["meta"])
    logger.info("loaded %d quadruplets from %s", len(arrays["x"]), path)
    return QuadrupletSet(**arrays, **texts)


NEUTRAL = -1
"""The context id of a target that shows no context (a neutral scene), as the world writes it."""

_PROVENANCE = ("teacher", "teacher_version", "subject", "context", "truth", "messages", "response", "kind")


def write_dataset(
    quads: QuadrupletSet,
    folder: str | Path,
    *,
    clip_score: np.ndarray | None = None,
    dino_score: np.ndarray | None = None,
    thresholds: tuple[float, float] | None = None,
    info: dict | None = None,
    rows_per_shard: int = 4096,
) -> Dataset:
    """Write ``quads`` as a dataset at ``folder`` (replacing what is there), one row per quadruplet
    in order, ids ``q0000000``...; with the filter's scores and, given ``thresholds`` (CLIP, DINO),
    each test's decision. Rows without provenance are the ``"unknown"`` teacher's."""
    import shutil

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    provenance = quads.provenance or [{}] * len(quads)
    with DatasetWriter(folder, rows_per_shard=rows_per_shard, info=info) as writer:
        for i in range(len(quads)):
            known = provenance[i]
            row = {name: known.get(name) for name in _PROVENANCE}
            row.update(
                id=f"q{i:07d}",
                x=quads.x[i],
                y=quads.y[i],
                instruction=quads.instructions[i],
                subject_class=quads.classes[i],
                seed=int(quads.y_seeds[i]),
                teacher=known.get("teacher") or "unknown",
                teacher_version=known.get("teacher_version") or "unknown",
            )
            if clip_score is not None:
                row["clip_score"] = float(clip_score[i])
            if dino_score is not None:
                row["dino_score"] = float(dino_score[i])
            if thresholds is not None:
                row["clip_pass"] = bool(clip_score[i] >= thresholds[0])
                row["dino_pass"] = bool(dino_score[i] >= thresholds[1])
            writer.add(row)
    return open_dataset(folder)


def read_quadruplets(dataset: Dataset | str | Path, rows: np.ndarray | None = None) -> QuadrupletSet:
    """The quadruplets of a dataset (``rows``: a boolean mask or positions; None: all), with their
    provenance. Subjects and contexts become ids by their names (integers as written); what ``y``
    shows and the failure come from the ``truth`` column where a world wrote it, else they are
    taken as asked and ``"none"``."""
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    names = [n for n in COLUMNS if n not in ("x", "y")]
    table = ds.table(names)
    if rows is not None:
        positions = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        table = table.take(positions)
    t = table.to_pydict()
    n = table.num_rows
    truth = [json.loads(v) if v else {} for v in t["truth"]]
    subjects = [s if s is not None else f"row-{i}" for i, s in enumerate(t["subject"])]
    subject_ids = _ids(subjects)
    y_subject_ids = _ids([str(tr.get("y_subject", s)) for tr, s in zip(truth, subjects, strict=True)], subjects)
    contexts = [c if c is not None else "" for c in t["context"]]
    shown = [tr["y_context"] if "y_context" in tr else c for tr, c in zip(truth, contexts, strict=True)]
    names = sorted(set(contexts) | {s for s in shown if s is not None})
    context_ids = _ids(contexts, names)
    y_context_ids = np.array([NEUTRAL if s is None else names.index(s) for s in shown], np.int64)
    return QuadrupletSet(
        x=ds.images("x", rows),
        y=ds.images("y", rows),
        subject_ids=subject_ids,
        context_ids=context_ids,
        y_subject_ids=y_subject_ids,
        y_context_ids=y_context_ids,
        failures=np.array([FAILURES.index(tr.get("failure", "none")) for tr in truth], np.int64),
        x_seeds=np.array([tr.get("x_seed", -1) for tr in truth], np.int64),
        y_seeds=np.array(t["seed"], np.int64),
        instructions=t["instruction"],
        classes=[c or "" for c in t["subject_class"]],
        provenance=[{name: t[name][i] for name in _PROVENANCE} for i in range(n)],
    )


def _ids(names: list[str], vocabulary: list[str] | None = None) -> np.ndarray:
    """Integer ids of names: the integer a name spells, else its rank among ``vocabulary``'s sorted
    distinct names (``names`` themselves when None), so equal names get equal ids."""
    if all(name.lstrip("-").isdigit() for name in names):
        return np.array([int(name) for name in names], np.int64)
    order = {name: i for i, name in enumerate(sorted(set(vocabulary or names) | set(names)))}
    return np.array([order[name] for name in names], np.int64)
