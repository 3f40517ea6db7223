"""The stage ``train_generator@main`` with its training seeds in turn and side by side (prints figures; not a test).

    bin/with-env python scripts/benchmark_seed_processes.py [--steps 150] [--repeats 2] [--scratch DIR]

``compute.seed_processes`` trains a stage's seeds at once, a process each with the threads split
(``cafe_core.workbench.processes``). ``benchmark_processes.py`` times the lever on G's bare training
step; this times what a user waits for: the whole stage, ``params.yaml``'s three seeds, G at its real
size and batch (only ``generator.steps`` shortened), start-up, feature caches, MLflow and the sample
grid included. Its world is the real configuration pretrained for two steps per model (what G draws
does not change how long a step takes), and its teacher data a few thousand rows kept unfiltered.

Each repeat trains the stage from nothing once with ``seed_processes: 1`` and once with
``--processes`` (2), back to back (the feature caches are filled before the first timing); it
prints each pair's seconds and their ratio, then the median ratio, with the machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from cafe_core.workbench.config import params_from_dict  # noqa: E402
from cafe_core.workbench.paths import ProjectPaths  # noqa: E402


def scratch_params(steps: int):
    """params.yaml at its real sizes, but a world pretrained two steps per model, few rows, and G
    ``steps`` long."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["pretrain"].update(dataset_size=2000, dialogues=200)
    for spec in raw["pretrain"].values():
        if isinstance(spec, dict) and "steps" in spec:
            spec["steps"] = 2
    raw["teacher"].update(quadruplets=4000, clip_threshold=-1.0, dino_threshold=-1.0)  # keep every row
    raw["generator"].update(steps=steps, sample_every=steps)
    return params_from_dict(raw)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="G's training steps per seed")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of stage runs (in turn, side by side)")
    parser.add_argument("--scratch", type=Path, help="scratch project (default: a new temporary folder)")
    parser.add_argument("--processes", type=int, default=2, help="compute.seed_processes of the side-by-side runs")
    parser.add_argument(
        "--no-warmup", action="store_true", help="skip the untimed first run (a --scratch whose caches are filled)"
    )
    args = parser.parse_args()

    from cafe_core.workbench.stages.pretrain_world import pretrain_models
    from cafe_core.workbench.stages.teacher_data import teacher_data
    from cafe_core.workbench.stages.train_generator import train_generator_stage
    from cafe_core.world.pretrain import MODELS

    root = Path(args.scratch or tempfile.mkdtemp(prefix="cafe-seed-processes-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    params = scratch_params(args.steps)
    print(f"scratch project {root}; {cpu_name()}, {os.cpu_count()} CPUs; seeds {params.seeds}, {args.steps} steps each")
    started = time.perf_counter()
    pretrain_models(params, root, models=MODELS)
    teacher_data(params, root)
    print(f"world (two steps a model) and teacher data: {time.perf_counter() - started:.0f} s")
    paths = ProjectPaths(root)

    def stage(processes: int) -> float:
        shutil.rmtree(paths.generator("main", params.seeds[0]).parent, ignore_errors=True)
        shutil.rmtree(paths.checkpoints("generator"), ignore_errors=True)
        run = dataclasses.replace(params, compute=dataclasses.replace(params.compute, seed_processes=processes))
        started = time.perf_counter()
        train_generator_stage(run, root, "main")
        return time.perf_counter() - started

    if not args.no_warmup:
        stage(1)  # fills the feature caches and warms the imports: untimed
    ratios = []
    for repeat in range(args.repeats):
        in_turn = stage(1)
        side = stage(args.processes)
        ratios.append(in_turn / side)
        print(
            f"repeat {repeat + 1}: in turn {in_turn:.1f} s, {args.processes} side by side {side:.1f} s, "
            f"ratio {ratios[-1]:.2f}x"
        )
    print(f"median ratio (in turn / side by side): {statistics.median(ratios):.2f}x over {args.repeats} pairs")


if __name__ == "__main__":
    main()
