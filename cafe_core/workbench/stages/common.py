"""What several stages share: the identity of a checkpoint for caches and skip keys, the special variants."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...utils.digest import config_hash
from ...utils.hub import resolve_model
from ..config import Params
from ..paths import ProjectPaths

__all__ = ["GENERATOR_MARKER", "GT_EMBEDDING", "REAL_IMAGES", "TARGET_SEEDS", "encoder_key", "generator_digest"]

GENERATOR_MARKER = "cafe_generator.json"
"""The skip marker in a trained G's folder (:func:`~cafe_core.workbench.artifacts.build_once`)."""

REAL_IMAGES = "real_images"  # the ceiling variant: ground-truth renders scored like generations
GT_EMBEDDING = "gt_embedding"  # c = E_c(the true target render): what a perfect assistant would predict
TARGET_SEEDS = 1000  # offset of the render seeds of true targets y, away from the ceiling row's scenes


def encoder_key(params: Params, paths: ProjectPaths, name: str) -> str:
    """Identity of a checkpoint for feature caches: its pretraining marker, else its resolved path."""
    path = resolve_model(name, model_root=paths.model_root(params.profile))
    marker = path / "cafe_pretrain.json"
    return json.loads(marker.read_text())["key"] if marker.is_file() else str(path)


def generator_digest(folder: Path) -> str:
    """What a trained G is, by content: every file of its folder (weights and configs) but its skip
    marker. What reads a G (a fine-tuned G, an assistant validated with it, self-distillation, an
    evaluation) keys on this, so a G retrained to the same weights retrains nothing after it.

    Raises:
        FileNotFoundError: ``folder`` holds no trained G (no marker).
    """
    folder = Path(folder)
    if not (folder / GENERATOR_MARKER).is_file():
        raise FileNotFoundError(f"{folder} holds no trained G (no {GENERATOR_MARKER})")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != GENERATOR_MARKER)
    return config_hash([(p.relative_to(folder).as_posix(), _streamed_digest(p)) for p in files])


def _streamed_digest(path: Path) -> str:
    """SHA-256 of a file read in chunks: an SD2 UNet is 3.5 GB."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
