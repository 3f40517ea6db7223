"""Stage ``fidelity``: the full system's fidelity figures beside the true renders'.

The variant ``fidelity.variant`` (c = c_hat of its assistant) as the evaluations scored it with
the fidelity probe, beside the true renders of the same prompts, with 95% intervals
(``results/fidelity/metrics.json``). Apart from the probe's stage, so that the probe, an
evaluation model, depends on none of the tables' statistics.
"""

from __future__ import annotations

from pathlib import Path

from ...benchmarks.statistics import score_grid, seeds_and_subjects_interval
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params
from ..paths import ProjectPaths
from ..results import read_quality, read_scores, read_subject_scores, rows_by_seed
from .common import REAL_IMAGES

__all__ = ["FIGURES", "fidelity_report"]

FIGURES = {"attributes": "attribute_accuracy", "all_attributes": "all_attributes", "context": "context_accuracy"}
"""Evaluation score -> its name in ``results/fidelity/metrics.json``; ID and CLIP-T keep theirs."""

WORDS_AND_PICTURE = {
    "reason_fits_context": "ambiguous_reason_fits_context",
    "drawn_context_is_named": "drawn_context_is_named",
    "ambiguous_drawn_context_is_named": "ambiguous_drawn_context_is_named",
}
"""Figures of the report -> the assistant's quality figures they are read from (``quality.json``)."""


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
