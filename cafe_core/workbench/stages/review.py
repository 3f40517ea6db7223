"""Stage ``review``: human filtering of the automatically filtered teacher data (paper 3.2), the
dataset ``human`` (table 3's D_human).

Reviewers decide on the rows the automatic filter keeps; their decisions file (a
:class:`~cafe_core.data.review.ReviewLog`, the review widget's) is what this stage reads. Without
one (``review.decisions: null``), CAFE-mini's simulated annotator decides, and every figure it
produces says "simulated".
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...data.dataset import DatasetWriter, open_dataset
from ...data.review import ReviewLog, SimulatedAnnotator
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params
from ..dataset_report import log_dataset_report
from ..paths import ProjectPaths
from .teacher_data import TEACHER_DATASET

__all__ = ["HUMAN_DATASET", "SIMULATED_DECISIONS", "review_stage"]

logger = logging.getLogger(__name__)

HUMAN_DATASET = "human"
SIMULATED_DECISIONS = "decisions-simulated.jsonl"
"""The simulated annotator's decisions file, inside the ``human`` dataset's folder."""


def review_stage(params: Params, root: Path) -> dict:
    """Review the teacher rows the automatic filter keeps and write those with a decision, the
    decision in ``review``, as the dataset ``human``; returns what the review cost and kept."""
    paths = ProjectPaths(root)
    r = params.review
    teacher = open_dataset(paths.dataset(TEACHER_DATASET))
    small = teacher.table(["id", "truth"]).to_pydict()
    auto = np.flatnonzero(teacher.kept())
    ids = [small["id"][i] for i in auto]
    folder = paths.dataset(HUMAN_DATASET)
    if r.decisions is None:
        log = ReviewLog(folder / SIMULATED_DECISIONS)
        if log.path.exists():  # decisions on an earlier teacher dataset must not carry over by id
            log.path.unlink()
        good = [json.loads(small["truth"][i] or "{}").get("failure") == "none" for i in auto]
        if not any(small["truth"][i] for i in auto):
            raise ValueError("the simulated annotator needs the teacher's truth, and these rows have none")
        SimulatedAnnotator(r.error_rate, r.seconds_per_decision, seed=r.seed).review(log, ids, good)
        reviewer = "simulated"
    else:
        log = ReviewLog(Path(root) / r.decisions)
        if not log.path.is_file():
            raise FileNotFoundError(f"review.decisions names {log.path}, which does not exist")
        reviewer = "people"
    decisions = log.decisions()
    reviewed = [i for i, row_id in zip(auto, ids, strict=True) if row_id in decisions]
    info = {"made_by": "review", "reviewer": reviewer, "from": TEACHER_DATASET, "review": asdict(r)}
    _write_reviewed(teacher, reviewed, decisions, folder, info)
    human = open_dataset(folder)
    seconds = log.seconds()
    report = {
        "reviewer": reviewer,
        "automatically_kept": len(ids),
        "reviewed": len(reviewed),
        "accepted": int(human.kept().sum()),
        "review_seconds": seconds,
        "review_hours": round(seconds / 3600, 2),
    }
    if reviewer == "simulated":
        truth = [json.loads(small["truth"][i]).get("failure") == "none" for i in reviewed]
        accepted = [decisions[small["id"][i]] == "accept" for i in reviewed]
        report["simulated_error_rate"] = float(np.mean([a != t for a, t in zip(accepted, truth, strict=True)]))
        report["failed_share_after"] = float(np.mean([not t for a, t in zip(accepted, truth, strict=True) if a]))
    with tracking.start_run("review", params, log_params={"review": asdict(r), "reviewer": reviewer}, root=root):
        tracking.log_metrics({k: float(v) for k, v in report.items() if isinstance(v, (int, float))})
        statistics = log_dataset_report(human, HUMAN_DATASET)
    what = f"{reviewer} reviewer seconds" + (
        f", {r.seconds_per_decision:g} s a decision" if reviewer == "simulated" else ""
    )
    cost = {"seconds": seconds, "what": what}
    atomic_write_json(paths.dataset_statistics(HUMAN_DATASET), {**statistics, "review": report, "added_cost": cost})
    logger.info("review (%s): %d of %d accepted, %.1f h", reviewer, report["accepted"], len(reviewed), seconds / 3600)
    return report


def _write_reviewed(teacher, positions: list[int], decisions: dict[str, str], folder: Path, info: dict) -> None:
    """The rows at ``positions`` (with their images, scores and provenance), each with its decision."""
    # A fresh dataset, not a resumed one; the folder also holds the simulated reviewers' log, which stays.
    for stale in folder.glob("shard-*.parquet"):
        stale.unlink()
    (folder / "manifest.json").unlink(missing_ok=True)
    table = teacher.table().take(np.asarray(positions, dtype=np.int64))
    with DatasetWriter(folder, rows_per_shard=4096, info=info) as writer:
        for batch in table.to_batches(max_chunksize=1024):
            for row in batch.to_pylist():
                writer.add({**row, "review": decisions[row["id"]]})
