"""Stage ``teacher_data``: teacher quadruplets of training subjects, scored and filtered (paper 3.2),
written as the dataset ``data/datasets/teacher`` (:mod:`cafe_core.data.dataset`)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...data.dataset import ImageRows, open_dataset
from ...data.filter import FilterConfig, apply_filter, calibrate_thresholds, filter_scores
from ...data.quadruplets import write_dataset
from ...models.encoders import ClipEncoder, DinoEncoder
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params, to_dict
from ..dataset_report import log_dataset_report
from ..paths import ProjectPaths
from ..sources import training_source

__all__ = ["TEACHER_DATASET", "teacher_data", "training_dataset", "training_pairs"]

TEACHER_DATASET = "teacher"
"""The dataset ``teacher_data`` writes: every quadruplet, its scores and the filter's decisions."""


def _failed_share(failures: np.ndarray) -> float | None:
    """The share of rows whose ground truth is a failure; None for no rows (none kept, or none known)."""
    return round(float(np.mean(failures != "none")), 4) if len(failures) else None


def teacher_data(params: Params, root: Path) -> dict:
    """Take the training source's teacher quadruplets, score them, filter, and write them all with
    their scores and decisions as a dataset; returns the filter report."""
    paths = ProjectPaths(root)
    t = params.teacher
    quads = training_source(params, root).quadruplets(t.quadruplets, seed=params.seed, cache_dir=paths.teacher_cache)
    model_root = paths.model_root(params.profile)
    # The paper filters with its evaluation encoders (CLIP ViT-B/32, DINO ViT-S/16), not E_c / E_d.
    clip = ClipEncoder.from_pretrained(params.profile.eval_clip, model_root=model_root)
    dino = DinoEncoder.from_pretrained(params.profile.eval_dino, model_root=model_root)
    scores = filter_scores(quads, clip, dino, seed=params.seed)
    calibration = calibrate_thresholds(scores, quads.failures, level=t.calibration_level)
    chosen = FilterConfig(
        clip_threshold=t.clip_threshold if t.clip_threshold is not None else calibration.filter.clip_threshold,
        dino_threshold=t.dino_threshold if t.dino_threshold is not None else calibration.filter.dino_threshold,
    )
    keep = apply_filter(scores, chosen)
    dataset = write_dataset(
        quads,
        paths.dataset(TEACHER_DATASET),
        clip_score=scores.clip_sim,
        dino_score=scores.dino_sim,
        thresholds=(chosen.clip_threshold, chosen.dino_threshold),
        info={"made_by": "teacher_data", "profile": params.profile.name, "filter": asdict(chosen)},
    )
    failures = np.array(quads.failure_names())
    known = failures != "unknown"  # real data has no ground truth: its failed shares are not known
    report = {
        "thresholds": asdict(chosen),
        "calibrated": t.clip_threshold is None or t.dino_threshold is None,
        "quadruplets": len(quads),
        "kept": int(keep.sum()),
        "kept_fraction": round(float(keep.mean()), 4),
        "rejected_by_failure_mode": {
            mode: round(float(1 - keep[failures == mode].mean()), 4) for mode in sorted(set(failures))
        },
        "failed_share_before": _failed_share(failures[known]),
        "failed_share_after": _failed_share(failures[keep & known]),
        "calibration": calibration.to_dict(),
    }
    with tracking.start_run("teacher_data", params, log_params={"teacher": to_dict(t)}, root=root):
        tracking.log_metrics(
            {
                k: v
                for k, v in tracking.flatten(report).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
        statistics = log_dataset_report(
            dataset, TEACHER_DATASET, {"clip_score": chosen.clip_threshold, "dino_score": chosen.dino_threshold}
        )
    cost = {"seconds": 0.0, "what": "none: the baseline (the teacher's targets, automatically filtered)"}
    atomic_write_json(paths.dataset_statistics(TEACHER_DATASET), {**statistics, "added_cost": cost})
    atomic_write_json(paths.filter_report, report)
    return report


def training_dataset(root: Path, name: str, seed: int) -> Path:
    """The folder of dataset ``name`` that training seed ``seed`` reads: ``data/datasets/<name>``,
    or its ``seed-<seed>`` part for a dataset made per training seed (self-distillation's)."""
    folder = ProjectPaths(root).dataset(name)
    for candidate in (folder, folder / f"seed-{seed}"):
        if (candidate / "manifest.json").is_file():
            return candidate
    made_by = "teacher_data" if name == TEACHER_DATASET else "the stage that makes it (dvc.yaml)"
    raise FileNotFoundError(f"dataset {name!r} is missing for training seed {seed} ({folder}): run {made_by} first")


def training_pairs(folder: str | Path) -> dict[str, ImageRows]:
    """The pairs G trains on: ``x`` and ``y`` of the rows of the dataset at ``folder`` that every
    decision made keeps (:meth:`~cafe_core.data.dataset.Dataset.kept`), streamed (nothing decoded yet)."""
    dataset = open_dataset(folder)
    kept = dataset.kept()
    if not kept.any():
        raise ValueError(f"{folder}: no row passes its filters; G has nothing to train on")
    return {"x": dataset.image_rows("x", kept), "y": dataset.image_rows("y", kept)}
