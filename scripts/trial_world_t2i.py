"""Trial of the world's text-to-image settings outside DVC: pretrain a variant of its t2i, judge what it draws.

    bin/with-env python scripts/trial_world_t2i.py '{"steps": 15000}' [--scratch DIR] [--subjects 24] [--any-clip]

G starts from the world's text-to-image UNet (CAFE-mini's SD2) and draws about as well as that
model draws when told every detail (docs/measurements.md, "Can G's base model draw the subject?").
So a change to the base model is worth measuring before any G is trained on it: retraining the
world reruns every stage after it.

The trial lives in a scratch root (default: a fresh temporary folder) that links the project's
world models, the fidelity probe and the rendered training set; it pretrains ``t2i`` with
``params.yaml``'s ``pretrain.t2i`` plus the JSON overrides into its own ``models/world/t2i``
(checkpointed: a killed trial resumes in the same ``--scratch``, and a finished one is reused),
then runs ``diagnose_generator.py``'s base-model measurement on it. The project's own models are
never written. It prints the training seconds and, per domain, the probe's attribute and context
accuracy for prompts naming every detail, plain prompts and true renders, and ends with one JSON
line of the same figures. The project's t2i on the same subjects and prompts is
``diagnose_generator.py --only base --subjects N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diagnose_generator import base_model  # noqa: E402
from scratch import link_into, parse_overrides, with_overrides  # noqa: E402

from cafe_core.workbench.config import load_params  # noqa: E402
from cafe_core.workbench.paths import ProjectPaths  # noqa: E402
from cafe_core.world.fidelity import PROBE_FOLDER  # noqa: E402
from cafe_core.world.pretrain import MODELS, model_key, pretrain_world, read_marker  # noqa: E402


def scratch_root(project: Path, folder: Path | None, model_root: Path) -> Path:
    """A root whose world models (but ``t2i``), probe and renders link the project's."""
    root = Path(folder or tempfile.mkdtemp(prefix="cafe-t2i-trial-"))
    models = model_root.relative_to(project)
    (root / models).mkdir(parents=True, exist_ok=True)  # its own t2i lands beside the linked models
    linked = [models / name for name in (*[m for m in MODELS if m != "t2i"], PROBE_FOLDER)]
    link_into(root, project, [*linked, ProjectPaths(project).world_renders.relative_to(project)])
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "overrides",
        type=parse_overrides,
        help="JSON object of params.yaml pretrain.t2i keys, e.g. '{\"steps\": 15000}'",
    )
    parser.add_argument("--scratch", type=Path, help="scratch root (default: a new temporary folder)")
    parser.add_argument("--subjects", type=int, default=24, help="held-out subjects per domain to judge")
    parser.add_argument(
        "--any-clip",
        action="store_true",
        help="read the project's CLIP even when this code keys it differently (a trial of an uncommitted "
        "change to world/pretrain.py, whose digest is in every world model's key)",
    )
    args = parser.parse_args()
    overrides = args.overrides
    params = load_params(ROOT / "params.yaml")
    try:
        t2i = with_overrides(params.pretrain.t2i, overrides, "pretrain.t2i")
    except ValueError as e:
        parser.error(str(e))
    params = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, t2i=t2i))
    project_models = ProjectPaths(ROOT).model_root(params.profile)
    if project_models is None:
        parser.error(f"profile {params.profile.name!r} uses real checkpoints: there is no world t2i to retrain")
    clip = read_marker(project_models / "clip")
    if clip is None:
        parser.error("the project has no world CLIP yet: run `bin/with-env dvc repro pretrain_world` first")
    if clip.get("key") != model_key(params, "clip", {}) and not args.any_clip:
        parser.error(
            "the project's world CLIP was made by other code or settings than this checkout's: rerun "
            "`bin/with-env dvc repro pretrain_world`, or pass --any-clip to trial a change to world/pretrain.py"
        )
    if not (project_models / PROBE_FOLDER).is_dir():
        parser.error("no fidelity probe in this project yet: run `bin/with-env dvc repro fidelity_probe` first")

    root = scratch_root(ROOT, args.scratch, project_models)
    model_root = ProjectPaths(root).model_root(params.profile)
    print(f"trial root {root}; pretrain.t2i overrides {overrides}")
    renders = ProjectPaths(root).world_renders
    markers = pretrain_world(params, model_root, renders, only=("t2i",), models=("clip", "t2i"))
    seconds = markers["t2i"]["seconds"]
    print(f"t2i: {'reused' if seconds is None else f'{seconds} s of training'}")
    figures = base_model(params, model_root, "t2i", args.subjects)
    print(json.dumps({"overrides": overrides, "train_seconds": seconds, "figures": figures}))


if __name__ == "__main__":
    main()
