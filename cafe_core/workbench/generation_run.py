"""Making a dataset on several processes that a kill does not hurt (self-distillation, teachers).

Each process of an ``accelerate launch`` writes its own part, ``<folder>/parts/rank-<r>/`` (a
dataset of :mod:`cafe_core.data.dataset`), so no two processes write one file. A request belongs
to the process its id hashes to, and every process first reads the ids of every existing part,
so a run killed at any point and started again (with as many processes or another number) makes
each missing row once: rows lost with the kill were never listed in a manifest and are made again;
rows listed are skipped. When every process is done, the main one writes ``<folder>/manifest.json``,
which lists the shards of every part: the folder opens as one dataset.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.dataset import Dataset, DatasetWriter, compose, open_dataset

__all__ = ["generate_dataset", "merge_parts", "owner"]

logger = logging.getLogger(__name__)


def owner(row_id: str, processes: int) -> int:
    """The process that makes row ``row_id``: a stable hash of the id, modulo the processes."""
    return int.from_bytes(hashlib.sha256(row_id.encode()).digest()[:8], "little") % processes


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "parts").glob("rank-*") if (p / "manifest.json").is_file())


def _written(folder: Path) -> set[str]:
    ids: set[str] = set()
    for part in _parts(folder):
        ids.update(open_dataset(part).column("id"))
    return ids


def merge_parts(folder: str | Path, info: Mapping[str, Any] | None = None) -> Dataset:
    """Write ``folder/manifest.json`` listing the shards of every part in ``folder/parts``; rows
    keep their parts' order (part by part). Refuses parts whose rows share an id."""
    folder = Path(folder)
    seen = set()
    for part in _parts(folder):
        ids = set(open_dataset(part).column("id"))
        if ids & seen:
            raise ValueError(f"{part} repeats ids of another part, e.g. {sorted(ids & seen)[:3]}")
        seen |= ids
    return compose(folder, _parts(folder), info=info)


def generate_dataset(
    requests: Sequence[Any],
    make_rows: Callable[[list[Any]], list[Mapping[str, Any]]],
    folder: str | Path,
    *,
    info: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    rows_per_shard: int = 256,
    accelerator: Any = None,
) -> Dataset | None:
    """Make the rows of ``requests`` (each with an ``id``) into the dataset at ``folder``.

    ``make_rows(batch)`` turns a batch of requests into one row each, of
    :data:`~cafe_core.data.dataset.COLUMNS`, with its request's ``id`` (a target the filter rejects
    is a row too, its decisions in ``clip_pass`` / ``dino_pass``: the statistics count it and a
    rerun does not make it again). Under ``accelerator`` (``accelerate.Accelerator``) each process
    makes its share. Returns the whole dataset on the main process (None on the others).
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    rank = accelerator.process_index if accelerator is not None else 0
    processes = accelerator.num_processes if accelerator is not None else 1
    ids = [str(r.id) for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    done = _written(folder)
    if accelerator is not None:
        accelerator.wait_for_everyone()  # every process has read the parts before any writes
    mine = [r for r in requests if str(r.id) not in done and owner(str(r.id), processes) == rank]
    logger.info("process %d of %d: %d rows to make (%d of %d exist)", rank, processes, len(mine), len(done), len(ids))
    writer = DatasetWriter(folder / "parts" / f"rank-{rank:05d}", rows_per_shard=rows_per_shard, info=info)
    with writer:
        batches = range(0, len(mine), batch_size)
        for start in tqdm(batches, desc=f"rows (process {rank})", unit="batch", disable=rank != 0):
            batch = mine[start : start + batch_size]
            rows = make_rows(batch)
            if sorted(row["id"] for row in rows) != sorted(str(r.id) for r in batch):
                raise ValueError("make_rows must return one row per request, with the request's id")
            writer.add_many(rows)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if rank != 0:
        return None
    return merge_parts(folder, info)
