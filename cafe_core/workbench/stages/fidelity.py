"""Stages ``fidelity_probe`` and ``fidelity``: CAFE-mini's fidelity probe, and the full system's figures.

``fidelity_probe`` trains the probe (:mod:`cafe_core.world.fidelity`) and states its accuracy on
true renders of held-out subjects (``results/fidelity/probe.json``). Every evaluation then judges
its drawings with it. ``fidelity`` reports the full system (the variant ``fidelity.variant``: c = c_hat
of its assistant) beside the true renders of the same prompts, with 95% intervals (``results/fidelity/metrics.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...benchmarks.statistics import score_grid, seeds_and_subjects_interval
from ...utils.digest import config_hash
from ...utils.files import atomic_write_json
from ...world import make_world
from ...world.fidelity import PROBE_FOLDER, FidelityProbe, probe_accuracy, train_fidelity_probe
from .. import tracking
from ..artifacts import build_once
from ..code_deps import code_digest
from ..config import Params, to_dict
from ..paths import ProjectPaths
from ..results import read_quality, read_scores, read_subject_scores, rows_by_seed
from .common import REAL_IMAGES

__all__ = ["FIGURES", "fidelity_probe_stage", "fidelity_report"]

logger = logging.getLogger(__name__)

MARKER = "cafe_probe.json"

FIGURES = {"attributes": "attribute_accuracy", "all_attributes": "all_attributes", "context": "context_accuracy"}
"""Evaluation score -> its name in ``results/fidelity/metrics.json``; ID and CLIP-T keep theirs."""

WORDS_AND_PICTURE = {
    "reason_fits_context": "ambiguous_reason_fits_context",
    "drawn_context_is_named": "drawn_context_is_named",
    "ambiguous_drawn_context_is_named": "ambiguous_drawn_context_is_named",
}
"""Figures of the report -> the assistant's quality figures they are read from (``quality.json``)."""


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


def fidelity_report(params: Params, root: Path) -> dict:
    """``results/fidelity/metrics.json``: per domain, each figure of the full system with its ceiling.

    Each figure is ``{"value", "ceiling", "ci95": [low, high], "half_width_from_seeds",
    "half_width_from_subjects"}``: the mean over (training seed, held-out subject) cells of the
    system's row, the same figure on true renders of the same prompts, and a 95% interval with
    training seeds and subjects both random (:mod:`...benchmarks.statistics`), with the two parts
    of its width. Do the words agree with the picture? ``reason_fits_context``, ``drawn_context_is_named`` and
    ``ambiguous_drawn_context_is_named`` come from the assistant's quality figures (``{"value"}``:
    shares of responses, averaged over training seeds).
    """
    system = params.fidelity.variant
    if system not in params.variants:
        known = ", ".join(params.variants)
        raise KeyError(f"fidelity.variant {system!r} is not a key of params.yaml `variants` ({known})")
    paths = ProjectPaths(root)
    with tracking.start_run("fidelity", params, log_params={"variant": system}, root=root):
        scores, ceiling = read_scores(root, system), read_scores(root, REAL_IMAGES)  # {} without true images
        by_seed = rows_by_seed(read_subject_scores(root, system))
        quality = read_quality(root, system) or {}
        report: dict[str, dict] = {}
        for domain, mine in scores.items():
            subjects = sorted({r["subject"] for rows in by_seed.values() for r in rows if r["domain"] == domain})
            figures = {}
            for metric in (*FIGURES, "ID", "CLIP-T"):
                if metric not in mine:
                    continue
                grid = score_grid(by_seed, metric, domain, subjects)
                interval = seeds_and_subjects_interval(grid)
                figures[FIGURES.get(metric, metric)] = {
                    "value": mine[metric],
                    "ceiling": ceiling.get(domain, {}).get(metric),
                    "ci95": [interval.low, interval.high],
                    "half_width_from_seeds": interval.seeds_half_width,
                    "half_width_from_subjects": interval.subjects_half_width,
                }
            figures["per_attribute"] = {
                metric.removeprefix("attribute."): {"value": value, "ceiling": ceiling.get(domain, {}).get(metric)}
                for metric, value in mine.items()
                if metric.startswith("attribute.")
            }
            for name, key in WORDS_AND_PICTURE.items():
                if key in quality.get(domain, {}):
                    figures[name] = {"value": quality[domain][key]}
            report[domain] = figures
        spec = params.variants[system]
        report["system"] = {
            "variant": system,
            "assistant": spec.assistant,
            "generator": spec.generator,
            "subjects": {
                d: len({r["subject"] for rows in by_seed.values() for r in rows if r["domain"] == d}) for d in scores
            },
            "training_seeds": sorted(by_seed),
        }
        tracking.log_metrics(
            {
                f"{d}/{name}/{k}": v
                for d, figures in report.items()
                if d != "system"
                for name, f in figures.items()
                if name != "per_attribute"
                for k, v in (("value", f["value"]), ("ceiling", f.get("ceiling")))
                if v is not None
            }
        )
    atomic_write_json(paths.fidelity_results / "metrics.json", report)
    return report
