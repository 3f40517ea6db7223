"""Stage ``teacher_data``: teacher quadruplets of training subjects, scored and filtered (paper 3.2)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...data.filter import FilterConfig, apply_filter, calibrate_thresholds, filter_scores
from ...models.encoders import ClipEncoder, DinoEncoder
from ...utils.files import atomic_save_safetensors, atomic_write_json
from .. import tracking
from ..config import Params, to_dict
from ..paths import ProjectPaths
from ..sources import training_source

__all__ = ["load_filtered", "teacher_data"]


def teacher_data(params: Params, root: Path) -> dict:
    """Take the training source's teacher quadruplets, score them, filter; returns the filter report."""
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
    kept = quads.select(keep)
    atomic_save_safetensors(
        {"x": kept.x, "y": kept.y, "subject_ids": kept.subject_ids, "context_ids": kept.context_ids}, paths.filtered
    )
    failures = np.array(quads.failure_names())
    report = {
        "thresholds": asdict(chosen),
        "calibrated": t.clip_threshold is None or t.dino_threshold is None,
        "quadruplets": len(quads),
        "kept": int(keep.sum()),
        "kept_fraction": round(float(keep.mean()), 4),
        "rejected_by_failure_mode": {
            mode: round(float(1 - keep[failures == mode].mean()), 4) for mode in sorted(set(failures))
        },
        "failed_share_before": round(float(np.mean(failures != "none")), 4),
        "failed_share_after": round(float(np.mean(failures[keep] != "none")), 4) if keep.any() else None,
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
    atomic_write_json(paths.filter_report, report)
    return report


def load_filtered(root: Path) -> dict[str, np.ndarray]:
    """The filtered quadruplets G trains on: ``x``, ``y`` (uint8 (N, H, W, 3)), subject and context ids."""
    from safetensors.numpy import load_file

    path = ProjectPaths(root).filtered
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro teacher_data` first")
    return load_file(path)
