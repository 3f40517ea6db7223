"""Trial of G's training settings outside DVC: retrain G on one seed with overrides, score it on validation.

    bin/with-env python scripts/trial_generator.py '{"steps": 3000}' [--name main] [--seed 0] [--scratch DIR]

Needs a project that has run `dvc repro guidance` (world models, filtered teacher data, the
guidance grid). The trial lives in a scratch root (default: a fresh temporary folder) that links
the project's world models and data, so the project's own G, its caches and its DVC outputs are
never written. It trains generator ``--name`` with ``params.yaml``'s ``generator`` settings plus
the JSON overrides, then draws the `guidance` stage's validation cases at the chosen scales and
at (3, 3), and prints one JSON line: the final loss, the training seconds, and per pair of scales
the probe's attribute and context accuracy, CLIP-T and identity per domain, and the stage's score.
Compare with the same pairs in ``results/guidance/grid.json`` (the stage's G, same cases and noise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from cafe_core.workbench.config import load_params
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.sources import evaluation_source
from cafe_core.workbench.stages import guidance
from cafe_core.workbench.stages.train_generator import train_generator_stage

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("models/world", "data/world", "data/teacher", "data/teacher_filtered", "data/features", "data/references")


def scratch_root(project: Path, folder: Path | None) -> Path:
    """A root whose world models and data are the project's (linked) and whose G and results are its own."""
    root = Path(folder or tempfile.mkdtemp(prefix="cafe-trial-"))
    for rel in LINKED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if not (root / rel).exists():
            (root / rel).symlink_to(project / rel)
    shutil.copy(project / "params.yaml", root / "params.yaml")
    grid = ProjectPaths(root).guidance_grid
    grid.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ProjectPaths(project).guidance_grid, grid)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", help="JSON object of params.yaml generator keys, e.g. '{\"lr\": 1e-3}'")
    parser.add_argument("--name", default="main", help="the generator of params.yaml `generators` to train")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--scratch", type=Path, help="scratch root (default: a new temporary folder)")
    args = parser.parse_args()

    root = scratch_root(ROOT, args.scratch)
    params = load_params(root / "params.yaml")
    params = dataclasses.replace(
        params,
        seeds=[args.seed],
        generator=dataclasses.replace(params.generator, **json.loads(args.overrides)),
        guidance=dataclasses.replace(params.guidance, generator=args.name),
    )
    start = time.perf_counter()
    final = train_generator_stage(params, root, args.name)
    train_seconds = time.perf_counter() - start

    p = params.guidance
    source = evaluation_source(params, root)
    counts = {"object": p.object_subjects, "face": p.face_subjects}
    cases = {
        d: source.validation_cases(d, counts[d], p.prompts, params.seed, params.evaluation.references)
        for d in source.domains
    }
    chosen = json.loads(ProjectPaths(root).guidance_grid.read_text())["chosen"]
    # The stage's own scorer (private to it) keeps the trial's figures the grid's figures.
    scorer = guidance._GridScorer(params, root, source, cases, args.seed)
    rows = [scorer(sc, sd) for sc, sd in [(chosen["clip_scale"], chosen["dino_scale"]), (3.0, 3.0)]]
    print(
        json.dumps(
            {
                "overrides": args.overrides,
                "root": str(root),
                "final": final,
                "train_seconds": round(train_seconds, 1),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
