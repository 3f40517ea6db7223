"""What several stages share: the identity of a checkpoint for caches and skip keys, the special variants."""

from __future__ import annotations

import json

from ...utils.hub import resolve_model
from ..config import Params
from ..paths import ProjectPaths

__all__ = ["GT_EMBEDDING", "REAL_IMAGES", "TARGET_SEEDS", "encoder_key"]

REAL_IMAGES = "real_images"  # the ceiling variant: ground-truth renders scored like generations
GT_EMBEDDING = "gt_embedding"  # c = E_c(the true target render): what a perfect assistant would predict
TARGET_SEEDS = 1000  # offset of the render seeds of true targets y, away from the ceiling row's scenes


def encoder_key(params: Params, paths: ProjectPaths, name: str) -> str:
    """Identity of a checkpoint for feature caches: its pretraining marker, else its resolved path."""
    path = resolve_model(name, model_root=paths.model_root(params.profile))
    marker = path / "cafe_pretrain.json"
    return json.loads(marker.read_text())["key"] if marker.is_file() else str(path)
