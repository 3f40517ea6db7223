"""Stages ``pretrain_world`` and ``pretrain_world_small``: CAFE-mini's foundation models and their probes.

The paper takes CLIP, DINOv2, Llama-2 and Stable Diffusion 2 off the shelf; CAFE-mini trains each
inside the world (:mod:`cafe_core.world.pretrain`), then measures on held-out subjects that each
learned what its real counterpart knows, against chance (:mod:`cafe_core.world.probes`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ...utils.files import atomic_write_json
from ...world.pretrain import MODELS, SMALL_MODELS, pretrain_world
from ...world.probes import metrics_table, small_encoder_metrics, world_metrics
from .. import tracking
from ..config import Params, to_dict
from ..paths import ProjectPaths
from ..plots import image_grid

__all__ = ["MODEL_SETS", "pretrain_models", "pretrain_world_stage"]

logger = logging.getLogger(__name__)

MODEL_SETS = {"core": MODELS, "small": SMALL_MODELS}
"""``core``: the world's foundation models; ``small``: table 5's smaller CLIP and DINO."""


def pretrain_models(
    params: Params, root: Path, *, models: tuple[str, ...] = MODELS, only: tuple[str, ...] | None = None
) -> dict[str, dict]:
    """Pretrain the missing or stale world models of ``models`` into the profile's model root."""
    paths = ProjectPaths(root)
    model_root = paths.model_root(params.profile)
    if model_root is None:
        raise ValueError(f"profile {params.profile.name!r} uses real checkpoints: there is no world to pretrain")
    return pretrain_world(params, model_root, paths.world_renders, only=only, models=models)


def pretrain_world_stage(
    params: Params, root: Path, *, models: str = "core", only: tuple[str, ...] | None = None
) -> dict:
    """The stage: pretrain, probe, write ``results/world/`` and log one MLflow run.

    Returns ``{"metrics": ..., "markers": ..., "grid": figure or None}``; ``grid`` shows generated
    text-to-image samples above ground-truth renders of the same held-out prompts.
    """
    if models not in MODEL_SETS:
        raise ValueError(f"models must be one of {', '.join(MODEL_SETS)}, got {models!r}")
    paths = ProjectPaths(root)
    started = time.perf_counter()
    run = "pretrain_world" if models == "core" else "pretrain_world_small"
    grid = None
    with tracking.start_run(run, params, log_params=to_dict(params), root=root):
        markers = pretrain_models(params, root, models=MODEL_SETS[models], only=only)
        model_root = paths.model_root(params.profile)
        trained = {k: v["seconds"] for k, v in markers.items() if v["seconds"] is not None}
        tracking.log_metrics({f"{k}/train_seconds": v for k, v in trained.items()})
        if models == "small":
            metrics = small_encoder_metrics(params, model_root, paths.world_renders)
            tracking.log_metrics({f"{k}/value": v["value"] for k, v in metrics.items()})
        else:
            metrics, samples = world_metrics(params, model_root, paths.world_renders)
            tracking.log_metrics({f"{k}/value": v["value"] for k, v in metrics.items()})
            tracking.log_metrics({f"{k}/chance": v["chance"] for k, v in metrics.items()})
            grid = _sample_grid(samples)
            tracking.log_image(grid, "t2i_samples")
        timing = {"this_run_seconds": round(time.perf_counter() - started, 1), "train_seconds_per_model": trained}
    name = "metrics_small.json" if models == "small" else "metrics.json"
    atomic_write_json(paths.world_results / name, metrics)
    atomic_write_json(paths.world_results / name.replace("metrics", "timing"), timing)
    logger.info("learned-ness of the world models:\n%s", metrics_table(metrics))
    return {"metrics": metrics, "markers": markers, "grid": grid}


def _sample_grid(samples: dict, n: int = 8, rows: int = 3):
    """Each row of generated images above the ground-truth renders of the same prompts."""
    cells, titles = [], []
    for i in range(rows):
        cells += [list(samples["generated"][i * n : (i + 1) * n]), list(samples["real"][i * n : (i + 1) * n])]
        titles += [samples["prompts"][i * n : (i + 1) * n], []]
    return image_grid(cells, row_titles=["generated", "real render"] * rows, cell_titles=titles)
