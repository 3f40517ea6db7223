"""Teacher quadruplets ``(x, instruction, y)`` as index-aligned arrays, with what each target really shows.

The in-memory form every source of teacher data produces and the filter reads: subject photos
``x``, targets ``y``, their instructions, and ground-truth labels that only graders read
(:data:`FAILURES`). On disk they are a dataset (:mod:`cafe_core.data.dataset`):
:func:`write_dataset` writes one with the filter's scores and decisions, :func:`read_quadruplets`
reads one back (a user's own too), and :func:`read_dialogues` reads the assistant's training chats
from the same rows, as the paper trains M on dialogues written for the kept quadruplets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from ..utils.files import atomic_save_safetensors
from .dataset import COLUMNS, Dataset, DatasetWriter, open_dataset, positions
from .dialogues import DialogueSet

__all__ = [
    "FAILURES",
    "UNKNOWN_FAILURE",
    "QuadrupletSet",
    "load_quadruplets",
    "read_dialogues",
    "read_quadruplets",
    "save_quadruplets",
    "write_dataset",
]

logger = logging.getLogger(__name__)

FAILURES = ("none", "identity_drift", "ignored_instruction", "artefacts")
"""Ground-truth outcomes of the teacher; a quadruplet set stores each as its index here."""

UNKNOWN_FAILURE = -1
"""The failure index of a row with no ground truth (real data: nobody knows whether the teacher failed)."""


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
    """Indices into :data:`FAILURES` (ground truth, never an input of the filter); :data:`UNKNOWN_FAILURE`
    where the data has no ground truth."""
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
        """Each row's failure by name; ``"unknown"`` where the data has no ground truth."""
        return [FAILURES[code] if code != UNKNOWN_FAILURE else "unknown" for code in self.failures]


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
    shows and the failure come from the ``truth`` column where a world wrote it; else what ``y``
    shows is taken as asked and the failure is :data:`UNKNOWN_FAILURE` (real data: no ground truth)."""
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    names = [n for n in COLUMNS if n not in ("x", "y")]
    table = ds.table(names)
    if rows is not None:
        table = table.take(positions(rows))
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
        failures=np.array(
            [FAILURES.index(tr["failure"]) if "failure" in tr else UNKNOWN_FAILURE for tr in truth], np.int64
        ),
        x_seeds=np.array([tr.get("x_seed", -1) for tr in truth], np.int64),
        y_seeds=np.array(t["seed"], np.int64),
        instructions=t["instruction"],
        classes=[c or "" for c in t["subject_class"]],
        provenance=[{name: t[name][i] for name in _PROVENANCE} for i in range(n)],
    )


VALIDATION_SHARE = 1 / 8
"""The share of a dataset's subjects whose dialogues validate the assistant (choose lambda)."""


def validation_subject_names(subjects: list[str], share: float = VALIDATION_SHARE) -> set[str]:
    """The subjects held out to validate: the ``share`` (at least one) that come first by a hash of
    their names, so the split depends on nothing but the names and never moves when rows are added."""
    distinct = sorted(set(subjects), key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    if len(distinct) < 2:
        raise ValueError(
            f"a dataset needs dialogues of 2 or more subjects to hold some apart for validation; it has {len(distinct)}"
        )
    return set(distinct[: max(1, round(share * len(distinct)))])


def read_dialogues(dataset: Dataset | str | Path, *, part: str, decode: bool = True) -> DialogueSet:
    """The assistant's chats of ``part`` (``"fit"`` or ``"val"``): the rows every decision keeps
    (:meth:`Dataset.kept`) that have a dialogue (``messages`` and ``response``), ``y`` the target
    whose CLIP embedding the answer predicts. Validation rows are those of
    :func:`validation_subject_names`, so no validation subject is fitted. The contexts that fulfil a
    request are the row's ``context`` where known (a reader of real data cannot judge more).
    ``decode=False`` leaves ``x`` and ``y`` as streamed :class:`ImageRows` (decoded when read)."""
    if part not in ("fit", "val"):
        raise ValueError(f"part must be 'fit' or 'val', got {part!r}")
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    t = ds.table(["messages", "response", "kind", "subject", "context"]).to_pydict()
    subjects = [s if s is not None else f"row-{i}" for i, s in enumerate(t["subject"])]
    chats = ds.kept() & np.array([m is not None and r is not None for m, r in zip(t["messages"], t["response"])])
    held = validation_subject_names([s for s, chat in zip(subjects, chats, strict=True) if chat])
    rows = np.flatnonzero(chats & np.array([(s in held) == (part == "val") for s in subjects]))
    if not len(rows):
        raise ValueError(f"{ds.folder} has no kept rows with a dialogue for part {part!r}")
    contexts = [t["context"][i] for i in rows]
    x, y = ds.image_rows("x", rows), ds.image_rows("y", rows)
    if decode:
        x, y = x.decode(), y.decode()
    return DialogueSet(
        messages=[[{"role": m["role"], "content": m["content"]} for m in t["messages"][i]] for i in rows],
        responses=[t["response"][i] for i in rows],
        kinds=[t["kind"][i] or "" for i in rows],
        x=x,
        y=y,
        subject_ids=_ids([subjects[i] for i in rows], subjects),
        context_ids=_ids([c or "" for c in contexts]),
        valid=[[c] if c else [] for c in contexts],
    )


def _ids(names: list[str], vocabulary: list[str] | None = None) -> np.ndarray:
    """Integer ids of names: the integer a name spells, else its rank among ``vocabulary``'s sorted
    distinct names (``names`` themselves when None), so equal names get equal ids."""
    if all(name.lstrip("-").isdigit() for name in names):
        return np.array([int(name) for name in names], np.int64)
    order = {name: i for i, name in enumerate(sorted(set(vocabulary or names) | set(names)))}
    return np.array([order[name] for name in names], np.int64)
