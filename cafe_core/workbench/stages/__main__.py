"""``python -m cafe_core.workbench.stages STAGE [NAME]``: one stage without its notebook.

For a stage outside DVC, e.g. G trained on two processes under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

__all__ = ["STAGES", "main"]


def _pretrain(params, root, name):
    from .pretrain_world import pretrain_world_stage

    return pretrain_world_stage(params, root, models=name or "core")


def _teacher(params, root, name):
    from .teacher_data import teacher_data

    return teacher_data(params, root)


def _review(params, root, name):
    from .review import review_stage

    return review_stage(params, root)


def _self_distill(params, root, name):
    from .self_distill import self_distill_stage

    return self_distill_stage(params, root)


def _generator(params, root, name):
    from .train_generator import train_generator_stage

    return train_generator_stage(params, root, name)


def _assistant(params, root, name):
    from .train_assistant import train_assistant_stage

    return train_assistant_stage(params, root, name)


def _evaluate(params, root, name):
    from .evaluate import evaluate_variant

    return evaluate_variant(params, root, name)


def _fidelity_probe(params, root, name):
    from .fidelity import fidelity_probe_stage

    return fidelity_probe_stage(params, root)


def _fidelity(params, root, name):
    from .fidelity_report import fidelity_report

    return fidelity_report(params, root)


def _guidance(params, root, name):
    from .guidance import guidance_grid

    return guidance_grid(params, root)


def _ablation(params, root, name):
    from .ablation import ablation_table

    return ablation_table(params, root, name)


def _report(params, root, name):
    from .report import write_report

    return write_report(params, root)


STAGES: dict[str, tuple[Callable, str | None]] = {
    "pretrain_world": (_pretrain, "core"),  # NAME: core or small
    "teacher_data": (_teacher, None),
    "review": (_review, None),  # human filtering: simulated, or the decisions file params name
    "self_distill": (_self_distill, None),  # eq. 4's targets by the stage-1 system, every training seed
    "train_generator": (_generator, None),  # NAME: a key of `generators`
    "finetune_generator": (_generator, None),  # NAME: a key of `finetuned` (the same code: its spec has `init`)
    "train_assistant": (_assistant, None),  # NAME: a key of `assistants`
    "guidance": (_guidance, None),  # s_c and s_d chosen on validation subjects
    "evaluate": (_evaluate, None),  # NAME: a variant, gt_embedding or real_images
    "fidelity_probe": (_fidelity_probe, None),
    "fidelity": (_fidelity, None),  # the full system's fidelity figures
    "ablation": (_ablation, None),  # NAME: a key of `ablations`
    "report": (_report, None),  # results/report.md: every table, the fidelity figures, stage times
}
"""Stage name -> (runner, default NAME; None: NAME is required, except for the stages without one)."""

_UNNAMED = ("teacher_data", "review", "self_distill", "guidance", "fidelity_probe", "fidelity", "report")


def main(argv: list[str] | None = None) -> None:
    """Run one stage: ``python -m cafe_core.workbench.stages STAGE [NAME]``."""
    from ..config import load_params, project_root

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("name", nargs="?", help="core/small, generator, assistant, variant or ablation target")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    run, default = STAGES[args.stage]
    name = args.name or default
    if name is None and args.stage not in _UNNAMED:
        parser.error(f"{args.stage} needs a name")
    root = project_root()
    run(load_params(root / args.params), root, name)


if __name__ == "__main__":
    main()
