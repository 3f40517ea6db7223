"""Trial of G's training settings outside DVC: retrain G on one seed with overrides, score it on validation.

    bin/with-env python scripts/trial_generator.py '{"steps": 3000}' [--name main] [--seed 0] [--scratch DIR]
        [--scales 5,5 3,3] [--t2i FOLDER]

Needs a project that has run `dvc repro teacher_data` (world models, filtered teacher data) and,
unless ``--scales`` names the pairs to draw at, `dvc repro guidance` (the chosen pair). The trial
lives in a scratch root (default: a fresh temporary folder) that links the project's world models
and data, so the project's own G, its caches and its DVC outputs are never written. It trains
generator ``--name`` with ``params.yaml``'s ``generator`` settings plus the JSON overrides, then
draws the `guidance` stage's validation cases at the chosen scales and at (3, 3) (or at
``--scales``), and prints one JSON line: the final loss, the training seconds, and per pair of
scales the probe's attribute and context accuracy, CLIP-T and identity per domain, and the stage's
score. Compare with the same pairs in ``results/guidance/grid.json`` (the stage's G, same cases
and noise). A second trial in the same ``--scratch`` with the same training settings reuses its
G (a sampling override such as ``{"scheduler": "ddim"}`` retrains nothing).

``--t2i FOLDER`` starts G from another base model than the project's: a world t2i that
``scripts/trial_world_t2i.py`` pretrained in its scratch root (``<scratch>/models/world/t2i``). The
trial's root then links the project's other world models one by one, and draws its own
references (the base model's images of the prompts, from that t2i).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from scratch import link_into, parse_overrides, with_overrides

from cafe_core.workbench.config import load_params
from cafe_core.workbench.evaluation_sources import evaluation_source
from cafe_core.workbench.paths import ProjectPaths
from cafe_core.workbench.stages import guidance
from cafe_core.workbench.stages.train_generator import train_generator_stage

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("models/world", "data/world", "data/teacher", "data/datasets", "data/features", "data/references")


def scratch_root(project: Path, folder: Path | None, t2i: Path | None = None) -> Path:
    """A root whose world models and data are the project's (linked) and whose G and results are its
    own; with ``t2i``, its world t2i is that folder and its references are its own."""
    root = Path(folder or tempfile.mkdtemp(prefix="cafe-trial-"))
    if t2i is None:
        link_into(root, project, LINKED)
    else:
        world = Path("models/world")
        others = [world / p.name for p in (project / world).iterdir() if p.name != "t2i"]
        link_into(root, project, [*others, *(p for p in LINKED if p not in ("models/world", "data/references"))])
        if not (root / world / "t2i").is_symlink():
            (root / world / "t2i").symlink_to(t2i.resolve())
    shutil.copy(project / "params.yaml", root / "params.yaml")
    grid = ProjectPaths(root).guidance_grid
    if ProjectPaths(project).guidance_grid.is_file():
        grid.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ProjectPaths(project).guidance_grid, grid)
    return root


def scale_pair(text: str) -> tuple[float, float]:
    """``"5,3"`` -> (5.0, 3.0): s_c, s_d."""
    try:
        clip_scale, dino_scale = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a pair of scales is 's_c,s_d', got {text!r}") from None
    return clip_scale, dino_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "overrides", type=parse_overrides, help="JSON object of params.yaml generator keys, e.g. '{\"lr\": 1e-3}'"
    )
    parser.add_argument("--name", default="main", help="the generator of params.yaml `generators` to train")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument("--scratch", type=Path, help="scratch root (default: a new temporary folder)")
    parser.add_argument(
        "--scales", type=scale_pair, nargs="+", help="pairs 's_c,s_d' to draw at (default: the chosen pair and 3,3)"
    )
    parser.add_argument("--t2i", type=Path, help="a world t2i folder to start G from (default: the project's)")
    args = parser.parse_args()
    if args.scales is None and not ProjectPaths(ROOT).guidance_grid.is_file():
        parser.error("no guidance grid in this project yet: run `dvc repro guidance` or pass --scales")

    params = load_params(ROOT / "params.yaml")
    try:
        generator = with_overrides(params.generator, args.overrides, "generator")
    except ValueError as e:
        parser.error(str(e))
    if args.t2i is not None and not (args.t2i / "unet").is_dir():
        parser.error(f"{args.t2i} is not a world t2i folder (no unet/)")
    root = scratch_root(ROOT, args.scratch, args.t2i)
    params = dataclasses.replace(
        params,
        seeds=[args.seed],
        generator=generator,
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
    pairs = args.scales
    if pairs is None:
        chosen = json.loads(ProjectPaths(root).guidance_grid.read_text())["chosen"]
        pairs = [(chosen["clip_scale"], chosen["dino_scale"]), (3.0, 3.0)]
    # The stage's own scorer keeps the trial's figures the grid's figures.
    scorer = guidance.GridScorer(params, root, source, cases, args.seed)
    rows = [scorer(sc, sd) for sc, sd in pairs]
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
