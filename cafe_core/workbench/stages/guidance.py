"""Stage ``guidance``: eq. 3's guidance scales (s_c, s_d) chosen on held-out validation subjects.

Every later draw of G (the assistant's validation, every evaluation, chat) reads the chosen pair
from ``results/guidance/grid.json``. The search draws G alone (c from the base model's image of
the plain prompt, training seed ``guidance.seed``), so it comes before the assistant, and it never sees
the subjects the tables are measured on.
"""

from __future__ import annotations

import logging
from itertools import product
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...benchmarks.metrics import fidelity_figures
from ...data.sources import DataUnavailable
from ...pipeline import CafePipeline, Sampling
from ...utils.files import atomic_write_json
from .. import tracking
from ..config import Params, to_dict
from ..evaluation_sources import evaluation_source
from ..paths import ProjectPaths
from .drawing import PromptReferences, draw_from_prompts
from .evaluate import Judges

__all__ = ["GridScorer", "guidance_grid"]

logger = logging.getLogger(__name__)

CRITERIA = {
    "probe": "mean over domains of the fidelity probe's attribute and context accuracy",
    "encoders": "mean over domains of CLIP-T and the identity score (DINO for objects, ID for faces)",
}


def guidance_grid(params: Params, root: Path) -> dict:
    """Score every (s_c, s_d) of ``params.guidance`` on validation cases and keep the best.

    The criterion is the fidelity probe's attribute and context accuracy where the data source
    knows the truth (CAFE-mini), else CLIP-T and the identity score. A source without validation
    cases (DreamBench) keeps ``params.generator``'s scales and says so.
    """
    p, paths = params.guidance, ProjectPaths(root)
    source = evaluation_source(params, root)
    seed = params.guidance.seed
    counts = {"object": p.object_subjects, "face": p.face_subjects}
    record = {"generator": p.generator, "training_seed": seed, "prompts": p.prompts, "subjects": counts}
    with tracking.start_run("guidance", params, log_params=to_dict(p), root=root):
        try:
            cases = {
                d: source.validation_cases(d, counts[d], p.prompts, params.seed, params.evaluation.references)
                for d in source.domains
            }
        except DataUnavailable as err:
            logger.warning("guidance: %s; keeping params.yaml generator.clip_scale and dino_scale", err)
            g = params.generator
            record.update(criterion="params.yaml (no validation cases)", grid=[])
            record["chosen"] = {"clip_scale": g.clip_scale, "dino_scale": g.dino_scale}
            atomic_write_json(paths.guidance_grid, record)
            return record
        scorer = GridScorer(params, root, source, cases, seed)
        grid = [scorer(sc, sd) for sc, sd in tqdm(list(product(p.clip_scales, p.dino_scales)), desc="guidance")]
        scorer.references.save()
        best = max(grid, key=lambda r: r["score"])
        record.update(criterion=CRITERIA[scorer.criterion], grid=grid)
        record["chosen"] = {"clip_scale": best["clip_scale"], "dino_scale": best["dino_scale"], "score": best["score"]}
        tracking.log_table(grid, "grid.json")
        tracking.log_metrics({"chosen/clip_scale": best["clip_scale"], "chosen/dino_scale": best["dino_scale"]})
    atomic_write_json(paths.guidance_grid, record)
    logger.info("guidance: s_c %g, s_d %g chosen (score %.3f)", best["clip_scale"], best["dino_scale"], best["score"])
    return record


class GridScorer:
    """Draws every validation case with G alone at one pair of scales and scores the drawings as
    the evaluation does (:class:`~.evaluate.Judges`); ``identity`` is DINO for objects, ID for faces."""

    def __init__(self, params: Params, root: Path, source, cases: dict, seed: int) -> None:
        self.params, self.source, self.cases = params, source, cases
        self.pipe = CafePipeline.from_params(
            params, root, assistant=None, generator=params.guidance.generator, seed=seed, device="cpu"
        )
        self.references = PromptReferences.from_params(params, root)
        self.judges = Judges(params, root, source)
        self.criterion = "encoders"

    def __call__(self, clip_scale: float, dino_scale: float) -> dict:
        g = self.params.generator
        self.pipe.sampling = Sampling(g.sample_steps, g.scheduler, clip_scale, dino_scale, "both")
        row: dict = {"clip_scale": clip_scale, "dino_scale": dino_scale}
        for domain, cases in self.cases.items():
            verdicts, clip_t, identity = [], [], []
            for case in cases:
                prompts = [q.prompt for q in case.prompts]
                images = draw_from_prompts(self.pipe, self.references, case.input_image, prompts, self.params.seed)
                scores, judged = self.judges(case, images)
                clip_t.append(scores["CLIP-T"])
                identity.append(scores["DINO" if domain == "object" else "ID"])
                verdicts += judged
            row[domain] = {"CLIP-T": float(np.mean(clip_t)), "identity": float(np.mean(identity))}
            if verdicts:
                figures = fidelity_figures(verdicts)
                row[domain].update(attributes=figures["attributes"], context=figures["context"])
                self.criterion = "probe"
        keys = ("attributes", "context") if self.criterion == "probe" else ("CLIP-T", "identity")
        row["score"] = float(np.mean([row[d][k] for d in self.cases for k in keys]))
        return row
