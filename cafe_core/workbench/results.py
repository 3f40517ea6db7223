"""Reading back what the evaluation stages wrote: each variant's scores (mean, per subject) and quality figures.

Light on purpose (no models): the table stages read these, and a stage's DVC code deps are the
modules it imports.
"""

from __future__ import annotations

import json
from pathlib import Path

from .paths import ProjectPaths

__all__ = ["read_guidance", "read_quality", "read_scores", "read_subject_scores", "rows_by_seed"]


def read_scores(root: Path, variant: str) -> dict[str, dict[str, float]]:
    """An evaluated variant's scores, ``{domain: {metric: mean}}``, from its ``metrics.json``."""
    path = ProjectPaths(root).variant_metrics(variant)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro evaluate@{variant}` first")
    return _variant_entry(path, variant)


def read_subject_scores(root: Path, variant: str) -> list[dict]:
    """An evaluated variant's scores per training seed and held-out subject:
    ``[{"subject", "domain", "seed", metric: mean}]``."""
    path = ProjectPaths(root).variant_subjects(variant)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro evaluate@{variant}` first")
    return json.loads(path.read_text())


def rows_by_seed(rows: list[dict]) -> dict[int | None, list[dict]]:
    """Per-subject rows grouped by the training seed they name (None: a variant that trains nothing)."""
    out: dict[int | None, list[dict]] = {}
    for row in rows:
        out.setdefault(row.get("seed"), []).append(row)
    return out


def read_quality(root: Path, variant: str) -> dict[str, dict] | None:
    """An assistant variant's quality figures, ``{domain: {figure: value}}``; None for other variants."""
    path = ProjectPaths(root).variant(variant) / "quality.json"
    if not path.is_file():
        return None
    return {domain: figures["quality"] for domain, figures in _variant_entry(path, variant).items()} or None


def read_guidance(root: Path) -> dict | None:
    """The guidance scales chosen on validation subjects (``{"clip_scale", "dino_scale"}``), or
    None where the stage ``guidance`` has not run."""
    path = ProjectPaths(root).guidance_grid
    return json.loads(path.read_text())["chosen"] if path.is_file() else None


def _variant_entry(path: Path, variant: str) -> dict:
    data = json.loads(path.read_text())
    if variant not in data:
        raise ValueError(
            f"{path} has no entry {variant!r} (keys: {', '.join(data)}): written by an older layout, "
            f"rerun `dvc repro evaluate@{variant}`"
        )
    return data[variant]


def read_dataset_summary(root: Path, name: str) -> dict | None:
    """What the stage that made dataset ``name`` recorded (``results/datasets/<name>.json``, or one
    file per training seed under ``results/datasets/<name>/``): the rows G trains on and the cost
    added beyond the teacher's data, each the mean over the files, with the files' count; None when
    no stage recorded it."""
    import numpy as np

    single = ProjectPaths(root).dataset_statistics(name)
    files = [single] if single.is_file() else sorted(single.with_suffix("").glob("seed-*.json"))
    if not files:
        return None
    stats = [json.loads(f.read_text()) for f in files]
    return {
        "dataset": name,
        "samples": float(np.mean([s["stages"]["kept"] for s in stats])),
        "added_seconds": float(np.mean([s["added_cost"]["seconds"] for s in stats])),
        "added_cost": stats[0]["added_cost"]["what"],
        "files": len(files),
    }
