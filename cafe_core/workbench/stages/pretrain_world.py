"""Stages ``pretrain_world`` and ``pretrain_world_small``: CAFE-mini's foundation models and their probes;
under a profile of real checkpoints (``sd2``), a record of which checkpoint each role resolves to.

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
from ..pins import checkpoint_pin
from ..plots import image_grid

__all__ = ["MODEL_SETS", "PIN", "pin_checkpoints", "pretrain_models", "pretrain_world_stage"]

logger = logging.getLogger(__name__)

MODEL_SETS = {"core": MODELS, "small": SMALL_MODELS}
"""``core``: the world's foundation models; ``small``: table 5's smaller CLIP and DINO."""


PIN = "checkpoint.json"
"""Under a profile of real checkpoints, ``models/world/<role>/checkpoint.json``: which checkpoint the
role resolved to (:func:`~cafe_core.workbench.pins.checkpoint_pin`), the output DVC tracks in its place."""


def pin_checkpoints(params: Params, root: Path, roles: tuple[str, ...]) -> dict[str, dict]:
    """Record which checkpoint each role of a real profile resolves to, in ``models/world/<role>``.

    The stages load real checkpoints from the Hugging Face cache or ``CAFE_MODEL_ROOT``, outside the
    project; these records are what ``dvc.yaml`` makes every later stage depend on, so swapping a
    snapshot reruns what read the old one, as retraining a world model does in ``mini``.
    """
    pins = {}
    for role in roles:
        pins[role] = checkpoint_pin(params.profile.checkpoint(role))
        atomic_write_json(ProjectPaths(root).foundation_model(role) / PIN, pins[role])
    return pins


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
    name = "metrics_small.json" if models == "small" else "metrics.json"
    if paths.model_root(params.profile) is None:  # real checkpoints: nothing to train, record which
        with tracking.start_run(run, params, log_params=to_dict(params), root=root):
            pins = pin_checkpoints(params, root, MODEL_SETS[models])
            tracking.set_tags({f"cafe.checkpoint.{role}": f"{p['name']}@{p['revision']}" for role, p in pins.items()})
            timing = {"this_run_seconds": round(time.perf_counter() - started, 1), "train_seconds_per_model": {}}
        atomic_write_json(paths.world_results / name, {})  # no world to probe
        atomic_write_json(paths.world_results / name.replace("metrics", "timing"), timing)
        logger.info(
            "profile %s: pinned %s", params.profile.name, ", ".join(f"{r}={p['name']}" for r, p in pins.items())
        )
        return {"metrics": {}, "markers": pins, "grid": None}
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
