"""Stage ``fidelity_probe``: CAFE-mini's fidelity probe, an evaluation model.

It trains the probe (:mod:`cafe_core.world.fidelity`) and states its accuracy on true renders of
held-out subjects (``results/fidelity/probe.json``). Every evaluation then judges its drawings with
it; the stage ``fidelity`` (:mod:`.fidelity_report`) reports what it found of the full system.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...utils.digest import config_hash
from ...utils.files import atomic_write_json
from ...world import make_world
from ...world.fidelity import PROBE_FOLDER, FidelityProbe, probe_accuracy, train_fidelity_probe
from .. import tracking
from ..artifacts import build_once
from ..code_deps import code_digest
from ..config import Params, to_dict
from ..paths import ProjectPaths

__all__ = ["fidelity_probe_stage"]

logger = logging.getLogger(__name__)

MARKER = "cafe_probe.json"

UNAVAILABLE = "unavailable.json"
"""What ``fidelity_probe`` writes in the probe's place under a profile of real checkpoints."""


def fidelity_probe_stage(params: Params, root: Path) -> dict:
    """Train the probe unless its folder is up to date; measure it on held-out true renders.

    The probe learns the world's labels, so only ``mini`` has one: under a profile of real
    checkpoints the stage writes why in the probe's folder and no accuracy, and ``dvc repro`` goes on.
    """
    paths = ProjectPaths(root)
    p = params.fidelity.probe
    out = paths.foundation_model(PROBE_FOLDER)
    if paths.model_root(params.profile) is None:
        why = f"profile {params.profile.name!r} has no world: the fidelity probe needs the world's ground truth"
        logger.warning("fidelity_probe: %s", why)
        atomic_write_json(out / UNAVAILABLE, {"why": why})
        atomic_write_json(paths.fidelity_results / "probe.json", {})
        return {}
    world = make_world(params)
    key = config_hash(to_dict(params.world), to_dict(p), params.seed, code_digest("cafe_core.world.fidelity"))
    ckpt = paths.checkpoints("world") / f"{PROBE_FOLDER}-{key}"
    with tracking.start_run("fidelity_probe", params, log_params=to_dict(p), root=root):

        def build(tmp: Path) -> dict:
            stats = train_fidelity_probe(world, p, tmp, ckpt, seed=params.seed, cache_dir=paths.world_renders)
            return {"final_losses": stats}

        build_once(out, key=key, marker=MARKER, build=build, checkpoint=ckpt)
        probe = FidelityProbe.from_pretrained(out)
        accuracy = probe_accuracy(probe, world, p.eval_renders, params.seed, paths.world_renders)
        tracking.log_metrics({f"{d}/{k}": v for d, figures in accuracy.items() for k, v in figures.items()})
        tracking.log_artifacts(out, "fidelity_probe")
    atomic_write_json(paths.fidelity_results / "probe.json", accuracy)
    return accuracy
